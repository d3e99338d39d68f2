"""train.py's reliability code: the run folder and its lock, checkpoints and exact resume."""
