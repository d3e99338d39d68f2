"""Model-card sections generated from result files (never typed in).

    python -m eval_suite.model_card --card model_card.md --pretraining runs/cj-small --results results/demo

Sections between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers are replaced: `pretraining` (data, run,
MPP accuracy per head against the prior baseline), `results` (Tables 4-6 and the headline check), and the
`model-index` of the YAML front matter (one entry per task for the primary U-MLP).

Every number is traceable: each file the card is generated from must exist inside the card's repository (the card's
folder) and is named in the card by its relative path, with the command that wrote it (`config["command"]` of a
results.json verbatim when recorded, else rebuilt from its `config`) and the command that wrote the card. A missing
source file, or one outside the repository, stops the generator (SystemExit "error: ...") before anything is written.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from .report import (complete_seeds, headline_table, merge_results, primary_umlp, summarise, table4, table5,
                     table6, write_tables)

HEADS = ("category_1", "category_2", "category_3", "category_4", "year", "month", "day", "weekday", "hour")
TASK_TYPES = {"classification": "user-classification", "recommendation": "recommendation"}
METRIC_NAMES = {"auroc": "roc_auc", "f1": "f1", "accuracy": "accuracy", "hr@10": "hit_rate@10",
                "ndcg@10": "ndcg@10", "mrr": "mrr", "full_ndcg@10": "ndcg@10 (full ranking)"}


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    return text.rstrip() + "\n\n" + block + "\n"


def pretraining_section(run_dir: Path, figure: str | None = None, sources: list[str] | None = None) -> str:
    """The pre-training data, run and the 'does it learn' table (validation MPP accuracy vs the no-learning rules);
    `sources` (relative paths of the files read) are named under it."""
    from modeling_shopperbert.mpp_rules import rule_table

    results = json.loads((run_dir / "eval_results.json").read_text())
    run = json.loads((run_dir / "run_config.json").read_text())
    args, config = run["args"], run["model_config"]
    meta_file = run_dir / "final" / "metadata.json"
    if not meta_file.is_file():  # a committed copy of a run's small files keeps metadata.json beside them
        meta_file = run_dir / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    counts = meta.get("counts", {})
    splits = meta.get("splits", {})
    train_users = splits.get("train", {}).get("users")
    val_users = splits.get("validation", {}).get("users")
    precision = {"no": "fp32"}.get(args["mixed_precision_resolved"], args["mixed_precision_resolved"])
    lines = [
        f"Pre-trained by `train.py` ({args['preset']} preset: H={config['hidden_size']}, "
        f"L={config['num_hidden_layers']}, A={config['num_attention_heads']}, up to "
        f"{config['max_position_embeddings'] - 1} purchases; {args['num_parameters']:,} parameters with the MPP "
        f"heads) on the {meta.get('source', '?')} purchases before {str(meta.get('end_date', '?'))[:10]}: "
        f"{train_users:,} training and {val_users:,} validation households, {counts['purchases_kept']:,} purchases."
        if isinstance(train_users, int) and isinstance(counts.get("purchases_kept"), int)
        else "Pre-trained by `train.py`.",
        "",
        f"Run: {args['total_steps']} optimizer steps ({args['steps_per_epoch']} per epoch), global batch "
        f"{args['batch_size']}, peak learning rate {args['learning_rate']:g} (AdamW 0.9/0.999, weight decay "
        f"{args['weight_decay']:g}, {args['warmup_steps']} warm-up steps then cosine), representation "
        f"`{config['user_representation']}`, input combination `{config.get('embedding_combination', 'mean')}`, "
        f"objective MPP" + (f" + {config['contrastive_weight']:g} x InfoNCE (two views, temperature "
                            f"{config.get('contrastive_temperature', 0.1):g})" if config.get("contrastive_weight")
                            else "") +
        f", augmentation {'on' if args['augmentation'] else 'off'}, {precision}, {args['num_processes']} process(es)"
        + (f", early stopping after {args['early_stopping_patience']} evaluations without a lower validation loss"
           f" ({'triggered' if results.get('stopped_early') else 'not triggered'})"
           if args.get("early_stopping_patience") else "") + ".",
        "",
        f"Validation MPP loss {results['eval/loss']:.4f} at step {results['step']}. Accuracy on the "
        f"{results.get('eval/count_month', 0):,} masked purchases of the held-out households (fixed masks), against "
        "rules that learn nothing: the prior (the head's most frequent training class); the user's most frequent "
        "category among their unmasked purchases (user mode); the most frequent category among the unmasked "
        "purchases of the same basket, i.e. same date and hour, else the user mode (basket mode):",
        "",
        rule_table(results, HEADS, model_name="ShopperBERT", bold_no=True),
    ]
    if figure:
        lines += ["", f"![MPP loss curve: training and validation]({figure})"]
    elif (run_dir / "loss_curve.png").is_file():
        lines += ["", f"MPP loss curve: `{run_dir / 'loss_curve.png'}`."]
    if sources:
        lines += ["", "Source files: " + ", ".join(f"`{s}`" for s in sources) + " (written by `train.py`)."]
    return "\n".join(lines)


def protocol_name(options: dict) -> str:
    """"quick mode", "full protocol" (RunOptions' defaults) or "reduced protocol", from a run's options."""
    from .run import RunOptions

    keys = ("mlp_lrs", "trans_lrs", "finetune_lrs", "mlp_max_epochs", "trans_max_epochs", "finetune_max_epochs",
            "trans_max_length")

    def schedule(values: dict) -> dict:  # JSON turned the tuples into lists
        return {k: list(values[k]) if isinstance(values.get(k), (list, tuple)) else values.get(k) for k in keys}

    if schedule(options) == schedule(asdict(RunOptions.quick())):
        return "quick mode"
    return "full protocol" if schedule(options) == schedule(asdict(RunOptions())) else "reduced protocol"


def seed_range(entry: dict) -> str:
    """`n`, or `a-b` when the task's models ran different numbers of seeds."""
    counts = sorted({m["n"] for m in entry["models"].values()}) or [0]
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


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
    lines = [
        f"Produced by `python -m eval_suite run` ({seeds}; "
        f"{protocol_name(options)}; learning rates {list(options['mlp_lrs'])} for MLPs, "
        f"{list(options['trans_lrs'])} for Transformers and {list(options['finetune_lrs'])} for fine-tuning, "
        f"chosen on validation users; at most {options['mlp_max_epochs']} epochs for MLPs, "
        f"{options['trans_max_epochs']} for Transformers, {options['finetune_max_epochs']} for fine-tuning, "
        f"with early stopping on validation; P-/UP-/T-Trans read the most recent {options['trans_max_length']} "
        "events). "
        "Mean ± standard deviation over seeds; each seed draws a new 70/15/15 user split and new fixed negatives, "
        "shared by all models." + stopped,
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
    from dataclasses import asdict

    from .__main__ import build_parser
    from .run import RunOptions
    from .tasks import TASK_NAMES

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


def eval_results(results: dict, dataset_name: str = "Complete Journey"):
    """`huggingface_hub.EvalResult`s of the primary U-MLP for the model-index metadata."""
    from huggingface_hub import EvalResult

    if "headline" not in next(iter(results["tasks"].values()), {}):
        summarise(results)
    out = []
    checkpoints = list(results.get("config", {}).get("checkpoints", {}))
    for task_name, entry in results["tasks"].items():
        umlp = primary_umlp(entry, checkpoints)  # never a trivial representation ("U-MLP SVD", ...)
        if umlp is None:
            continue
        model = entry["models"][umlp]
        for key, metric_type in METRIC_NAMES.items():
            value = model.get("mean", {}).get(key)
            if value is None:
                continue
            out.append(EvalResult(task_type=TASK_TYPES[entry["kind"]], task_name=task_name,
                                  dataset_type="completejourney", dataset_name=dataset_name, dataset_config=task_name,
                                  dataset_split=f"test users (mean of {model['n']} seeds)",
                                  metric_type=metric_type, metric_value=round(float(value), 4),
                                  metric_name=f"{key} ({umlp})"))
    return out


# Extra sections: (section name, markdown file written by the command, figure, command that writes them)
EXTRAS = {
    "recipe": ("recipe.md", None, "python -m eval_suite recipe ... (see the command file beside recipe.md)"),
    "costs": ("table3.md", None, "python -m eval_suite costs --model runs/cj-mp-a/final --data data/cj "
                                 "--out results/costs"),
    "umap": ("umap.md", "umap.png", "python -m eval_suite visualize --model runs/cj-mp-a/final --data data/cj "
                                    "--out results/umap/umap.png"),
    "ablation": ("ablation.md", "ablation.png", "python -m eval_suite ablation --out results/ablation "
                                                "--months 1,3,6,9 --repeats 3 --epochs 8 --quick"),
}


def extra_section(card: Path, name: str, folder: Path) -> str:
    """A command's own markdown output, its figure copied beside the card, and the command that wrote them.

    Raises SystemExit when the markdown file is missing or outside the card's repository.
    """
    markdown, figure, command = EXTRAS[name]
    source = repo_path(folder / markdown, card.parent, f"output of `python -m eval_suite {name}`")
    if (folder / "command.txt").is_file():  # the literal command line the output was written by
        command = (folder / "command.txt").read_text().strip()
    lines = [f"Written by `{command}` (`{source}`).", "", (folder / markdown).read_text().strip()]
    if figure and (folder / figure).is_file():
        target = f"docs/figures/{name}.png"
        (card.parent / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / figure, card.parent / target)
        lines += ["", f"![{name}]({target})"]
    return "\n".join(lines)


def release_section(card: Path, folder: Path) -> str:
    """The checksums that tie the shipped checkpoint to the card's numbers, from `eval_suite release-record`."""
    source = repo_path(folder / "release.json", card.parent, "output of `python -m eval_suite release-record`")
    record = json.loads((folder / "release.json").read_text())
    embeddings = repo_path(folder / record["embeddings_file"], card.parent, "the release's user embeddings")
    return "\n".join([
        f"Written by `{record.get('command', 'python -m eval_suite release-record')}` (`{source}`); "
        "`tests/test_release.py` checks both.",
        "",
        f"- `{record['model']}/model.safetensors`: sha256 `{record['model_sha256']}`, the weights every U-MLP "
        f"number of the card was computed from (label `{record['label']}` in `{record['results']}`).",
        f"- `{embeddings}`: sha256 `{record['embeddings_sha256']}`, the user embeddings of all "
        "households before the cutoff that the downstream runs used; re-encoding the sample households of "
        f"`{record['sample_inputs_file']}` with the shipped weights reproduces them.",
    ])


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


def update_model_card(card: Path, results: dict | None = None, results_dir: Path | list[Path] | None = None,
                      pretraining_dir: Path | None = None, model_name: str = "shopperbert",
                      extras: dict | None = None, command: str | None = None) -> None:
    """Rewrite the generated sections of a model card in place (and its model-index metadata).

    `results` (already loaded) must come with `results_dir`, the `--results` specs it came from. `extras` maps
    "costs" / "umap" / "ablation" to the output folders of those commands; `command` is the one that writes the card
    (named in the card). Every source file must exist inside the card's folder (the repository): SystemExit
    "error: ..." otherwise, before the card is touched.
    """
    from huggingface_hub import ModelCard

    root = card.parent
    dirs = results_dir if isinstance(results_dir, list) else [results_dir] if results_dir is not None else []
    if results is not None and not dirs:
        raise SystemExit("error: results without the results.json they came from: the card names the source of "
                         "every number (pass results_dir)")
    result_sources(dirs, root)  # fail before reading or writing anything
    pretraining_sources = None
    if pretraining_dir is not None:
        pretraining_sources = [repo_path(Path(pretraining_dir) / name, root, "pre-training results of train.py")
                               for name in ("eval_results.json", "run_config.json")]
    text = card.read_text() if card.is_file() else "---\nlibrary_name: transformers\n---\n"
    for name, folder in (extras or {}).items():
        body = release_section(card, Path(folder)) if name == "release" else extra_section(card, name, Path(folder))
        text = replace_section(text, name, body)
    if pretraining_dir is not None:
        figure = None
        curve = Path(pretraining_dir) / "loss_curve.png"
        if curve.is_file():  # copied beside the card so that the image shows wherever the card is read
            figure = "docs/figures/mpp_loss_curve.png"
            (card.parent / figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(curve, card.parent / figure)
        text = replace_section(text, "pretraining", pretraining_section(Path(pretraining_dir), figure,
                                                                         pretraining_sources))
    if results is None and dirs:  # several folders: runs of other seeds, merged
        results = merge_results([load_results(d) for d in dirs], [str(d) for d in dirs])
    if results is not None:
        text = replace_section(text, "results", results_section(results, dirs, root, command))
        if len(dirs) == 1 and split_results_spec(dirs[0])[1] is None:  # the tables of that one whole run
            write_tables(results, Path(dirs[0]))
    parsed = ModelCard(text)
    if results is not None:
        parsed.data.model_name = parsed.data.model_name or model_name
        parsed.data.eval_results = eval_results(results)
    card.write_text(str(parsed))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval_suite.model_card", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="model_card.md", help="the model card to update in place")
    parser.add_argument("--pretraining", default=None, help="a train.py output folder (eval_results.json, ...)")
    parser.add_argument("--results", action="append", default=None,
                        help="an eval_suite run output folder (results.json); repeat it to merge runs of other seeds "
                             "(`--first-seed`) made with the same settings; FOLDER:A-B keeps seeds A..B of a run")
    parser.add_argument("--model-name", default="shopperbert", help="name used in the model-index metadata")
    for name in EXTRAS:
        parser.add_argument(f"--{name}", default=None, help=f"output folder of `python -m eval_suite {name}`")
    parser.add_argument("--release", default=None, help="output folder of `python -m eval_suite release-record`")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    extras = {name: getattr(args, name) for name in (*EXTRAS, "release") if getattr(args, name)}
    update_model_card(Path(args.card), results_dir=list(args.results) if args.results else None,
                      pretraining_dir=Path(args.pretraining) if args.pretraining else None,
                      model_name=args.model_name, extras=extras,
                      command=shlex.join(["python", "-m", "eval_suite", "model-card", *argv]))
    print(f"updated {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
