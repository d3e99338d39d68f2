"""`python -m eval_suite recipe`: the pre-training recipe ablation, one row per train.py run.

    python -m eval_suite recipe --run "7-way mean, MPP=runs/abl-mean" --run "3-way, MPP=runs/abl-grouped" \\
        --run "3-way, MPP + InfoNCE=runs/abl-grouped-cl" --probe results/recipe/probe --out results/recipe
        (--probe repeats: probe runs of other checkpoints are merged)

Each row: what the run changed (input combination, objective, steps), its validation masked-purchase accuracy on the
four category heads against the strongest no-learning rule (prior, user mode, basket mode: see train.py), and the
linear-probe AUROC of its frozen user embedding on the classification tasks (`python -m eval_suite probe`, whose
`--model` names must be the row names). The small files of every run (eval_results.json, run_config.json) are
copied under `--out`, so the table can be regenerated from the repository alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from data_prep.json_files import write_json

CATEGORY_HEADS = ("category_1", "category_2", "category_3", "category_4")
RUN_FILES = ("eval_results.json", "run_config.json", "mpp_diagnostics.md")


def row_facts(run_dir: Path) -> dict:
    """What a run did and how its MPP heads compare with the rules, from its eval_results.json and run_config.json."""
    results = json.loads((run_dir / "eval_results.json").read_text())
    run = json.loads((run_dir / "run_config.json").read_text())
    config, args = run["model_config"], run["args"]
    facts = {"combination": config.get("embedding_combination", "mean"),
             "contrastive_weight": config.get("contrastive_weight", 0.0),
             "profile_weight": config.get("profile_weight", 0.0),
             "steps": results["step"], "epochs": round(results["step"] / args["steps_per_epoch"], 1),
             "eval_loss": results["eval/loss"], "heads": {}}
    for head in CATEGORY_HEADS:
        rules = {rule: results.get(f"eval/{rule}_accuracy_{head}") for rule in ("prior", "user_mode", "basket_mode")}
        facts["heads"][head] = {"model": results[f"eval/accuracy_{head}"], **rules}
    return facts


def probe_means(probe_dirs: list[Path]) -> dict:
    """{representation: {task: (mean, std, n)}} from probe runs' results.json (later runs add their own names; a
    name probed twice keeps its first run)."""
    out: dict = {}
    for probe_dir in probe_dirs:
        path = probe_dir / "results.json"
        if not path.is_file():
            raise SystemExit(f"error: --probe {probe_dir}: no results.json (run `python -m eval_suite probe` first)")
        for name, tasks in _probe_file_means(json.loads(path.read_text())).items():
            out.setdefault(name, tasks)
    return out


def _probe_file_means(results: dict) -> dict:
    out: dict = {}
    for task, entry in results["tasks"].items():
        for name, model in entry["models"].items():
            if "auroc" in model.get("mean", {}):
                out.setdefault(name, {})[task] = (model["mean"]["auroc"], model["std"]["auroc"], model["n"],
                                                  model["mean"].get("val_auroc", float("nan")))
    return out


def render(rows: dict, probes: dict, tasks: list[str]) -> str:
    head = "| run | input | objective | epochs | val MPP loss | " + " | ".join(
        f"{h} (best rule)" for h in CATEGORY_HEADS) + " | " + " | ".join(f"probe {t}" for t in tasks) + " |"
    lines = [head, "|" + "---|" * (5 + len(CATEGORY_HEADS) + len(tasks))]

    def probe_cells(name):
        cells = []
        for task in tasks:
            value = probes.get(name, {}).get(task)
            cells.append("–" if value is None else f"{value[0]:.3f} ± {value[1]:.3f} (val {value[3]:.3f})")
        return cells

    for name, f in rows.items():
        objective = ("MPP" + (f" + {f['contrastive_weight']:g} InfoNCE" if f["contrastive_weight"] else "")
                     + (f" + {f['profile_weight']:g} profile" if f.get("profile_weight") else ""))
        cells = []
        for h in CATEGORY_HEADS:
            v = f["heads"][h]
            best = max(x for x in (v["prior"], v["user_mode"], v["basket_mode"]) if x is not None)
            mark = "**" if v["model"] > best else ""
            cells.append(f"{mark}{v['model']:.3f}{mark} ({best:.3f})")
        lines.append(f"| {name} | {f['combination']} | {objective} | {f['epochs']:g} | {f['eval_loss']:.4f} | "
                     + " | ".join(cells) + " | " + " | ".join(probe_cells(name)) + " |")
    for name in probes:
        if name not in rows:
            empty = " | ".join("–" for _ in CATEGORY_HEADS)
            lines.append(f"| {name} (no pre-training) | – | – | – | – | {empty} | " + " | ".join(probe_cells(name))
                         + " |")
    lines += ["", "Category accuracies (validation households, fixed masks) in bold beat the strongest no-learning "
              "rule (in brackets). Probe: mean ± std test AUROC of a logistic-regression probe on the frozen user "
              "vectors over the probe's seeds, and in brackets its mean validation AUROC (what a choice may use)."]
    return "\n".join(lines)


def collect(runs: dict[str, Path], probes: list[Path], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, run_dir in runs.items():
        for file in ("eval_results.json", "run_config.json"):
            if not (run_dir / file).is_file():
                raise SystemExit(f"error: --run {name}={run_dir}: no {file} (not a finished train.py run)")
        target = out / "runs" / run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for file in RUN_FILES:
            if (run_dir / file).is_file() and (run_dir / file).resolve() != (target / file).resolve():
                shutil.copyfile(run_dir / file, target / file)
        if (run_dir / "logs" / "metrics.jsonl").is_file():  # the per-step curves behind "when did it learn"
            shutil.copyfile(run_dir / "logs" / "metrics.jsonl", target / "metrics.jsonl")
        rows[name] = row_facts(target)
    means = probe_means(probes)
    tasks = sorted({t for p in means.values() for t in p})
    table = render(rows, means, tasks)
    write_json(out / "recipe.json", {"rows": rows, "probes": [str(p) for p in probes],
                                     "runs": {k: str(v) for k, v in runs.items()}}, indent=1)
    tmp = out / "recipe.md.tmp"
    tmp.write_text(table + "\n")
    os.replace(tmp, out / "recipe.md")
    return table


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eval_suite recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_FOLDER",
                        help="a finished train.py output folder (eval_results.json, run_config.json); repeat")
    parser.add_argument("--probe", action="append", default=None, metavar="FOLDER",
                        help="a `python -m eval_suite probe` output folder whose --model names are the row names")
    parser.add_argument("--out", default="results/recipe", help="output folder (recipe.md, recipe.json, runs/)")
    return parser


def main(argv=None) -> int:
    import shlex
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "eval_suite", "recipe", *argv])
    runs = {}
    for spec in args.run:
        name, sep, path = spec.rpartition("=")
        if not sep or not name:
            raise SystemExit(f"error: --run {spec!r}: expected NAME=RUN_FOLDER")
        runs[name] = Path(path)
    print(collect(runs, [Path(p) for p in args.probe or []], Path(args.out)))
    (Path(args.out) / "command.txt").write_text(command + "\n")
    return 0
