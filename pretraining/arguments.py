"""The options of `train.py`: the dataclass every option lives in (with its default and help text), the model
presets, the `--config FILE` merge and the checks that run before anything is touched.

`python train.py --help` lists them; `--config run.yaml` gives any of them from a YAML or JSON file, and the command
line overrides the file. `check_args` fills the preset's batch size and learning rate and refuses a bad value with one
`error: ...` line naming the option (`RunError`, exit status 2).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from pretraining.errors import RunError

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
        "help": "Algorithm 1 crop/shuffle augmentation of 30 percent of the sequences (`--no-augmentation` turns it "
                "off)."})
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
    profile_weight: float = field(default=0.0, metadata={
        "help": "Weight of the user-level profile loss: a linear head on the user vector predicts which product "
                "categories (category_2) the user bought (0: none; beyond the paper, see ShopperBertConfig)."})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many evaluations without a lower validation MPP loss (default: never stop early)."})
    report_to: str = field(default="auto", metadata={
        "help": "Trackers besides the JSONL log: `auto` (tensorboard when installed), `none`, or accelerate names "
                "separated by commas."})
    kill_at_step: int | None = field(default=None, metadata={
        "help": "Testing aid: SIGKILL this process right after optimizer step N (to test --resume)."})
    debug: bool = field(default=False, metadata={
        "help": "Show the traceback of an unexpected fault (otherwise one `error:` line and exit status 1)."})


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
    "profile_weight": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
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



def batch_split(args: PretrainingArguments) -> tuple[int, int, int]:
    """Users per process and forward pass, processes (WORLD_SIZE, which launchers set) and gradient-accumulation
    steps that make up --batch-size; refused when they do not divide it."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = args.per_device_batch_size or max(1, args.batch_size // processes)
    if args.batch_size % (per_device * processes):
        raise RunError(f"--batch-size {args.batch_size} is not a multiple of per-device batch {per_device} x "
                       f"{processes} processes")
    return per_device, processes, args.batch_size // (per_device * processes)
