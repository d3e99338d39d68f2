"""`python -m eval_suite visualize`: the paper's Figure 2 (UMAP of the user representations by demographics).

    python -m eval_suite visualize --embeddings results/demo/embeddings/MP+A.parquet --out results/demo/umap.png
    python -m eval_suite visualize --model runs/cj-small/final --data data/cj --out results/demo/umap.png

The households of Complete Journey with demographics (801; the paper drew 50,000 users) are projected to two
dimensions with UMAP, one panel per demographic attribute (age, income, household size, kids, marital status,
home ownership). Demographics are never a pre-training input (the `kids` downstream task uses `kids_count` as its
label, nothing else uses them).

The figure's claim, "the embeddings carry demographic signal", is also measured: for each attribute, a 5-fold
cross-validated logistic regression predicts the attribute from the embedding (macro one-vs-rest AUROC and
accuracy on out-of-fold predictions), against the same pipeline on shuffled labels (`--permutations` shuffles give
the chance level and a permutation p-value). Written beside the figure: `<out>.json` (probe results and settings),
`<out>.md` (the probe table) and `<out>.csv` (the 2-D coordinates with the attributes, to re-plot).

UMAP needs `umap-learn` (`pip install umap-learn`, the `viz` extra); `--method pca` draws without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

#: Attribute -> its categories in display order (ordinal attributes low to high).
ATTRIBUTES = {
    "age": ["19-24", "25-34", "35-44", "45-54", "55-64", "65+"],
    "income": ["Under 15K", "15-24K", "25-34K", "35-49K", "50-74K", "75-99K", "100-124K", "125-149K", "150-174K",
               "175-199K", "200-249K", "250K+"],
    "household_size": ["1", "2", "3", "4", "5+"],
    "kids_count": ["0", "1", "2", "3+"],
    "marital_status": ["Married", "Unmarried"],
    "home_ownership": ["Homeowner", "Probable Homeowner", "Renter", "Probable Renter"],
    "household_comp": ["1 Adult No Kids", "2 Adults No Kids", "1 Adult Kids", "2 Adults Kids"],
}
ORDINAL = {"age", "income", "household_size", "kids_count"}
DEFAULT_ATTRIBUTES = ("age", "income", "household_size", "kids_count", "marital_status", "home_ownership")


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def load_demographics(data_dir=None) -> pd.DataFrame:
    """Complete Journey's demographics table: `user_id` (str) and the attributes (str, NaN where unknown)."""
    from data_prep.sources import read_completejourney_table

    demo = read_completejourney_table("demographics", data_dir=data_dir)
    demo.insert(0, "user_id", demo.pop("household_id").astype(str))
    return demo.reset_index(drop=True)


def read_embeddings(path) -> tuple[np.ndarray, np.ndarray]:
    from modeling_shopperbert import read_user_embeddings

    ids, vectors = read_user_embeddings(path)
    return np.asarray(ids, dtype=object), vectors


def encode_households(checkpoint, data, user_ids, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Embed households with a checkpoint: their purchases before the cutoff, encoded with the corpus vocabulary
    (the same inputs `eval_suite run` gives U-MLP). Households without any purchase are left out."""
    from ..inputs import Corpus, embed_users, purchase_inputs

    purchases = purchase_inputs(Corpus.load(data))
    position = {u: i for i, u in enumerate(purchases.user_ids)}
    ids = [u for u in user_ids if u in position and purchases.lengths[position[u]] > 0]
    return np.asarray(ids, dtype=object), embed_users(checkpoint, purchases, ids, device=device)


def align(ids, vectors, demographics: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The households present in both, in the demographics' order."""
    position = {str(u): i for i, u in enumerate(ids)}
    demo = demographics[demographics["user_id"].isin(position)].reset_index(drop=True)
    if len(demo) == 0:
        raise ValueError("no household has both an embedding and demographics (are the user ids household ids?)")
    return demo, np.asarray(vectors)[[position[u] for u in demo["user_id"]]]


# ---------------------------------------------------------------------------------------------------------------
# Projection and figure
# ---------------------------------------------------------------------------------------------------------------
def project(vectors: np.ndarray, method: str = "umap", seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
            metric: str = "cosine") -> np.ndarray:
    """Two-dimensional coordinates of the vectors (UMAP, or PCA as the dependency-free fallback)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(vectors)
    if method != "umap":
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    try:
        import umap  # slow import (numba compiles): only here
    except ImportError as exc:
        raise SystemExit("error: UMAP needs umap-learn: `pip install umap-learn` (or `pip install -e .[viz]`); "
                         "`--method pca` draws without it") from exc
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(vectors) - 1), min_dist=min_dist,
                        metric=metric, random_state=seed, n_jobs=1)  # a seed makes UMAP single-threaded
    return reducer.fit_transform(vectors)


def _categories(values: pd.Series, attribute: str) -> list[str]:
    known = ATTRIBUTES.get(attribute)
    present = set(values.dropna().astype(str))
    if known:
        return [c for c in known if c in present] + sorted(present - set(known))
    return sorted(present)


def plot(coords: np.ndarray, demographics: pd.DataFrame, attributes, out_png, title: str = "",
         probe: dict | None = None) -> Path:
    """One scatter panel per attribute, coloured by category (unknown values in light grey, underneath)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attributes = list(attributes)
    cols = min(3, len(attributes))
    rows = int(np.ceil(len(attributes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 5.4 * rows), squeeze=False)
    for ax, attribute in zip(axes.flat, attributes):
        values = demographics[attribute]
        unknown = values.isna().to_numpy()
        if unknown.any():
            ax.scatter(coords[unknown, 0], coords[unknown, 1], s=6, c="#dddddd", label=f"unknown ({unknown.sum()})",
                       linewidths=0)
        categories = _categories(values, attribute)
        cmap = plt.get_cmap("viridis" if attribute in ORDINAL else "tab10")
        for i, category in enumerate(categories):
            mask = (values.astype(str) == category).to_numpy() & ~unknown
            colour = cmap(i / max(1, len(categories) - 1)) if attribute in ORDINAL else cmap(i % 10)
            ax.scatter(coords[mask, 0], coords[mask, 1], s=8, color=colour, label=f"{category} ({mask.sum()})",
                       linewidths=0, alpha=0.85)
        heading = attribute.replace("_", " ")
        if probe and attribute in probe and probe[attribute].get("auroc") is not None:
            p = probe[attribute]
            heading += f"\nprobe AUROC {p['auroc']:.3f}"
            if "shuffled_auroc_mean" in p:
                heading += f" (shuffled labels {p['shuffled_auroc_mean']:.3f}, p={p['permutation_p']:.2g})"
        ax.set_title(heading, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.8, loc="upper center", bbox_to_anchor=(0.5, -0.01), frameon=False,
                  ncol=min(4, len(categories) + int(unknown.any())), columnspacing=0.8, handletextpad=0.2)
    for ax in list(axes.flat)[len(attributes):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=130)
    plt.close(fig)
    return out_png


# ---------------------------------------------------------------------------------------------------------------
# The quantitative check
# ---------------------------------------------------------------------------------------------------------------
def _oof_scores(vectors, labels, folds: int, seed: int, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, vectors, labels, cv=cv, method="predict_proba")


def _auroc(labels, proba) -> float:
    from sklearn.metrics import roc_auc_score

    if proba.shape[1] == 2:
        return float(roc_auc_score(labels, proba[:, 1]))
    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


def probe_attribute(vectors: np.ndarray, values: pd.Series, folds: int = 5, permutations: int = 20, seed: int = 0,
                    C: float = 1.0, min_class_size: int = 10) -> dict:
    """Out-of-fold logistic-regression AUROC/accuracy of one attribute from the embeddings, and the same on
    shuffled labels. Households with an unknown value, and categories with fewer than `min_class_size`
    households, are left out (named in the result)."""
    values = values.astype("object")
    known = values.notna().to_numpy()
    counts = values[known].astype(str).value_counts()
    dropped = sorted(counts[counts < max(min_class_size, folds)].index)
    keep = known & ~values.astype(str).isin(dropped).to_numpy()
    labels = values[keep].astype(str).to_numpy()
    X = np.asarray(vectors, dtype=np.float64)[keep]
    classes = sorted(set(labels))
    result = {"n": int(keep.sum()), "classes": len(classes), "dropped_classes": dropped,
              "majority_accuracy": float(counts.drop(dropped, errors="ignore").max() / max(1, keep.sum()))
              if len(classes) else None}
    if len(classes) < 2:
        result.update(auroc=None, accuracy=None, note="fewer than two categories with enough households")
        return result
    proba = _oof_scores(X, labels, folds, seed, C)
    order = np.array(sorted(classes))
    result["auroc"] = _auroc(labels, proba)
    result["accuracy"] = float(np.mean(order[proba.argmax(1)] == labels))
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(permutations):
        permuted = rng.permutation(labels)
        shuffled.append(_auroc(permuted, _oof_scores(X, permuted, folds, seed, C)))
    if shuffled:
        result["shuffled_auroc_mean"] = float(np.mean(shuffled))
        result["shuffled_auroc_std"] = float(np.std(shuffled, ddof=1)) if len(shuffled) > 1 else 0.0
        result["shuffled_auroc_max"] = float(np.max(shuffled))
        result["permutation_p"] = float((1 + sum(s >= result["auroc"] for s in shuffled)) / (1 + len(shuffled)))
        if result["shuffled_auroc_std"] > 0:
            result["z"] = float((result["auroc"] - result["shuffled_auroc_mean"]) / result["shuffled_auroc_std"])
    result["permutations"] = int(permutations)
    return result


def probe(vectors: np.ndarray, demographics: pd.DataFrame, attributes, **kwargs) -> dict:
    return {a: probe_attribute(vectors, demographics[a], **kwargs) for a in attributes}


def probe_table(results: dict) -> str:
    lines = ["| Attribute | Households | Classes | AUROC (5-fold LR) | Shuffled labels AUROC | z | p (permutation) "
             "| Accuracy | Majority class |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for attribute, r in results.items():
        if r.get("auroc") is None:
            lines.append(f"| {attribute} | {r['n']} | {r['classes']} | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        shuffled = (f"{r['shuffled_auroc_mean']:.3f} ± {r['shuffled_auroc_std']:.3f}"
                    if "shuffled_auroc_mean" in r else "n/a")
        p = f"{r['permutation_p']:.3f}" if "permutation_p" in r else "n/a"
        z = f"{r['z']:.1f}" if "z" in r else "n/a"
        lines.append(f"| {attribute} | {r['n']} | {r['classes']} | {r['auroc']:.3f} | {shuffled} | {z} | {p} "
                     f"| {r['accuracy']:.3f} | {r['majority_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval_suite visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", help="user embeddings parquet (user_id, embedding), e.g. written by "
                                             "`eval_suite run` in <out>/embeddings/")
    source.add_argument("--model", help="a pre-trained ShopperBERT folder: encode the households with it")
    p.add_argument("--data", default="data/cj", help="with --model: the model's pre-training corpus")
    p.add_argument("--out", required=True, help="the figure (PNG); .json/.md/.csv are written beside it")
    p.add_argument("--attributes", default=",".join(DEFAULT_ATTRIBUTES),
                   help=f"comma-separated demographic columns (default {','.join(DEFAULT_ATTRIBUTES)}; also "
                        "household_comp)")
    p.add_argument("--method", choices=("umap", "pca"), default="umap", help="2-D projection (default umap)")
    p.add_argument("--n-neighbors", type=int, default=15, help="UMAP n_neighbors")
    p.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist")
    p.add_argument("--metric", default="cosine", help="UMAP metric (default cosine)")
    p.add_argument("--permutations", type=int, default=20, help="shuffled-label repeats of the probe (0 = none)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probe")
    p.add_argument("--no-probe", action="store_true", help="only draw the figure")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--device", default="cpu", help="with --model: where to encode")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    demographics = load_demographics()
    unknown = [a for a in attributes if a not in demographics.columns or a == "user_id"]
    if unknown:
        print(f"error: unknown attributes {unknown}; choose from {list(demographics.columns[1:])}", file=sys.stderr)
        return 2
    if args.embeddings:
        if not Path(args.embeddings).is_file():
            print(f"error: --embeddings {args.embeddings}: no such file", file=sys.stderr)
            return 2
        ids, vectors = read_embeddings(args.embeddings)
        source = str(args.embeddings)
    else:
        if not (Path(args.model) / "config.json").is_file():
            print(f"error: --model {args.model}: not a saved ShopperBERT folder (no config.json)", file=sys.stderr)
            return 2
        ids, vectors = encode_households(args.model, args.data, list(demographics["user_id"]), args.device)
        source = str(args.model)
    demo, X = align(ids, vectors, demographics)
    print(f"{len(demo)} households with demographics and an embedding ({X.shape[1]}-d) from {source}")
    coords = project(X, args.method, args.seed, args.n_neighbors, args.min_dist, args.metric)
    results = None
    if not args.no_probe:
        results = probe(X, demo, attributes, folds=args.folds, permutations=args.permutations, seed=args.seed)
    out = Path(args.out)
    label = "/".join(Path(source).parts[-2:])
    title = args.title or (f"{args.method.upper()} of {len(demo)} households' user embeddings ({label}); "
                           "demographics are not a pre-training input")
    plot(coords, demo, attributes, out, title=title, probe=results)
    table = demo[["user_id", *attributes]].copy()
    table.insert(1, "x", coords[:, 0])
    table.insert(2, "y", coords[:, 1])
    table.to_csv(out.with_suffix(".csv"), index=False)
    summary = {"source": source, "households": int(len(demo)), "dim": int(X.shape[1]), "method": args.method,
               "umap": {"n_neighbors": args.n_neighbors, "min_dist": args.min_dist, "metric": args.metric}
               if args.method == "umap" else None,
               "probe": results, "probe_protocol": (
                   f"StandardScaler + LogisticRegression(C=1), {args.folds}-fold stratified CV, out-of-fold "
                   "macro one-vs-rest AUROC; chance level from the same pipeline on shuffled labels "
                   f"({args.permutations} shuffles)"),
               "seed": args.seed, "seconds": time.perf_counter() - start}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    if results is not None:
        text = probe_table(results)
        out.with_suffix(".md").write_text(
            f"Demographic signal in the user embeddings ({source}, {len(demo)} households)\n\n{text}")
        print("\n" + text)
    print(f"wrote {out} (+ .json, .csv{', .md' if results is not None else ''}) in "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
