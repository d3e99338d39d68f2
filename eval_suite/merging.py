"""Combining evaluation runs: several `results.json` of the same protocol over other seeds, tasks or models (e.g.
on two machines, or the Transformers in a run of their own) merged into one, and the seeds of a run that stopped
early cut to those every model finished. The tables and statistics over the combined results are in `report.py`.
"""

from __future__ import annotations

# What may differ between runs that are merged: where they stop (seeds, tasks), how they were run (threads, command)
# and which models they ran (`--models`, `--finetune`, `--representations`: e.g. the Transformers in a run of
# their own). The protocol (learning rates, epoch limits, patience, lengths), checkpoints and corpus may not.
# `protocol` (the run's description of its options) names fine-tuning's options only in a run that fine-tuned: the
# options themselves are compared below.
MERGE_FREE_CONFIG = ("options", "tasks", "command", "representations", "seeds", "content", "protocol")
MERGE_FREE_OPTIONS = ("repeats", "first_seed", "threads", "device", "models", "finetune", "representations")
# Options only fine-tuning reads: they must agree between runs that fine-tuned, and a run that did not cannot disagree.
FINETUNE_OPTIONS = ("finetune_lrs", "finetune_max_epochs")


def check_same_content(a: dict | None, b: dict | None, a_name: str, b_name: str) -> None:
    """Raise ValueError when two runs' `content` disagree on a checkpoint or the corpus; a run that recorded none
    (older versions) is not compared."""
    if not a or not b:
        return
    differ = [f"checkpoint {n}" for n in a.get("checkpoints", {}).keys() & b.get("checkpoints", {}).keys()
              if a["checkpoints"][n] != b["checkpoints"][n]]
    if a.get("corpus") and b.get("corpus") and a["corpus"] != b["corpus"]:
        differ.append("the corpus vocabulary")
    if differ:
        raise ValueError(f"error: {b_name} and {a_name} name the same paths but {', '.join(differ)} changed in "
                         "between (other weights or data): their seeds cannot be pooled; use another --out")


def merge_results(runs: list[dict], names: list[str] | None = None) -> dict:
    """One results dict from runs of the same protocol over different seeds (`--first-seed`), e.g. on two machines,
    possibly over different tasks (more seeds for the cheap ones) or different models (`--models`).

    Raises ValueError when the runs differ in anything but their seeds, tasks, models and command lines, or when two
    runs hold the same seed of a task and model. The merged config records no command (each run's stays in its
    file); its `models` / `representations` are the union of the runs', `finetune` true if any run fine-tuned.
    """
    names = names or [f"run {i}" for i in range(len(runs))]
    if len(runs) == 1:
        return runs[0]

    def settings(run):
        config = {k: v for k, v in run["config"].items() if k not in MERGE_FREE_CONFIG}
        options = {k: v for k, v in run["config"]["options"].items()
                   if k not in MERGE_FREE_OPTIONS + FINETUNE_OPTIONS}
        return config, options

    def finetuning(run):
        return {k: run["config"]["options"].get(k) for k in FINETUNE_OPTIONS}

    tuned = [(run, name) for run, name in zip(runs, names) if run["config"]["options"].get("finetune")]
    merged = {"config": {**runs[0]["config"], "options": dict(runs[0]["config"]["options"])}, "tasks": {}}
    merged["config"].pop("command", None)
    if tuned:  # the merged protocol's fine-tuning is that of the runs that fine-tuned
        merged["config"]["options"].update(finetuning(tuned[0][0]))
    for run, name in zip(runs, names):
        if settings(run) != settings(runs[0]):
            (config, options), (first_config, first_options) = settings(run), settings(runs[0])
            differ = sorted(k for k in config.keys() | first_config.keys() if config.get(k) != first_config.get(k))
            differ += sorted(f"options.{k}" for k in options.keys() | first_options.keys()
                             if options.get(k) != first_options.get(k))
            raise ValueError(f"{name} was made with other settings than {names[0]} ({', '.join(differ)}); only "
                             "seeds, tasks and models can differ")
        if tuned and run["config"]["options"].get("finetune") and finetuning(run) != finetuning(tuned[0][0]):
            raise ValueError(f"{name} fine-tuned with other settings than {tuned[0][1]} ({finetuning(run)} against "
                             f"{finetuning(tuned[0][0])})")
        check_same_content(runs[0]["config"].get("content"), run["config"].get("content"), names[0], name)
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
    _union_models(merged["config"], runs)
    merged["config"]["options"]["repeats"] = max(len({s for e in merged["tasks"].values() for m in e["models"].values()
                                                      for s in m["seeds"]}), 1)
    merged["config"]["options"]["first_seed"] = min(r["config"]["options"]["first_seed"] for r in runs)
    merged["config"]["seeds"] = sorted({int(s) for e in merged["tasks"].values() for m in e["models"].values()
                                        for s in m["seeds"]})
    if all("seconds" in r for r in runs):
        merged["seconds"] = sum(r["seconds"] for r in runs)
    stopped = [s for r in runs for s in r.get("stopped", [])]
    if stopped:  # each stopped run already kept only the seeds all of its models finished (model_card.load_results)
        merged["stopped"] = stopped
    return merged


def _union_models(config: dict, runs: list[dict]) -> None:
    """The merged config's model selection: the union of the runs' (first-seen order)."""
    def union(values):
        return list(dict.fromkeys(v for value in values for v in (value or [])))

    options = config["options"]
    options["models"] = union(r["config"]["options"].get("models") for r in runs)
    options["representations"] = union(r["config"]["options"].get("representations") for r in runs)
    options["finetune"] = any(r["config"]["options"].get("finetune") for r in runs)
    if any("representations" in r["config"] for r in runs):
        config["representations"] = union(r["config"].get("representations") for r in runs)


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


# ---------------------------------------------------------------------------------------------------------------
# Summary and headline
# ---------------------------------------------------------------------------------------------------------------


__all__ = ["FINETUNE_OPTIONS", "MERGE_FREE_CONFIG", "MERGE_FREE_OPTIONS", "check_same_content", "complete_seeds",
           "merge_results"]
