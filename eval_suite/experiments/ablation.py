"""`python -m eval_suite ablation`: the paper's Figure 3 (time length of the pre-training data).

    python -m eval_suite ablation --out results/ablation --months 1,3,6,9 --repeats 3 --epochs 8
    python -m eval_suite ablation --out results/ablation --quick            # short downstream schedules
    python -m eval_suite ablation --out results/ablation --plot-only        # aggregate what exists
    python -m eval_suite ablation --out results/ablation --dry-run          # print the commands

For each window of k months before the cutoff T = 2017-10-02 (start = T - k calendar months; Complete Journey
starts on 2017-01-01, so 9 months, from 2017-01-02, is all of the data before T but its first day), the existing
commands run as subprocesses, with the same settings for every window:

1. `python -m data_prep build --source completejourney --start-date <T-k months> --end-date T --out <out>/data-<k>m`
   (the text-vector cache is shared, so only the first build embeds descriptions);
2. `python train.py --data <out>/data-<k>m --preset small --output <out>/run-<k>m [--num-epochs E ...]`;
3. `python -m eval_suite run --model <k>m=<out>/run-<k>m/final --data <out>/data-<k>m --models u-mlp
   --repeats N --out <out>/eval-<k>m [--quick]`.

The downstream user embeddings of a window's model must be computed from the same window of each household's
purchases: `eval_suite.inputs.purchase_inputs` has to honour the corpus' `metadata["start_date"]` (this command
checks that it does, and refuses to run the evaluations otherwise unless `--allow-unwindowed-inputs`).

Steps whose outputs exist are skipped (the command is resumable; an interrupted pre-training resumes from its last
checkpoint). Each finished step records its command line in `<out>/logs/`; outputs made with other settings are
refused rather than silently mixed.

Output: `<out>/ablation.json` (per window: corpus counts, pre-training validation MPP loss, per task the mean ±
std over seeds of the primary metric: AUROC for classification, MRR for recommendation) and `<out>/ablation.png`
(one line per task: x = months of pre-training data, y = score relative to the longest window's).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..tasks import CUTOFF, TASK_KINDS, TASK_NAMES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MONTHS = (1, 3, 6, 9)
PRIMARY = {"classification": "auroc", "recommendation": "mrr"}
METRIC_LABELS = {"auroc": "AUROC", "mrr": "MRR"}
UMLP = "U-MLP"


# ---------------------------------------------------------------------------------------------------------------
# Windows and commands
# ---------------------------------------------------------------------------------------------------------------
def window_start(months: int, cutoff=CUTOFF) -> pd.Timestamp:
    """The first day of the window of `months` calendar months ending at the cutoff (exclusive)."""
    if months < 1:
        raise ValueError(f"a window has at least one month, got {months}")
    return pd.Timestamp(cutoff) - pd.DateOffset(months=int(months))


def parse_months(text: str) -> list[int]:
    try:
        months = sorted({int(m) for m in str(text).split(",") if m.strip()})
    except ValueError as exc:
        raise ValueError(f"--months must be comma-separated whole numbers, got {text!r}") from exc
    if not months or months[0] < 1:
        raise ValueError(f"--months must be positive whole numbers, got {text!r}")
    return months


@dataclass
class AblationConfig:
    out: Path
    months: list = field(default_factory=lambda: list(DEFAULT_MONTHS))
    cutoff: str = str(CUTOFF.date())
    # pre-training (the same for every window)
    preset: str = "small"
    epochs: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 42
    train_args: list = field(default_factory=list)
    # corpus
    text_model: str | None = None
    cache_dir: str | None = None
    build_args: list = field(default_factory=list)
    # downstream
    repeats: int = 3
    quick: bool = False
    tasks: str = "all"
    eval_models: str = "u-mlp"
    max_users: int | None = None
    threads: int | None = None
    eval_args: list = field(default_factory=list)
    relative_to: str = "longest"


def window_paths(out: Path, months: int) -> dict[str, Path]:
    out = Path(out)
    return {"data": out / f"data-{months}m", "run": out / f"run-{months}m", "eval": out / f"eval-{months}m"}


def step_commands(config: AblationConfig, months: int) -> dict[str, list[str]]:
    """The three command lines of one window (argv without the interpreter)."""
    paths = window_paths(config.out, months)
    start = window_start(months, config.cutoff)
    build = ["-m", "data_prep", "build", "--source", "completejourney", "--start-date", str(start.date()),
             "--end-date", str(pd.Timestamp(config.cutoff).date()), "--out", str(paths["data"]), "--quiet"]
    if config.text_model:
        build += ["--text-model", config.text_model]
    if config.cache_dir:
        build += ["--cache-dir", str(config.cache_dir)]
    build += list(config.build_args)
    train = ["train.py", "--data", str(paths["data"]), "--preset", config.preset, "--output", str(paths["run"]),
             "--seed", str(config.seed), "--report-to", "none"]
    for flag, value in (("--num-epochs", config.epochs), ("--max-steps", config.max_steps),
                        ("--batch-size", config.batch_size), ("--learning-rate", config.learning_rate)):
        if value is not None:
            train += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    train += list(config.train_args)
    evaluate = ["-m", "eval_suite", "run", "--model", f"{months}m={paths['run'] / 'final'}", "--data",
                str(paths["data"]), "--models", config.eval_models, "--tasks", config.tasks, "--repeats",
                str(config.repeats), "--out", str(paths["eval"])]
    if config.quick:
        evaluate.append("--quick")
    if config.max_users:
        evaluate += ["--max-users", str(config.max_users)]
    if config.threads:
        evaluate += ["--threads", str(config.threads)]
    evaluate += list(config.eval_args)
    return {"build": build, "train": train, "eval": evaluate}


def step_done(step: str, paths: dict[str, Path]) -> bool:
    if step == "build":
        return (paths["data"] / "metadata.json").is_file()
    if step == "train":
        return (paths["run"] / "final" / "config.json").is_file()
    results = paths["eval"] / "results.json"
    if not results.is_file():
        return False
    try:
        return "seconds" in json.loads(results.read_text())  # written when the run finished
    except json.JSONDecodeError:
        return False


def downstream_inputs_windowed() -> bool:
    """Does `purchase_inputs` restrict each household's purchases to the corpus' own time window?"""
    from ..inputs import purchase_inputs

    return "start_date" in inspect.signature(purchase_inputs).parameters


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
class StepFailed(RuntimeError):
    pass


def _environment() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        env.setdefault(name, "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_window(config: AblationConfig, months: int, log=print, dry_run: bool = False,
               steps=("build", "train", "eval")) -> None:
    paths = window_paths(config.out, months)
    commands = step_commands(config, months)
    logs = Path(config.out) / "logs"
    ran = None  # the first step of this window that had to run: later outputs made before it are stale
    for step in steps:
        argv = commands[step]
        record = logs / f"{step}-{months}m.json"
        shown = " ".join([Path(sys.executable).name, *argv])
        if step_done(step, paths):
            if ran is not None and not dry_run:
                raise StepFailed(f"{months}m {step}: {_output_of(step, paths)} was made from the previous "
                                 f"{ran} output, which has just been redone; delete it to redo it")
            if record.is_file():
                previous = json.loads(record.read_text())["argv"]
                if previous != argv:
                    raise StepFailed(
                        f"{months}m {step}: the existing outputs were made by\n  {' '.join(previous)}\nnot by\n  "
                        f"{' '.join(argv)}\ndelete {_output_of(step, paths)} (or use another --out) to redo it")
            log(f"[{months}m] {step}: done already ({_output_of(step, paths)})")
            continue
        checkpoints = paths["run"] / "checkpoints"
        if step == "train" and checkpoints.is_dir() and any(checkpoints.iterdir()):
            argv = argv + ["--resume", "latest"]  # an interrupted pre-training goes on from its last checkpoint
        ran = ran or step
        if dry_run:
            log(f"[{months}m] {step}: {shown}")
            continue
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{step}-{months}m.log"
        log(f"[{months}m] {step}: {shown}  (log: {log_path})")
        started = time.perf_counter()
        with log_path.open("w") as handle:
            code = subprocess.run([sys.executable, *argv], cwd=ROOT, env=_environment(), stdout=handle,
                                  stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - started
        if code != 0:
            tail = log_path.read_text()[-3000:]
            raise StepFailed(f"{months}m {step} failed (exit {code}) after {seconds:.0f} s; end of {log_path}:\n{tail}")
        record.write_text(json.dumps({"argv": commands[step], "seconds": seconds,
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
        log(f"[{months}m] {step}: finished in {seconds:.0f} s")


def _output_of(step: str, paths: dict[str, Path]) -> Path:
    return {"build": paths["data"], "train": paths["run"], "eval": paths["eval"]}[step]


# ---------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def model_family(name: str) -> str:
    """`U-MLP <checkpoint>` -> `U-MLP` (the checkpoint is named after its window); other models keep their names."""
    return UMLP if name.startswith(UMLP) else name


def summarise_eval(results: dict) -> dict:
    """Per task: the primary metric's mean ± std (ddof=1) over the seeds of each model family."""
    out = {}
    for task, entry in (results or {}).get("tasks", {}).items():
        kind = entry.get("kind", TASK_KINDS.get(task))
        metric = entry.get("primary_metric", PRIMARY[kind])
        models = {}
        for name, model in entry.get("models", {}).items():
            values = [float(m[metric]) for m in model.get("seeds", {}).values()
                      if m.get(metric) is not None and math.isfinite(float(m[metric]))]
            if not values:
                continue
            family = model_family(name)
            if family in models:  # several checkpoints: keep the first, like the runner's primary one
                continue
            models[family] = {"name": name, "mean": float(np.mean(values)),
                              "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                              "n": len(values), "values": values}
        out[task] = {"kind": kind, "metric": metric, "models": models}
    return out


def collect_window(out: Path, months: int, cutoff=CUTOFF) -> dict:
    paths = window_paths(out, months)
    window = {"months": months, "start_date": str(window_start(months, cutoff).date()),
              "end_date": str(pd.Timestamp(cutoff).date()), "paths": {k: str(v) for k, v in paths.items()}}
    metadata = _read_json(paths["data"] / "metadata.json")
    if metadata:
        counts = metadata.get("counts", {})
        window["corpus"] = {"users": counts.get("users_kept"), "purchases": counts.get("purchases_kept"),
                            "rows_in_window": counts.get("rows_in_time_window"),
                            "descriptions": metadata.get("num_descriptions"),
                            "first": metadata.get("date_range", {}).get("first"),
                            "last": metadata.get("date_range", {}).get("last"),
                            "start_date": metadata.get("start_date"), "end_date": metadata.get("end_date"),
                            "counts": counts}
    final = _read_json(paths["run"] / "final" / "training_info.json") or _read_json(paths["run"] / "eval_results.json")
    if final:
        best = _read_json(paths["run"] / "best" / "training_info.json") or {}
        window["pretraining"] = {"validation_mpp_loss": final.get("eval/loss"), "steps": final.get("step"),
                                 "best_validation_mpp_loss": best.get("eval/loss"), "best_step": best.get("step"),
                                 "epochs": (final.get("args") or {}).get("num_epochs"),
                                 "max_steps": (final.get("args") or {}).get("max_steps")}
    results = _read_json(paths["eval"] / "results.json")
    if results:
        window["complete"] = "seconds" in results
        window["tasks"] = summarise_eval(results)
    return window


def relative_scores(windows: list[dict], relative_to: str = "longest") -> dict:
    """Per task, each model family's mean (± std) at each window divided by U-MLP's mean at the reference window:
    the longest window with a result (`longest`, the default) or U-MLP's best window (`best`)."""
    tasks: dict[str, dict] = {}
    for window in windows:
        for task, entry in window.get("tasks", {}).items():
            slot = tasks.setdefault(task, {"metric": entry["metric"], "kind": entry["kind"], "series": {}})
            for family, stats in entry["models"].items():
                slot["series"].setdefault(family, []).append({"months": window["months"], **{
                    k: stats[k] for k in ("mean", "std", "n")}})
    out = {}
    for task, slot in tasks.items():
        umlp = sorted(slot["series"].get(UMLP, []), key=lambda p: p["months"])
        if not umlp:
            continue
        if relative_to == "best":
            reference = max(umlp, key=lambda p: p["mean"])
        elif relative_to == "longest":
            reference = umlp[-1]
        else:
            raise ValueError(f"relative_to must be 'longest' or 'best', got {relative_to!r}")
        base = reference["mean"]
        series = {}
        for family, points in slot["series"].items():
            series[family] = [{**p, "relative": p["mean"] / base if base else math.nan,
                               "relative_std": p["std"] / base if base else math.nan}
                              for p in sorted(points, key=lambda p: p["months"])]
        out[task] = {"metric": slot["metric"], "kind": slot["kind"], "reference_model": UMLP,
                     "reference_months": reference["months"], "reference_score": base, "series": series}
    return out


def plot_ablation(relative: dict, path, title: str | None = None) -> Path:
    """One line per task (U-MLP, solid; other models dashed in the task's colour): relative score vs months."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = plt.get_cmap("tab10")
    ordered = [t for t in TASK_NAMES if t in relative] + sorted(t for t in relative if t not in TASK_NAMES)
    all_months = set()
    for i, task in enumerate(ordered):
        entry = relative[task]
        colour = cmap(i % 10)
        shift = 0.06 * (i - (len(ordered) - 1) / 2)  # side by side error bars
        for family, points in entry["series"].items():
            x = np.array([p["months"] for p in points], dtype=float)
            y = np.array([p["relative"] for p in points])
            err = np.array([p["relative_std"] for p in points])
            all_months |= set(x.tolist())
            metric = METRIC_LABELS.get(entry["metric"], entry["metric"])
            if family == UMLP:
                ax.errorbar(x + shift, y, yerr=err, fmt="-o", color=colour, label=f"{task} ({metric})", markersize=4,
                            capsize=2.5, linewidth=1.5, elinewidth=0.8)
            else:
                ax.plot(x + shift, y, "--", color=colour, alpha=0.7, label=f"{task}: {family}")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(sorted(all_months))
    ax.set_xlabel("months of purchase logs in the pre-training data (before T = 2017-10-02)")
    reference = {e["reference_months"] for e in relative.values()}
    ref_text = f"{reference.pop()} months" if len(reference) == 1 else "each task's reference window"
    ax.set_ylabel(f"relative score (U-MLP / U-MLP at {ref_text})")
    ax.set_title(title or "Figure 3 analogue: length of the pre-training window (mean ± std over seeds)",
                 fontsize=10)
    ax.legend(fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def aggregate(config: AblationConfig, windowed: bool | None = None) -> dict:
    windows = [collect_window(config.out, k, config.cutoff) for k in config.months]
    relative = relative_scores([w for w in windows if w.get("tasks")], config.relative_to)
    settings = asdict(config)
    settings["out"] = str(config.out)
    return {"cutoff": config.cutoff, "months": list(config.months), "downstream_inputs_windowed": windowed,
            "settings": settings, "windows": windows, "relative": relative,
            "primary_metrics": dict(PRIMARY)}


def table(ablation: dict) -> str:
    tasks = sorted({t for w in ablation["windows"] for t in w.get("tasks", {})},
                   key=lambda t: TASK_NAMES.index(t) if t in TASK_NAMES else 99)
    header = "| Months | Start | Users | Purchases | Val. MPP loss | " + " | ".join(
        f"{t} ({METRIC_LABELS.get(PRIMARY[TASK_KINDS.get(t, 'classification')], '')})" for t in tasks) + " |"
    lines = [header, "|" + "---|" * (5 + len(tasks))]
    for w in ablation["windows"]:
        corpus, pre = w.get("corpus", {}), w.get("pretraining", {})
        cells = []
        for t in tasks:
            m = w.get("tasks", {}).get(t, {}).get("models", {}).get(UMLP)
            rel = next((p["relative"] for p in ablation["relative"].get(t, {}).get("series", {}).get(UMLP, [])
                        if p["months"] == w["months"]), None)
            cells.append(f"{m['mean']:.4f} ± {m['std']:.4f} (×{rel:.3f})" if m and rel is not None else
                         (f"{m['mean']:.4f} ± {m['std']:.4f}" if m else "–"))
        loss = pre.get("validation_mpp_loss")
        lines.append(f"| {w['months']} | {w['start_date']} | {corpus.get('users', '–')} "
                     f"| {corpus.get('purchases', '–')} | {f'{loss:.4f}' if loss is not None else '–'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval_suite ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/ablation", help="work and output folder")
    p.add_argument("--months", default=",".join(map(str, DEFAULT_MONTHS)), help="window lengths (default 1,3,6,9)")
    t = p.add_argument_group("pre-training (the same for every window)")
    t.add_argument("--preset", default="small", help="train.py --preset (default small)")
    t.add_argument("--epochs", type=float, default=None, help="train.py --num-epochs (default: train.py's)")
    t.add_argument("--max-steps", type=int, default=None, help="train.py --max-steps")
    t.add_argument("--batch-size", type=int, default=None, help="train.py --batch-size")
    t.add_argument("--learning-rate", type=float, default=None, help="train.py --learning-rate")
    t.add_argument("--seed", type=int, default=42, help="train.py --seed (default 42)")
    t.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="extra train.py argument, repeatable (e.g. --train-arg=--max-eval-users --train-arg=64)")
    c = p.add_argument_group("corpora")
    c.add_argument("--text-model", default=None, help="data_prep --text-model (default: data_prep's)")
    c.add_argument("--cache-dir", default=None, help="data_prep --cache-dir (default: data_prep's shared cache)")
    c.add_argument("--build-arg", action="append", default=[], metavar="ARG", help="extra data_prep build argument")
    e = p.add_argument_group("downstream evaluation")
    e.add_argument("--repeats", type=int, default=3, help="seeds per task (default 3)")
    e.add_argument("--quick", action="store_true", help="eval_suite run --quick (short schedules)")
    e.add_argument("--tasks", default="all", help="eval_suite run --tasks (default all)")
    e.add_argument("--eval-models", default="u-mlp",
                   help="eval_suite run --models (default u-mlp; e.g. u-mlp,t-trans adds the paper's T-Trans "
                        "comparison as dashed lines)")
    e.add_argument("--max-users", type=int, default=None, help="eval_suite run --max-users (smoke runs only)")
    e.add_argument("--threads", type=int, default=None, help="eval_suite run --threads")
    e.add_argument("--eval-arg", action="append", default=[], metavar="ARG", help="extra eval_suite run argument")
    e.add_argument("--relative-to", choices=("longest", "best"), default="longest",
                   help="reference of the relative scores: the longest window (default) or U-MLP's best window")
    e.add_argument("--allow-unwindowed-inputs", action="store_true",
                   help="evaluate even though purchase_inputs ignores the corpus window (every window's model "
                        "would then embed all purchases before T)")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run")
    p.add_argument("--plot-only", action="store_true", help="only aggregate and plot the outputs that exist")
    return p


def config_from_args(args) -> AblationConfig:
    return AblationConfig(
        out=Path(args.out), months=parse_months(args.months), preset=args.preset, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
        train_args=list(args.train_arg), text_model=args.text_model, cache_dir=args.cache_dir,
        build_args=list(args.build_arg), repeats=args.repeats, quick=args.quick, tasks=args.tasks,
        eval_models=args.eval_models, max_users=args.max_users, threads=args.threads, eval_args=list(args.eval_arg),
        relative_to=args.relative_to)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    windowed = downstream_inputs_windowed()
    if not args.plot_only:
        if not windowed and not args.allow_unwindowed_inputs and not args.dry_run:
            print("error: eval_suite.inputs.purchase_inputs ignores the corpus' start_date: every window's model "
                  "would embed all of each household's purchases before T, not the window's. Make purchase_inputs "
                  "honour corpus.metadata['start_date'] (a `start_date` parameter), or pass "
                  "--allow-unwindowed-inputs to run anyway.", file=sys.stderr)
            return 2
        started = time.perf_counter()
        try:
            for months in config.months:
                run_window(config, months, dry_run=args.dry_run)
        except StepFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if args.dry_run:
            if not windowed:
                print("note: purchase_inputs ignores the corpus' start_date: the evaluations would refuse to run "
                      "(see --allow-unwindowed-inputs)")
            return 0
        print(f"all windows done in {time.perf_counter() - started:.0f} s")
    ablation = aggregate(config, windowed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(ablation, indent=1))
    text = table(ablation)
    (out / "ablation.md").write_text("Pre-training window ablation (U-MLP, mean ± std over seeds; × relative to the "
                                     f"{config.relative_to} window)\n\n" + text)
    print("\n" + text)
    if ablation["relative"]:
        plot_ablation(ablation["relative"], out / "ablation.png")
        print(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'} and {out / 'ablation.png'}")
    else:
        print(f"wrote {out / 'ablation.json'} (no evaluation results yet: no plot)")
    if not windowed:
        print("note: downstream inputs were not windowed (purchase_inputs ignores the corpus start_date)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
