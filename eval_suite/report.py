"""Aggregation over seeds, the headline's statistics and the markdown tables shaped like the paper's Tables 4-6.

The headline compares U-MLP on the primary checkpoint with three partners per task: the best model trained end to
end (P-/UP-/T-Trans, fine-tuning), the best label-aware classical baseline and the best trivial representation,
each chosen on its mean *validation* metric (`choose_partner`). Every seed draws a new 70/15/15 user split, so the
seeds' training sets overlap and their differences are correlated: a plain paired t-test over seeds understates the
variance. The test is Nadeau & Bengio's corrected resampled t-test (`corrected_resampled_ttest`), its p-values are
Holm-adjusted across the tasks (`holm`, one family per comparison column), and no verdict is read from fewer than
`MIN_SEEDS_FOR_VERDICT` seeds (`verdict`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .tasks import COLD_HEAVY_FRACTION, SPLIT_FRACTIONS

CLASSIFICATION_METRICS = (("auroc", "AUROC"), ("f1", "F1"), ("accuracy", "Accuracy"))
# Threshold-free references for accuracy, shown in Table 4 when a run records them (either spelling).
REFERENCE_ACCURACY = ((("accuracy@0.5", "accuracy_at_0.5"), "Accuracy at threshold 0.5"),
                      (("majority_accuracy", "majority_rate"), "Majority-class rate"))
RANKING_METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr", "MRR"),
                   ("full_hr@10", "full HR@10"), ("full_ndcg@10", "full NDCG@10"), ("full_mrr", "full MRR"))
GROUP_METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr", "MRR"))
PRIMARY = {"classification": "auroc", "recommendation": "mrr"}
# What each model was selected on (its learning rate, C, ...): the partners of the headline are chosen on it too.
VALIDATION = {"classification": "val_auroc", "recommendation": "val_mrr"}
# Partners of the headline. A model belongs to a group when its name is one of these or starts with one and a
# space ("UP-Trans MP+A", "Fine-tuned MP+A").
FROM_SCRATCH = ("P-Trans", "UP-Trans", "T-Trans", "Fine-tuned")
BASELINES = ("LogReg TF-IDF+RFM", "LogReg RFM", "Popularity", "Co-occurrence", "Popularity (train labels)", "Hybrid")
TRIVIAL = ("U-MLP SVD", "U-MLP SBERT-mean", "U-MLP Random", "U-MLP Activity", "U-MLP SVD+activity")
PARTNERS = {"from_scratch": ("best from scratch", FROM_SCRATCH),
            "classical": ("best classical baseline", BASELINES),
            "trivial": ("best trivial representation", TRIVIAL)}
MIN_SEEDS_FOR_VERDICT = 5
ALPHA = 0.05
SMALL_GROUP = 20  # Table 6: cold/heavy groups with fewer users than this get a caveat mark


def _numeric_keys(seeds: dict) -> list[str]:
    keys = set()
    for metrics in seeds.values():
        keys |= {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(keys)


def _in_group(name: str, group: tuple) -> bool:
    return any(name == g or name.startswith(g + " ") for g in group)


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------
def paired_test(a: list[float], b: list[float]) -> dict:
    """Plain paired t-test (and Wilcoxon signed-rank with 6+ pairs) of a - b over seeds.

    Kept for the per-model comparisons; it ignores that the seeds' training sets overlap, so its p-values are too
    small: the headline uses `corrected_resampled_ttest`.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    out = {"n": int(len(diff)), "mean_diff": float(diff.mean()) if len(diff) else math.nan,
           "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}
    if len(diff) >= 2 and np.any(diff != diff[0]):
        out["t_pvalue"] = float(stats.ttest_rel(a, b).pvalue)
    elif len(diff) >= 2:
        out["t_pvalue"] = 0.0 if diff[0] != 0 else 1.0
    if len(diff) >= 6 and np.any(diff != 0):
        out["wilcoxon_pvalue"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def corrected_resampled_ttest(a, b, n_train: float = SPLIT_FRACTIONS[0], n_test: float = SPLIT_FRACTIONS[2]) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test of a - b over seeds (one random train/test split each).

    With d = a - b over the J seeds, m its mean and s2 its sample variance (ddof 1):
    t = m / sqrt((1/J + n_test/n_train) * s2), two-sided p from Student's t with J - 1 degrees of freedom. The
    n_test/n_train term stands for the correlation between seeds whose training sets overlap (a plain paired t-test
    uses 1/J alone). `n_train` and `n_test` are counts or fractions of users: only their ratio matters; the
    defaults are the 70/15/15 split's.

    Returns t, p, n, mean_diff, wins, losses. Degenerate cases, with a `reason`: fewer than 2 seeds -> t and p NaN;
    every seed differs by the same amount (zero variance) -> t = 0, p = 1 when that amount is 0, else t = ±inf,
    p = 0. Raises ValueError on arrays of different lengths, NaN values or n_train <= 0.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values of different shapes: {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("NaN among the paired values: leave those seeds out")
    if not n_train > 0 or not n_test >= 0:
        raise ValueError(f"n_train must be positive and n_test non-negative, not {n_train} and {n_test}")
    d = a - b
    j = len(d)
    out = {"t": math.nan, "p": math.nan, "n": j, "mean_diff": float(d.mean()) if j else math.nan,
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    if j < 2:
        return {**out, "reason": f"{j} seed(s): the test needs at least 2"}
    m = float(d.mean())
    if np.all(d == d[0]):
        if m == 0:
            return {**out, "t": 0.0, "p": 1.0, "reason": "no seed differs"}
        return {**out, "t": math.copysign(math.inf, m), "p": 0.0,
                "reason": "every seed differs by the same amount (zero variance)"}
    s2 = float(d.var(ddof=1))
    t = m / math.sqrt((1.0 / j + n_test / n_train) * s2)
    return {**out, "t": t, "p": float(2.0 * stats.t.sf(abs(t), j - 1))}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni step-down adjusted p-values, under the same keys.

    With the m p-values sorted, p_(1) <= ... <= p_(m): adjusted p_(i) = max over k <= i of min(1, (m - k + 1) p_(k)),
    so the adjusted values keep the raw order and never exceed 1, and "adjusted < alpha" makes Holm's decisions.
    A NaN (or None) p-value, a test that could not be made, stays NaN and does not count toward m: the family is the
    tests that were made.
    """
    finite = sorted((p, key) for key, p in pvalues.items() if p is not None and not math.isnan(p))
    out = {key: math.nan for key in pvalues}
    running = 0.0
    for rank, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        out[key] = running
    return out


def verdict(mean_diff: float, p_holm: float, n: int) -> str:
    """"ahead" / "behind" (the sign of the mean difference) when the Holm-adjusted p < ALPHA, "tie" otherwise, and
    "n/a (<5 seeds)" below MIN_SEEDS_FOR_VERDICT seeds, whatever the p-value."""
    if n < MIN_SEEDS_FOR_VERDICT:
        return f"n/a (<{MIN_SEEDS_FOR_VERDICT} seeds)"
    if p_holm is None or math.isnan(p_holm) or p_holm >= ALPHA or mean_diff == 0:
        return "tie"
    return "ahead" if mean_diff > 0 else "behind"


def split_sizes(seed_metrics: list[dict]) -> tuple[float, float, str]:
    """(n_train, n_test, source) for the corrected test: the mean recorded counts when every seed's metrics carry
    `n_train` and `n_test`, else the fractions of the 70/15/15 user split (`tasks.SPLIT_FRACTIONS`)."""
    if seed_metrics and all(m.get("n_train") and m.get("n_test") is not None for m in seed_metrics):
        return (float(np.mean([m["n_train"] for m in seed_metrics])),
                float(np.mean([m["n_test"] for m in seed_metrics])), "recorded")
    return SPLIT_FRACTIONS[0], SPLIT_FRACTIONS[2], "split fractions"


def summarise(results: dict) -> dict:
    """Add mean/std per model and metric, paired comparisons of each U-MLP against the other models, and the
    headline of each task (Holm-adjusted across tasks)."""
    checkpoints = list(results.get("config", {}).get("checkpoints", {}))
    for entry in results["tasks"].values():
        for model in entry["models"].values():
            _mean_std(model)
        entry["primary_metric"] = PRIMARY[entry["kind"]]
        entry["comparisons"] = comparisons(entry)
        entry["headline"] = headline(entry, checkpoints)
    adjust_headlines(results)
    return results


def _mean_std(model: dict) -> None:
    seeds = model["seeds"]
    model["n"] = len(seeds)
    model["mean"], model["std"] = {}, {}
    for key in _numeric_keys(seeds):
        values = [m[key] for m in seeds.values() if key in m and m[key] is not None]
        if values:
            model["mean"][key] = float(np.mean(values))
            model["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _paired(entry: dict, name: str, other: str, metric: str) -> tuple[list[str], list[float], list[float]]:
    """The seeds both models ran with `metric` recorded, and their values."""
    a_seeds, b_seeds = entry["models"][name]["seeds"], entry["models"][other]["seeds"]
    common = sorted((s for s in set(a_seeds) & set(b_seeds)
                     if a_seeds[s].get(metric) is not None and b_seeds[s].get(metric) is not None), key=int)
    return common, [a_seeds[s][metric] for s in common], [b_seeds[s][metric] for s in common]


def comparisons(entry: dict) -> dict:
    """Each checkpoint's U-MLP against every other model, per metric: plain paired test and the corrected p."""
    metrics = [k for k, _ in (CLASSIFICATION_METRICS if entry["kind"] == "classification" else RANKING_METRICS)]
    out = {}
    for name, model in entry["models"].items():
        if not name.startswith("U-MLP") or _in_group(name, TRIVIAL):
            continue
        for other in entry["models"]:
            if other == name or (other.startswith("U-MLP") and not _in_group(other, TRIVIAL)):
                continue
            for metric in metrics:
                common, a, b = _paired(entry, name, other, metric)
                if not common:
                    continue
                n_train, n_test, _ = split_sizes([model["seeds"][s] for s in common])
                corrected = corrected_resampled_ttest(a, b, n_train, n_test)
                out[f"{name} vs {other} | {metric}"] = {**paired_test(a, b), "corrected_pvalue": corrected["p"]}
    return out


def primary_umlp(entry: dict, checkpoints: list[str] = ()) -> str | None:
    """U-MLP on the primary checkpoint: the first of `checkpoints` (the run's `--model` order) with a U-MLP row on
    this task; without one, the first U-MLP row that is not a trivial representation."""
    for name in checkpoints:
        if f"U-MLP {name}" in entry["models"] and not _in_group(f"U-MLP {name}", TRIVIAL):
            return f"U-MLP {name}"
    return next((n for n in entry["models"] if n.startswith("U-MLP") and not _in_group(n, TRIVIAL)), None)


def choose_partner(entry: dict, candidates: list[str]) -> dict | None:
    """The candidate with the best mean validation metric (`val_auroc` / `val_mrr`: what each model was selected on).

    When a candidate has no validation metric recorded (an older run), all candidates are compared on their mean
    test metric instead, and the choice says so: `basis` "test" and `no_validation` the names. That fallback picks
    the partner that looks best on test, so it can only make U-MLP look worse, never better. A lone candidate is
    taken as it is (`basis` "only candidate"); None without candidates.
    """
    models = entry["models"]
    present = [n for n in candidates if n in models]
    if not present:
        return None
    if len(present) == 1:
        return {"name": present[0], "basis": "only candidate", "no_validation": []}
    val_key = VALIDATION[entry["kind"]]
    missing = [n for n in present if models[n].get("mean", {}).get(val_key) is None]
    key, basis = (PRIMARY[entry["kind"]], "test") if missing else (val_key, "validation")
    best = max(present, key=lambda n: models[n].get("mean", {}).get(key, -math.inf))
    return {"name": best, "basis": basis, "no_validation": missing}


def compare(entry: dict, umlp: str, choice: dict) -> dict:
    """U-MLP against a chosen partner on the task's primary metric: means, stds and the corrected test."""
    metric = PRIMARY[entry["kind"]]
    partner = entry["models"][choice["name"]]
    common, a, b = _paired(entry, umlp, choice["name"], metric)
    n_train, n_test, sizes = split_sizes([entry["models"][umlp]["seeds"][s] for s in common])
    test = corrected_resampled_ttest(a, b, n_train, n_test)
    return {**choice, "mean": partner["mean"].get(metric), "std": partner["std"].get(metric),
            "test_train_ratio": n_test / n_train, "split_sizes": sizes, **test}


def headline(entry: dict, checkpoints: list[str] = ()) -> dict:
    """U-MLP on the primary checkpoint against the best of each partner group on the primary metric (the paper's
    claim is the first group). The Holm adjustment and the verdicts need every task: `adjust_headlines`."""
    umlp = primary_umlp(entry, checkpoints)
    if umlp is None:
        return {}
    metric = PRIMARY[entry["kind"]]
    model = entry["models"][umlp]
    out = {"u_mlp": umlp, "metric": metric, "u_mlp_mean": model["mean"].get(metric),
           "u_mlp_std": model["std"].get(metric), "n": model["n"], "vs": {}}
    for column, (_, group) in PARTNERS.items():
        choice = choose_partner(entry, [n for n in entry["models"] if _in_group(n, group) and n != umlp])
        if choice is not None:
            out["vs"][column] = compare(entry, umlp, choice)
    return out


def adjust_headlines(results: dict) -> None:
    """Holm-adjust each comparison column's corrected p-values across the tasks and set the verdicts."""
    for column in PARTNERS:
        rows = {task: entry["headline"]["vs"][column] for task, entry in results["tasks"].items()
                if column in (entry.get("headline") or {}).get("vs", {})}
        adjusted = holm({task: row["p"] for task, row in rows.items()})
        for task, row in rows.items():
            row["p_holm"] = adjusted[task]
            row["verdict"] = verdict(row["mean_diff"], row["p_holm"], row["n"])


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
def _cell(model: dict, key: str) -> str:
    mean, std = model.get("mean", {}).get(key), model.get("std", {}).get(key)
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if model.get("n", 1) > 1 else f"{mean:.4f}"


def _mean_std_text(mean, std, n) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 and std is not None else f"{mean:.4f}"


def _p(value) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3g}"


ACCURACY_NOTE = ("F1 and accuracy are taken at the decision threshold that maximises F1 on the validation users "
                 "(`eval_suite.evaluation.classification_metrics`), not at 0.5: with few positives that threshold "
                 "labels many users positive, so accuracy can fall below the majority-class rate. AUROC needs no "
                 "threshold.")


def _reference_rows(entry: dict, models: list[str]) -> list[tuple[str, list[str]]]:
    """Accuracy at 0.5 / majority-class rate rows, for the spellings a run recorded."""
    rows = []
    for keys, label in REFERENCE_ACCURACY:
        for key in keys:
            if any(key in entry["models"][m].get("mean", {}) for m in models):
                rows.append((label, [_cell(entry["models"][m], key) for m in models]))
                break
    return rows


def table4(results: dict) -> str:
    """All models × tasks × metrics (the paper's Table 4), mean ± std over seeds."""
    lines = []
    for task_name, entry in results["tasks"].items():
        models = list(entry["models"])
        metrics = CLASSIFICATION_METRICS if entry["kind"] == "classification" else RANKING_METRICS
        counts = [entry["models"][m].get("n", 0) for m in models]
        n = max(counts, default=0)
        lines.append(f"**{task_name}** ({entry['paper_analogue']}; {n} seed{'s' if n != 1 else ''})\n")
        lines.append("| metric | " + " | ".join(models) + " |")
        lines.append("|---|" + "---:|" * len(models))
        if len(set(counts)) > 1:  # runs merged over different seeds: say which model has how many
            lines.append("| seeds | " + " | ".join(str(c) for c in counts) + " |")
        for key, label in metrics:
            row = [_cell(entry["models"][m], key) for m in models]
            means = [entry["models"][m].get("mean", {}).get(key) for m in models]
            valid = [x for x in means if x is not None]
            if valid:
                best = max(valid)
                row = [f"**{c}**" if x == best else c for c, x in zip(row, means)]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        if entry["kind"] == "classification":
            lines += [f"| {label} | " + " | ".join(row) + " |" for label, row in _reference_rows(entry, models)]
        lines.append("")
    if any(e["kind"] == "classification" for e in results["tasks"].values()):
        lines += [ACCURACY_NOTE, ""]
    return "\n".join(lines)


def table5(results: dict) -> str:
    """Fine-tuned ShopperBERT vs U-MLP on the targeting tasks (the paper's Table 5)."""
    lines = []
    for task_name, entry in results["tasks"].items():
        tuned = [n for n in entry["models"] if n.startswith("Fine-tuned")]
        if not tuned:
            continue
        checkpoint = tuned[0].split(" ", 1)[1]
        umlp = f"U-MLP {checkpoint}"
        if not lines:
            lines += [f"| task | metric | {tuned[0]} | {umlp} |", "|---|---|---:|---:|"]
        for key, label in CLASSIFICATION_METRICS:
            lines.append(f"| {task_name} | {label} | {_cell(entry['models'][tuned[0]], key)} | "
                         f"{_cell(entry['models'].get(umlp, {}), key)} |")
    return "\n".join(lines + ["", ACCURACY_NOTE]) if lines else "(no fine-tuning run: pass --finetune)"


def group_size(entry: dict, models: list[str], group: str) -> tuple[str, bool | None]:
    """A cold/heavy group's size as a cell ("4 users") and whether it is under SMALL_GROUP users (None: unknown).

    From the seeds' `{group}_users` when recorded, else from `n_test` (the group is max(1, round(10% of the test
    users)): `tasks.cold_heavy_users`), else only the instances (`{group}_num_instances`): fewer than SMALL_GROUP
    instances means fewer users too, more instances says nothing about the users.
    """
    means = [entry["models"][m].get("mean", {}) for m in models]
    for mean in means:
        users = mean.get(f"{group}_users")
        if users is None and mean.get("n_test") is not None:
            users = max(1, round(COLD_HEAVY_FRACTION * mean["n_test"]))
        if users is not None:
            return f"{users:.0f} users", users < SMALL_GROUP
    instances = next((m[f"{group}_num_instances"] for m in means if f"{group}_num_instances" in m), None)
    if instances is None:
        return "size not recorded", None
    return f"{instances:.0f} instances", True if instances < SMALL_GROUP else None


def table6(results: dict) -> str:
    """Cold (bottom 10%) and heavy (top 10%) test users by task-specific history length (the paper's Table 6), with
    each group's size per seed; ‡ marks groups under SMALL_GROUP users."""
    lines, small, unknown = [], [], []
    for task_name, entry in results["tasks"].items():
        if entry["kind"] != "recommendation" or "T-Trans" not in entry["models"]:
            continue
        models = ["T-Trans"] + [n for n in entry["models"] if n.startswith("U-MLP")]
        if not lines:
            lines += ["| task | users (group size per seed) | metric | " + " | ".join(models) + " |",
                      "|---|---|---|" + "---:|" * len(models)]
        for group in ("cold", "heavy"):
            size, is_small = group_size(entry, models, group)
            mark = " ‡" if is_small else ""
            (small if is_small else unknown if is_small is None else []).append(f"{task_name} {group} ({size})")
            for key, label in GROUP_METRICS:
                cells = [_cell(entry["models"][m], f"{group}_{key}") for m in models]
                lines.append(f"| {task_name} | {group}, {size}{mark} | {label} | " + " | ".join(cells) + " |")
    if not lines:
        return "(no recommendation task with T-Trans in this run)"
    if small:
        lines.append("")
        lines.append(f"‡ Fewer than {SMALL_GROUP} users in the group ({', '.join(small)}): too few users for these "
                     "rows to say anything beyond anecdote.")
    if unknown:
        lines.append("")
        lines.append(f"Group sizes in users were not recorded for {', '.join(unknown)}: each group is the bottom / "
                     f"top {COLD_HEAVY_FRACTION:.0%} (at least 1) of a seed's test users, so a task with fewer than "
                     f"{SMALL_GROUP / COLD_HEAVY_FRACTION:.0f} test users has groups under {SMALL_GROUP} users.")
    return "\n".join(lines)


def headline_table(results: dict) -> str:
    """Per task and partner group: U-MLP (primary checkpoint) and the partner chosen on validation, mean ± std on
    the primary metric, the seeds compared, the mean difference, the corrected and Holm-adjusted p and the verdict;
    then the notes and the verdicts in words."""
    lines = ["| task | metric | U-MLP | against | partner | seeds | difference (wins-losses) | corrected p | "
             "Holm p | verdict |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    on_test = []
    for task_name, entry in results["tasks"].items():
        h = entry.get("headline") or {}
        for column, (label, _) in PARTNERS.items():
            row = h.get("vs", {}).get(column)
            if row is None:
                continue
            dagger = ""
            if row["basis"] == "test":
                dagger = " †"
                on_test.append(f"{task_name} {label} (no validation metric: {', '.join(row['no_validation'])})")
            diff = "–" if math.isnan(row["mean_diff"]) else f"{row['mean_diff']:+.4f} ({row['wins']}-{row['losses']})"
            ours = _mean_std_text(h["u_mlp_mean"], h["u_mlp_std"], h["n"])
            theirs = _mean_std_text(row["mean"], row["std"], row["n"])
            lines.append(f"| {task_name} | {h['metric']} | {h['u_mlp']}: {ours} | {label} | {row['name']}{dagger}: "
                         f"{theirs} | {row['n']} | {diff} | {_p(row['p'])} | {_p(row.get('p_holm'))} | "
                         f"{row.get('verdict', '–')} |")
    notes = "\n\n".join(headline_notes(results, on_test))  # one paragraph each
    return "\n\n".join(["\n".join(lines), notes, "\n".join(headline_summary(results))]).rstrip()


def headline_notes(results: dict, on_test: list[str]) -> list[str]:
    """How the partners, p-values and verdicts of the headline table are made."""
    ratios = {row["split_sizes"] for e in results["tasks"].values()
              for row in (e.get("headline") or {}).get("vs", {}).values()}
    ratio = (f"n_test/n_train = {SPLIT_FRACTIONS[2]:.2f}/{SPLIT_FRACTIONS[0]:.2f} (the 70/15/15 user split)"
             if ratios <= {"split fractions"} else "n_test/n_train from the split sizes each seed recorded")
    groups = "; ".join(f"{label}: {', '.join(group)}" for label, group in PARTNERS.values())
    notes = [
        f"Partners ({groups}): the best of each group by its mean validation metric (`val_auroc` / `val_mrr`, what "
        "each model was selected on), never by test.",
        "difference: mean of U-MLP minus the partner over the seeds both ran (the means beside it are over each "
        "model's own seeds, which differ where runs stopped early); wins-losses: seeds where U-MLP is "
        "above / below. corrected p: Nadeau & Bengio's (2003) corrected resampled t-test on the per-seed "
        f"differences (two-sided, J - 1 degrees of freedom, variance scaled by 1/J + n_test/n_train with {ratio}); "
        "a plain paired t-test would ignore that the seeds' training users overlap. Holm p: Holm-adjusted across "
        "the tasks with a p-value, separately for each partner group. verdict: ahead / behind when the Holm p < "
        f"{ALPHA}, tie otherwise; n/a below {MIN_SEEDS_FOR_VERDICT} seeds, whatever the p-value.",
    ]
    if on_test:
        notes.append("† chosen on test (no validation metric recorded) among all the group's models, which can only "
                     "favour the partner: " + "; ".join(on_test) + ".")
    return notes


def headline_summary(results: dict) -> list[str]:
    """The verdicts in words, one line per partner group."""
    lines = []
    for column, (label, _) in PARTNERS.items():
        by_verdict: dict[str, list[str]] = {}
        for task_name, entry in results["tasks"].items():
            row = (entry.get("headline") or {}).get("vs", {}).get(column)
            if row is not None:
                by_verdict.setdefault(row.get("verdict", "n/a"), []).append(task_name)
        if not by_verdict:
            continue
        parts = [f"{v} on {', '.join(tasks)}" for v, tasks in sorted(by_verdict.items())]
        claim = " (the paper's claim)" if column == "from_scratch" else ""
        lines.append(f"- U-MLP against the {label}{claim}: " + "; ".join(parts) + ".")
    return lines


def write_tables(results: dict, out: Path) -> dict[str, str]:
    tables = {"table4.md": table4(results), "table5.md": table5(results), "table6.md": table6(results),
              "headline.md": headline_table(results)}
    for name, text in tables.items():
        (out / name).write_text(text + "\n")
    return tables


__all__ = ["adjust_headlines", "choose_partner", "corrected_resampled_ttest", "headline",
           "headline_table", "holm", "paired_test", "primary_umlp", "split_sizes", "summarise",
           "table4", "table5", "table6", "verdict", "write_tables"]
