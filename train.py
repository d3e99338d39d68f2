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
Helpers live in `pretraining/`: the options (`arguments.py`), the run folder and its lock (`run_folder.py`),
checkpoints and resume (`checkpoints.py`), the validation MPP metrics (`evaluation.py`), the metrics log
(`tracking.py`). This file reads top to bottom: set-up, data, model and optimizer, the loop, the end, then
`run_training`, which runs them in that order.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data_prep import DataPrepError, PreparedData, load_prepared
from modeling_shopperbert import MPP_HEADS, ShopperBertConfig, ShopperBertForMaskedPurchasePrediction
from modeling_shopperbert.collator import DataCollatorForMaskedPurchasePrediction
from modeling_shopperbert.contract import CHECKPOINT_DATA_FILES, FINGERPRINT_KEY, vocabulary_fingerprint
from pretraining.arguments import PRESETS, PretrainingArguments, batch_split, check_args, parse_args
from pretraining.checkpoints import (  # noqa: F401  (RNG_STATE, TRAIN_STATE, ...: tests read them as train.<name>)
    RNG_STATE, TRAIN_STATE, CheckpointRefused, all_processes, check_finite_weights, check_resumable_here,
    checkpoint_dirs, is_first_rank, load_checkpoint, resume_candidates, resume_config, save_training_state)
from pretraining.errors import RunError
from pretraining.evaluation import (  # noqa: F401  (rule_predictions: tests read it as train.<name>)
    evaluate_mpp, majority_classes, mpp_diagnostics_table, rule_predictions)
from pretraining.run_folder import (  # noqa: F401  (LOCK_FILE, RUN_MARKER, UMASK: tests read them as train.<name>)
    LOCK_FILE, RUN_MARKER, UMASK, claim_output, continues_this_folder, release_lock, truncate_log, use_default_modes,
    write_json)
from pretraining.tracking import JSONLTracker, plot_loss_curve


# ---------------------------------------------------------------------------------------------------------------
# Set-up: the precision and the Accelerator
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
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


def make_dataloaders(args: PretrainingArguments, accelerator: Accelerator, config: ShopperBertConfig,
                     data: PreparedData, per_device: int, train_dataset, eval_dataset):
    """The training collator (masks and Algorithm 1 augmentation, re-drawn each epoch) and both data loaders."""
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
    return collator, train_dataloader, eval_dataloader


# ---------------------------------------------------------------------------------------------------------------
# Model, optimizer and schedule
# ---------------------------------------------------------------------------------------------------------------
def build_config(args: PretrainingArguments, data: PreparedData, fingerprint: str) -> ShopperBertConfig:
    """The model config of a new run: the preset's size, the options' objective, the data's vocabularies."""
    preset = dict(PRESETS[args.preset])
    max_length = args.max_length or preset.pop("max_length")
    preset.pop("max_length", None)
    if args.dropout is not None:
        preset.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    return ShopperBertConfig.from_data_metadata(
        data.metadata, max_position_embeddings=max_length + 1, user_representation=args.user_representation,
        embedding_combination=args.embedding_combination, contrastive_weight=args.contrastive_weight,
        contrastive_temperature=args.contrastive_temperature, profile_weight=args.profile_weight,
        vocab_fingerprint=fingerprint, **preset,
    )


@dataclass(frozen=True)
class Plan:
    """How the global batch is split and how long the run is, in optimizer steps."""

    per_device: int  # users per process and forward pass
    accumulation: int  # forward passes per optimizer step
    steps_per_epoch: int
    total_steps: int  # --max-steps, else --num-epochs epochs
    warmup_steps: int
    eval_every: int  # default: once per epoch
    save_every: int  # default: once per epoch


def make_plan(args: PretrainingArguments, batches_per_epoch: int) -> Plan:
    """The plan for a training data loader of `batches_per_epoch` forward passes per process."""
    per_device, _, accumulation = batch_split(args)
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
    total_steps = args.max_steps or math.ceil(args.num_epochs * steps_per_epoch)
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    return Plan(per_device, accumulation, steps_per_epoch, total_steps, warmup,
                eval_every=args.eval_every or steps_per_epoch, save_every=args.save_every or steps_per_epoch)


@dataclass
class Run:
    """What the loop works with: the options, the Accelerator, and the model, optimizer and data it prepared."""

    args: PretrainingArguments
    accelerator: Accelerator
    config: ShopperBertConfig
    model: ShopperBertForMaskedPurchasePrediction
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    collator: DataCollatorForMaskedPurchasePrediction
    train_dataloader: DataLoader
    eval_dataloader: DataLoader
    plan: Plan
    run_identity: dict  # what makes a checkpoint this run's (seed, batch size, training users)
    majority: list[int] | None = None  # each head's training prior, for the validation baselines


def prepare_run(args: PretrainingArguments, accelerator: Accelerator, config: ShopperBertConfig,
                data: PreparedData, train_dataset, eval_dataset, run_identity: dict) -> Run:
    """The model, data loaders and AdamW, `accelerator.prepare`d, and the learning-rate schedule (call after
    `set_seed`: the model's initialisation draws from it)."""
    model = ShopperBertForMaskedPurchasePrediction(config)
    per_device, _, _ = batch_split(args)
    collator, train_dataloader, eval_dataloader = make_dataloaders(args, accelerator, config, data, per_device,
                                                                   train_dataset, eval_dataset)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate,
                                  betas=(args.adam_beta1, args.adam_beta2))
    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader)
    plan = make_plan(args, len(train_dataloader))
    # Stepped by hand once per optimizer step (not `prepare`d, which would step it once per process). Its state goes
    # into each checkpoint's train_state.json (not `register_for_checkpointing`, which pickles it).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, plan.warmup_steps,
                                                                                 plan.total_steps))
    return Run(args, accelerator, config, model, optimizer, scheduler, collator, train_dataloader, eval_dataloader,
               plan, run_identity)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the peak, then cosine decay to zero (the paper's schedule)."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the loop carries from step to step: the optimizer step, the best validation loss so far, and the window
    of training losses that `log_training` averages and starts again."""

    step: int = 0
    best_loss: float = math.inf
    stale_evals: int = 0  # evaluations since the best one
    stopped_early: bool = False
    last_eval: dict = field(default_factory=dict)
    nonfinite_steps: int = 0  # in a row, their updates skipped
    window_finite: bool = True  # every loss and gradient since the last optimizer step is finite
    running_loss: float = 0.0
    running_contrastive: float = 0.0
    running_profile: float = 0.0
    running_count: int = 0
    tokens_seen: int = 0
    window_start: float = field(default_factory=time.perf_counter)


def train_loop(run: Run, state: LoopState) -> None:
    """Optimizer steps, epoch after epoch, from `state.step` (a resumed run skips the batches already seen) to the
    plan's last step or early stopping; logging, validation, checkpoints and --kill-at-step at their steps."""
    args, accelerator, plan = run.args, run.accelerator, run.plan
    progress = tqdm(total=plan.total_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc="pre-training", unit="step")
    run.model.train()
    state.window_start = time.perf_counter()
    epoch = state.step // plan.steps_per_epoch
    while state.step < plan.total_steps and not state.stopped_early:
        run.collator.set_epoch(epoch)
        run.train_dataloader.set_epoch(epoch)
        skip = (state.step - epoch * plan.steps_per_epoch) * plan.accumulation
        batches = accelerator.skip_first_batches(run.train_dataloader, skip) if skip else run.train_dataloader
        for batch in batches:
            loss_value, grad_norm = train_micro_step(run, state, batch)
            if not accelerator.sync_gradients:
                continue
            state.nonfinite_steps = 0 if state.window_finite else state.nonfinite_steps + 1
            if state.nonfinite_steps:  # the update was skipped: stop, or go on with the weights of the last good step
                check_nonfinite(args, state.nonfinite_steps, state.step + 1, loss_value, grad_norm, accelerator)
            state.window_finite = True
            run.scheduler.step()
            state.step += 1
            progress.update(1)

            if state.step % args.log_every == 0 or state.step == plan.total_steps:
                progress.set_postfix(loss=f"{log_training(run, state)['train/loss']:.3f}")
            if state.step % plan.eval_every == 0 or state.step == plan.total_steps:
                evaluate_and_keep_best(run, state)
                if state.stopped_early:
                    break
            if state.step % plan.save_every == 0 and state.step < plan.total_steps:
                save_training_state(accelerator, run.model, Path(args.output), state.step, args.save_total_limit,
                                    {"scheduler": run.scheduler.state_dict(), "run": run.run_identity,
                                     "model_config": run.config.to_dict()})
            if args.kill_at_step is not None and state.step == args.kill_at_step:
                accelerator.print(f"kill_at_step: SIGKILL after step {state.step}", flush=True)
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            if state.step >= plan.total_steps:
                break
        epoch += 1
    progress.close()


def train_micro_step(run: Run, state: LoopState, batch: dict) -> tuple[float, float | None]:
    """One forward and backward pass; at the end of an accumulation window also clip, check that the window's losses
    and gradients are finite on every process, and step the optimizer only then. Returns the loss and the gradient
    norm (None inside a window)."""
    accelerator = run.accelerator
    with accelerator.accumulate(run.model):
        outputs = run.model(**batch)
        loss = outputs.loss
        accelerator.backward(loss)
        loss_value = loss.detach().float().item()
        state.window_finite &= math.isfinite(loss_value)
        grad_norm = None
        if accelerator.sync_gradients:  # clip (an infinite bound when off: it only measures) and check
            grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm or math.inf)
            grad_norm = None if grad_norm is None else float(grad_norm)  # None: DeepSpeed checks itself
            # fp16's GradScaler skips overflowing updates and lowers its scale itself
            grads_finite = grad_norm is None or math.isfinite(grad_norm) or accelerator.scaler is not None
            state.window_finite = all_processes(accelerator, state.window_finite and grads_finite)
        if state.window_finite or accelerator.scaler is not None:  # a no-op between accumulation boundaries
            run.optimizer.step()
        run.optimizer.zero_grad()
    if math.isfinite(loss_value):
        state.running_loss += loss_value
        state.running_count += 1
        if outputs.contrastive_loss is not None:
            state.running_contrastive += outputs.contrastive_loss.detach().float().item()
        if outputs.profile_loss is not None:
            state.running_profile += outputs.profile_loss.detach().float().item()
    state.tokens_seen += int(batch["attention_mask"].sum()) - batch["attention_mask"].shape[0]
    return loss_value, grad_norm


def log_training(run: Run, state: LoopState) -> dict:
    """Log the mean training loss and throughput since the last log (averaged over processes) and start a new
    window. Returns the logged record."""
    accelerator = run.accelerator
    elapsed = time.perf_counter() - state.window_start
    stats = torch.tensor([state.running_loss / max(1, state.running_count), state.tokens_seen / max(elapsed, 1e-9)],
                         device=accelerator.device)
    stats = accelerator.reduce(stats, reduction="mean")
    record = {"train/loss": float(stats[0]), "train/tokens_per_s_per_process": float(stats[1]),
              "train/lr": run.scheduler.get_last_lr()[0], "epoch": state.step / run.plan.steps_per_epoch}
    if run.config.contrastive_weight > 0:
        record["train/contrastive_loss"] = state.running_contrastive / max(1, state.running_count)
    if run.config.profile_weight > 0:
        record["train/profile_loss"] = state.running_profile / max(1, state.running_count)
    accelerator.log(record, step=state.step)
    state.tokens_seen, state.running_loss, state.running_count = 0, 0.0, 0
    state.running_contrastive = state.running_profile = 0.0
    state.window_start = time.perf_counter()
    return record


def evaluate_and_keep_best(run: Run, state: LoopState) -> None:
    """Validate; save `best/` when the validation MPP loss is the lowest so far, and stop early after
    --early-stopping-patience evaluations without a lower one. A non-finite validation loss ends the run."""
    args, accelerator = run.args, run.accelerator
    state.last_eval = evaluate_mpp(run.model, run.eval_dataloader, accelerator, run.majority)
    loss = state.last_eval["eval/loss"]
    if not math.isfinite(loss):
        raise RunError(f"the validation MPP loss is {loss} at step {state.step}; stopping without saving a final "
                       "model", exit_code=1)
    accelerator.log(state.last_eval, step=state.step)
    accelerator.print(f"step {state.step}: validation MPP loss {loss:.4f}")
    if loss < state.best_loss:
        state.best_loss, state.stale_evals = loss, 0
        save_model(accelerator, run.model, Path(args.output) / "best", Path(args.data),
                   {"step": state.step, **state.last_eval, "args": asdict(args)})
    else:
        state.stale_evals += 1
    if args.early_stopping_patience and state.stale_evals >= args.early_stopping_patience:
        accelerator.print(f"early stopping: no lower validation MPP loss in {state.stale_evals} evaluations "
                          f"(best {state.best_loss:.4f})")
        state.stopped_early = True


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


# ---------------------------------------------------------------------------------------------------------------
# The end: saved models and results
# ---------------------------------------------------------------------------------------------------------------
def finish_run(run: Run, state: LoopState) -> dict:
    """Save `final/`, `eval_results.json`, `mpp_diagnostics.md` and the loss curve; end the trackers. Returns what
    eval_results.json holds."""
    accelerator, output = run.accelerator, Path(run.args.output)
    # Every process must end with the same weights: compare a checksum across ranks.
    checksum = torch.tensor([float(sum(p.detach().double().sum() for p in run.model.parameters()))],
                            device=accelerator.device, dtype=torch.float64)
    checksums = accelerator.gather(checksum).cpu().tolist()
    final_info = {"step": state.step, **state.last_eval, "stopped_early": state.stopped_early,
                  "best_eval_loss": state.best_loss, "rank_weight_checksums": checksums,
                  "mpp_prior_classes": dict(zip(MPP_HEADS, run.majority)), "args": asdict(run.args)}
    save_model(accelerator, run.model, output / "final", Path(run.args.data), final_info)
    if accelerator.is_main_process:
        (output / "eval_results.json").write_text(json.dumps(final_info, indent=2))
        table = mpp_diagnostics_table(state.last_eval)
        (output / "mpp_diagnostics.md").write_text(
            f"Validation MPP accuracy at step {state.step} (fixed masks) against rules that learn nothing\n\n"
            f"{table}\n")
        accelerator.print(table)
        log_path = output / "logs" / "metrics.jsonl"
        if log_path.is_file():
            plot_loss_curve(log_path, output / "loss_curve.png")
    accelerator.end_training()
    return final_info


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
        for name in CHECKPOINT_DATA_FILES:
            source = data_path / name
            if source.is_file():
                shutil.copy2(source, tmp / name)
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))
        use_default_modes(tmp)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------------------------
# The run, top to bottom
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


def run_training(args: PretrainingArguments, accelerator: Accelerator, mixed_precision: str, data: PreparedData,
                 fingerprint: str, train_dataset, eval_dataset, candidates: list[Path]) -> dict:
    """Model config -> model, data and optimizer -> resumed state -> trackers -> the loop -> saved models."""
    # What makes a checkpoint this run's: resuming with other values is refused (unless --resume-force).
    run_identity = {"seed": args.seed, "batch_size": args.batch_size, "train_users": len(train_dataset)}
    config = build_config(args, data, fingerprint)
    if candidates:
        config, candidates = resume_config(args, candidates, data, fingerprint, run_identity)
    set_seed(args.seed)
    run = prepare_run(args, accelerator, config, data, train_dataset, eval_dataset, run_identity)
    state = LoopState()
    if candidates:  # before the trackers write anything: a refused checkpoint leaves the run folder as it was
        resume_state(run, state, candidates)
    hparams = start_tracking(run, mixed_precision, len(train_dataset), len(eval_dataset))

    run.majority = accelerate_broadcast(
        accelerator, majority_classes(data.dataset["train"]) if accelerator.is_main_process else None)
    plan = run.plan
    accelerator.print(
        f"{len(train_dataset)} training / {len(eval_dataset)} validation users, {hparams['num_parameters']:,} "
        f"parameters, {plan.total_steps} steps ({plan.steps_per_epoch}/epoch), {accelerator.num_processes} "
        f"process(es), batch {plan.per_device} x {accelerator.num_processes} x {plan.accumulation}, precision "
        f"{mixed_precision}")
    train_loop(run, state)
    return finish_run(run, state)


def resume_state(run: Run, state: LoopState, candidates: list[Path]) -> None:
    """Load the newest usable checkpoint (weights, optimizer, scheduler, random generators) and the best validation
    loss so far; cut the metrics log back to the checkpoint's step."""
    args, accelerator, output = run.args, run.accelerator, Path(run.args.output)
    resume_dir, checkpoint = load_checkpoint(accelerator, candidates, run.scheduler, explicit=args.resume != "latest")
    state.step = checkpoint["step"]
    if accelerator.is_main_process:
        truncate_log(output / "logs" / "metrics.jsonl", state.step)
    accelerator.print(f"resumed from {resume_dir} at optimizer step {state.step}")
    best_file = output / "best" / "training_info.json"
    if best_file.is_file():
        best_info = json.loads(best_file.read_text())
        state.best_loss = best_info.get("eval/loss", math.inf)
        state.stale_evals = (state.step - best_info.get("step", state.step)) // run.plan.eval_every


def start_tracking(run: Run, mixed_precision: str, train_users: int, eval_users: int) -> dict:
    """Start the trackers with the run's hyperparameters, and write `run_config.json` (unless this run continues the
    folder's own). Returns the hyperparameters."""
    args, accelerator, plan = run.args, run.accelerator, run.plan
    hparams = {**asdict(args), "mixed_precision_resolved": mixed_precision, "num_processes": accelerator.num_processes,
               "per_device_batch_size": plan.per_device, "gradient_accumulation_steps": plan.accumulation,
               "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps,
               "steps_per_epoch": plan.steps_per_epoch, "train_users": train_users, "eval_users": eval_users,
               "num_parameters": sum(p.numel() for p in run.model.parameters())}
    accelerator.init_trackers("shopperbert", config={k: v for k, v in hparams.items() if v is not None})
    if accelerator.is_main_process and not continues_this_folder(args, Path(args.output)):
        write_json(Path(args.output) / "run_config.json", {"model_config": run.config.to_dict(), "args": hparams})
    return hparams


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
