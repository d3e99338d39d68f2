"""The run's metrics log: an accelerate tracker writing `logs/metrics.jsonl` (and `logs/hparams.json`), and the loss
curve `loss_curve.png` drawn from it at the end of a run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from accelerate.tracking import GeneralTracker


class JSONLTracker(GeneralTracker):
    """An accelerate tracker that appends every logged dict as one JSON line; always on, no dependency."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        # Created on the first write, by the main process only: the others must not touch --output before the main
        # one has claimed it (`claim_output`).
        self.path = Path(logging_dir) / f"{run_name}.jsonl"

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")


def plot_loss_curve(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = [], []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            train.append((record["step"], record["train/loss"]))
        if "eval/loss" in record:
            evals.append((record["step"], record["eval/loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train MPP loss", alpha=0.8)
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation MPP loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MPP loss (mean of 9 cross-entropies)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
