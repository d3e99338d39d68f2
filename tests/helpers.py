"""What several test modules share that is not a fixture: the one way tests run a command of this repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(args, timeout: int = 900, check: bool = True, env_extra: dict | None = None, **kwargs):
    """`python ARGS` in the repository root (e.g. `["-m", "data_prep", "build", ...]` or `["train.py", ...]`), output
    captured; with `check`, a non-zero exit fails the test with the end of both streams."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    result = subprocess.run([sys.executable, *[str(a) for a in args]], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def build_cj_corpus_and_tiny_model(base: Path, start_date: str | None = None) -> tuple[Path, Path]:
    """The real Complete Journey corpus before the evaluation cutoff (from `start_date` when given; hashing text
    vectors: no model download, fast) and a tiny checkpoint pre-trained on it for 3 steps: (corpus, checkpoint)."""
    from eval_suite.tasks import CUTOFF

    corpus, run = base / "cj", base / "run"
    window = ["--start-date", start_date] if start_date else []
    run_python(["-m", "data_prep", "build", "--source", "completejourney", *window, "--end-date", str(CUTOFF.date()),
                "--text-model", "hashing", "--cache-dir", base / "cache", "--out", corpus, "--quiet"])
    run_python(["train.py", "--data", corpus, "--preset", "tiny", "--output", run, "--max-steps", "3",
                "--batch-size", "16", "--max-eval-users", "16", "--report-to", "none"])
    return corpus, run / "final"
