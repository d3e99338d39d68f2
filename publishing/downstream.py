"""The downstream section of both cards (Tables 4-6 and the headline of an `eval_suite run`), the results it is
generated from (`FOLDER` or `FOLDER:A-B` specs, merged) and the source files and commands named under it."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import asdict
from pathlib import Path

from eval_suite.merging import complete_seeds
from eval_suite.report import headline_table, summarise, table4, table5, table6


def protocol_name(options: dict) -> str:
    """"quick mode", "full protocol" (RunOptions' defaults) or "reduced protocol", from a run's options."""
    from eval_suite.merging import FINETUNE_OPTIONS
    from eval_suite.run import RunOptions

    keys = ("mlp_lrs", "trans_lrs", "finetune_lrs", "mlp_max_epochs", "trans_max_epochs", "finetune_max_epochs",
            "trans_max_length")
    if not options.get("finetune"):  # fine-tuning's budget does not describe a run that did not fine-tune
        keys = tuple(k for k in keys if k not in FINETUNE_OPTIONS)

    def schedule(values: dict) -> dict:  # JSON turned the tuples into lists
        return {k: list(values[k]) if isinstance(values.get(k), (list, tuple)) else values.get(k) for k in keys}

    if schedule(options) == schedule(asdict(RunOptions.quick())):
        return "quick mode"
    return "full protocol" if schedule(options) == schedule(asdict(RunOptions())) else "reduced protocol"


def seed_range(entry: dict) -> str:
    """`n`, or `a-b` when the task's models ran different numbers of seeds."""
    counts = sorted({m["n"] for m in entry["models"].values()}) or [0]
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def cap_note(results: dict) -> str:
    """A sentence on the fits that ran to their epoch cap (`hit_cap`: the cap, not early stopping, ended them), over
    the seeds reported; "" when no result records it."""
    fits, chosen, other = 0, {}, {}
    for task_name, entry in results["tasks"].items():
        for model_name, model in entry["models"].items():
            for seed, metrics in model["seeds"].items():
                if "hit_cap" not in metrics:
                    continue
                fits += 1
                if metrics["hit_cap"]:
                    chosen.setdefault(model_name, []).append(f"{task_name} seed {seed}")
                elif metrics.get("hit_cap_any_lr"):
                    other.setdefault(model_name, []).append(f"{task_name} seed {seed}")
    if not fits:
        return ""

    def listed(found):
        return "; ".join(f"{name}: {', '.join(where)}" for name, where in sorted(found.items()))

    text = (f" Epoch caps (`hit_cap` in the results): of {fits} model-task-seeds, the chosen learning rate's fit ran "
            "to its epoch cap in " + (f"{sum(map(len, chosen.values()))} ({listed(chosen)})" if chosen else "none"))
    if other:
        text += (f"; in {sum(map(len, other.values()))} more a learning rate that was not chosen did "
                 f"({listed(other)}): its validation metric had not stopped improving, so it might have won with "
                 "more epochs")
    return text + "."


def results_section(results: dict, results_dir: Path | list[Path] | None = None, root: Path | None = None,
                    command: str | None = None) -> str:
    """Tables 4-6 and the headline of `results`; with `results_dir` (the `--results` specs the results came from)
    also the source files, relative to `root` (default: the working directory), and the commands that wrote them;
    `command` is the one that wrote the card."""
    options = results["config"]["options"]
    stopped = ""
    if "seconds" not in results and "stopped" not in results:  # one run, stopped before its last seed
        started = {s for e in results["tasks"].values() for m in e["models"].values() for s in m["seeds"]}
        complete_seeds(results)
        results["stopped"] = [{"run": "the run", "seeds_started": len(started)}]
    summarise(results)  # afresh: a results.json written by an older version holds another headline
    if results.get("stopped"):
        runs = ", ".join(f"{r['run']} ({r['seeds_started']} seed(s) started)" for r in results["stopped"])
        stopped = (f" Not every run finished its seeds: {runs}; each such run reports only the seeds that all of "
                   "its models finished, so models can differ in their number of seeds (a `seeds` row says so) "
                   "and every comparison pairs the seeds both models ran.")
    counts = {name: seed_range(e) for name, e in results["tasks"].items()}
    if len(set(counts.values())) <= 1:
        seeds = f"{next(iter(counts.values()), 0)} seed(s) per task"
    else:
        seeds = "seeds per task: " + ", ".join(f"{name} {n}" for name, n in counts.items())
    tuned = bool(options.get("finetune"))
    lines = [
        f"Produced by `python -m eval_suite run` ({seeds}; "
        f"{protocol_name(options)}; learning rates {list(options['mlp_lrs'])} for MLPs"
        + (f", {list(options['trans_lrs'])} for Transformers and {list(options['finetune_lrs'])} for fine-tuning"
           if tuned else f" and {list(options['trans_lrs'])} for Transformers")
        + f", chosen on validation users; at most {options['mlp_max_epochs']} epochs for MLPs"
        + (f", {options['trans_max_epochs']} for Transformers, {options['finetune_max_epochs']} for fine-tuning"
           if tuned else f" and {options['trans_max_epochs']} for Transformers (no fine-tuning in these runs)")
        + f", with early stopping on validation; P-/UP-/T-Trans read the most recent {options['trans_max_length']} "
        "events). "
        "Mean ± standard deviation over seeds; each seed draws a new 70/15/15 user split and new fixed negatives, "
        "shared by all models." + stopped + cap_note(results),
        "",
        "### The paper's headline, task by task (corrected resampled t-test, Holm-adjusted across tasks)",
        "",
        headline_table(results),
        "",
        "### Table 4 analogue: all models",
        "",
        table4(results),
        "### Table 5 analogue: fine-tuning vs U-MLP",
        "",
        table5(results),
        "",
        "### Table 6 analogue: cold and heavy users (sampled metrics)",
        "",
        table6(results),
    ]
    if results_dir is not None:
        lines += ["", sources_block(result_sources(results_dir, root or Path.cwd()), command)]
    return "\n".join(lines)


def repo_path(path: Path, root: Path, what: str) -> str:
    """`path` relative to the repository `root` (posix), or SystemExit when it is missing or outside the root."""
    try:
        relative = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        raise SystemExit(f"error: {path} ({what}) is outside the repository {Path(root).resolve()}: the card only "
                         "reports numbers from files inside it") from None
    if not Path(path).is_file():
        raise SystemExit(f"error: {relative} ({what}) is missing: the card reports no number without its source file")
    return relative


def result_sources(results_dir: Path | list[Path], root: Path) -> list[dict]:
    """Each `--results` spec's file (relative path), the seeds taken from it and the command that wrote it.

    Raises SystemExit when a file is missing or outside `root`.
    """
    sources = []
    for spec in results_dir if isinstance(results_dir, list) else [results_dir]:
        folder, seeds = split_results_spec(spec)
        path = repo_path(folder / "results.json", root, "results of `python -m eval_suite run`")
        config = json.loads((folder / "results.json").read_text()).get("config", {})
        recorded = config.get("command")
        command = recorded if recorded else run_command(config, Path(path).parent.as_posix())
        sources.append({"path": path, "seeds": seeds, "command": command, "recorded": bool(recorded)})
    return sources


def sources_block(sources: list[dict], command: str | None = None) -> str:
    """The source files of the tables, with their commands (and the card's own), as markdown."""
    lines = ["Every number above comes from these files (inside this repository), written by these commands:", "",
             "```bash"]
    for source in sources:
        seeds = source["seeds"]
        span = "" if not seeds else (f" (seed {seeds[0]})" if seeds[0] == seeds[1]
                                     else f" (seeds {seeds[0]}-{seeds[1]})")
        origin = "as recorded in it" if source["recorded"] else "rebuilt from its config: it records no command"
        lines += [f"# {source['path']}{span}; command {origin}", source["command"]]
    if command:
        lines += ["# this card's generated sections", command]
    return "\n".join(lines + ["```"])


def run_command(config: dict, out: str) -> str:
    """`python -m eval_suite run ...` with the options of a results.json `config` (for files that record no
    command): the flags that differ from the defaults of `--quick` or of the full protocol, whichever is closer.
    Options that differ but have no flag are listed in a trailing comment."""
    from eval_suite.__main__ import build_parser
    from eval_suite.run import RunOptions
    from eval_suite.tasks import TASK_NAMES

    options = dict(config.get("options", {}))
    parser = build_parser()  # the run subcommand's flags: argparse keeps them in private attributes only
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = set(subcommands.choices["run"]._option_string_actions)

    def differing(base):
        return {k: v for k, v in options.items() if _listed(v) != _listed(base.get(k, object()))}

    quick, full = differing(asdict(RunOptions.quick())), differing(asdict(RunOptions()))
    changed, parts = (quick, ["--quick"]) if len(quick) < len(full) else (full, [])
    words = ["python", "-m", "eval_suite", "run"]
    for name, path in config.get("checkpoints", {}).items():
        words += ["--model", f"{name}={path}"]
    tasks = list(config.get("tasks", []))
    words += ["--data", str(config.get("data", "?")), "--tasks",
              "all" if tasks == list(TASK_NAMES) else ",".join(tasks), *parts]
    words += ["--repeats", str(options.get("repeats"))]
    unflagged = []
    for key, value in changed.items():
        flag = "--" + key.replace("_", "-")
        if key == "repeats" or value is None or value is False:
            continue
        if flag not in flags:
            unflagged.append(f"{key}={_listed(value)}")
        elif value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
                      if isinstance(value, (list, tuple)) else str(value)]
    notes = [f"and {', '.join(unflagged)} (no command-line flag)"] if unflagged else []
    seeds = config.get("seeds")
    if seeds and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        notes.append(f"seeds {', '.join(map(str, seeds))}: not one range, run each range with --first-seed/--repeats")
    return shlex.join(words + ["--out", out]) + (f"  # {'; '.join(notes)}" if notes else "")


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else value


SEED_RANGE = re.compile(r":(\d+)(?:-(\d+))?$")


def split_results_spec(spec) -> tuple[Path, tuple[int, int] | None]:
    """`FOLDER` -> (FOLDER, None); `FOLDER:A-B` or `FOLDER:A` -> (FOLDER, (A, B)) with B = A for a single seed."""
    spec = str(spec)
    match = SEED_RANGE.search(spec)
    if not match:
        return Path(spec), None
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    if last < first:
        raise ValueError(f"{spec}: seed range {first}-{last} is empty")
    return Path(spec[:match.start()]), (first, last)


def load_results(spec) -> dict:
    """`results.json` of an eval_suite run folder; `FOLDER:A-B` (or `FOLDER:A`) keeps only seeds A..B of it."""
    folder, seeds = split_results_spec(spec)
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (not an `eval_suite run` output folder)")
    results = json.loads(path.read_text())
    if "seconds" not in results:  # stopped before its last seed: keep the seeds every model of this run finished
        started = {s for e in results["tasks"].values() for m in e["models"].values() for s in m["seeds"]}
        complete_seeds(results)
        results["stopped"] = [{"run": str(folder), "seeds_started": len(started)}]
    if seeds:
        first, last = seeds
        keep = {str(s) for s in range(first, last + 1)}
        for entry in results["tasks"].values():
            for model in entry["models"].values():
                model["seeds"] = {s: m for s, m in model["seeds"].items() if s in keep}
        results["config"]["options"].update(first_seed=first, repeats=last - first + 1)
    return results


def results_for_checkpoint(results: dict, label: str) -> tuple[dict, list[str]]:
    """A copy of results.json without the U-MLPs of the other checkpoints it evaluated, re-summarised (means, paired
    tests, headline) so that every table and the headline speak of this checkpoint; also the labels left out.
    The U-MLPs on representations anyone can compute (`eval_suite.report.TRIVIAL`: SVD, ...) are kept."""
    import copy

    from eval_suite.report import TRIVIAL

    ours = f"U-MLP {label}"
    kept = copy.deepcopy(results)
    dropped = set()
    for entry in kept["tasks"].values():
        for name in list(entry["models"]):
            if name.startswith("U-MLP ") and name != ours and name not in TRIVIAL:
                dropped.add(name[len("U-MLP "):])
                del entry["models"][name]
        entry.pop("comparisons", None)
        entry.pop("headline", None)
    return summarise(kept), sorted(dropped)
