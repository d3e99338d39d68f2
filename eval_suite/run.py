"""`python -m eval_suite run`: the paper's downstream experiments (Tables 4-6) on Complete Journey.

    python -m eval_suite run --model runs/cj-small/final --data data/cj --tasks all --repeats 10 --out results/
    python -m eval_suite run --model MP=runs/mp/final --model MP+A=runs/mpa/final ... --quick

For every task and seed (a fresh 70/15/15 user split and fixed negatives per seed, shared by all models):
U-MLP on each checkpoint's frozen user embedding and on the representation baselines (`--representations`: "U-MLP
SVD", "U-MLP SBERT-mean", "U-MLP Random", see `representations.py`), P-Trans, UP-Trans, T-Trans (where the task has
its own history), fine-tuned ShopperBERT (targeting tasks, `--finetune`), and the classical baselines ("LogReg
TF-IDF+RFM", "LogReg RFM"; "Popularity", "Popularity (train labels)", "Co-occurrence", "Hybrid"). Learning rates and
every other choice come from the validation users only; test users are touched once, by the selected model. Every
result records its validation metric (`val_auroc` / `val_mrr`); every trained model records the epochs it ran and
whether it stopped at its epoch cap (`hit_cap`) rather than by early stopping.

The full protocol (`RunOptions()`) gives every neural model the learning-rate grid {1e-4, 3e-4, 1e-3} and early
stopping with a patience (fine-tuning the Transformers' patience); `RunOptions.quick()` (`--quick`, `make demo`) is
a reduced one and says so (`results.json["config"]["protocol"]`).

Before any work, every option, the corpus folder and each checkpoint's vocabulary (sizes, and content when a
`vocab_fingerprint` is known) are checked, and an existing `results.json` in `--out` is refused unless `--resume`
(its finished seeds and models are kept and skipped; the settings must match but for seeds and tasks) or
`--overwrite`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .evaluation import (
    auroc,
    classification_metrics,
    full_ranking_metrics,
    instances_of,
    sampled_ranking_metrics,
)
from data_prep.json_files import to_json_value, write_json

from .baselines import MAX_VALIDATION_INSTANCES, validation_instances, validation_mrr
from .inputs import Corpus, Inputs
from .merging import FINETUNE_OPTIONS
from .models import (
    REC_DIM,
    ItemTower,
    TwoTowerScorer,
    UserInputs,
    UserTower,
    check_device,
    fit_classifier,
    fit_recommender,
    small_transformer_config,
    user_scores,
)
from .representations import DISPLAY_NAMES, parse_representations
from .tasks import (
    build_task,
    cold_heavy_users,
    fixed_negatives,
    load_raw_tables,
    sample_training_pairs,
    split_users,
    tables_for,
)

TARGETING_TASKS = ("coupon_targeting", "nutrition_targeting")
#: Classical baselines per task kind: result name -> run_baseline kind.
CLASSIFICATION_BASELINES = {"LogReg TF-IDF+RFM": "logreg", "LogReg RFM": "logreg_rfm"}
RECOMMENDATION_BASELINES = {"Popularity": "popularity", "Popularity (train labels)": "popularity_train",
                            "Co-occurrence": "cooccurrence", "Hybrid": "hybrid"}
#: The model families `--models` chooses from.
# "u-mlp": U-MLP on every checkpoint and every representation baseline; "u-mlp-representations": on the
# representation baselines only (a representation added to a finished run: a new --out, then merged; the run's
# checkpoint rows are not repeated).
MODEL_CHOICES = ("u-mlp", "u-mlp-representations", "p-trans", "up-trans", "t-trans", "baselines")
#: The default `models` of runs written before "u-mlp-representations" existed (they resume as the default).
DEFAULT_MODELS_BEFORE_REPRESENTATIONS = ("u-mlp", "p-trans", "up-trans", "t-trans", "baselines")
#: What a corpus folder (`--data`) must hold: data_prep's output.
CORPUS_FILES = ("metadata.json", "vocab.json", "dataset", "text_embeddings.safetensors", "descriptions.parquet")
#: What may differ between a run and the run it resumes (`--resume`): the seeds, tasks and command line.
RESUMABLE = ("options", "tasks", "command", "seeds", "content")
#: RunOptions fields that count something (at least 1; max_users and threads may be None).
COUNT_OPTIONS = ("repeats", "mlp_max_epochs", "mlp_patience", "trans_max_epochs", "trans_patience",
                 "finetune_max_epochs", "trans_max_length", "negatives_per_positive", "max_users", "threads")


@dataclass
class RunOptions:
    """How much to run; `quick()` is the `make demo` setting."""

    repeats: int = 10
    first_seed: int = 0
    mlp_lrs: tuple = (1e-4, 3e-4, 1e-3)
    trans_lrs: tuple = (1e-4, 3e-4, 1e-3)
    finetune_lrs: tuple = (1e-4, 3e-4, 1e-3)
    mlp_max_epochs: int = 100
    mlp_patience: int = 10
    trans_max_epochs: int = 20
    trans_patience: int = 3
    finetune_max_epochs: int = 20
    trans_max_length: int = 128
    negatives_per_positive: int = 4
    models: tuple = MODEL_CHOICES
    representations: tuple = ("svd", "sbert", "random")  # U-MLP rows on representation baselines (not checkpoints)
    finetune: bool = False
    threads: int | None = None
    device: str = "cpu"  # where the downstream models train (the user embeddings are always encoded on the CPU)
    max_users: int | None = None  # subsample each task's users (tests and smoke runs only)

    @classmethod
    def quick(cls, **overrides) -> "RunOptions":
        values = dict(repeats=2, mlp_lrs=(1e-3,), trans_lrs=(1e-3,), finetune_lrs=(1e-4,), mlp_max_epochs=20,
                      mlp_patience=3, trans_max_epochs=3, trans_patience=1, finetune_max_epochs=2,
                      trans_max_length=64)
        values.update(overrides)
        return cls(**values)


#: RunOptions fields that make a protocol (seeds, threads, model choice and representations do not).
PROTOCOL_FIELDS = ("mlp_lrs", "trans_lrs", "finetune_lrs", "mlp_max_epochs", "mlp_patience", "trans_max_epochs",
                   "trans_patience", "finetune_max_epochs", "trans_max_length", "negatives_per_positive")


def protocol_description(options: RunOptions) -> str:
    """"full" (the defaults of `RunOptions`), "quick (reduced: ...)" (`RunOptions.quick()`'s schedule) or
    "custom (differs from full: ...)", naming what differs from the full protocol; a user subsample is added."""
    mine, full, quick = asdict(options), asdict(RunOptions()), asdict(RunOptions.quick())

    def same(a, b):
        return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)

    def show(value):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]" if isinstance(value, (list, tuple)) else str(value)

    fields = [k for k in PROTOCOL_FIELDS if options.finetune or k not in FINETUNE_OPTIONS]
    differs = [k for k in fields if not same(mine[k], full[k])]
    detail = ", ".join(f"{k} {show(mine[k])}" for k in differs)
    if not differs:
        text = "full"
    elif all(same(mine[k], quick[k]) for k in fields):
        text = f"quick (reduced: {detail})"
    else:
        text = f"custom (differs from full: {detail})"
    if options.max_users:
        text += f"; tasks subsampled to {options.max_users} users (not for results)"
    return text


def checkpoint_label(path: Path) -> str:
    """MP / MP+A / CLS / CLS+A from the checkpoint's config and training info (the paper's Table 4 columns)."""
    config = json.loads((path / "config.json").read_text())
    label = "MP" if config.get("user_representation", "mean") == "mean" else "CLS"
    info_file = path / "training_info.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if info.get("args", {}).get("augmentation", info.get("augmentation")):
            label += "+A"
    return label


def read_models(specs: list[str]) -> dict[str, Path]:
    """`[NAME=]PATH` specs -> {name: folder}; raises ValueError naming a bad spec."""
    models: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"error: --model {spec}: {path} is not a saved ShopperBERT folder (no config.json)")
        name = name or checkpoint_label(path)
        if name in models:
            raise ValueError(f"error: two checkpoints named {name!r}; name them: --model NAME=PATH")
        models[name] = path
    return models


def parse_models(specs: list[str]) -> dict[str, Path]:
    """`read_models` for command lines: a bad spec prints its `error:` and exits with status 2."""
    try:
        return read_models(specs)
    except ValueError as err:
        print(err, file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------------------------------------------
# One model on one task and seed
# ---------------------------------------------------------------------------------------------------------------
def _tower(kind: str, out_features: int, inputs: Inputs, vectors_name: str | None):
    dim = inputs.embeddings[vectors_name].shape[1] if vectors_name else None
    config = None
    if kind in ("trans", "uptrans"):
        config = small_transformer_config(inputs.corpus.metadata, inputs.options.trans_max_length)
    return UserTower(kind, out_features, user_embedding_size=dim, transformer_config=config)


def hit_cap(fit, max_epochs: int, patience: int) -> bool:
    """True when a fit ran all `max_epochs` without its early-stopping rule firing (the cap, not validation, ended
    it: the model may not have converged)."""
    return fit.epochs_run >= max_epochs and (fit.epochs_run - 1 - fit.best_epoch) < patience


def fit_record(fits: dict, lr: float, max_epochs: int, patience: int) -> dict:
    """What a result records about training: the selected learning rate's epochs run, best epoch (1-based) and
    `hit_cap`; per learning rate the epochs run, and `hit_cap_any_lr` when any of them hit the cap."""
    fit = fits[lr]
    capped = [hit_cap(f, max_epochs, patience) for f in fits.values()]
    return {"lr": lr, "epochs": fit.epochs_run, "best_epoch": fit.best_epoch + 1, "max_epochs": max_epochs,
            "patience": patience, "hit_cap": hit_cap(fit, max_epochs, patience), "hit_cap_any_lr": any(capped),
            "epochs_by_lr": {f"{k:g}": f.epochs_run for k, f in fits.items()}}


def run_classification(task, split, user_inputs: UserInputs, make_tower, lrs, seed, max_epochs, patience) -> dict:
    labels = dict(zip(task.users["user_id"], task.users["label"]))
    train, val, test = (list(split[k]) for k in ("train", "validation", "test"))
    best, fits = None, {}
    for lr in lrs:
        torch.manual_seed(seed)  # the initial weights depend on the seed only, not on what the process ran before
        tower = make_tower()
        fit = fits[lr] = fit_classifier(tower, user_inputs, train, [labels[u] for u in train], val,
                                        [labels[u] for u in val], lr=lr, seed=seed, validation_metric=auroc,
                                        max_epochs=max_epochs, patience=patience)
        if best is None or fit.best_metric > best[1].best_metric:
            best = (lr, fit, tower)
    lr, fit, tower = best
    metrics = classification_metrics(user_scores(tower, user_inputs, val), [labels[u] for u in val],
                                     user_scores(tower, user_inputs, test), [labels[u] for u in test])
    return {**metrics, "val_auroc": fit.best_metric, **fit_record(fits, lr, max_epochs, patience)}


def run_recommendation(task, split, user_inputs: UserInputs, item_matrix, negatives, make_tower, lrs, seed,
                       max_epochs, patience, negatives_per_positive) -> dict:
    item_ids = task.items["item_id"].to_numpy(dtype=object)
    val_ids = validation_instances(task, split, seed)  # a fixed subset (MAX_VALIDATION_INSTANCES) keeps epochs cheap
    test_users = split["test"]
    best, fits = None, {}
    for lr in lrs:
        torch.manual_seed(seed)
        scorer = TwoTowerScorer(make_tower(), ItemTower(item_matrix.shape[1], REC_DIM), item_matrix, item_ids)

        def validation_metric(model):
            return sampled_ranking_metrics(task, val_ids, negatives,
                                           lambda u, i: model.score_pairs(user_inputs, u, i))["mrr"]

        def pairs(epoch):
            return sample_training_pairs(task, split["train"], seed=seed * 1000 + epoch,
                                         negatives_per_positive=negatives_per_positive)

        fit = fits[lr] = fit_recommender(scorer, user_inputs, pairs, validation_metric, lr=lr, seed=seed,
                                         max_epochs=max_epochs, patience=patience)
        if best is None or fit.best_metric > best[1].best_metric:
            best = (lr, fit, scorer)
    lr, fit, scorer = best
    return {**ranking_report(task, test_users, negatives, lambda u, i: scorer.score_pairs(user_inputs, u, i)),
            "val_mrr": fit.best_metric, **fit_record(fits, lr, max_epochs, patience)}


def ranking_report(task, test_users, negatives, score_pairs) -> dict:
    """Sampled and full-ranking metrics on the test users, and on their cold and heavy tenths (Table 6)."""
    result = sampled_ranking_metrics(task, instances_of(task, test_users), negatives, score_pairs)
    result.update(full_ranking_metrics(task, test_users, score_pairs))
    cold, heavy = cold_heavy_users(task, test_users)
    for group, users in (("cold", cold), ("heavy", heavy)):
        ids = instances_of(task, users)
        if len(ids):
            result.update(sampled_ranking_metrics(task, ids, negatives, score_pairs, prefix=f"{group}_"))
    return result


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
def run(checkpoints: dict[str, Path], data: Path, task_names, out: Path, options: RunOptions, log=print,
        command: str | None = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Every model of `model_plan` on every task and seed; results.json in `out` after each model (a stopped run
    keeps what it finished). `command`: the literal command line, recorded in `config["command"]`.

    An existing `out/results.json` is refused (ValueError, before any work) unless `resume` (keep its finished
    seeds and models and skip them; the settings must be the same but for seeds and tasks) or `overwrite`."""
    results = prepare_run(checkpoints, data, task_names, out, options, command, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if options.threads:
        torch.set_num_threads(options.threads)
    started = time.perf_counter()
    protocol = protocol_description(options)
    log(f"protocol: {protocol}")
    corpus = Corpus.load(data)
    tables = load_raw_tables(tables=tables_for(task_names))
    inputs = Inputs(corpus, checkpoints, out, options, log)
    primary = next(iter(checkpoints))
    up_name = next((n for n in checkpoints if n.startswith("MP")), primary)
    results_path = out / "results.json"
    seeds = list(range(options.first_seed, options.first_seed + options.repeats))
    tasks = {}
    for name in task_names:
        task = build_task(name, tables)
        tasks[name] = subsample_task(task, options.max_users) if options.max_users else task
    # Seeds outside, tasks inside: a run stopped early still holds every task at the seeds it finished.
    for seed in seeds:
        for name, task in tasks.items():
            entry = results["tasks"].setdefault(name, {"kind": task.kind, "paper_analogue": task.paper_analogue,
                                                        "models": {}})
            split = split_users(task, seed)
            negatives = fixed_negatives(task, seed, out / "negatives") if task.kind == "recommendation" else None
            for model_name, spec in model_plan(task, checkpoints, up_name, options,
                                               inputs.representations).items():
                if str(seed) in entry["models"].get(model_name, {}).get("seeds", {}):
                    log(f"[{name}] seed {seed} {model_name}: finished by the resumed run, skipped")
                    continue
                t0 = time.perf_counter()
                metrics = run_model(spec, task, split, negatives, seed, inputs, tables, options)
                metrics["seconds"] = time.perf_counter() - t0
                entry["models"].setdefault(model_name, {"seeds": {}})["seeds"][str(seed)] = metrics
                headline = metrics.get("auroc", metrics.get("mrr"))
                log(f"[{name}] seed {seed} {model_name}: {headline:.4f} ({metrics['seconds']:.0f} s)")
                write_json(results_path, results, indent=1)
    from .report import summarise

    record_seeds(results)
    summarise(results)
    results["seconds"] = time.perf_counter() - started
    write_json(results_path, results, indent=1)
    return results


def check_options(checkpoints: dict, options: RunOptions) -> None:
    """Raise ValueError (`error: ...`) on unknown model families or representations, representation names that clash
    with a checkpoint, and learning rates, epochs or counts that are not positive finite numbers."""
    unknown = [m for m in options.models if m not in MODEL_CHOICES]
    if unknown or not options.models:
        raise ValueError(f"error: models {list(options.models)}: unknown {unknown or 'none given'}; choose from "
                         f"{', '.join(MODEL_CHOICES)} (comma-separated)")
    for kind in ("mlp", "trans", "finetune"):
        lrs = getattr(options, f"{kind}_lrs")
        if not lrs or not all(isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0 for lr in lrs):
            raise ValueError(f"error: {kind}_lrs {list(lrs)}: learning rates must be positive finite numbers")
    for name in COUNT_OPTIONS:
        value = getattr(options, name)
        if value is None and name in ("max_users", "threads"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"error: {name} must be a whole number of at least 1, got {value!r}")
    check_device(options.device)
    try:
        names = parse_representations(options.representations)
    except ValueError as err:
        raise ValueError(f"error: representations {list(options.representations)}: {err}") from None
    clash = sorted(set(checkpoints) & {DISPLAY_NAMES[n] for n in names})
    if clash:
        raise ValueError(f"error: checkpoint name(s) {clash} are taken by representation baselines; name the "
                         "checkpoints otherwise (--model NAME=PATH) or drop the representation (--representations)")


def check_corpus(data: Path) -> None:
    """Raise ValueError naming what `data` lacks to be a data_prep corpus."""
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"error: --data {data}: no such folder")
    missing = [name for name in CORPUS_FILES if not (data / name).exists()]
    if missing:
        raise ValueError(f"error: --data {data} is not a data_prep corpus: it has no {', '.join(missing)} "
                         "(build one with `python -m data_prep build ... --out FOLDER`)")


def check_checkpoints_match(checkpoints: dict[str, Path], data: Path) -> None:
    """Raise ValueError unless every checkpoint was pre-trained on the corpus' vocabulary: the same sizes, and the
    same content when a fingerprint is known (the config's `vocab_fingerprint`, else the checkpoint's own
    vocab.json/metadata.json; the corpus' metadata.json, else its vocab.json)."""
    from modeling_shopperbert.encoder import check_vocabulary, corpus_fingerprint

    metadata = json.loads((Path(data) / "metadata.json").read_text())
    vocab = json.loads((Path(data) / "vocab.json").read_text())
    for name, path in checkpoints.items():
        config = json.loads((path / "config.json").read_text())
        own = [json.loads((path / f).read_text()) if (path / f).is_file() else None
               for f in ("metadata.json", "vocab.json")]
        try:
            check_vocabulary(config, metadata, vocab, f"--data {data}", model=f"--model {name}={path}",
                             model_fingerprint=corpus_fingerprint(*own))
        except ValueError as err:
            raise ValueError(f"error: {err}") from None


def run_config(checkpoints: dict[str, Path], data: Path, task_names, options: RunOptions,
               command: str | None) -> dict:
    """results.json's `config`: what the run was asked to do."""
    config = {"checkpoints": {k: str(v) for k, v in checkpoints.items()}, "data": str(data),
              "tasks": list(task_names), "options": asdict(options), "protocol": protocol_description(options),
              "representations": [DISPLAY_NAMES[n] for n in parse_representations(options.representations)]}
    if command:
        config["command"] = command
    config["content"] = content_ids(checkpoints, data)
    return config


def content_ids(checkpoints: dict[str, Path], data: Path) -> dict:
    """What the paths held when the run started: a digest of each checkpoint's weights and the corpus' vocabulary
    fingerprint, so that a resumed or merged run cannot pool the seeds of two different models under one name."""
    import hashlib

    from modeling_shopperbert.encoder import corpus_fingerprint

    def digest(folder: Path) -> str | None:
        weights = folder / "model.safetensors"
        if not weights.is_file():
            return None
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return "sha256:" + h.hexdigest()[:16]

    metadata = json.loads((data / "metadata.json").read_text()) if (data / "metadata.json").is_file() else None
    vocab = json.loads((data / "vocab.json").read_text()) if (data / "vocab.json").is_file() else None
    return {"checkpoints": {name: digest(Path(path)) for name, path in checkpoints.items()},
            "corpus": corpus_fingerprint(metadata, vocab)}


def _settings(config: dict) -> dict:
    """What must match for a run to resume another: all but seeds, tasks and command line (and fine-tuning's options
    where neither fine-tunes); paths resolved."""
    same = {k: v for k, v in config.items() if k not in RESUMABLE}
    same["checkpoints"] = {k: str(Path(v).resolve()) for k, v in config.get("checkpoints", {}).items()}
    same["data"] = str(Path(config.get("data", "")).resolve())
    options = config.get("options", {})
    unused = () if options.get("finetune") else FINETUNE_OPTIONS  # fine-tuning's, in a run that does not fine-tune
    same["options"] = {k: v for k, v in options.items() if k not in ("repeats", "first_seed", "threads", "device", *unused)}
    if list(same["options"].get("models") or ()) == list(DEFAULT_MODELS_BEFORE_REPRESENTATIONS):
        same["options"]["models"] = MODEL_CHOICES  # the default before u-mlp-representations existed: the same runs
    return json.loads(json.dumps(same, default=to_json_value))  # tuples and lists compare equal


def start_results(path: Path, config: dict, resume: bool, overwrite: bool) -> dict:
    """The results a run fills: empty, or with `resume` the finished seeds of the run that wrote `path`."""
    if overwrite or not path.exists():
        return {"config": config, "tasks": {}}
    if not resume:
        raise ValueError(f"error: {path} already exists; pass --resume to continue that run (its finished seeds and "
                         "models are kept and skipped) or --overwrite to replace it")
    try:
        previous = json.loads(path.read_text())
        old, new = _settings(previous["config"]), _settings(config)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"error: --resume: {path} is not a results.json of `eval_suite run` ({err})") from None
    if old != new:
        differ = sorted(k for k in old.keys() | new.keys() if k != "options" and old.get(k) != new.get(k))
        differ += sorted(f"options.{k}" for k in old["options"].keys() | new["options"].keys()
                         if old["options"].get(k) != new["options"].get(k))
        raise ValueError(f"error: --resume: {path} was made with other settings ({', '.join(differ)} differ); only "
                         "seeds and tasks may change. Use another --out, or --overwrite to replace it")
    from .merging import check_same_content

    check_same_content(previous["config"].get("content"), config.get("content"), str(path), "--resume")
    tasks = {name: {"kind": entry["kind"], "paper_analogue": entry.get("paper_analogue"),
                    "models": {m: {"seeds": dict(model["seeds"])} for m, model in entry["models"].items()}}
             for name, entry in previous.get("tasks", {}).items()}
    config = dict(config, tasks=list(dict.fromkeys([*previous["config"].get("tasks", []), *config["tasks"]])))
    return {"config": config, "tasks": tasks}


def record_seeds(results: dict) -> None:
    """The options' `first_seed` / `repeats` cover every seed the results hold (a resumed run adds its own to the
    earlier ones), as `merging.merge_results` records merged runs; `config["seeds"]` lists them."""
    seeds = {int(s) for e in results["tasks"].values() for m in e["models"].values() for s in m["seeds"]}
    if seeds:
        results["config"]["options"].update(first_seed=min(seeds), repeats=len(seeds))
        results["config"]["seeds"] = sorted(seeds)  # the exact list: a resumed run's seeds need not be one range


def prepare_run(checkpoints: dict[str, Path], data: Path, task_names, out: Path, options: RunOptions,
                command: str | None = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Every check that needs no corpus loaded (options, corpus files, vocabularies, an earlier results.json),
    raising ValueError (`error: ...`); returns the results to fill."""
    if resume and overwrite:
        raise ValueError("error: --resume and --overwrite exclude each other")
    if not task_names:
        raise ValueError("error: no task given")
    check_options(checkpoints, options)
    check_corpus(data)
    check_checkpoints_match(checkpoints, data)
    return start_results(Path(out) / "results.json", run_config(checkpoints, data, task_names, options, command),
                         resume, overwrite)


def subsample_task(task, max_users: int, seed: int = 0):
    """The task restricted to `max_users` of its users (deterministic): for smoke runs and tests."""
    import dataclasses

    if len(task.users) <= max_users:
        return task
    keep = set(np.random.default_rng(seed).choice(task.users["user_id"].to_numpy(dtype=object), max_users,
                                                  replace=False))
    users = task.users[task.users["user_id"].isin(keep)].reset_index(drop=True)
    instances = None
    if task.instances is not None:
        instances = task.instances[task.instances["user_id"].isin(keep)].reset_index(drop=True)
    return dataclasses.replace(task, users=users, instances=instances)


def model_plan(task, checkpoints, up_name, options: RunOptions, representations=()) -> dict[str, dict]:
    """Which models run on this task (Table 2): names -> how to build them. `representations`: names of the
    representation baselines in `Inputs.embeddings` ("SVD", ...): U-MLP rows after the checkpoints' (the first
    U-MLP row stays the primary checkpoint's), never UP-Trans or fine-tuning inputs."""
    plan: dict[str, dict] = {}
    if "u-mlp" in options.models:
        for name in checkpoints:
            plan[f"U-MLP {name}"] = {"kind": "mlp", "vectors": name}
    if {"u-mlp", "u-mlp-representations"} & set(options.models):
        for name in representations:
            plan[f"U-MLP {name}"] = {"kind": "mlp", "vectors": name, "representation": True}
    if "p-trans" in options.models:
        plan["P-Trans"] = {"kind": "trans", "sequences": "purchases"}
    if "up-trans" in options.models:
        plan[f"UP-Trans {up_name}"] = {"kind": "uptrans", "sequences": "purchases", "vectors": up_name}
    if "t-trans" in options.models and task.history is not None:
        plan["T-Trans"] = {"kind": "trans", "sequences": "history"}
    if options.finetune and task.name in TARGETING_TASKS:
        plan[f"Fine-tuned {up_name}"] = {"kind": "finetune", "checkpoint": up_name}
    if "baselines" in options.models:
        names = CLASSIFICATION_BASELINES if task.kind == "classification" else RECOMMENDATION_BASELINES
        plan.update({name: {"kind": kind} for name, kind in names.items()})
    return plan


BASELINE_KINDS = frozenset(CLASSIFICATION_BASELINES.values()) | frozenset(RECOMMENDATION_BASELINES.values())


def run_model(spec: dict, task, split, negatives, seed: int, inputs: Inputs, tables, options: RunOptions) -> dict:
    kind = spec["kind"]
    if kind in BASELINE_KINDS:
        return run_baseline(kind, task, split, negatives, seed, tables, inputs)
    if kind == "finetune":
        return run_finetune(spec, task, split, seed, inputs, options)
    if spec.get("sequences") == "history":
        user_inputs = inputs.history(task, tables)
    elif spec.get("sequences") == "purchases":
        user_inputs = inputs.sequences(with_vectors=spec.get("vectors"))
    else:
        user_inputs = inputs.vectors(spec["vectors"])
    mlp = kind == "mlp"
    lrs = options.mlp_lrs if mlp else options.trans_lrs
    max_epochs = options.mlp_max_epochs if mlp else options.trans_max_epochs
    patience = options.mlp_patience if mlp else options.trans_patience
    out_features = 1 if task.kind == "classification" else REC_DIM

    def make_tower():
        return _tower(kind, out_features, inputs, spec.get("vectors"))

    if task.kind == "classification":
        return run_classification(task, split, user_inputs, make_tower, lrs, seed, max_epochs, patience)
    return run_recommendation(task, split, user_inputs, inputs.items(task), negatives, make_tower, lrs, seed,
                              max_epochs, patience, options.negatives_per_positive)


def run_baseline(kind: str, task, split, negatives, seed: int, tables, inputs: Inputs) -> dict:
    """A classical baseline on this split: its test metrics and its validation metric (`val_auroc`: the validation
    AUROC of the C chosen on validation; `val_mrr`: the sampled MRR on the same validation instances and fixed
    negatives the neural models select on). Label-aware recommenders count the training users' labels only."""
    from . import baselines

    if kind in ("logreg", "logreg_rfm"):
        return baselines.run_logistic_regression(task, tables, seed,
                                                 feature_set="rfm" if kind == "logreg_rfm" else "tfidf+rfm")
    val_ids = validation_instances(task, split, seed)
    info: dict = {}
    if kind in ("popularity", "cooccurrence"):
        model = inputs.recommender(kind, task, tables)
    else:
        cooccurrence = inputs.recommender("cooccurrence", task, tables) if kind == "hybrid" else None
        model, info = baselines.label_aware_recommender(kind, task, split, negatives, val_ids, cooccurrence)
    return {**ranking_report(task, split["test"], negatives, model.score_pairs),
            "val_mrr": validation_mrr(task, val_ids, negatives, model.score_pairs), **info}


class FineTuneTower(torch.nn.Module):
    """ShopperBERT with a classifier, trained end to end (Table 5): one logit per user."""

    def __init__(self, path: Path):
        super().__init__()
        from modeling_shopperbert import ShopperBertForSequenceClassification

        self.model = ShopperBertForSequenceClassification.from_pretrained(path, num_labels=1)

    def forward(self, batch):
        return self.model(category_ids=batch["category_ids"], date_ids=batch["date_ids"],
                          text_embeds=batch["text_embeds"], attention_mask=batch["attention_mask"]).logits


def run_finetune(spec, task, split, seed, inputs: Inputs, options: RunOptions) -> dict:
    path = inputs.checkpoints[spec["checkpoint"]]
    config = json.loads((path / "config.json").read_text())
    user_inputs = UserInputs(inputs.purchases.user_ids, rows=inputs.purchases.rows,
                             text_embeddings=inputs.purchases.text_embeddings,
                             max_length=config["max_position_embeddings"] - 1, device=options.device)
    # the same patience as the Transformers trained from scratch (issue 10: every trained model gets the same chance)
    return run_classification(task, split, user_inputs, lambda: FineTuneTower(path), options.finetune_lrs, seed,
                              options.finetune_max_epochs, options.trans_patience)


__all__ = ["MAX_VALIDATION_INSTANCES", "MODEL_CHOICES", "RunOptions", "check_options", "checkpoint_label",
           "parse_models", "prepare_run", "protocol_description", "read_models", "run"]
