"""Aggregation (mean ± std over seeds, paired tests) and the markdown tables shaped like the paper's Tables 4-6."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

CLASSIFICATION_METRICS = (("auroc", "AUROC"), ("f1", "F1"), ("accuracy", "Accuracy"))
RANKING_METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr", "MRR"),
                   ("full_hr@10", "full HR@10"), ("full_ndcg@10", "full NDCG@10"), ("full_mrr", "full MRR"))
GROUP_METRICS = (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("mrr", "MRR"))
PRIMARY = {"classification": "auroc", "recommendation": "mrr"}
FROM_SCRATCH = ("P-Trans", "T-Trans")
BASELINES = ("LogReg TF-IDF+RFM", "Popularity", "Co-occurrence")


def _numeric_keys(seeds: dict) -> list[str]:
    keys = set()
    for metrics in seeds.values():
        keys |= {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(keys)


def paired_test(a: list[float], b: list[float]) -> dict:
    """Paired t-test (and Wilcoxon signed-rank with 6+ pairs) of a - b over seeds."""
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


def merge_results(runs: list[dict], names: list[str] | None = None) -> dict:
    """One results dict from runs of the same settings over different seeds (`--first-seed`), e.g. on two machines,
    possibly over different tasks (more seeds for the cheap ones).

    Raises ValueError when the runs differ in anything but their seeds and tasks, or when two runs hold the same
    seed of a task and model.
    """
    names = names or [f"run {i}" for i in range(len(runs))]
    if len(runs) == 1:
        return runs[0]

    def settings(run):
        config = {k: v for k, v in run["config"].items() if k not in ("options", "tasks")}
        options = {k: v for k, v in run["config"]["options"].items() if k not in ("repeats", "first_seed", "threads")}
        return config, options

    merged = {"config": {**runs[0]["config"], "options": dict(runs[0]["config"]["options"])}, "tasks": {}}
    for run, name in zip(runs, names):
        if settings(run) != settings(runs[0]):
            raise ValueError(f"{name} was made with other settings than {names[0]}; only seeds can differ")
        for task_name, entry in run["tasks"].items():
            target = merged["tasks"].setdefault(task_name, {"kind": entry["kind"],
                                                            "paper_analogue": entry.get("paper_analogue"),
                                                            "models": {}})
            for model_name, model in entry["models"].items():
                seeds = target["models"].setdefault(model_name, {"seeds": {}})["seeds"]
                clash = set(seeds) & set(model["seeds"])
                if clash:
                    clashing = ", ".join(sorted(clash, key=int))
                    raise ValueError(f"{name} repeats seed(s) {clashing} of {task_name}/{model_name}")
                seeds.update(model["seeds"])
    merged["config"]["tasks"] = list(merged["tasks"])
    merged["config"]["options"]["repeats"] = max(len({s for e in merged["tasks"].values() for m in e["models"].values()
                                                      for s in m["seeds"]}), 1)
    merged["config"]["options"]["first_seed"] = min(r["config"]["options"]["first_seed"] for r in runs)
    if all("seconds" in r for r in runs):
        merged["seconds"] = sum(r["seconds"] for r in runs)
    return merged


def complete_seeds(results: dict) -> list[str]:
    """Keep, per task, only the seeds that every model of the task finished; return the seeds kept anywhere.

    A run stopped early (seeds are the outer loop) leaves its last seed on some models only; averaging that partial
    seed with the others would compare models on different splits. A finished run is unchanged.
    """
    kept = set()
    for entry in results["tasks"].values():
        seed_sets = [set(model["seeds"]) for model in entry["models"].values()]
        common = set.intersection(*seed_sets) if seed_sets else set()
        for model in entry["models"].values():
            model["seeds"] = {s: m for s, m in model["seeds"].items() if s in common}
        kept |= common
    return sorted(kept, key=int)


def summarise(results: dict) -> dict:
    """Add mean/std per model and metric, and paired comparisons of each U-MLP against the other models."""
    for task_name, entry in results["tasks"].items():
        for model in entry["models"].values():
            seeds = model["seeds"]
            model["n"] = len(seeds)
            model["mean"], model["std"] = {}, {}
            for key in _numeric_keys(seeds):
                values = [m[key] for m in seeds.values() if key in m and m[key] is not None]
                if values:
                    model["mean"][key] = float(np.mean(values))
                    model["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        primary = PRIMARY[entry["kind"]]
        metrics = [k for k, _ in (CLASSIFICATION_METRICS if entry["kind"] == "classification" else RANKING_METRICS)]
        comparisons = {}
        for name, model in entry["models"].items():
            if not name.startswith("U-MLP"):
                continue
            for other_name, other in entry["models"].items():
                if other_name == name or other_name.startswith("U-MLP"):
                    continue
                common = sorted(set(model["seeds"]) & set(other["seeds"]))
                for metric in metrics:
                    a = [model["seeds"][s].get(metric) for s in common]
                    b = [other["seeds"][s].get(metric) for s in common]
                    if common and None not in a and None not in b:
                        comparisons[f"{name} vs {other_name} | {metric}"] = paired_test(a, b)
        entry["comparisons"] = comparisons
        entry["primary_metric"] = primary
        entry["headline"] = headline(entry)
    return results


def _versus(entry: dict, umlp: str, candidates: list[str], primary: str) -> dict:
    best = max(candidates, key=lambda n: entry["models"][n]["mean"].get(primary, -math.inf))
    test = entry["comparisons"].get(f"{umlp} vs {best} | {primary}", {})
    return {"name": best, "mean": entry["models"][best]["mean"].get(primary), "t_pvalue": test.get("t_pvalue", math.nan)}


def _verdict(u, other, p) -> str:
    if u is None or other is None:
        return "n/a"
    if u > other:
        return "holds (significant)" if p < 0.05 else "U-MLP ahead, not significant"
    return "does not hold (significant)" if p < 0.05 else "does not hold, not significant"


def headline(entry: dict) -> dict:
    """Does the first U-MLP beat every Transformer trained from scratch (the paper's claim) on the primary metric,
    and how does it compare with the best classical baseline?"""
    primary = entry["primary_metric"]
    umlps = [n for n in entry["models"] if n.startswith("U-MLP")]
    scratch = [n for n in entry["models"] if n in FROM_SCRATCH]
    baselines = [n for n in entry["models"] if n in BASELINES]
    if not umlps or not scratch:
        return {}
    umlp = umlps[0]
    u = entry["models"][umlp]["mean"].get(primary)
    best = _versus(entry, umlp, scratch, primary)
    out = {"u_mlp": umlp, "best_from_scratch": best["name"], "metric": primary, "u_mlp_mean": u,
           "scratch_mean": best["mean"], "t_pvalue": best["t_pvalue"],
           "verdict": _verdict(u, best["mean"], best["t_pvalue"])}
    if baselines:
        base = _versus(entry, umlp, baselines, primary)
        out.update(best_baseline=base["name"], baseline_mean=base["mean"], baseline_t_pvalue=base["t_pvalue"],
                   baseline_verdict=_verdict(u, base["mean"], base["t_pvalue"]).replace("holds", "U-MLP better")
                   .replace("does not hold", "baseline better or equal"))
    return out


def _cell(model: dict, key: str) -> str:
    mean, std = model.get("mean", {}).get(key), model.get("std", {}).get(key)
    if mean is None:
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if model.get("n", 1) > 1 else f"{mean:.4f}"


def table4(results: dict) -> str:
    """All models × tasks × metrics (the paper's Table 4), mean ± std over seeds."""
    lines = []
    for task_name, entry in results["tasks"].items():
        models = list(entry["models"])
        metrics = CLASSIFICATION_METRICS if entry["kind"] == "classification" else RANKING_METRICS
        n = max((m.get("n", 0) for m in entry["models"].values()), default=0)
        lines.append(f"**{task_name}** ({entry['paper_analogue']}; {n} seed{'s' if n != 1 else ''})\n")
        lines.append("| metric | " + " | ".join(models) + " |")
        lines.append("|---|" + "---:|" * len(models))
        for key, label in metrics:
            row = [_cell(entry["models"][m], key) for m in models]
            means = [entry["models"][m].get("mean", {}).get(key) for m in models]
            valid = [x for x in means if x is not None]
            if valid:
                best = max(valid)
                row = [f"**{c}**" if x == best else c for c, x in zip(row, means)]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
        lines.append("")
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
    return "\n".join(lines) if lines else "(no fine-tuning run: pass --finetune)"


def table6(results: dict) -> str:
    """Cold (bottom 10%) and heavy (top 10%) test users by task-specific history length (the paper's Table 6)."""
    lines = []
    for task_name, entry in results["tasks"].items():
        if entry["kind"] != "recommendation" or "T-Trans" not in entry["models"]:
            continue
        models = ["T-Trans"] + [n for n in entry["models"] if n.startswith("U-MLP")]
        if not lines:
            lines += ["| task | users | metric | " + " | ".join(models) + " |",
                      "|---|---|---|" + "---:|" * len(models)]
        for group in ("cold", "heavy"):
            for key, label in GROUP_METRICS:
                cells = [_cell(entry["models"][m], f"{group}_{key}") for m in models]
                lines.append(f"| {task_name} | {group} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if lines else "(no recommendation task with T-Trans in this run)"


def headline_table(results: dict) -> str:
    lines = ["| task | metric | U-MLP | best from scratch | difference, paired t-test p | the paper's claim | "
             "best classical baseline | difference, p |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for task_name, entry in results["tasks"].items():
        h = entry.get("headline") or {}
        if not h:
            continue
        base = "–"
        base_diff = "–"
        if h.get("best_baseline"):
            base = f"{h['best_baseline']}: {h['baseline_mean']:.4f}"
            base_diff = f"{h['u_mlp_mean'] - h['baseline_mean']:+.4f}, p={h['baseline_t_pvalue']:.3g}"
        lines.append(f"| {task_name} | {h['metric']} | {h['u_mlp']}: {h['u_mlp_mean']:.4f} | "
                     f"{h['best_from_scratch']}: {h['scratch_mean']:.4f} | "
                     f"{h['u_mlp_mean'] - h['scratch_mean']:+.4f}, p={h['t_pvalue']:.3g} | {h['verdict']} | "
                     f"{base} | {base_diff} |")
    return "\n".join(lines)


def write_tables(results: dict, out: Path) -> dict[str, str]:
    tables = {"table4.md": table4(results), "table5.md": table5(results), "table6.md": table6(results),
              "headline.md": headline_table(results)}
    for name, text in tables.items():
        (out / name).write_text(text + "\n")
    return tables


__all__ = ["complete_seeds", "headline_table", "merge_results", "paired_test", "summarise", "table4", "table5",
           "table6", "write_tables"]
