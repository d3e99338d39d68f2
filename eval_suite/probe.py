"""`python -m eval_suite probe`: a fast linear probe of frozen user representations on the classification tasks.

    python -m eval_suite probe --model MP=runs/mp/final --model NEW=runs/new/final --data data/cj \\
        --tasks kids,coupon_targeting,nutrition_targeting --repeats 10 --representations svd,sbert,random \\
        --out results/probe-new
    python -m eval_suite probe --model ShopperBERT=shopperbert --parts --representations svd,activity \\
        --out results/probe-parts     # where does the user vector's signal come from?

For every task and seed (the same `split_users(task, seed)` 70/15/15 split as `python -m eval_suite run`), a logistic
regression on each representation (every checkpoint's user embedding, and the representation baselines of
`representations.py`: "SVD", "SBERT-mean", "Random"): features standardised on the training users, L2 penalty, balanced
class weights, C chosen on the validation users' AUROC from `PROBE_C_GRID` (ties: the smaller C), then fitted on the
training users only and scored once on the test users. Reports per task the mean ± std of the test AUROC over seeds
and writes `results.json` (atomically) in `--out` (the vectors go to `--out/embeddings/` as in `run`).

It is the cheap signal for comparing pre-training recipes (under a minute for 3 tasks x 10 seeds x 5 representations
on Complete Journey: encoding the ~2,500 households dominates); it does not replace `run` (U-MLP, the Transformers
and the classical baselines under the full protocol).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.json_files import write_json

DEFAULT_TASKS = ("kids", "coupon_targeting", "nutrition_targeting")
PROBE_C_GRID = (0.01, 0.1, 1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval_suite probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH",
                        help="a pre-trained ShopperBERT folder; repeat for several (named from their config unless "
                             "NAME= is given)")
    parser.add_argument("--data", default="data/cj", help="the pre-training corpus (data_prep folder) of the models")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help=f"comma-separated classification tasks (default: {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--repeats", type=int, default=10, help="seeds per task (default 10)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--representations", default="svd,sbert,random",
                        help="representation baselines to probe beside the checkpoints: comma-separated subset of "
                             "svd,sbert,random,activity,svd+activity, or none (default: svd,sbert,random)")
    parser.add_argument("--dim", type=int, default=None,
                        help="dimension of the SVD and random vectors (default: the first checkpoint's hidden size; "
                             "needed without --model)")
    parser.add_argument("--layers", action="store_true",
                        help="also probe each checkpoint's mean of every layer's states (NAME layer 0 = the input "
                             "embeddings ... NAME layer L = the last) and its [CLS] vector (NAME [CLS]): does the "
                             "pooling matter?")
    parser.add_argument("--parts", action="store_true",
                        help="also probe each checkpoint's mean over the purchases of each part of its input "
                             "embedding (NAME part product, text, dates, position): what does the user vector's "
                             "signal come from?")
    parser.add_argument("--out", default="results/probe", help="output folder (results.json, embeddings/)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for encoding")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .representations import parse_representations
    from .tasks import TASK_KINDS

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASK_KINDS]
    if unknown or not tasks:
        print(f"error: --tasks {args.tasks}: unknown tasks {unknown}; choose from "
              f"{[t for t, k in TASK_KINDS.items() if k == 'classification']}", file=sys.stderr)
        return 2
    not_classification = [t for t in tasks if TASK_KINDS[t] != "classification"]
    if not_classification:
        print(f"error: --tasks {args.tasks}: the probe runs classification tasks only, not {not_classification}",
              file=sys.stderr)
        return 2
    try:
        representations = parse_representations(args.representations)
    except ValueError as err:
        print(f"error: --representations {args.representations}: {err}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    if not args.model and not representations:
        print("error: nothing to probe: give --model and/or --representations", file=sys.stderr)
        return 2
    if not args.model and representations and args.dim is None:
        print("error: --dim is needed without --model (the SVD / random dimension)", file=sys.stderr)
        return 2
    if not Path(args.data).is_dir():
        print(f"error: --data {args.data}: no such folder", file=sys.stderr)
        return 2
    from .run import parse_models  # imports torch: after the arguments are known to be good

    checkpoints = parse_models(args.model) if args.model else {}
    seeds = list(range(args.first_seed, args.first_seed + args.repeats))
    command = shlex.join(["python", "-m", "eval_suite", "probe", *(sys.argv[1:] if argv is None else argv)])
    results = probe(checkpoints, Path(args.data), tasks, Path(args.out), seeds, representations, args.dim,
                    args.threads, command=command, layers=args.layers, parts=args.parts)
    print("\n" + format_table(results))
    print(f"\nwrote {Path(args.out) / 'results.json'} ({results['seconds']:.0f} s)")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------------------------
def linear_probe(x_train, y_train, x_val, y_val, x_test, y_test, c_grid=PROBE_C_GRID) -> dict:
    """Standardise on train, fit an L2 logistic regression per C on train, keep the C with the best validation
    AUROC (ties: the smaller C), report its test AUROC. Inputs: (N, D) arrays and 0/1 labels. The solver is
    Newton-Cholesky: exact, a handful of iterations for a few hundred features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(x) for x in (x_train, x_val, x_test))
    by_c, best = {}, None
    for c in sorted(c_grid):
        model = LogisticRegression(C=c, class_weight="balanced", solver="newton-cholesky",
                                   max_iter=200).fit(x_train, y_train)
        score = _auroc(model.decision_function(x_val), y_val)
        by_c[f"{c:g}"] = score
        if best is None or score > best[0]:
            best = (score, c, model)
    score, c, model = best
    return {"auroc": _auroc(model.decision_function(x_test), y_test), "val_auroc": score, "C": c,
            "val_auroc_by_C": by_c}


def _auroc(scores, labels) -> float:
    """AUROC (0.5 when the labels hold one class), as `evaluation.auroc` computes it."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() == labels.max():
        return 0.5
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def probe_tasks(tasks: dict, user_ids, embeddings: dict[str, np.ndarray], seeds, log=print) -> dict:
    """Linear probes of every representation (`embeddings`: name -> (U, D) rows aligned with `user_ids`) on every
    classification task and seed. Returns {"tasks": {task: {"kind", "models": {name: {"seeds": {seed: metrics},
    "n", "mean", "std"}}}}, "summary": {name: mean test AUROC over the tasks}}."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # many small fits: threaded BLAS only adds overhead (10x on a busy machine)
        return _probe_tasks(tasks, user_ids, embeddings, seeds, log)


def _probe_tasks(tasks: dict, user_ids, embeddings: dict[str, np.ndarray], seeds, log) -> dict:
    from .tasks import split_users

    position = {str(u): i for i, u in enumerate(user_ids)}
    results: dict = {"tasks": {}}
    for task_name, task in tasks.items():
        if task.kind != "classification":
            raise ValueError(f"task {task_name!r} is not a classification task")
        labels = dict(zip(task.users["user_id"].astype(str), task.users["label"].astype(int)))
        entry = results["tasks"].setdefault(task_name, {"kind": task.kind, "models": {}})
        start = time.perf_counter()
        for seed in seeds:
            split = split_users(task, seed)
            parts = {k: [str(u) for u in split[k]] for k in ("train", "validation", "test")}
            missing = [u for users in parts.values() for u in users if u not in position]
            if missing:
                raise KeyError(f"{len(missing)} users of {task_name} have no representation, e.g. {missing[:3]}")
            index = {k: np.array([position[u] for u in users], dtype=np.int64) for k, users in parts.items()}
            y = {k: np.array([labels[u] for u in users], dtype=np.int64) for k, users in parts.items()}
            for name, matrix in embeddings.items():
                metrics = linear_probe(matrix[index["train"]], y["train"], matrix[index["validation"]],
                                       y["validation"], matrix[index["test"]], y["test"])
                entry["models"].setdefault(name, {"seeds": {}})["seeds"][str(seed)] = metrics
        log(f"[{task_name}] {len(seeds)} seed(s) x {len(embeddings)} representation(s) in "
            f"{time.perf_counter() - start:.1f} s")
    summarise(results)
    return results


def summarise(results: dict) -> dict:
    """Mean and std (ddof 1) over seeds of `auroc` and `val_auroc` per task and representation; the mean test
    AUROC over the tasks per representation (`summary`)."""
    per_model: dict[str, list] = {}
    for entry in results["tasks"].values():
        for name, model in entry["models"].items():
            model["n"] = len(model["seeds"])
            model["mean"], model["std"] = {}, {}
            for key in ("auroc", "val_auroc"):
                values = [m[key] for m in model["seeds"].values()]
                model["mean"][key] = float(np.mean(values))
                model["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            per_model.setdefault(name, []).append(model["mean"]["auroc"])
    results["summary"] = {name: float(np.mean(values)) for name, values in per_model.items()}
    return results


def format_table(results: dict) -> str:
    """Markdown: one row per representation, test AUROC mean ± std per task, and the mean over the tasks."""
    tasks = list(results["tasks"])
    names = list(results.get("summary", {}))
    n = max((m["n"] for e in results["tasks"].values() for m in e["models"].values()), default=0)
    lines = [f"Linear probe: test AUROC, mean ± std over {n} seed(s) (C chosen on validation)", "",
             "| representation | " + " | ".join(tasks) + " | mean |", "|---|" + "---:|" * (len(tasks) + 1)]
    for name in names:
        cells = []
        for task in tasks:
            model = results["tasks"][task]["models"].get(name)
            cells.append(f"{model['mean']['auroc']:.4f} ± {model['std']['auroc']:.4f}" if model else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results['summary'][name]:.4f} |")
    return "\n".join(lines)


def write_results(path: Path, results: dict) -> None:
    """JSON, written to a temporary file and renamed (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results, indent=1)


def probe(checkpoints: dict, data: Path, task_names, out: Path, seeds, representations=("svd", "sbert", "random"),
          dim: int | None = None, threads: int | None = None, log=print, command: str | None = None,
          layers: bool = False, parts: bool = False) -> dict:
    """Encode the households with every checkpoint, build the representation baselines, probe every task and seed,
    and write `out/results.json` (`command`, the literal command line, goes to its config). With `layers`, every
    checkpoint is also probed pooled over each layer and by its [CLS] vector (`layer_embeddings`); with `parts`, by
    the mean of each part of its input embedding (`part_embeddings`)."""
    import torch

    from .inputs import Corpus
    from .run import Inputs, RunOptions
    from .tasks import build_task, load_raw_tables, tables_for

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    options = RunOptions(representations=tuple(representations))
    inputs = Inputs(Corpus.load(data), checkpoints, out, options, log, representation_dim=dim)
    tables = load_raw_tables(tables=tables_for(task_names))
    tasks = {name: build_task(name, tables) for name in task_names}
    embeddings = dict(inputs.embeddings)
    if layers:
        for name, path in checkpoints.items():
            embeddings.update(layer_embeddings(name, path, inputs.purchases, log))
    if parts:
        for name, path in checkpoints.items():
            embeddings.update(part_embeddings(name, path, inputs.purchases, log))
    probed = probe_tasks(tasks, inputs.purchases.user_ids, embeddings, list(seeds), log)
    results = {"config": {"command": command or "probe", "checkpoints": {k: str(v) for k, v in checkpoints.items()},
                         "data": str(data), "tasks": list(task_names), "seeds": [int(s) for s in seeds],
                         "representations": list(inputs.representations), "c_grid": list(PROBE_C_GRID),
                         "layers": layers, "parts": parts,
                         "protocol": "linear probe: standardised features, L2 logistic regression (balanced "
                                     "classes), C chosen on validation AUROC, test AUROC"}, **probed}
    results["seconds"] = time.perf_counter() - started
    write_results(out / "results.json", results)
    return results


def layer_embeddings(name: str, path, purchases, log=print) -> dict[str, np.ndarray]:
    """The checkpoint's households pooled like its user vector over every layer's states ("NAME layer k", k = 0 the
    input embeddings ... L the last) and its final [CLS] vector ("NAME [CLS]"), for `probe --layers`."""
    import warnings

    from tqdm.auto import tqdm

    from modeling_shopperbert import UserEncoder

    from .inputs import embed_users

    encoder = UserEncoder.from_pretrained(path, device="cpu")
    other = "cls" if encoder.config.user_representation == "mean" else "mean"
    variants = {f"{name} layer {k}": {"hidden_layer": k} for k in range(encoder.config.num_hidden_layers + 1)}
    variants[f"{name} [CLS]" if other == "cls" else f"{name} mean"] = {"user_representation": other}
    start = time.perf_counter()
    vectors = {}
    with warnings.catch_warnings():  # the other pooling of the checkpoint: asked for on purpose
        warnings.simplefilter("ignore", UserWarning)
        for label, options in tqdm(variants.items(), desc=f"{name}: layers and poolings", unit="variant"):
            vectors[label] = embed_users(encoder, purchases, **options)
    log(f"{name}: {len(vectors)} layer/pooling variants in {time.perf_counter() - start:.1f} s")
    return vectors


#: The parts of ShopperBERT's input embedding `part_embeddings` pools: its name -> the module whose output it is.
INPUT_PARTS = {"product": "product_projection", "text": "text_projection", "dates": "date_embeddings",
               "position": "position_embeddings"}


def part_embeddings(name: str, path, purchases, log=print, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The mean over each household's purchases of each part of the checkpoint's input embedding, before they are
    averaged and normalised into the token vector ("NAME part product": x_prod, the projection of the four category
    embeddings and the text; "text": the text projection alone; "dates": the mean of the five date embeddings;
    "position": the position embedding), for `probe --parts`. Read off the embedding layer's modules by forward
    hooks; households without purchases get zero vectors."""
    import torch
    from tqdm.auto import tqdm

    from modeling_shopperbert import UserEncoder
    from modeling_shopperbert.collator import ShopperBertCollator
    from modeling_shopperbert.modeling_shopperbert import user_pooling_mask

    encoder = UserEncoder.from_pretrained(path, device="cpu")
    layer = encoder.model.embeddings
    seen: dict[str, list] = {}
    hooks = [getattr(layer, module).register_forward_hook(
        lambda _m, _i, output, part=part: seen.setdefault(part, []).append(output))
        for part, module in INPUT_PARTS.items() if part != "dates"]
    hooks += [emb.register_forward_hook(lambda _m, _i, output: seen.setdefault("dates", []).append(output))
              for emb in layer.date_embeddings]
    collator = ShopperBertCollator.from_config(encoder.config, purchases.text_embeddings)
    keep = np.flatnonzero(np.asarray(purchases.lengths) > 0)
    out = {part: np.zeros((len(purchases.rows), encoder.config.hidden_size), np.float32) for part in INPUT_PARTS}
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for first in tqdm(range(0, len(keep), batch_size), desc=f"{name}: input parts", unit="batch"):
                rows = keep[first:first + batch_size]
                batch = collator([purchases.rows[i] for i in rows])
                seen.clear()
                encoder.model.embeddings(batch["category_ids"], batch["date_ids"], batch["text_embeds"])
                mask = (user_pooling_mask(batch["category_ids"]) & batch["attention_mask"].bool()).unsqueeze(-1)
                count = mask.sum(dim=1).clamp(min=1)  # (B, 1)
                for part, tensors in seen.items():
                    states = torch.stack(tensors).mean(dim=0) if part == "dates" else tensors[0]  # (B or 1, T, H)
                    states = states.expand(mask.shape[0], -1, -1)  # the position part is shared by the batch
                    out[part][rows] = ((states * mask).sum(dim=1) / count).numpy()  # (B, H)
    finally:
        for hook in hooks:
            hook.remove()
    log(f"{name}: the {len(INPUT_PARTS)} parts of the input embedding in {time.perf_counter() - start:.1f} s")
    return {f"{name} part {part}": vectors for part, vectors in out.items()}


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["INPUT_PARTS", "PROBE_C_GRID", "format_table", "layer_embeddings", "linear_probe", "main", "part_embeddings",
           "probe", "probe_tasks", "write_results"]
