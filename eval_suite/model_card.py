"""Model-card sections generated from result files (never typed in).

    python -m eval_suite.model_card --card model_card.md --pretraining runs/cj-small --results results/demo

Sections between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers are replaced: `pretraining` (data, run,
MPP accuracy per head against the prior baseline), `results` (Tables 4-6 and the headline check), and the
`model-index` of the YAML front matter (one entry per task for the primary U-MLP).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from .report import (complete_seeds, headline_table, merge_results, summarise, table4, table5, table6,
                     write_tables)

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


def pretraining_section(run_dir: Path, figure: str | None = None) -> str:
    """The pre-training data, run and the 'does it learn' table (validation MPP accuracy vs the prior)."""
    results = json.loads((run_dir / "eval_results.json").read_text())
    run = json.loads((run_dir / "run_config.json").read_text())
    args, config = run["args"], run["model_config"]
    meta_file = run_dir / "final" / "metadata.json"
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
        f"`{config['user_representation']}`, augmentation {'on' if args['augmentation'] else 'off'}, {precision}, "
        f"{args['num_processes']} process(es).",
        "",
        f"Validation MPP loss {results['eval/loss']:.4f} at step {results['step']}. Accuracy on the "
        f"{results.get('eval/count_month', 0):,} masked purchases of the held-out households (fixed masks), against "
        "the prior baseline that always predicts the head's most frequent class in the training data:",
        "",
        "| head | ShopperBERT | prior baseline | better? |",
        "|---|---:|---:|---|",
    ]
    for head in HEADS:
        ours, prior = results[f"eval/accuracy_{head}"], results[f"eval/prior_accuracy_{head}"]
        verdict = "yes" if ours > prior else ("tie (one class)" if prior >= 0.9999 else "no")
        lines.append(f"| {head} | {ours:.4f} | {prior:.4f} | {verdict} |")
    if figure:
        lines += ["", f"![MPP loss curve: training and validation]({figure})"]
    elif (run_dir / "loss_curve.png").is_file():
        lines += ["", f"MPP loss curve: `{run_dir / 'loss_curve.png'}`."]
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


def results_section(results: dict, results_dir: Path | list[Path] | None = None) -> str:
    options = results["config"]["options"]
    stopped = ""
    if "seconds" not in results:  # stopped before its last seed: report only the seeds every model finished
        started = {s for e in results["tasks"].values() for m in e["models"].values() for s in m["seeds"]}
        complete_seeds(results)
        summarise(results)
        stopped = (f" Not every run finished its seeds ({len(started)} seeds started); each task reports only "
                   "the seeds that all of its models finished.")
    elif "headline" not in next(iter(results["tasks"].values()), {}):
        summarise(results)
    counts = {name: min((m["n"] for m in e["models"].values()), default=0) for name, e in results["tasks"].items()}
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
        "### The paper's headline, task by task (paired t-test over seeds)",
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
        dirs = results_dir if isinstance(results_dir, list) else [results_dir]
        raw = []
        for folder, seeds in map(split_results_spec, dirs):
            span = "" if not seeds else (f" (seed {seeds[0]})" if seeds[0] == seeds[1]
                                         else f" (seeds {seeds[0]}-{seeds[1]})")
            raw.append(f"`{folder / 'results.json'}`{span}")
        lines += ["", "Raw results: " + ", ".join(raw) + "."]
    return "\n".join(lines)


def eval_results(results: dict, dataset_name: str = "Complete Journey"):
    """`huggingface_hub.EvalResult`s of the primary U-MLP for the model-index metadata."""
    from huggingface_hub import EvalResult

    if "headline" not in next(iter(results["tasks"].values()), {}):
        summarise(results)
    out = []
    for task_name, entry in results["tasks"].items():
        umlps = [n for n in entry["models"] if n.startswith("U-MLP")]
        if not umlps:
            continue
        model = entry["models"][umlps[0]]
        for key, metric_type in METRIC_NAMES.items():
            value = model.get("mean", {}).get(key)
            if value is None:
                continue
            out.append(EvalResult(task_type=TASK_TYPES[entry["kind"]], task_name=task_name,
                                  dataset_type="completejourney", dataset_name=dataset_name, dataset_config=task_name,
                                  dataset_split=f"test users (mean of {model['n']} seeds)",
                                  metric_type=metric_type, metric_value=round(float(value), 4),
                                  metric_name=f"{key} ({umlps[0]})"))
    return out


# Extra sections: (section name, markdown file written by the command, figure, command that writes them)
EXTRAS = {
    "costs": ("table3.md", None, "python -m eval_suite costs --model runs/cj-mp-a/final --data data/cj "
                                 "--out results/costs"),
    "umap": ("umap.md", "umap.png", "python -m eval_suite visualize --model runs/cj-mp-a/final --data data/cj "
                                    "--out results/umap/umap.png"),
    "ablation": ("ablation.md", "ablation.png", "python -m eval_suite ablation --out results/ablation "
                                                "--months 1,3,6,9 --repeats 3 --epochs 8 --quick"),
}


def extra_section(card: Path, name: str, folder: Path) -> str:
    """A command's own markdown output, its figure copied beside the card, and the command that wrote them."""
    markdown, figure, command = EXTRAS[name]
    lines = [f"Written by `{command}`.", "", (folder / markdown).read_text().strip()]
    if figure and (folder / figure).is_file():
        target = f"docs/figures/{name}.png"
        (card.parent / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / figure, card.parent / target)
        lines += ["", f"![{name}]({target})"]
    return "\n".join(lines)


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
                      extras: dict | None = None) -> None:
    """Rewrite the generated sections of a model card in place (and its model-index metadata).

    `extras` maps "costs" / "umap" / "ablation" to the output folders of those commands.
    """
    from huggingface_hub import ModelCard

    text = card.read_text() if card.is_file() else "---\nlibrary_name: transformers\n---\n"
    for name, folder in (extras or {}).items():
        text = replace_section(text, name, extra_section(card, name, Path(folder)))
    if pretraining_dir is not None:
        figure = None
        curve = Path(pretraining_dir) / "loss_curve.png"
        if curve.is_file():  # copied beside the card so that the image shows wherever the card is read
            figure = "docs/figures/mpp_loss_curve.png"
            (card.parent / figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(curve, card.parent / figure)
        text = replace_section(text, "pretraining", pretraining_section(Path(pretraining_dir), figure))
    dirs = results_dir if isinstance(results_dir, list) else [results_dir] if results_dir is not None else []
    if results is None and dirs:  # several folders: runs of other seeds, merged
        results = merge_results([load_results(d) for d in dirs], [str(d) for d in dirs])
    if results is not None:
        text = replace_section(text, "results", results_section(results, results_dir))
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
    args = parser.parse_args(argv)
    extras = {name: getattr(args, name) for name in EXTRAS if getattr(args, name)}
    update_model_card(Path(args.card), results_dir=list(args.results) if args.results else None,
                      pretraining_dir=Path(args.pretraining) if args.pretraining else None,
                      model_name=args.model_name, extras=extras)
    print(f"updated {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
