"""Pre-train ShopperBERT with masked purchase prediction (MPP) through accelerate.

    accelerate launch train.py --data data/cj --preset small --output runs/cj-small
    python train.py --data data/cj --preset tiny --output runs/tiny --max-steps 20
    python train.py --config run.yaml --learning-rate 3e-4        # YAML/JSON file, command line overrides

One process or many (`accelerate launch --multi_gpu ...`; on CPU see the README for the gloo launch forms).
Exact resume: `--resume latest` (or a checkpoint folder) continues from the last `accelerator.save_state`.
Outputs in `--output`: `final/` and `best/` (save_pretrained folders with the data metadata to encode new users),
`checkpoints/step_N/` (full training state), `logs/metrics.jsonl`, `eval_results.json`, `loss_curve.png`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
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
from modeling_shopperbert.mpp_rules import rule_table

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
        "help": "`no`, `bf16`, `fp16` or `auto` (bf16 on a GPU that has it, else fp16 on GPU, fp32 on CPU)."})
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling, masks and augmentation."})
    eval_every: int | None = field(default=None, metadata={
        "help": "Validate every N optimizer steps (default: once per epoch)."})
    save_every: int | None = field(default=None, metadata={
        "help": "accelerator.save_state every N optimizer steps (default: once per epoch)."})
    save_total_limit: int = field(default=2, metadata={"help": "Training-state checkpoints kept (oldest removed)."})
    resume: str | None = field(default=None, metadata={
        "help": "`latest` or a checkpoint folder: continue that run exactly."})
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


class JSONLTracker(GeneralTracker):
    """An accelerate tracker that appends every logged dict as one JSON line; always on, no dependency."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / f"{run_name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs):
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> PretrainingArguments:
    parser = HfArgumentParser(PretrainingArguments)
    argv = list(sys.argv[1:] if argv is None else argv)
    config_file = None
    if "--config" in argv:
        i = argv.index("--config")
        config_file = argv[i + 1] if i + 1 < len(argv) else None
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SystemExit(f"error: --config {config_file}: no such file")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(path.read_text()) or {}
        else:
            values = json.loads(path.read_text())
        known = {f.name for f in fields(PretrainingArguments)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"error: {config_file}: unknown options {unknown}; known: {sorted(known)}")
        parser.set_defaults(**values)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def check_args(args: PretrainingArguments) -> None:
    """Fail before any training starts, with a message naming the option. Fills preset-dependent defaults."""
    if args.preset not in PRESETS:
        raise SystemExit(f"error: --preset {args.preset!r} is unknown; choose one of {sorted(PRESETS)}")
    for name, value in PRESET_TRAINING[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.user_representation not in ("mean", "cls"):
        raise SystemExit(f"error: --user-representation must be `mean` or `cls`, got {args.user_representation!r}")
    if args.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise SystemExit(f"error: --mixed-precision must be auto, no, bf16 or fp16, got {args.mixed_precision!r}")
    if not Path(args.data).is_dir():
        raise SystemExit(f"error: --data {args.data}: no such folder (build one with `python -m data_prep build`)")
    for name in ("batch_size", "log_every", "save_total_limit"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if args.embedding_combination not in ("mean", "grouped"):
        raise SystemExit("error: --embedding-combination must be `mean` or `grouped`, got "
                         f"{args.embedding_combination!r}")
    if not 0.0 <= args.contrastive_weight < math.inf:
        raise SystemExit(f"error: --contrastive-weight must be a finite number >= 0, got {args.contrastive_weight}")
    if not 0.0 < args.contrastive_temperature < math.inf:
        raise SystemExit(f"error: --contrastive-temperature must be positive, got {args.contrastive_temperature}")
    if args.dropout is not None and not 0.0 <= args.dropout <= 1.0:
        raise SystemExit(f"error: --dropout must be in [0, 1], got {args.dropout}")
    for name in ("max_steps", "eval_every", "save_every", "per_device_batch_size", "max_length",
                 "early_stopping_patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {value}")
    if not 0 < args.num_epochs < math.inf and args.max_steps is None:
        raise SystemExit(f"error: --num-epochs must be a positive number, got {args.num_epochs}")
    if not 0 < args.learning_rate < math.inf:
        raise SystemExit(f"error: --learning-rate must be a positive number, got {args.learning_rate}")


def resolve_mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def build_config(args: PretrainingArguments, data: PreparedData) -> ShopperBertConfig:
    preset = dict(PRESETS[args.preset])
    max_length = args.max_length or preset.pop("max_length")
    preset.pop("max_length", None)
    if args.dropout is not None:
        preset.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    return ShopperBertConfig.from_data_metadata(
        data.metadata, max_position_embeddings=max_length + 1, user_representation=args.user_representation,
        embedding_combination=args.embedding_combination, contrastive_weight=args.contrastive_weight,
        contrastive_temperature=args.contrastive_temperature, **preset,
    )


def check_config_matches_data(config: ShopperBertConfig, data: PreparedData, data_path, where: str) -> None:
    """A checkpoint's vocabularies must be the data's: same sizes, same text dimension."""
    expected = ShopperBertConfig.from_data_metadata(data.metadata)
    for name in ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "date_base_year"):
        if getattr(config, name) != getattr(expected, name):
            raise SystemExit(
                f"error: {where} was trained with {name}={getattr(config, name)} but --data "
                f"{data_path} has {name}={getattr(expected, name)}: the data's metadata disagrees with the "
                "checkpoint's config (rebuild the data with the same vocabulary, or start a new run)"
            )


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
        raise SystemExit("error: the validation users hold no masked purchase to evaluate (empty validation split?)")
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
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------
def checkpoint_dirs(output: Path) -> list[Path]:
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_training_state(accelerator: Accelerator, output: Path, step: int, limit: int) -> None:
    """`accelerator.save_state` into a temporary folder, then an atomic rename: a kill never leaves half a state."""
    final = output / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "step.json").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_model(accelerator: Accelerator, model, output_dir: Path, data_path: Path, extra: dict) -> None:
    """`save_pretrained` (safetensors, config, remote code) plus the data metadata needed to encode new users."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = output_dir.with_name(output_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        for name in DATA_FILES:
            source = data_path / name
            if source.is_file():
                shutil.copy2(source, tmp / name)
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))
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
    check_args(args)
    output = Path(args.output)
    data_path = Path(args.data)
    try:
        data = load_prepared(data_path)
        for split in ("train", "validation"):
            if split not in data.dataset:
                raise DataPrepError(f"its dataset has no `{split}` split (it has {list(data.dataset)})")
    except (DataPrepError, FileNotFoundError) as err:
        raise SystemExit(f"error: --data {args.data}: {err}") from None
    config = build_config(args, data)

    resume_dir = None
    if args.resume:
        resume_dir = checkpoint_dirs(output)[-1] if args.resume == "latest" and checkpoint_dirs(output) else None
        if args.resume != "latest":
            resume_dir = Path(args.resume)
        if resume_dir is None or not resume_dir.is_dir():
            raise SystemExit(f"error: --resume {args.resume}: no checkpoint found under {output / 'checkpoints'}")
        run_config = output / "run_config.json"
        if run_config.is_file():
            saved = ShopperBertConfig.from_dict(json.loads(run_config.read_text())["model_config"])
            check_config_matches_data(saved, data, data_path, f"the run in {output}")
            config = saved

    mixed_precision = resolve_mixed_precision(args.mixed_precision)
    trackers: list = [JSONLTracker("metrics", output / "logs")]
    if args.report_to == "auto":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is not None:
            trackers.append("tensorboard")
    elif args.report_to != "none":
        trackers += [name.strip() for name in args.report_to.split(",") if name.strip()]

    probe_processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = args.per_device_batch_size or max(1, args.batch_size // probe_processes)
    if args.batch_size % (per_device * probe_processes):
        raise SystemExit(
            f"error: --batch-size {args.batch_size} is not a multiple of per-device batch {per_device} x "
            f"{probe_processes} processes"
        )
    accumulation = args.batch_size // (per_device * probe_processes)
    accelerator = Accelerator(
        gradient_accumulation_steps=accumulation,
        mixed_precision=mixed_precision,
        log_with=trackers,
        project_dir=str(output),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.num_processes != probe_processes:
        raise SystemExit(f"error: WORLD_SIZE={probe_processes} but accelerate runs {accelerator.num_processes}")
    set_seed(args.seed)

    train_dataset = data.dataset["train"]
    eval_dataset = data.dataset["validation"]
    if args.max_train_users:
        train_dataset = train_dataset.select(range(min(args.max_train_users, len(train_dataset))))
    if args.max_eval_users:
        eval_dataset = eval_dataset.select(range(min(args.max_eval_users, len(eval_dataset))))
    columns = [c for c in train_dataset.column_names if c != "timestamp"]
    train_dataset = train_dataset.with_format("numpy", columns=columns)
    eval_dataset = eval_dataset.with_format("numpy", columns=columns)

    model = ShopperBertForMaskedPurchasePrediction(config)
    collator = DataCollatorForMaskedPurchasePrediction.from_config(
        config, data.embeddings, augmentation=args.augmentation, seed=args.seed)
    # Validation masks are fixed (same seed and epoch at every evaluation) and never augmented.
    eval_collator = DataCollatorForMaskedPurchasePrediction.from_config(
        config, data.embeddings, augmentation=False, seed=args.seed + 1, num_views=1)
    # Own generators: creating an iterator then draws no number from the global RNG (which drives dropout), so a
    # resumed run, whose iterator starts at another step, keeps the dropout masks of the uninterrupted run.
    train_dataloader = DataLoader(train_dataset, batch_size=per_device, shuffle=True, collate_fn=collator,
                                  num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    eval_dataloader = DataLoader(eval_dataset, batch_size=per_device, shuffle=False, collate_fn=eval_collator,
                                 num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2))

    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader)
    steps_per_epoch = math.ceil(len(train_dataloader) / accumulation)
    total_steps = args.max_steps or math.ceil(args.num_epochs * steps_per_epoch)
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    # Stepped by hand once per optimizer step (not `prepare`d, which would step it once per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup, total_steps))
    accelerator.register_for_checkpointing(scheduler)
    eval_every = args.eval_every or steps_per_epoch
    save_every = args.save_every or steps_per_epoch

    hparams = {**asdict(args), "mixed_precision_resolved": mixed_precision, "num_processes": accelerator.num_processes,
               "per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation,
               "total_steps": total_steps, "warmup_steps": warmup, "steps_per_epoch": steps_per_epoch,
               "train_users": len(train_dataset), "eval_users": len(eval_dataset),
               "num_parameters": sum(p.numel() for p in model.parameters())}
    accelerator.init_trackers("shopperbert", config={k: v for k, v in hparams.items() if v is not None})
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        if not resume_dir:
            (output / "run_config.json").write_text(json.dumps({"model_config": config.to_dict(), "args": hparams},
                                                               indent=2, default=str))

    completed_steps = 0
    if resume_dir:
        accelerator.load_state(str(resume_dir))
        completed_steps = json.loads((resume_dir / "step.json").read_text())["step"]
        accelerator.print(f"resumed from {resume_dir} at optimizer step {completed_steps}")

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
    running_contrastive = 0.0
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
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            loss_value = loss.detach().float().item()
            if not math.isfinite(loss_value):  # never leave a NaN model behind: no final/, a clear message
                raise SystemExit(
                    f"error: the training loss is {loss_value} at optimizer step {completed_steps + 1}; stopping "
                    f"without saving a final model (try a lower --learning-rate than {args.learning_rate})")
            running_loss += loss_value
            running_count += 1
            if outputs.contrastive_loss is not None:
                running_contrastive += outputs.contrastive_loss.detach().float().item()
            tokens_seen += int(batch["attention_mask"].sum()) - batch["attention_mask"].shape[0]
            if not accelerator.sync_gradients:
                continue
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
                save_training_state(accelerator, output, completed_steps, args.save_total_limit)
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


def accelerate_broadcast(accelerator: Accelerator, value):
    """Send a small picklable value from the main process to all others."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def main(argv=None):
    args = parse_args(argv)
    training_function(args)


if __name__ == "__main__":
    main()
