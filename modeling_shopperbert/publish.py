"""Publish a pre-trained ShopperBERT as a Hub-ready folder (model card included) and, optionally, push it.

    python -m modeling_shopperbert.publish --model runs/cj-small --out hub/shopperbert-completejourney-small
    python -m modeling_shopperbert.publish --model runs/cj-small --which best --results results/demo \\
        --out hub/shopperbert-completejourney-small --repo-id org/shopperbert-completejourney-small --push --private
    python -m modeling_shopperbert.publish --out hub/shopperbert-completejourney-small --repo-id org/name --push

`--model` is a train.py run folder (its `final/`, or `best/` with `--which best`) or a saved model folder (the
older spelling `--checkpoint` still works). The console script `shopperbert-publish` is the same command.
The folder written to `--out` is complete on its own:

    config.json                    the model config; `auto_map` names every Auto class ShopperBERT registers
    model.safetensors              the weights (checked tensor by tensor against the checkpoint)
    configuration_shopperbert.py   remote code for `trust_remote_code=True` (transformers only, no package needed)
    modeling_shopperbert.py
    contract.py                    the data contract the configuration imports (special ids, field names)
    processing_shopperbert.py      the processor (raw logs -> model inputs, `AutoProcessor`) and its relative
    row_encoding.py, collator.py     imports; processor_config.json holds its vocabularies and date settings
    pipeline_shopperbert.py        the custom `feature-extraction` pipeline (named in config.json custom_pipelines)
    metadata.json, vocab.json      the pre-training corpus' vocabularies, date base and text-embedding model: what
                                   encoding new users needs
    training_info.json             the checkpoint's step, validation MPP metrics and training arguments
    run_config.json                the run's model config and resolved arguments (when the run folder is known)
    downstream_results.json        the eval_suite results the card reports (with `--results`)
    loss_curve.png                 the MPP loss curve (when the run folder has one)
    README.md                      the model card, generated from the files above: no number is typed in

It is written to a temporary folder next to `--out` and renamed into place (files get the umask's usual mode); an
existing `--out` is refused unless `--overwrite` (and even then only a folder this command wrote is replaced). Also
refused, before anything is written: an invalid `--repo-id` (NAMESPACE/NAME, even without `--push`), a
metadata.json/vocab.json of another vocabulary than the model's (sizes, and content when a `vocab_fingerprint` is
known), and weights holding NaN or inf (exit 1). Errors print `error: ...` (a traceback only with `--debug`).

`--push` uploads the folder with `huggingface_hub` (`create_repo` + `upload_folder`) to `--repo-id`, on the Hub
that `HF_ENDPOINT` names (default https://huggingface.co), with the token in `HF_TOKEN` (or `hf auth login`). It
checks, before loading the weights or sending any file, that HF_HUB_OFFLINE is not set, that a token exists and that
the Hub accepts it. Without `--model`, an existing published `--out` folder is checked and pushed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# The remote-code files, next to this module: the same ones `save_pretrained` copies (it follows the relative imports:
# the configuration imports the data contract `contract.py`), then the processor and the feature-extraction pipeline
# (`pipeline_shopperbert.save_pipeline_files`) with theirs (`row_encoding.py`, `collator.py`).
REMOTE_CODE_FILES = ("configuration_shopperbert.py", "modeling_shopperbert.py", "contract.py",
                     "processing_shopperbert.py", "pipeline_shopperbert.py", "row_encoding.py", "collator.py")
PROCESSOR_FILE = "processor_config.json"
# What encoding new users needs besides the weights (train.py copies them from the data_prep folder).
DATA_FILES = ("metadata.json", "vocab.json")
# Metadata keys a user needs to turn purchase logs into model inputs.
REQUIRED_METADATA = ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "date_base_year",
                     "text_model")
DOWNSTREAM_RESULTS_FILE = "downstream_results.json"
# Representations anyone can compute (eval_suite's representation baselines): kept beside the checkpoint's U-MLP.
TRIVIAL_REPRESENTATIONS = ("SVD", "SBERT-mean", "Random")
CARD_FILE = "README.md"
# Every file a published folder must hold (the optional ones are listed in the module docstring).
# (`contract.py` is required where a remote-code file imports it: folders published before it existed work without.)
REQUIRED_FILES = ("config.json", "model.safetensors", *REMOTE_CODE_FILES[:2], *DATA_FILES, CARD_FILE)
# Files a published folder may hold; anything else makes `--overwrite` refuse to replace the folder.
KNOWN_FILES = set(REQUIRED_FILES) | set(REMOTE_CODE_FILES) | {
    PROCESSOR_FILE, "training_info.json", "run_config.json", DOWNSTREAM_RESULTS_FILE, "loss_curve.png",
    "model.safetensors.index.json", "generation_config.json"}

TAGS = ["shopperbert", "user-representation", "user-embedding", "recommendation", "e-commerce", "purchase-history",
        "masked-purchase-prediction", "custom_code"]
MPP_TASK_TYPE = "masked-purchase-prediction"
PAPER = "One4all User Representation for Recommender Systems in E-commerce"
PAPER_AUTHORS = "Kyuyong Shin, Hanock Kwak, Kyung-Min Kim, Minkyu Kim, Young-Jin Park, Jisu Jeong, Seungjae Jung"


class PublishError(Exception):
    """A problem with the inputs or the environment, with a message meant for the user (printed without traceback,
    exit status 2)."""

    exit_status = 2


class PublishFault(PublishError):
    """What would be published is broken (non-finite weights): nothing is written; exit status 1."""

    exit_status = 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise PublishError(f"{path} is not valid JSON ({err})") from None


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Sources:
    """Where everything the published folder holds comes from."""

    model_dir: Path  # a save_pretrained folder
    run_dir: Path | None = None  # the train.py run folder around it, when known
    data_dir: Path | None = None  # a data_prep folder for metadata.json / vocab.json the checkpoint lacks
    results_dir: Path | None = None  # an eval_suite output folder (results.json)
    results_label: str | None = None  # which checkpoint of results.json is this one (e.g. "MP+A")
    which: str = "final"
    metadata: dict = field(default_factory=dict)
    training_info: dict = field(default_factory=dict)
    run_config: dict | None = None
    results: dict | None = None

    def inputs(self) -> list[Path]:
        """The folders read from: `--out` must never replace them."""
        return [p for p in (self.model_dir, self.run_dir, self.data_dir) if p is not None]

    def data_file(self, name: str) -> Path | None:
        for folder in (self.model_dir, self.data_dir):
            if folder is not None and (folder / name).is_file():
                return folder / name
        return None


def resolve_checkpoint(path: str | os.PathLike, which: str = "final") -> tuple[Path, Path | None]:
    """`(model folder, run folder or None)` for a run folder (its `which/` model) or a saved model folder."""
    path = Path(path)
    if not path.is_dir():
        raise PublishError(f"--model {path}: no such folder")
    if (path / "config.json").is_file():
        run_dir = path.parent if (path.parent / "run_config.json").is_file() else None
        return path, run_dir
    if (path / which / "config.json").is_file():
        return path / which, path
    if (path / "run_config.json").is_file():
        raise PublishError(f"--model {path} is a train.py run folder without a `{which}/` model "
                           f"(it holds {sorted(p.name for p in path.iterdir())}); did the run finish?")
    raise PublishError(f"--model {path} is neither a saved model folder (no config.json) nor a train.py run "
                       f"folder (no {which}/config.json)")


def gather_sources(checkpoint, which="final", data=None, results=None, results_label=None) -> Sources:
    """Read every input file and check that they belong together; raise `PublishError` naming what is wrong."""
    model_dir, run_dir = resolve_checkpoint(checkpoint, which)
    sources = Sources(model_dir=model_dir, run_dir=run_dir, which=model_dir.name,
                      data_dir=Path(data) if data else None, results_label=results_label)
    if sources.data_dir is not None and not sources.data_dir.is_dir():
        raise PublishError(f"--data {sources.data_dir}: no such folder")
    for name in DATA_FILES:
        if sources.data_file(name) is None:
            raise PublishError(
                f"{model_dir} has no {name}, which encoding new users needs (train.py copies it from the data_prep "
                f"folder); pass --data <the data_prep folder the model was pre-trained on>")
    sources.metadata = read_json(sources.data_file("metadata.json"))
    missing = [k for k in REQUIRED_METADATA if k not in sources.metadata]
    if missing:
        raise PublishError(f"{sources.data_file('metadata.json')} lacks {missing}: it is not a data_prep metadata file")
    config = read_json(model_dir / "config.json")
    if config.get("model_type") != "shopperbert":
        raise PublishError(f"{model_dir}/config.json has model_type {config.get('model_type')!r}, not 'shopperbert'")
    check_corpus_matches(config, sources)
    if (model_dir / "training_info.json").is_file():
        sources.training_info = read_json(model_dir / "training_info.json")
    if run_dir is not None and (run_dir / "run_config.json").is_file():
        sources.run_config = read_json(run_dir / "run_config.json")
    if results is not None:
        sources.results_dir = Path(results)
        results_file = sources.results_dir / "results.json" if sources.results_dir.is_dir() else sources.results_dir
        if not results_file.is_file():
            raise PublishError(f"--results {results}: no results.json there (an `python -m eval_suite run` output)")
        sources.results = read_json(results_file)
        if not isinstance(sources.results.get("tasks"), dict) or not sources.results["tasks"]:
            raise PublishError(f"{results_file} holds no task results")
        sources.results_label = match_results_checkpoint(sources.results, model_dir, results_label)
    return sources


def check_corpus_matches(config: dict, sources: Sources) -> None:
    """The corpus files (metadata.json, vocab.json) must be the model's: same sizes, and the same vocabulary content
    when the config or the corpus records a fingerprint (older ones without: sizes only)."""
    from .encoder import check_vocabulary

    metadata_file, vocab_file = sources.data_file("metadata.json"), sources.data_file("vocab.json")
    try:
        check_vocabulary(config, sources.metadata, read_json(vocab_file), f"{metadata_file} / {vocab_file}",
                         model=f"the model {sources.model_dir}")
    except ValueError as err:
        raise PublishError(f"{err}; it describes another corpus") from None


def check_finite_weights(folder: Path) -> None:
    """Refuse weights holding NaN or inf (a diverged training run), before anything is written."""
    from safetensors import safe_open

    from .encoder import non_finite_tensors

    bad = []
    for path in _safetensors_files(folder):
        if path.is_file():
            with safe_open(str(path), framework="pt") as handle:
                bad += non_finite_tensors((key, handle.get_tensor(key)) for key in handle.keys())
    if bad:
        raise PublishFault(f"{folder} has non-finite (NaN/inf) weights in {len(bad)} tensors ({', '.join(bad[:3])}"
                           f"{', ...' if len(bad) > 3 else ''}): the training run diverged; publish an earlier "
                           "checkpoint (e.g. --which best) or re-train. Nothing was written.")


def check_repo_id(repo_id: str | None) -> None:
    """A Hub repository id (`namespace/name`, huggingface_hub's rules), checked even without --push."""
    if repo_id is None:
        return
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid repository id: give it as NAMESPACE/NAME "
                           "(your user or organisation, then the model name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid repository id: {err}") from None


def match_results_checkpoint(results: dict, model_dir: Path, label: str | None) -> str:
    """The label (e.g. "MP") under which results.json evaluated this checkpoint: `label`, else the one whose path is
    `model_dir`. Refuse to guess: a card must not report another checkpoint's numbers."""
    checkpoints = results.get("config", {}).get("checkpoints", {})
    if label is not None:
        if label not in checkpoints:
            raise PublishError(f"--results-model {label!r} is not in the results "
                               f"(they evaluated {sorted(checkpoints)})")
        return label
    target = model_dir.resolve()
    matches = [name for name, path in checkpoints.items() if Path(path).resolve() == target]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(f"{name}={path}" for name, path in checkpoints.items()) or "none"
    raise PublishError(f"the results evaluated checkpoints {listing}; none is {model_dir}. Pass --results-model NAME "
                       "to say which one this checkpoint is")


# ---------------------------------------------------------------------------------------------------------------
# Model-index metadata
# ---------------------------------------------------------------------------------------------------------------
def metadata_id(text: str) -> str:
    """An id for the model-index `type` fields, which the Hub matches against `[\\w.-]+` (names stay free text)."""
    return re.sub(r"[^\w.-]+", "_", str(text).replace("@", "_at_")).strip("_") or "unknown"


def dataset_id(metadata: dict) -> str:
    return metadata_id(metadata.get("source") or "unknown")


def mpp_eval_results(training_info: dict, metadata: dict) -> list:
    """Validation MPP loss and per-head accuracy of the published checkpoint, from its training_info.json."""
    from huggingface_hub import EvalResult

    from .configuration_shopperbert import MPP_HEADS

    if "eval/loss" not in training_info:
        return []
    common = dict(task_type=MPP_TASK_TYPE, task_name="Masked purchase prediction (pre-training objective)",
                  dataset_type=dataset_id(metadata), dataset_name=dataset_id(metadata),
                  dataset_split=f"validation households (step {training_info.get('step', '?')})")
    out = [EvalResult(metric_type="loss", metric_name="MPP loss", metric_value=float(training_info["eval/loss"]),
                      **common)]
    for head in MPP_HEADS:
        key = f"eval/accuracy_{head}"
        if key in training_info:
            out.append(EvalResult(metric_type="accuracy", metric_name=f"MPP accuracy ({head})",
                                  metric_value=float(training_info[key]), **common))
    return out


def results_for_checkpoint(results: dict, label: str) -> tuple[dict, list[str]]:
    """A copy of results.json without the U-MLPs of the other checkpoints it evaluated, re-summarised (means, paired
    tests, headline) so that every table and the headline speak of this checkpoint; also the labels left out."""
    import copy

    from eval_suite.report import summarise

    ours = f"U-MLP {label}"
    trivial = {f"U-MLP {name}" for name in TRIVIAL_REPRESENTATIONS}
    kept = copy.deepcopy(results)
    dropped = set()
    for entry in kept["tasks"].values():
        for name in list(entry["models"]):
            if name.startswith("U-MLP ") and name != ours and name not in trivial:
                dropped.add(name[len("U-MLP "):])
                del entry["models"][name]
        entry.pop("comparisons", None)
        entry.pop("headline", None)
    return summarise(kept), sorted(dropped)


def downstream_eval_results(results: dict, label: str, metadata: dict) -> list:
    """U-MLP on this checkpoint's frozen embeddings, one entry per task and metric: the mean over seeds."""
    from huggingface_hub import EvalResult

    from eval_suite.model_card import METRIC_NAMES, TASK_TYPES
    from eval_suite.report import summarise

    if any("mean" not in m for entry in results["tasks"].values() for m in entry["models"].values()):
        summarise(results)
    model_name = f"U-MLP {label}"
    out = []
    for task_name, entry in results["tasks"].items():
        model = entry["models"].get(model_name)
        if model is None:
            continue
        for key, metric_type in METRIC_NAMES.items():
            value = model.get("mean", {}).get(key)
            if value is None or not math.isfinite(value):
                continue
            out.append(EvalResult(
                task_type=TASK_TYPES[entry["kind"]], task_name=task_name, dataset_type=dataset_id(metadata),
                dataset_name=f"{dataset_id(metadata)} ({entry.get('paper_analogue', task_name)})",
                dataset_split=f"test users, mean of {model['n']} seeds", metric_type=metadata_id(metric_type),
                metric_name=f"{key} ({model_name})", metric_value=float(value)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------
def _fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def render_model_card(sources: Sources, config: dict, num_parameters: dict, files: list[str],
                      repo_id: str | None, model_name: str, license: str = "apache-2.0") -> str:
    """The README.md of a published folder: YAML metadata + the card body, every number read from `sources`."""
    from huggingface_hub import ModelCard, ModelCardData

    from .configuration_shopperbert import MPP_HEADS
    from .mpp_rules import rule_table

    meta, info = sources.metadata, sources.training_info
    eval_results = mpp_eval_results(info, meta)
    if sources.results is not None:
        results, others = results_for_checkpoint(sources.results, sources.results_label)
        eval_results += downstream_eval_results(results, sources.results_label, meta)
    metrics = sorted({r.metric_type.split("_at_")[0] for r in eval_results} - {"loss"})
    data = ModelCardData(
        library_name="transformers", pipeline_tag="feature-extraction", license=license, tags=list(TAGS),
        datasets=[dataset_id(meta)], metrics=metrics or None, model_name=model_name,
        eval_results=eval_results or None,
    )
    repo = repo_id or f"<your-org>/{model_name}"
    args = (sources.run_config or {}).get("args") or info.get("args") or {}
    splits, counts = meta.get("splits", {}), meta.get("counts", {})
    date_range = meta.get("date_range", {})
    levels = meta.get("category_levels", {})
    text_model, text_dim = meta["text_model"], meta["text_embedding_size"]
    hidden = config["hidden_size"]

    lines = [
        f"# {model_name}",
        "",
        f"A ShopperBERT user encoder: a BERT-style Transformer over a shopper's purchase history, pre-trained with "
        f"masked purchase prediction (MPP) on `{dataset_id(meta)}` purchase logs, whose {hidden}-dimensional user "
        f"embedding feeds downstream models (profiling, targeting, recommendation) without fine-tuning. "
        f"An implementation of \"{PAPER}\" (Shin et al., 2021).",
        "",
        f"- Encoder: H={hidden}, L={config['num_hidden_layers']}, A={config['num_attention_heads']}, feed-forward "
        f"{config['intermediate_size']}, up to {config['max_position_embeddings'] - 1} purchases per user; "
        f"{_fmt_int(num_parameters['encoder'])} parameters ({_fmt_int(num_parameters['total'])} with the "
        f"{len(MPP_HEADS)} MPP heads in this checkpoint).",
        f"- User embedding: `{config['user_representation']}` "
        + ("(mean of the final purchase-token states, the paper's ShopperBERT-MP)."
           if config["user_representation"] == "mean" else "(the final [CLS] state, the paper's ShopperBERT-CLS)."),
        f"- A purchase token is the mean of a product vector (its four category embeddings and a projection of the "
        f"description's `{text_model}` vector, {text_dim}-dim, projected together: the paper's eq. 1), "
        + ("five date embeddings (year, month, day, weekday, hour) and a position embedding (a 7-way mean)."
           if config.get("embedding_combination", "mean") == "mean" else
           "the mean of five date embeddings (year, month, day, weekday, hour) and a position embedding (a 3-way "
           "mean: `embedding_combination=\"grouped\"`)."),
        f"- Pre-training objective: masked purchase prediction (nine heads)"
        + (f" plus {config['contrastive_weight']:g} x a user-level InfoNCE loss between two Algorithm 1 views of "
           f"each user (temperature {config.get('contrastive_temperature', 0.1):g}, in-batch negatives)."
           if config.get("contrastive_weight", 0) else "."),
        "",
        "## Usage",
        "",
        "The modeling code travels with the weights, so `transformers` alone loads the encoder:",
        "",
        "```python",
        "from transformers import AutoModel",
        "",
        f"model = AutoModel.from_pretrained(\"{repo}\", trust_remote_code=True).eval()",
        "out = model(category_ids=category_ids, date_ids=date_ids, text_embeds=text_embeds)",
        f"users = out.user_embedding  # (batch, {hidden})",
        "```",
        "",
        "Inputs, one row per user, [CLS] first (id 2 in every field), then purchases oldest first, padded with 0:",
        "`category_ids` `(batch, length, 4)` and `date_ids` `(batch, length, 5)` (ids from `vocab.json` and the date "
        f"rule below), `text_embeds` `(batch, length, {text_dim})` (`{text_model}` vectors of the product "
        "descriptions; ignored at [CLS] and padding). `AutoModelForPreTraining` gives the MPP heads and "
        "`AutoModelForSequenceClassification` a fine-tuning head on the same encoder.",
        "",
        "With the `shopperbert` package (this repository), raw purchase logs become embeddings directly: categories "
        "are mapped with this model's vocabulary, descriptions embedded with its text model:",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from modeling_shopperbert import UserEncoder",
        "",
        f"encoder = UserEncoder.from_pretrained(snapshot_download(\"{repo}\"))",
        "embeddings = encoder.encode(logs)  # pandas DataFrame: user_id, timestamp, category_1..4, description",
        "```",
        "",
        "## Vocabulary and data contract (`metadata.json`, `vocab.json`)",
        "",
        "| field | value |",
        "|---|---|",
        f"| corpus | `{dataset_id(meta)}`{' (synthetic)' if meta.get('synthetic') else ''} |",
    ]
    for level, size in zip(("category_1", "category_2", "category_3", "category_4"), meta["category_vocab_sizes"]):
        what = f"{levels[level]}: " if levels.get(level) else ""
        lines.append(f"| {level} | {what}{size} ids (incl. 4 reserved: [PAD], [MASK], [CLS], [UNK]) |")
    last_year = meta["date_base_year"] + meta["year_vocab_size"] - 5
    lines += [
        f"| dates | id = 4 + offset: year - {meta['date_base_year']} (years {meta['date_base_year']}-{last_year}; "
        "others [UNK]), month - 1, day - 1, weekday (Monday 0), hour |",
        f"| text model | `{text_model}`, {text_dim}-dim vectors |",
    ]
    if date_range:
        lines.append(f"| purchases | {date_range.get('first', '?')} to {date_range.get('last', '?')} |")
    lines += ["", "Unknown categories and years map to [UNK] (id 3): encode users with this vocabulary, not a new one.",
              "", "## Pre-training", ""]
    if splits:
        lines.append(f"Data: {_fmt_int(splits.get('train', {}).get('users'))} training and "
                     f"{_fmt_int(splits.get('validation', {}).get('users'))} validation households, "
                     f"{_fmt_int(counts.get('purchases_kept'))} purchases before {meta.get('end_date') or '?'}.")
        lines.append("")
    if args:
        steps = args.get("total_steps", args.get("max_steps"))
        run_bits = [f"preset `{args.get('preset', '?')}`", f"{steps} optimizer steps" if steps else None,
                    f"global batch {args['batch_size']}" if "batch_size" in args else None,
                    f"peak learning rate {args['learning_rate']:g}" if "learning_rate" in args else None,
                    f"weight decay {args['weight_decay']:g}" if "weight_decay" in args else None,
                    f"{args['warmup_steps']} warm-up steps then cosine" if args.get("warmup_steps") is not None
                    else None,
                    f"augmentation {'on' if args['augmentation'] else 'off'}" if "augmentation" in args else None,
                    f"precision {args['mixed_precision_resolved']}" if "mixed_precision_resolved" in args else None,
                    f"{args['num_processes']} process(es)" if "num_processes" in args else None,
                    f"seed {args['seed']}" if "seed" in args else None]
        lines += ["Run (`train.py`, AdamW): " + ", ".join(b for b in run_bits if b) + ".", ""]
    step = info.get("step")
    if step is not None:
        kind = ("the lowest validation MPP loss of the run" if sources.which == "best"
                else "the end of the run" if sources.which == "final" else "this checkpoint")
        lines += [f"This checkpoint: step {step} ({kind}).", ""]
    if "eval/loss" in info:
        lines += [
            f"### Masked purchase prediction on validation households (step {step})",
            "",
            f"Validation MPP loss {info['eval/loss']:.4f}. Accuracy on masked purchases (fixed masks) against three "
            "rules that learn nothing: the prior (the head's most frequent training class), the user's most frequent "
            "category among their unmasked purchases (user mode), and the most frequent among the unmasked purchases "
            "of the same basket, i.e. same date and hour, else the user mode (basket mode):",
            "",
            rule_table(info, MPP_HEADS, model_name="accuracy", bold_no=True, with_count=True),
        ]
        lines.append("")
    else:
        lines += ["No validation MPP metrics were recorded with this checkpoint (no training_info.json).", ""]
    if "loss_curve.png" in files:
        lines += ["![MPP loss curve](loss_curve.png)", ""]

    lines += ["## Downstream evaluation", ""]
    if sources.results is not None:
        from eval_suite.model_card import results_section

        left_out = (f" The run also evaluated {', '.join(f'`{o}`' for o in others)}: left out here, kept in "
                    f"`{DOWNSTREAM_RESULTS_FILE}`." if others else "")
        lines += [
            f"From `{DOWNSTREAM_RESULTS_FILE}` (`python -m eval_suite run`), where this checkpoint is "
            f"`{sources.results_label}`: `U-MLP {sources.results_label}` is an MLP on its frozen user embeddings, the "
            f"model the model-index metadata reports.{left_out}",
            "",
            results_section(results, None),
            "",
        ]
    else:
        lines += ["Not evaluated downstream yet: `python -m eval_suite run --model <this folder> ...`, then publish "
                  "again with `--results`.", ""]
    lines += [
        "## Files",
        "",
        "| file | content |",
        "|---|---|",
    ]
    descriptions = {
        "config.json": "model configuration; `auto_map` names the Auto classes for `trust_remote_code`",
        "model.safetensors": "weights (encoder and MPP heads)",
        "configuration_shopperbert.py": "remote code: the configuration class",
        "modeling_shopperbert.py": "remote code: the model classes",
        "contract.py": "remote code: the data contract (special ids, field names) the configuration imports",
        "processing_shopperbert.py": "remote code: the processor (raw purchase logs -> padded model inputs)",
        "row_encoding.py": "remote code: category and date ids (the processor's, shared with `data_prep`)",
        "collator.py": "remote code: padding and truncation (the processor's, shared with training)",
        "pipeline_shopperbert.py": "remote code: the `feature-extraction` pipeline (user id -> embedding)",
        PROCESSOR_FILE: "the processor: vocabularies, date settings, text model name (`AutoProcessor`)",
        "metadata.json": "pre-training corpus: vocabulary sizes, date base, text model, splits",
        "vocab.json": "category vocabularies (id order)",
        "training_info.json": "this checkpoint's step, validation MPP metrics and arguments",
        "run_config.json": "the run's model config and resolved training arguments",
        DOWNSTREAM_RESULTS_FILE: "eval_suite results (per task, model and seed)",
        "loss_curve.png": "MPP loss curve",
    }
    for name in files:
        if name in descriptions:
            lines.append(f"| `{name}` | {descriptions[name]} |")
    lines += [
        "",
        "## Limitations",
        "",
        f"The encoder knows only the vocabulary and years of `{dataset_id(meta)}`; purchases from another catalogue "
        "lose their category identity ([UNK]) and keep only their description vector. Embeddings reflect the "
        "shoppers of that corpus and period.",
        "",
        "## Citation",
        "",
        "```bibtex",
        "@misc{shin2021one4all,",
        f"  title  = {{{PAPER}}},",
        f"  author = {{{' and '.join(PAPER_AUTHORS.split(', '))}}},",
        "  year   = {2021}",
        "}",
        "```",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    return str(card)


def check_card(text: str) -> list[str]:
    """Problems with a card's metadata (offline: what the Hub's validator would reject first)."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    problems = []
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # noqa: BLE001  (any parse error is a problem to report)
        return [f"the card does not parse: {err}"]
    data = card.data.to_dict()
    for key, expected in (("library_name", "transformers"), ("pipeline_tag", "feature-extraction")):
        if data.get(key) != expected:
            problems.append(f"metadata {key} is {data.get(key)!r}, expected {expected!r}")
    for key in ("tags", "datasets"):
        if not isinstance(data.get(key), list) or not data[key]:
            problems.append(f"metadata {key} must be a non-empty list")
    if "model-index" in data:
        try:
            _, results = model_index_to_eval_results(data["model-index"])
        except Exception as err:  # noqa: BLE001
            problems.append(f"model-index does not parse: {err}")
        else:
            bad = [r.metric_name for r in results if not isinstance(r.metric_value, (int, float))
                   or not math.isfinite(r.metric_value)]
            if bad:
                problems.append(f"model-index has non-numeric values for {bad}")
            ids = {value for r in results for value in (r.task_type, r.dataset_type, r.metric_type)}
            bad = sorted(value for value in ids if not re.fullmatch(r"(?:[\w-]+/)?[\w.-]+", value))
            if bad:
                problems.append(f"model-index type fields must be ids ([\\w.-]+), got {bad}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------------------------
def check_published_folder(folder: Path) -> list[str]:
    """Problems that would stop the folder from working on its own (empty list: ready to push)."""
    from .modeling_shopperbert import AUTO_MAP

    folder = Path(folder)
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    if (folder / "config.json").is_file():
        auto_map = read_json(folder / "config.json").get("auto_map", {})
        missing = {k: v for k, v in AUTO_MAP.items() if auto_map.get(k) != v}
        if missing:
            problems.append(f"config.json auto_map lacks {missing}")
        for target in auto_map.values():
            module = target.split(".")[0]
            if not (folder / f"{module}.py").is_file():
                problems.append(f"auto_map names {target} but {module}.py is missing")
    problems += _missing_relative_imports(folder)
    problems += _processor_problems(folder)
    if (folder / "metadata.json").is_file():
        missing = [k for k in REQUIRED_METADATA if k not in read_json(folder / "metadata.json")]
        if missing:
            problems.append(f"metadata.json lacks {missing}")
    if (folder / CARD_FILE).is_file():
        problems += [f"README.md: {p}" for p in check_card((folder / CARD_FILE).read_text())]
    return problems


def _processor_problems(folder: Path) -> list[str]:
    """What `AutoProcessor` and `pipeline("feature-extraction", ...)` need from a folder that ships the processor
    (folders published before the processor existed have no processor_config.json and are not checked)."""
    if not (folder / PROCESSOR_FILE).is_file():
        return []
    problems = []
    if "AutoProcessor" not in read_json(folder / PROCESSOR_FILE).get("auto_map", {}):
        problems.append(f"{PROCESSOR_FILE} auto_map lacks AutoProcessor")
    if (folder / "config.json").is_file():
        if "feature-extraction" not in read_json(folder / "config.json").get("custom_pipelines", {}):
            problems.append("config.json custom_pipelines lacks feature-extraction")
    return problems


def _missing_relative_imports(folder: Path) -> list[str]:
    """The remote-code files' relative imports (`from .contract import ...`) that the folder lacks: transformers'
    loader copies exactly these next to the file it loads."""
    from transformers.dynamic_module_utils import get_relative_imports

    problems = []
    for path in sorted(folder.glob("*.py")):
        for module in sorted(get_relative_imports(path)):
            if not (folder / f"{module}.py").is_file():
                problems.append(f"{path.name} imports .{module} but {module}.py is missing")
    return problems


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in read_json(index)["weight_map"].values()})
    return [folder / "model.safetensors"]


def compare_weights(source: Path, published: Path) -> int:
    """Check tensor by tensor that the published weights are the checkpoint's; returns the number of tensors."""
    import torch
    from safetensors import safe_open

    def tensors(folder):
        handles = {}
        for path in _safetensors_files(folder):
            handle = safe_open(str(path), framework="pt")
            handles.update({key: handle for key in handle.keys()})
        return handles

    ours, theirs = tensors(source), tensors(published)
    if ours.keys() != theirs.keys():
        missing, extra = sorted(ours.keys() - theirs.keys())[:5], sorted(theirs.keys() - ours.keys())[:5]
        raise PublishError(f"published weights have different tensors than {source}: missing {missing}, extra {extra}")
    for key, handle in ours.items():
        a, b = handle.get_tensor(key), theirs[key].get_tensor(key)
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            raise PublishError(f"published tensor {key} differs from the checkpoint's")
    return len(ours)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _is_published_folder(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return not names or ({"config.json", CARD_FILE} <= names and names <= KNOWN_FILES)


def check_output(out: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse an existing --out (unless --overwrite, and then only a folder this command wrote)."""
    resolved = out.resolve()
    for folder in protected:
        folder = folder.resolve()
        if resolved == folder or resolved in folder.parents:
            raise PublishError(f"--out {out} is, or contains, the input folder {folder}; choose another folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise PublishError(f"--out {out} exists and is not a folder")
    if not overwrite:
        raise PublishError(f"--out {out} already exists; pass --overwrite to replace it")
    if not _is_published_folder(out):
        raise PublishError(f"--out {out} holds files this command does not write "
                           f"({sorted(p.name for p in out.iterdir() if p.name not in KNOWN_FILES)[:5]}); "
                           "refusing to replace it even with --overwrite")


def build_folder(sources: Sources, out: Path, repo_id: str | None = None, model_name: str | None = None,
                 license: str = "apache-2.0", overwrite: bool = False) -> Path:
    """Write the Hub-ready folder: temporary folder next to `out`, checked, then renamed into place."""
    from . import modeling_shopperbert as modeling

    out = Path(out)
    check_output(out, overwrite, sources.inputs())
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else out.name)
    config = read_json(sources.model_dir / "config.json")
    architecture = (config.get("architectures") or ["ShopperBertForMaskedPurchasePrediction"])[0]
    model_class = getattr(modeling, architecture, None)
    if not (isinstance(model_class, type) and issubclass(model_class, modeling.ShopperBertPreTrainedModel)):
        raise PublishError(f"{sources.model_dir}/config.json names architecture {architecture!r}, not a ShopperBERT "
                           "model class")

    check_finite_weights(sources.model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        log(f"loading {architecture} from {sources.model_dir}")
        model = model_class.from_pretrained(sources.model_dir)
        encoder = getattr(model, model.base_model_prefix, model)
        num_parameters = {"total": sum(p.numel() for p in model.parameters()),
                          "encoder": sum(p.numel() for p in encoder.parameters())}
        log(f"writing {tmp} ({num_parameters['total']:,} parameters)")
        model.save_pretrained(tmp)
        del model
        count = compare_weights(sources.model_dir, tmp)
        log(f"checked {count} tensors against the checkpoint")
        for name in DATA_FILES:
            shutil.copy2(sources.data_file(name), tmp / name)
        from .pipeline_shopperbert import save_pipeline_files

        save_pipeline_files(tmp)  # processor (vocabularies, date settings) + pipeline code, named in config.json
        if (sources.model_dir / "training_info.json").is_file():
            shutil.copy2(sources.model_dir / "training_info.json", tmp / "training_info.json")
        if sources.run_config is not None:
            shutil.copy2(sources.run_dir / "run_config.json", tmp / "run_config.json")
        if sources.run_dir is not None and (sources.run_dir / "loss_curve.png").is_file():
            shutil.copy2(sources.run_dir / "loss_curve.png", tmp / "loss_curve.png")
        if sources.results is not None:
            (tmp / DOWNSTREAM_RESULTS_FILE).write_text(json.dumps(sources.results, indent=2, default=str))
        files = sorted(p.name for p in tmp.iterdir()) + [CARD_FILE]
        card = render_model_card(sources, read_json(tmp / "config.json"), num_parameters, files, repo_id,
                                 model_name, license)
        (tmp / CARD_FILE).write_text(card)
        problems = check_published_folder(tmp)
        if problems:
            raise PublishError("the published folder is incomplete:\n  " + "\n  ".join(problems))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the published folder gets the usual mode
        for path in tmp.iterdir():  # atomic writers (safetensors) make files 0600: give them the usual mode too
            path.chmod(0o666 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class HubTarget:
    repo_id: str
    token: str
    endpoint: str
    user: str


def preflight_push(repo_id: str | None) -> HubTarget:
    """Everything that can stop a push, checked before the weights are loaded or any file is sent: the repo id,
    HF_HUB_OFFLINE, a token, and (one request) that the Hub at HF_ENDPOINT is reachable and accepts the token."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not repo_id:
        raise PublishError("--push needs --repo-id ORG/NAME (the Hub repository to upload to)")
    check_repo_id(repo_id)
    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "HF_HUB_OFFLINE is set, so huggingface_hub sends no request: nothing was uploaded. Unset it (or set "
            "HF_HUB_OFFLINE=0) for this command to push; the Makefile and the tests set it.")
    endpoint = constants.ENDPOINT
    token = get_token()
    if not token:
        raise PublishError(
            f"no Hugging Face token: nothing was uploaded. Set HF_TOKEN to a token with write access to {repo_id} "
            f"(create one at {endpoint}/settings/tokens) or run `hf auth login`.")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        who = api.whoami(token=token)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status == 401:
            raise PublishError(f"the Hub at {endpoint} rejected the token (401): nothing was uploaded. Check HF_TOKEN "
                               "(it takes precedence over `hf auth login`).") from None
        raise PublishError(f"the Hub at {endpoint} answered {status} to the token check: nothing was uploaded "
                           f"({err})") from None
    except Exception as err:  # noqa: BLE001  (connection refused, DNS, TLS, timeouts: all mean "no network")
        raise PublishError(f"cannot reach the Hub at {endpoint} ({type(err).__name__}: {err}): nothing was uploaded. "
                           "Check the network connection, or HF_ENDPOINT if you use a mirror.") from None
    return HubTarget(repo_id=repo_id, token=token, endpoint=endpoint, user=str(who.get("name", "?")))


def push_folder(folder: Path, target: HubTarget, private: bool = False, commit_message: str | None = None):
    """`create_repo` (exist_ok) + `upload_folder`; returns the `CommitInfo`."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=target.endpoint, token=target.token)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    log(f"pushing {len(files)} files ({size / 1e6:.1f} MB) from {folder} to {target.endpoint}/{target.repo_id} "
        f"as {target.user}")
    try:
        url = api.create_repo(target.repo_id, private=private or None, exist_ok=True, repo_type="model")
        log(f"repository {url} ready{' (private)' if private else ''}")
        return api.upload_folder(repo_id=target.repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=commit_message or f"Upload {Path(folder).name} (ShopperBERT)")
    except Exception as err:  # noqa: BLE001  (HTTP errors, lost connection, invalid card metadata, ...)
        raise PublishError(f"the upload to {target.endpoint}/{target.repo_id} failed ({type(err).__name__}: {err}). "
                           f"{folder} is complete: retry with `python -m modeling_shopperbert.publish --out {folder} "
                           f"--repo-id {target.repo_id} --push`") from None


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "shopperbert-publish" else
                                     "python -m modeling_shopperbert.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="a train.py run folder or a saved model folder; omit it to push an existing --out")
    parser.add_argument("--checkpoint", dest="model", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    parser.add_argument("--which", choices=["final", "best"], default="final",
                        help="with a run folder: publish final/ (default) or best/ (lowest validation MPP loss)")
    parser.add_argument("--out", required=True, help="the Hub-ready folder to write (e.g. hub/<model name>)")
    parser.add_argument("--results", default=None,
                        help="an eval_suite run output folder (or its results.json): downstream results for the card")
    parser.add_argument("--results-model", default=None,
                        help="the checkpoint's name in --results (e.g. MP+A); default: the one whose path matches")
    parser.add_argument("--data", default=None,
                        help="a data_prep folder to take metadata.json/vocab.json from when the checkpoint lacks them")
    parser.add_argument("--repo-id", default=None, help="ORG/NAME on the Hub (used in the card; required by --push)")
    parser.add_argument("--model-name", default=None, help="title of the card (default: the repo or folder name)")
    parser.add_argument("--license", default="apache-2.0", help="license in the card metadata (default apache-2.0)")
    parser.add_argument("--push", action="store_true", help="upload the folder to --repo-id (needs HF_TOKEN)")
    parser.add_argument("--private", action="store_true", help="create the repository private (an existing "
                                                               "repository keeps its visibility)")
    parser.add_argument("--commit-message", default=None, help="commit message of the upload")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out written by this command")
    parser.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if args.push and not args.repo_id:
            raise PublishError("--push needs --repo-id ORG/NAME (the Hub repository to upload to)")
        check_repo_id(args.repo_id)
        # 1. The local inputs: JSON files only, no weights loaded, no request sent.
        sources = None
        if args.model is None:
            if not args.push:
                raise PublishError("give --model (what to publish), or --push to upload an existing --out")
            if not out.is_dir():
                raise PublishError(f"--out {out}: no such folder to push (publish it first with --model)")
            problems = check_published_folder(out)
            if problems:
                raise PublishError(f"{out} is not a complete published folder:\n  " + "\n  ".join(problems))
            check_finite_weights(out)
        else:
            sources = gather_sources(args.model, args.which, args.data, args.results, args.results_model)
            check_output(out, args.overwrite, sources.inputs())
        # 2. The Hub: HF_HUB_OFFLINE, a token, one whoami request.
        target = preflight_push(args.repo_id) if args.push else None
        if target is not None:
            log(f"token accepted by {target.endpoint} (user {target.user})")
        # 3. The folder.
        if sources is not None:
            build_folder(sources, out, repo_id=args.repo_id, model_name=args.model_name, license=args.license,
                         overwrite=args.overwrite)
            log(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
        # 4. The upload.
        if target is not None:
            commit = push_folder(out, target, private=args.private, commit_message=args.commit_message)
            print(f"pushed {out} to {target.endpoint}/{target.repo_id} (commit {commit.oid})")
            print(f"load it with AutoModel.from_pretrained({target.repo_id!r}, trust_remote_code=True)")
        else:
            print(f"published {out}; push it with: python -m modeling_shopperbert.publish --out {out} "
                  f"--repo-id {args.repo_id or 'ORG/NAME'} --push")
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
    except Exception as err:  # noqa: BLE001  (one `error:` line; --debug shows the traceback)
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
