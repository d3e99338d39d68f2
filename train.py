"""Pre-train ShopperBERT with masked purchase prediction (MPP) through accelerate.

    accelerate launch train.py --data data/cj --preset small --output runs/cj-small
    python train.py --data data/cj --preset tiny --output runs/tiny --max-steps 20
    python train.py --config run.yaml --learning-rate 3e-4        # YAML/JSON file, command line overrides

One process or many (`accelerate launch --multi_gpu ...`; on CPU see the README for the gloo launch forms).
Exact resume: `--resume latest` (or a checkpoint folder) continues from the last `accelerator.save_state`.
Outputs in `--output`: `final/` and `best/` (save_pretrained folders with the data metadata to encode new users),
`checkpoints/step_N/` (full training state), `logs/metrics.jsonl`, `eval_results.json`, `loss_curve.png`.

Reliability: an `--output` folder belongs to one run. A non-empty one is refused without `--resume` (`--overwrite`
clears only a folder train.py wrote), a lock file holds it while training, and a resume checks that the checkpoint
was written for the same data vocabulary, seed, batch size and training users (`--resume-force` skips that, and
the model then takes the data's vocabulary). `--resume PATH` must be one of `--output`'s checkpoints unless `--output`
is new or empty (a new run folder started from that state). Every option is checked before `--overwrite` clears
anything. Checkpoints load without unpickling anything but tensors: the scheduler state and step are JSON, the random
generators safetensors; `--resume latest` falls back past a damaged checkpoint (renamed `*.damaged`), while an intact
one that cannot continue here (an older train.py's, another number of processes or device) is refused, untouched.
Non-finite losses or gradients stop the run (`--max-nonfinite-steps` skips that many in a row first) and never leave a
`final/` or `best/`. Every refusal is one `error: ...` line and exit status 2; a fault while training exits 1.
The run folder and its lock are `pretraining/run_folder.py`; checkpoints and resume, `pretraining/checkpoints.py`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import GeneralTracker
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from data_prep import DataPrepError, PreparedData, load_prepared
from modeling_shopperbert import MPP_HEADS, ShopperBertConfig, ShopperBertForMaskedPurchasePrediction
from modeling_shopperbert.collator import DataCollatorForMaskedPurchasePrediction
from modeling_shopperbert.configuration_shopperbert import CATEGORY_FIELDS, CLS_ID, UNK_ID
from modeling_shopperbert.contract import FINGERPRINT_KEY, check_fingerprints, vocabulary_fingerprint
from modeling_shopperbert.mpp_rules import rule_table
from pretraining.checkpoints import (  # noqa: F401  (RNG_STATE, TRAIN_STATE, ...: tests read them as train.<name>)
    RNG_STATE, TRAIN_STATE, CheckpointRefused, all_processes, check_finite_weights, check_resumable_here,
    checkpoint_dirs, damaged_checkpoint, load_checkpoint, read_train_state, resume_candidates, save_training_state)
from pretraining.errors import RunError
from pretraining.run_folder import (  # noqa: F401  (LOCK_FILE, RUN_MARKER, UMASK: tests read them as train.<name>)
    LOCK_FILE, RUN_MARKER, UMASK, claim_output, continues_this_folder, release_lock, truncate_log, use_default_modes,
    write_json)

# Files of a data_prep folder that travel into every saved model: what `encode_users` needs for new users.
DATA_FILES = ("metadata.json", "vocab.json")


# Model sizes. `paper` is the paper's encoder; `small` is what `make demo` trains on 2 CPU cores.
# PRESET_TRAINING holds each preset's batch and learning rate, used unless --batch-size / --learning-rate are given.
PRESET_TRAINING = {
    "tiny": dict(batch_size=8, learning_rate=3e-3),
    # Complete Journey has ~2,200 training households: the paper's batch of 128 is 17 steps an epoch, and at the
    # paper's 1e-4 the category heads had not left the prior after 2 epochs; 32 users and 1e-3 learn in minutes.
    "small": dict(batch_size=32, learning_rate=1e-3),
    "base": dict(batch_size=64, learning_rate=5e-4),
    "paper": dict(batch_size=128, learning_rate=1e-4),  # section 4.1.2
}
PRESETS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=64),
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, max_length=350),
    "base": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, max_length=350),
    "paper": dict(hidden_size=550, num_hidden_layers=20, num_attention_heads=10, max_length=350),
}


@dataclass
class PretrainingArguments:
    """Every option of a pre-training run; each has a default and a help text (`python train.py --help`)."""

    data: str = field(default="data/cj", metadata={"help": "A `python -m data_prep build` output folder."})
    output: str = field(default="runs/shopperbert", metadata={"help": "Folder for checkpoints, logs and models."})
    config: str | None = field(default=None, metadata={"help": "YAML or JSON file of these options; the command "
                                                               "line overrides it."})
    preset: str = field(default="small", metadata={"help": f"Model size: one of {sorted(PRESETS)}."})
    user_representation: str = field(default="mean", metadata={
        "help": "`mean` (ShopperBERT-MP: mean-pooled purchase tokens) or `cls` (ShopperBERT-CLS)."})
    augmentation: bool = field(default=True, metadata={
        "help": "Algorithm 1 crop/shuffle augmentation of 30 percent of the sequences (`--no-augmentation` turns it off)."})
    max_length: int | None = field(default=None, metadata={
        "help": "Most recent purchases kept per user (defaults to the preset's: 350 but for `tiny`)."})
    num_epochs: float = field(default=10.0, metadata={"help": "Passes over the training users."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides --num-epochs."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Global batch size in users (default: the preset's; the paper's 128 for `paper`)."})
    per_device_batch_size: int | None = field(default=None, metadata={
        "help": "Users per process and forward pass; gradient accumulation makes up the global batch. "
                "Defaults to batch_size / processes."})
    learning_rate: float | None = field(default=None, metadata={
        "help": "Peak learning rate (default: the preset's; the paper's 1e-4 for `paper`)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (the paper's 1e-4); not "
                                                                   "applied to biases and LayerNorm."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "Linear warm-up over this share of the steps, then cosine decay (the paper warms up over 30k "
                "steps of a 3-day run); --warmup-steps overrides."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Warm-up steps (overrides --warmup-ratio)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str = field(default="auto", metadata={
        "help": "`no`, `bf16`, `fp16` or `auto`: the launcher's (`accelerate launch --mixed_precision bf16` or "
                "`accelerate config`) when it sets one, else bf16 on a GPU that has it, fp16 on other GPUs, fp32 on "
                "CPU. A launcher's `no` is its default, so `auto` cannot tell it from a choice: pass "
                "`--mixed-precision no` to the script to train in fp32 on a GPU."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling, masks and augmentation."})
    eval_every: int | None = field(default=None, metadata={
        "help": "Validate every N optimizer steps (default: once per epoch)."})
    save_every: int | None = field(default=None, metadata={
        "help": "accelerator.save_state every N optimizer steps (default: once per epoch)."})
    save_total_limit: int = field(default=2, metadata={"help": "Training-state checkpoints kept (oldest removed)."})
    resume: str | None = field(default=None, metadata={
        "help": "`latest` or a checkpoint folder: continue that run exactly (a damaged latest checkpoint falls back "
                "to the previous one). A folder outside --output/checkpoints needs a new or empty --output."})
    resume_force: bool = field(default=False, metadata={
        "help": "Resume even if the checkpoint's run had another seed, batch size, number of training users or data "
                "vocabulary (no longer an exact continuation)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Clear a non-empty --output first; only a folder written by train.py is ever cleared."})
    max_nonfinite_steps: int = field(default=0, metadata={
        "help": "Optimizer steps in a row whose loss or gradient norm may be NaN/inf (their update is skipped) "
                "before the run stops with an error; 0 stops at the first."})
    max_train_users: int | None = field(default=None, metadata={"help": "Use only the first N training users."})
    max_eval_users: int | None = field(default=None, metadata={"help": "Use only the first N validation users."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    log_every: int = field(default=10, metadata={"help": "Log the training loss every N optimizer steps."})
    dropout: float | None = field(default=None, metadata={"help": "Override hidden and attention dropout (0.1)."})
    embedding_combination: str = field(default="mean", metadata={
        "help": "`mean` (7-way mean of product, five dates and position) or `grouped` (mean of product, mean of "
                "dates, position): see ShopperBertConfig."})
    contrastive_weight: float = field(default=0.0, metadata={
        "help": "Weight of the user-level InfoNCE loss on two Algorithm 1 views of each user (0: MPP only, the "
                "paper's objective). Each user then costs two sequences."})
    contrastive_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature."})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without a lower validation MPP loss (default: never stop early)."})
    report_to: str = field(default="auto", metadata={
        "help": "Trackers besides the JSONL log: `auto` (tensorboard when installed), `none`, or accelerate names "
                "separated by commas."})
    kill_at_step: int | None = field(default=None, metadata={
        "help": "Testing aid: SIGKILL this process right after optimizer step N (to test --resume)."})
    debug: bool = field(default=False, metadata={
        "help": "Show the traceback of an unexpected fault (otherwise one `error:` line and exit status 1)."})


class JSONLTracker(GeneralTracker):
    """An accelerate tracker that appends every logged dict as one JSON line; always on, no dependency."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        # Created on the first write, by the main process only: the others must not touch --output before the main
        # one has claimed it (`claim_output`).
        self.path = Path(logging_dir) / f"{run_name}.jsonl"

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> PretrainingArguments:
    """The command line over the options of `--config FILE`. The file's values pass through the same parser as the
    command line, so a value of the wrong type fails the same way (`error:`, exit 2)."""
    parser = HfArgumentParser(PretrainingArguments)
    argv = list(sys.argv[1:] if argv is None else argv)
    config_file = config_file_option(argv)
    if config_file:
        argv = config_file_arguments(config_file) + argv  # later arguments win: the command line overrides
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def config_file_option(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def config_file_arguments(config_file: str) -> list[str]:
    """A YAML or JSON mapping of options (`num_epochs: 3`) as `--num_epochs=3` arguments."""
    import yaml

    path = Path(config_file)
    if not path.is_file():
        raise RunError(f"--config {config_file}: no such file")
    try:
        text = path.read_text()
        values = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RunError(f"--config {config_file} is not valid {'YAML' if path.suffix != '.json' else 'JSON'}: "
                       f"{' '.join(str(err).split())}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise RunError(f"--config {config_file} must hold a mapping of option: value, got a {type(values).__name__}")
    known = {f.name for f in fields(PretrainingArguments)} - {"config"}
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        raise RunError(f"{config_file}: unknown options {unknown}; known: {sorted(known)}")
    arguments = []
    for name, value in values.items():
        if isinstance(value, (dict, list)):
            raise RunError(f"{config_file}: option {name} must be a single value, got a {type(value).__name__}")
        if value is not None:  # null: the default
            arguments.append(f"--{name}={value}")
    return arguments


def _positive(v):
    return 0 < v < math.inf


def _at_least_one(v):
    return v >= 1


# The range of every numeric option: (test, what the value must be). NaN fails every comparison, so it is refused.
NUMERIC_OPTIONS = {
    "num_epochs": (_positive, "a positive finite number"),
    "learning_rate": (_positive, "a positive finite number"),
    "contrastive_temperature": (_positive, "a positive finite number"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "contrastive_weight": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "max_grad_norm": (lambda v: 0 <= v < math.inf, "a finite number >= 0 (0 turns clipping off)"),
    "adam_beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "warmup_steps": (lambda v: v >= 0, "at least 0"),
    "num_workers": (lambda v: v >= 0, "at least 0"),
    "max_nonfinite_steps": (lambda v: v >= 0, "at least 0"),
    **{name: (_at_least_one, "at least 1") for name in (
        "max_steps", "batch_size", "per_device_batch_size", "max_length", "eval_every", "save_every",
        "save_total_limit", "log_every", "max_train_users", "max_eval_users", "early_stopping_patience",
        "kill_at_step")},
}


def check_args(args: PretrainingArguments) -> None:
    """Fail before any training starts, with a message naming the option. Fills preset-dependent defaults."""
    if args.preset not in PRESETS:
        raise RunError(f"--preset {args.preset!r} is unknown; choose one of {sorted(PRESETS)}")
    for name, value in PRESET_TRAINING[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.user_representation not in ("mean", "cls"):
        raise RunError(f"--user-representation must be `mean` or `cls`, got {args.user_representation!r}")
    if args.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise RunError(f"--mixed-precision must be auto, no, bf16 or fp16, got {args.mixed_precision!r}")
    if args.embedding_combination not in ("mean", "grouped"):
        raise RunError(f"--embedding-combination must be `mean` or `grouped`, got {args.embedding_combination!r}")
    for name, (valid, what) in NUMERIC_OPTIONS.items():
        value = getattr(args, name)
        if value is not None and not valid(value):
            raise RunError(f"--{name.replace('_', '-')} must be {what}, got {value}")
    if args.overwrite and args.resume:
        raise RunError("--overwrite clears the run that --resume continues: give one of them")
    if args.resume_force and not args.resume:
        raise RunError("--resume-force only applies with --resume")
    if not Path(args.data).is_dir():
        raise RunError(f"--data {args.data}: no such folder (build one with `python -m data_prep build`)")
    batch_split(args)


def resolve_mixed_precision(choice: str) -> str:
    """The precision to train in: `choice` unless `auto`; then the launcher's (ACCELERATE_MIXED_PRECISION, which
    `accelerate launch` sets) when it is not its default `no`, else the best the device does well."""
    if choice != "auto":
        return choice
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher not in ("", "no"):
        return launcher
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def load_data(args: PretrainingArguments) -> tuple[PreparedData, str]:
    """The corpus and its vocabulary fingerprint: metadata.json's (data_prep records it), else computed from
    vocab.json (corpora built before the fingerprint)."""
    try:
        data = load_prepared(args.data)
        for split in ("train", "validation"):
            if split not in data.dataset:
                raise DataPrepError(f"its dataset has no `{split}` split (it has {list(data.dataset)})")
        fingerprint = data.metadata.get(FINGERPRINT_KEY) or vocabulary_fingerprint(data.vocab)
    except (DataPrepError, OSError, ValueError, TypeError) as err:
        raise RunError(f"--data {args.data}: {err}") from None
    except Exception as err:  # the datasets library fails in many ways on a damaged dataset/ folder
        raise RunError(f"--data {args.data}: cannot load its dataset ({type(err).__name__}: {err})") from None
    return data, fingerprint


def select_users(args: PretrainingArguments, data: PreparedData):
    """The training and validation users (`--max-*-users`), as numpy-formatted datasets. An empty split is refused:
    a validation loss over no users would read 0.0 and choose `best/` from nothing."""
    splits = {}
    for split, limit in (("train", args.max_train_users), ("validation", args.max_eval_users)):
        dataset = data.dataset[split]
        if limit:
            dataset = dataset.select(range(min(limit, len(dataset))))
        if len(dataset) == 0:
            raise RunError(f"--data {args.data}: the `{split}` split has no users; train.py needs both training and "
                           "validation users (rebuild the corpus with a validation share)")
        splits[split] = dataset
    columns = [c for c in splits["train"].column_names if c != "timestamp"]
    return (splits["train"].with_format("numpy", columns=columns),
            splits["validation"].with_format("numpy", columns=columns))


def build_config(args: PretrainingArguments, data: PreparedData, fingerprint: str) -> ShopperBertConfig:
    preset = dict(PRESETS[args.preset])
    max_length = args.max_length or preset.pop("max_length")
    preset.pop("max_length", None)
    if args.dropout is not None:
        preset.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    return ShopperBertConfig.from_data_metadata(
        data.metadata, max_position_embeddings=max_length + 1, user_representation=args.user_representation,
        embedding_combination=args.embedding_combination, contrastive_weight=args.contrastive_weight,
        contrastive_temperature=args.contrastive_temperature, vocab_fingerprint=fingerprint, **preset,
    )


def check_config_matches_data(config: ShopperBertConfig, data: PreparedData, data_path, fingerprint: str,
                              where: str, check_content: bool = True) -> None:
    """A checkpoint's vocabularies must be the data's: same sizes, same text dimension and, by content, the same
    vocabulary fingerprint (two vocabularies of the same sizes can give an id to different categories)."""
    expected = ShopperBertConfig.from_data_metadata(data.metadata)
    for name in ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "date_base_year"):
        if getattr(config, name) != getattr(expected, name):
            raise RunError(
                f"{where} was trained with {name}={getattr(config, name)} but --data "
                f"{data_path} has {name}={getattr(expected, name)}: the data's metadata disagrees with the "
                "checkpoint's config (rebuild the data with the same vocabulary, or start a new run)"
            )
    if check_content:
        try:
            check_fingerprints(fingerprint, getattr(config, FINGERPRINT_KEY, None), expected_from=f"--data {data_path}",
                               found_from=where)
        except ValueError as err:
            raise RunError(f"{err} (--resume-force resumes anyway)") from None


# ---------------------------------------------------------------------------------------------------------------
# Learning-rate schedule, parameters groups, evaluation
# ---------------------------------------------------------------------------------------------------------------
def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the peak, then cosine decay to zero (the paper's schedule)."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def majority_classes(train_dataset) -> list[int]:
    """The prior baseline: each head's most frequent class among the training purchases (unknown excluded)."""
    majority = []
    for name in MPP_HEADS:
        counts = np.zeros(1, dtype=np.int64)
        for chunk in train_dataset.with_format("numpy", columns=[name]).iter(batch_size=1024):
            values = np.concatenate(list(chunk[name])) if len(chunk[name]) else np.zeros(0, dtype=np.int64)
            if name in CATEGORY_FIELDS:
                values = values[values != UNK_ID]
            grown = np.bincount(values)
            if len(grown) > len(counts):
                counts = np.pad(counts, (0, len(grown) - len(counts)))
            counts[: len(grown)] += grown
        majority.append(int(counts.argmax()))
    return majority


def rule_predictions(batch: dict, k: int, fallback: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two no-learning rules for category head `k` on the masked purchases of a batch, in `masked_positions` order:

    - user mode: the user's most frequent category among their purchases that were not selected for prediction;
    - basket mode: the most frequent category among the unselected purchases of the same basket (same date and
      hour), else the user mode.
    Either falls back to `fallback` (the training prior) when it has nothing to count. Returns two `(N,)` tensors.
    """
    selected = batch["masked_positions"].bool()  # (B, T)
    category = batch["category_ids"][..., k]  # (B, T) original ids wherever not selected
    visible = (batch["category_ids"][..., 0] > CLS_ID) & ~selected & (category != UNK_ID)  # (B, T)
    dates = torch.where(selected.unsqueeze(-1), batch["labels"][..., len(CATEGORY_FIELDS):],
                        batch["date_ids"])  # (B, T, 5) original dates everywhere
    basket = dates[..., 0]
    for j in (1, 2, 4):  # year, month, day, hour (weekday follows from the day)
        basket = basket * 64 + dates[..., j]  # (B, T) one key per date and hour
    size = int(category.max()) + 1
    weights = visible.float()  # (B, T)
    user_counts = torch.zeros(category.shape[0], size).scatter_add_(1, category * visible, weights)  # (B, V)
    user_pred = torch.where(user_counts.sum(1) > 0, user_counts.argmax(1), fallback)  # (B,)
    row = selected.nonzero(as_tuple=True)[0]  # (N,)
    user_mode = user_pred[row]  # (N,)
    same = (basket[row] == basket[selected].unsqueeze(-1)) & visible[row]  # (N, T)
    basket_counts = torch.zeros(len(row), size).scatter_add_(1, category[row] * same, same.float())  # (N, V)
    basket_mode = torch.where(same.any(1), basket_counts.argmax(1), user_mode)  # (N,)
    return user_mode, basket_mode


@torch.no_grad()
def evaluate_mpp(model, dataloader, accelerator, majority: list[int] | None = None) -> dict[str, float]:
    """Validation MPP loss and each head's accuracy on held-out users with fixed masks, beside three baselines that
    learn nothing: the prior (the training majority class), and for the category heads the user-mode and
    basket-mode rules of `rule_predictions`.

    Per-user sums are gathered across processes with `gather_for_metrics` (which drops the samples duplicated to
    even out the last batch), so the numbers do not depend on the number of processes.
    """
    model.eval()
    num_heads = len(MPP_HEADS)
    sums = ("loss", "correct", "count", "prior", "user_mode", "basket_mode")
    totals = torch.zeros(len(sums), num_heads, dtype=torch.float64)
    for batch in dataloader:
        outputs = model(**batch)
        positions = batch["masked_positions"]  # (B, T)
        row = positions.nonzero(as_tuple=True)[0]  # (N,)
        target = batch["labels"][positions]  # (N, 9)
        per_user = torch.zeros(positions.shape[0], len(sums), num_heads, device=target.device)  # (B, 6, 9)
        cpu_batch = {key: value.cpu() for key, value in batch.items()}  # the rules count on the CPU, once a batch
        for k, logits in enumerate(outputs.logits):
            valid = target[:, k].ne(-100)
            loss = torch.nn.functional.cross_entropy(logits.float(), target[:, k], ignore_index=-100,
                                                     reduction="none")
            hits = [loss * valid, (logits.argmax(-1) == target[:, k]) & valid, valid]
            if majority is not None:
                hits.append((target[:, k] == majority[k]) & valid)
            if majority is not None and k < len(CATEGORY_FIELDS):
                for prediction in rule_predictions(cpu_batch, k, majority[k]):
                    hits.append((prediction.to(target.device) == target[:, k]) & valid)
            for j, hit in enumerate(hits):
                per_user[:, j, k].index_add_(0, row, hit.float())
        per_user = accelerator.gather_for_metrics(per_user)  # (users, 6, 9)
        totals += per_user.sum(0).double().cpu()
    model.train()
    counts = totals[2].clamp(min=1)
    head_loss = totals[0] / counts
    has = (totals[2] > 0).double()
    if not bool(has.any()):
        raise RunError("the validation users hold no masked purchase to evaluate", exit_code=1)
    results = {"eval/loss": float((head_loss * has).sum() / has.sum().clamp(min=1))}
    for k, name in enumerate(MPP_HEADS):
        results[f"eval/loss_{name}"] = float(head_loss[k])
        results[f"eval/accuracy_{name}"] = float(totals[1, k] / counts[k])
        if majority is not None:
            results[f"eval/prior_accuracy_{name}"] = float(totals[3, k] / counts[k])
        if majority is not None and k < len(CATEGORY_FIELDS):
            results[f"eval/user_mode_accuracy_{name}"] = float(totals[4, k] / counts[k])
            results[f"eval/basket_mode_accuracy_{name}"] = float(totals[5, k] / counts[k])
        results[f"eval/count_{name}"] = int(totals[2, k])
    return results


def mpp_diagnostics_table(results: dict) -> str:
    """Markdown table: per head, the model's validation accuracy beside the prior and the two rules, and whether it
    beats the strongest of them."""
    return rule_table(results, MPP_HEADS)


# ---------------------------------------------------------------------------------------------------------------
# Resume and saved models (the run folder and checkpoints themselves: pretraining/)
# ---------------------------------------------------------------------------------------------------------------
def resume_config(args: PretrainingArguments, candidates: list[Path], data: PreparedData, fingerprint: str,
                  run: dict) -> tuple[ShopperBertConfig, list[Path]]:
    """The model config of the run being resumed, from its newest readable checkpoint, after checking that the run
    matches this command: the data's vocabulary and `run` (seed, batch size, training users), unless
    --resume-force. Returns it with the checkpoints left to try, newest first."""
    for i, folder in enumerate(candidates):
        try:
            state = read_train_state(folder)
            break
        except CheckpointRefused as err:
            raise RunError(f"--resume {args.resume}: the checkpoint {folder} {err}; nothing was changed") from None
        except ValueError as err:
            damaged_checkpoint(folder, err, args.resume != "latest", rename=is_first_rank())
    else:
        raise RunError(f"--resume {args.resume}: no usable checkpoint in {candidates[0].parent}")
    config = ShopperBertConfig.from_dict(state["model_config"])
    where = f"the checkpoint {folder}"
    check_config_matches_data(config, data, args.data, fingerprint, where, check_content=not args.resume_force)
    changed = {k: (state["run"].get(k), v) for k, v in run.items() if state["run"].get(k) != v}
    described = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
    if changed and not args.resume_force:
        raise RunError(f"{where} belongs to another run ({described}): resume with the same options and data, start "
                       "a new --output, or give --resume-force to continue anyway (not an exact continuation)")
    if changed or (args.resume_force and getattr(config, FINGERPRINT_KEY, None) != fingerprint):
        print(f"warning: --resume-force: resuming {where} despite {described or 'another vocabulary'}", file=sys.stderr)
    if getattr(config, FINGERPRINT_KEY, None) not in (None, fingerprint):
        print(f"warning: --resume-force: the model's {FINGERPRINT_KEY} becomes --data {args.data}'s ({fingerprint}, "
              f"was {config.vocab_fingerprint}): its saved models carry that corpus' vocab.json", file=sys.stderr)
    config.vocab_fingerprint = fingerprint  # the vocabulary save_model copies beside the weights
    return config, candidates[i:]


def is_first_rank() -> bool:
    """The main process, known before the Accelerator exists (launchers set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def save_model(accelerator: Accelerator, model, output_dir: Path, data_path: Path, extra: dict) -> None:
    """`save_pretrained` (safetensors, config, remote code) plus the data metadata needed to encode new users."""
    check_finite_weights(model, f"{output_dir.name}/")
    accelerator.wait_for_everyone()
    # every process takes part: under FSDP / DeepSpeed ZeRO-3 the full state dict is gathered from all shards
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = output_dir.with_name(output_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        for name in DATA_FILES:
            source = data_path / name
            if source.is_file():
                shutil.copy2(source, tmp / name)
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))
        use_default_modes(tmp)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    accelerator.wait_for_everyone()


def plot_loss_curve(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = [], []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "train/loss" in record:
            train.append((record["step"], record["train/loss"]))
        if "eval/loss" in record:
            evals.append((record["step"], record["eval/loss"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train MPP loss", alpha=0.8)
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation MPP loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MPP loss (mean of 9 cross-entropies)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------
def training_function(args: PretrainingArguments) -> dict:
    """Check everything, lock `--output` for this run, train, and unlock it whatever happens."""
    check_args(args)
    data, fingerprint = load_data(args)
    train_dataset, eval_dataset = select_users(args, data)
    candidates = resume_candidates(args, Path(args.output)) if args.resume else []
    accelerator, mixed_precision = make_accelerator(args, Path(args.output))
    # Only now, every check passed, is --output claimed (and, with --overwrite, cleared).
    lock = claim_output(args, Path(args.output)) if is_first_rank() else None
    try:
        return run_training(args, accelerator, mixed_precision, data, fingerprint, train_dataset, eval_dataset,
                            candidates)
    finally:
        release_lock(lock)


def batch_split(args: PretrainingArguments) -> tuple[int, int, int]:
    """Users per process and forward pass, processes (WORLD_SIZE, which launchers set) and gradient-accumulation
    steps that make up --batch-size; refused when they do not divide it."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = args.per_device_batch_size or max(1, args.batch_size // processes)
    if args.batch_size % (per_device * processes):
        raise RunError(f"--batch-size {args.batch_size} is not a multiple of per-device batch {per_device} x "
                       f"{processes} processes")
    return per_device, processes, args.batch_size // (per_device * processes)


def make_accelerator(args: PretrainingArguments, output: Path) -> tuple[Accelerator, str]:
    """The Accelerator and the precision it trains in, built before --output is touched (it writes nothing): it
    refuses unknown --report-to trackers, and a launch that runs another number of processes than WORLD_SIZE."""
    per_device, processes, accumulation = batch_split(args)
    mixed_precision = resolve_mixed_precision(args.mixed_precision)
    trackers: list = [JSONLTracker("metrics", output / "logs")]
    if args.report_to == "auto":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is not None:
            trackers.append("tensorboard")
    elif args.report_to != "none":
        trackers += [name.strip() for name in args.report_to.split(",") if name.strip()]
    try:
        accelerator = Accelerator(gradient_accumulation_steps=accumulation, mixed_precision=mixed_precision,
                                  log_with=trackers, project_dir=str(output),
                                  dataloader_config=DataLoaderConfiguration(
                                      use_seedable_sampler=True, non_blocking=torch.cuda.is_available()))
    except ValueError as err:
        raise RunError(f"cannot start accelerate with --report-to {args.report_to} and --mixed-precision "
                       f"{args.mixed_precision} ({mixed_precision}): {err}") from None
    if accelerator.num_processes != processes:
        raise RunError(f"WORLD_SIZE={processes} but accelerate runs {accelerator.num_processes}")
    return accelerator, mixed_precision


def run_training(args: PretrainingArguments, accelerator: Accelerator, mixed_precision: str, data: PreparedData,
                 fingerprint: str, train_dataset, eval_dataset, candidates: list[Path]) -> dict:
    output, data_path = Path(args.output), Path(args.data)
    per_device, _, accumulation = batch_split(args)
    config = build_config(args, data, fingerprint)
    # What makes a checkpoint this run's: resuming with other values is refused (unless --resume-force).
    run_identity = {"seed": args.seed, "batch_size": args.batch_size, "train_users": len(train_dataset)}
    if candidates:
        config, candidates = resume_config(args, candidates, data, fingerprint, run_identity)
    set_seed(args.seed)

    model = ShopperBertForMaskedPurchasePrediction(config)
    collator = DataCollatorForMaskedPurchasePrediction.from_config(
        config, data.embeddings, augmentation=args.augmentation, seed=args.seed)
    # Validation masks are fixed (same seed and epoch at every evaluation) and never augmented.
    eval_collator = DataCollatorForMaskedPurchasePrediction.from_config(
        config, data.embeddings, augmentation=False, seed=args.seed + 1, num_views=1)
    # Own generators: creating an iterator then draws no number from the global RNG (which drives dropout), so a
    # resumed run, whose iterator starts at another step, keeps the dropout masks of the uninterrupted run.
    # Pinned batches on a GPU: the accelerator's `non_blocking` copies then overlap the step (no effect on numbers).
    pin = accelerator.device.type == "cuda"
    train_dataloader = DataLoader(train_dataset, batch_size=per_device, shuffle=True, collate_fn=collator,
                                  num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed),
                                  pin_memory=pin)
    eval_dataloader = DataLoader(eval_dataset, batch_size=per_device, shuffle=False, collate_fn=eval_collator,
                                 num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed),
                                 pin_memory=pin)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2))

    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader)
    steps_per_epoch = math.ceil(len(train_dataloader) / accumulation)
    total_steps = args.max_steps or math.ceil(args.num_epochs * steps_per_epoch)
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    # Stepped by hand once per optimizer step (not `prepare`d, which would step it once per process). Its state goes
    # into each checkpoint's train_state.json (not `register_for_checkpointing`, which pickles it).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup, total_steps))
    eval_every = args.eval_every or steps_per_epoch
    save_every = args.save_every or steps_per_epoch

    hparams = {**asdict(args), "mixed_precision_resolved": mixed_precision, "num_processes": accelerator.num_processes,
               "per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation,
               "total_steps": total_steps, "warmup_steps": warmup, "steps_per_epoch": steps_per_epoch,
               "train_users": len(train_dataset), "eval_users": len(eval_dataset),
               "num_parameters": sum(p.numel() for p in model.parameters())}
    completed_steps, resume_dir = 0, None
    if candidates:  # before the trackers write anything: a refused checkpoint leaves the run folder as it was
        resume_dir, state = load_checkpoint(accelerator, candidates, scheduler, explicit=args.resume != "latest")
        completed_steps = state["step"]
        if accelerator.is_main_process:
            truncate_log(output / "logs" / "metrics.jsonl", completed_steps)
        accelerator.print(f"resumed from {resume_dir} at optimizer step {completed_steps}")

    accelerator.init_trackers("shopperbert", config={k: v for k, v in hparams.items() if v is not None})
    if accelerator.is_main_process and not continues_this_folder(args, output):
        write_json(output / "run_config.json", {"model_config": config.to_dict(), "args": hparams})

    majority = majority_classes(data.dataset["train"]) if accelerator.is_main_process else None
    majority = accelerate_broadcast(accelerator, majority)
    accelerator.print(
        f"{len(train_dataset)} training / {len(eval_dataset)} validation users, {hparams['num_parameters']:,} "
        f"parameters, {total_steps} steps ({steps_per_epoch}/epoch), {accelerator.num_processes} process(es), "
        f"batch {per_device} x {accelerator.num_processes} x {accumulation}, precision {mixed_precision}")

    best_loss, stale_evals, stopped_early = math.inf, 0, False
    best_file = output / "best" / "training_info.json"
    if resume_dir and best_file.is_file():
        best_info = json.loads(best_file.read_text())
        best_loss = best_info.get("eval/loss", math.inf)
        stale_evals = (completed_steps - best_info.get("step", completed_steps)) // eval_every
    progress = tqdm(total=total_steps, initial=completed_steps, disable=not accelerator.is_local_main_process,
                    desc="pre-training", unit="step")
    model.train()
    tokens_seen, window_start, running_loss, running_count = 0, time.perf_counter(), 0.0, 0
    running_contrastive, window_finite, nonfinite_steps = 0.0, True, 0
    last_eval: dict = {}
    epoch = completed_steps // steps_per_epoch
    while completed_steps < total_steps:
        collator.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        dataloader = train_dataloader
        skip = (completed_steps - epoch * steps_per_epoch) * accumulation
        if skip:
            dataloader = accelerator.skip_first_batches(train_dataloader, skip)
        for batch in dataloader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs.loss
                accelerator.backward(loss)
                loss_value = loss.detach().float().item()
                window_finite &= math.isfinite(loss_value)
                grad_norm = None
                if accelerator.sync_gradients:  # clip (an infinite bound when off: it only measures) and check
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm or math.inf)
                    grad_norm = None if grad_norm is None else float(grad_norm)  # None: DeepSpeed checks itself
                    # fp16's GradScaler skips overflowing updates and lowers its scale itself
                    grads_finite = grad_norm is None or math.isfinite(grad_norm) or accelerator.scaler is not None
                    window_finite = all_processes(accelerator, window_finite and grads_finite)
                if window_finite or accelerator.scaler is not None:  # a no-op between accumulation boundaries
                    optimizer.step()
                optimizer.zero_grad()
            if math.isfinite(loss_value):
                running_loss += loss_value
                running_count += 1
                if outputs.contrastive_loss is not None:
                    running_contrastive += outputs.contrastive_loss.detach().float().item()
            tokens_seen += int(batch["attention_mask"].sum()) - batch["attention_mask"].shape[0]
            if not accelerator.sync_gradients:
                continue
            nonfinite_steps = 0 if window_finite else nonfinite_steps + 1
            if nonfinite_steps:  # the update was skipped: stop, or go on with the weights of the last good step
                check_nonfinite(args, nonfinite_steps, completed_steps + 1, loss_value, grad_norm, accelerator)
            window_finite = True
            scheduler.step()
            completed_steps += 1
            progress.update(1)

            if completed_steps % args.log_every == 0 or completed_steps == total_steps:
                elapsed = time.perf_counter() - window_start
                stats = torch.tensor([running_loss / max(1, running_count), tokens_seen / max(elapsed, 1e-9)],
                                     device=accelerator.device)
                stats = accelerator.reduce(stats, reduction="mean")
                record = {"train/loss": float(stats[0]), "train/tokens_per_s_per_process": float(stats[1]),
                          "train/lr": scheduler.get_last_lr()[0], "epoch": completed_steps / steps_per_epoch}
                if config.contrastive_weight > 0:
                    record["train/contrastive_loss"] = running_contrastive / max(1, running_count)
                running_contrastive = 0.0
                accelerator.log(record, step=completed_steps)
                progress.set_postfix(loss=f"{record['train/loss']:.3f}")
                tokens_seen, window_start, running_loss, running_count = 0, time.perf_counter(), 0.0, 0

            if completed_steps % eval_every == 0 or completed_steps == total_steps:
                last_eval = evaluate_mpp(model, eval_dataloader, accelerator, majority)
                if not math.isfinite(last_eval["eval/loss"]):
                    raise RunError(f"the validation MPP loss is {last_eval['eval/loss']} at step {completed_steps}; "
                                   "stopping without saving a final model", exit_code=1)
                accelerator.log(last_eval, step=completed_steps)
                accelerator.print(f"step {completed_steps}: validation MPP loss {last_eval['eval/loss']:.4f}")
                if last_eval["eval/loss"] < best_loss:
                    best_loss, stale_evals = last_eval["eval/loss"], 0
                    save_model(accelerator, model, output / "best", data_path,
                               {"step": completed_steps, **last_eval, "args": asdict(args)})
                else:
                    stale_evals += 1
                if args.early_stopping_patience and stale_evals >= args.early_stopping_patience:
                    accelerator.print(f"early stopping: no lower validation MPP loss in {stale_evals} evaluations "
                                      f"(best {best_loss:.4f})")
                    stopped_early = True
                    break

            if completed_steps % save_every == 0 and completed_steps < total_steps:
                save_training_state(accelerator, model, output, completed_steps, args.save_total_limit,
                                    {"scheduler": scheduler.state_dict(), "run": run_identity,
                                     "model_config": config.to_dict()})
            if args.kill_at_step is not None and completed_steps == args.kill_at_step:
                accelerator.print(f"kill_at_step: SIGKILL after step {completed_steps}", flush=True)
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if completed_steps >= total_steps:
                break
        if stopped_early:
            break
        epoch += 1
    progress.close()

    # Every process must end with the same weights: compare a checksum across ranks.
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in model.parameters()))],
                            device=accelerator.device, dtype=torch.float64)
    checksums = accelerator.gather(checksum).cpu().tolist()
    final_info = {"step": completed_steps, **last_eval, "stopped_early": stopped_early,
                  "best_eval_loss": best_loss, "rank_weight_checksums": checksums,
                  "mpp_prior_classes": dict(zip(MPP_HEADS, majority)), "args": asdict(args)}
    save_model(accelerator, model, output / "final", data_path, final_info)
    if accelerator.is_main_process:
        (output / "eval_results.json").write_text(json.dumps(final_info, indent=2))
        table = mpp_diagnostics_table(last_eval)
        (output / "mpp_diagnostics.md").write_text(
            f"Validation MPP accuracy at step {completed_steps} (fixed masks) against rules that learn nothing\n\n"
            f"{table}\n")
        accelerator.print(table)
        log_path = output / "logs" / "metrics.jsonl"
        if log_path.is_file():
            plot_loss_curve(log_path, output / "loss_curve.png")
    accelerator.end_training()
    return final_info


def check_nonfinite(args, streak: int, step: int, loss_value: float, grad_norm, accelerator) -> None:
    """After an optimizer step whose loss or gradient norm was NaN/inf (its update skipped): stop once more than
    --max-nonfinite-steps such steps came in a row, else warn."""
    what = f"the training loss is {loss_value} and the gradient norm is {grad_norm} at optimizer step {step}"
    if streak > args.max_nonfinite_steps:
        raise RunError(f"{what} ({streak} non-finite step(s) in a row, --max-nonfinite-steps "
                       f"{args.max_nonfinite_steps}); stopping without saving a final model (try a lower "
                       f"--learning-rate than {args.learning_rate})", exit_code=1)
    accelerator.print(f"warning: {what}: update skipped ({streak} in a row, --max-nonfinite-steps "
                      f"{args.max_nonfinite_steps})")


def accelerate_broadcast(accelerator: Accelerator, value):
    """Send a small picklable value from the main process to all others."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def stop_on_sigterm(signum, frame):
    raise RunError("stopped by SIGTERM; continue with --resume latest (from the last checkpoint)", exit_code=143)


def main(argv=None):
    """`error: ...` on stderr and exit status 2 (refused) or 1 (failed while training) instead of a traceback; on
    SIGTERM the run ends the same way (exit 143), its lock released."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm) if in_main_thread else None
    args = None
    try:
        args = parse_args(argv)
        training_function(args)
    except RunError as err:
        print(err, file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except Exception as err:  # noqa: BLE001  (an unexpected fault: one line unless --debug)
        if args is None or args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", file=sys.stderr,
              flush=True)
        raise SystemExit(1) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    main()
