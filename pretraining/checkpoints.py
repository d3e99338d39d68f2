"""Checkpoints: save and resume the full training state without unpickling anything but tensors.

`accelerator.save_state` writes the model (safetensors) and optimizer; beside them `train_state.json` holds the step,
the scheduler state and the run's identity, and one safetensors file per process its random generators. A damaged
checkpoint found by `--resume latest` is set aside (`*.damaged`); an intact one that cannot continue here is refused.
`resume_config` checks, before anything is loaded, that a checkpoint belongs to this run and its data. `args` below
is train.py's parsed `PretrainingArguments`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file

from data_prep import PreparedData
from modeling_shopperbert import ShopperBertConfig
from modeling_shopperbert.contract import FINGERPRINT_KEY
from modeling_shopperbert.encoder import check_data_matches_config, check_vocabulary
from pretraining.errors import RunError
from pretraining.run_folder import continues_this_folder, holds_a_run, use_default_modes, write_json

# What a checkpoint holds beside accelerate's model.safetensors and optimizer.bin (loaded with weights_only=True).
TRAIN_STATE = "train_state.json"  # step, scheduler state, the run's identity and model config
RNG_STATE = "rng_state_{}.safetensors"  # one per process: Python, numpy and torch generators


def checkpoint_dirs(output: Path) -> list[Path]:
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_training_state(accelerator: Accelerator, model, output: Path, step: int, limit: int, state: dict) -> None:
    """`accelerator.save_state` (model as safetensors, optimizer) into a temporary folder, beside what a resume needs
    without unpickling anything: `train_state.json` (step, scheduler state, the run's identity and model config,
    from `state`) and each process's random generators as safetensors (accelerate's `random_states_N.pkl` is not
    kept). An atomic rename then publishes the folder: a kill never leaves half a state."""
    check_finite_weights(model, f"checkpoint step {step}")
    final = output / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    save_rng_state(tmp / RNG_STATE.format(accelerator.process_index))
    (tmp / f"random_states_{accelerator.process_index}.pkl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / TRAIN_STATE, {"step": step, "accelerator_step": accelerator.step, **state})
        use_default_modes(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(output)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_rng_state(path: Path) -> None:
    """This process's random generators (Python, numpy, torch CPU and CUDA) as tensors and JSON metadata."""
    version, python_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors = {"python": torch.tensor(python_state, dtype=torch.int64),
               "numpy": torch.from_numpy(keys.astype(np.int64)), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(path), metadata={"python": json.dumps([version, gauss]),
                                            "numpy": json.dumps([name, position, has_gauss, cached_gaussian])})


def load_rng_state(path: Path) -> None:
    """Restore the generators `save_rng_state` wrote; a missing or damaged file raises (the resume would not be
    exact)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    version, gauss = json.loads(metadata["python"])
    name, position, has_gauss, cached_gaussian = json.loads(metadata["numpy"])
    random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count())])


class CheckpointRefused(Exception):
    """An intact checkpoint that cannot continue this run here: an older train.py's format, pickle files train.py
    never writes, another number of processes or another device. Refused (exit 2); never set aside as damaged."""


def read_train_state(folder: Path) -> dict:
    """A checkpoint's `train_state.json`. ValueError when the checkpoint is damaged or incomplete (a file train.py
    writes is missing or does not parse); CheckpointRefused when it was written by an older train.py (accelerate's
    pickles, no train_state.json) or holds pickle files (they are never loaded)."""
    pickles = sorted(p.name for p in folder.glob("*.pkl"))
    if not (folder / TRAIN_STATE).exists() and (pickles or (folder / "step.json").is_file()):
        raise CheckpointRefused(f"was written by an older version of train.py ({', '.join(pickles) or 'step.json'}, "
                                f"no {TRAIN_STATE}), whose pickled state this version does not load: start a new run")
    if pickles:
        raise CheckpointRefused(f"holds pickle files that train.py never writes and does not load "
                                f"({', '.join(pickles)}): remove them to resume it")
    missing = [name for name in (TRAIN_STATE, "model.safetensors", "optimizer.bin", RNG_STATE.format(0))
               if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"it lacks {missing}")
    state = json.loads((folder / TRAIN_STATE).read_text())
    needed = {"step", "accelerator_step", "scheduler", "run", "model_config"}
    if not isinstance(state, dict) or needed - set(state):
        raise ValueError(f"its {TRAIN_STATE} lacks {sorted(needed - set(state if isinstance(state, dict) else ()))}")
    return state


def resume_candidates(args, output: Path) -> list[Path]:
    """The checkpoints to try, newest first: every one of `output` for `latest`, else the one named, which must be
    one of `output`'s unless `output` is new or empty (a new run folder started from another run's checkpoint)."""
    if args.resume == "latest":
        found = checkpoint_dirs(output)[::-1]
    else:
        found = [Path(args.resume)] if Path(args.resume).is_dir() else []
    if not found:
        raise RunError(f"--resume {args.resume}: no checkpoint found under {output / 'checkpoints'}")
    if not continues_this_folder(args, output) and holds_a_run(output):
        raise RunError(f"--resume {args.resume} is not a checkpoint of --output {output} (those are under "
                       f"{output / 'checkpoints'}): resuming it would replace that folder's run; give a new or empty "
                       "--output to start a new run from it")
    return found

def load_checkpoint(accelerator: Accelerator, candidates: list[Path], scheduler, explicit: bool) -> tuple[Path, dict]:
    """Load the newest checkpoint that loads completely on every process: model and optimizer through accelerate
    (tensors only, weights_only=True), then our JSON scheduler state and safetensors random generators. A damaged
    one is set aside (renamed `*.damaged`, never deleted) and the previous one tried; a checkpoint named with
    --resume is not replaced by another. An intact one that cannot continue here (CheckpointRefused) is refused
    with nothing changed."""
    for folder in candidates:
        problem = refused = None
        try:
            state = read_train_state(folder)
            check_resumable_here(folder, accelerator)
            accelerator.load_state(str(folder), load_kwargs={"weights_only": True})
            scheduler.load_state_dict(state["scheduler"])
            accelerator.step = state["accelerator_step"]
            load_rng_state(folder / RNG_STATE.format(accelerator.process_index))
        except CheckpointRefused as err:
            refused = str(err)
        except Exception as err:  # any damaged or missing file: this checkpoint cannot continue the run exactly
            problem = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        if not all_processes(accelerator, refused is None):
            raise RunError(f"--resume {folder if explicit else 'latest'}: the checkpoint {folder} "
                           f"{refused or 'cannot be resumed by another process of this run'}; nothing was changed")
        if all_processes(accelerator, problem is None):
            return folder, state
        damaged_checkpoint(folder, problem or "damaged on another process", explicit, accelerator.is_main_process)
        accelerator.wait_for_everyone()
    raise RunError(f"--resume {candidates[0] if explicit else 'latest'}: no checkpoint could be loaded")


def check_resumable_here(folder: Path, accelerator) -> None:
    """Refuse (CheckpointRefused) an intact checkpoint saved by another number of processes (one random-state file
    per process) or without the CUDA generators this process has (saved on the CPU, resumed on a GPU)."""
    saved = len(list(folder.glob(RNG_STATE.format("*"))))
    if saved != accelerator.num_processes:
        raise CheckpointRefused(f"was saved by {saved} process(es) ({RNG_STATE.format('N')} files) but this run has "
                                f"{accelerator.num_processes}: resume with the same number of processes")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with safe_open(str(folder / RNG_STATE.format(accelerator.process_index)), framework="pt") as f:
        saved_gpus = sum(key.startswith("cuda_") for key in f.keys())
    if saved_gpus < gpus:
        raise CheckpointRefused(f"was saved on {f'{saved_gpus} GPU(s)' if saved_gpus else 'the CPU'} but this process "
                                f"has {gpus} GPU(s): resume on the same device as the saved run")


def damaged_checkpoint(folder: Path, problem, explicit: bool, rename: bool) -> None:
    """Refuse a damaged checkpoint named with --resume; set one found by `latest` aside, renamed `*.damaged` (out of
    `checkpoint_dirs` and of the rotation, never deleted), so that the previous one is used."""
    if explicit:
        raise RunError(f"--resume {folder}: the checkpoint is damaged or incomplete ({problem})")
    print(f"warning: checkpoint {folder} is damaged or incomplete ({problem}); falling back to the previous one",
          file=sys.stderr)
    if rename and folder.is_dir():
        aside = folder.with_name(folder.name + ".damaged")
        os.replace(folder, aside if not aside.exists() else aside.with_name(f"{aside.name}-{time.time():.0f}"))


def all_processes(accelerator: Accelerator, flag: bool) -> bool:
    """True when `flag` holds on every process (one all-reduce when there are several)."""
    if accelerator.num_processes == 1:
        return flag
    votes = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum")
    return int(votes.item()) == accelerator.num_processes


def check_finite_weights(model, what: str) -> None:
    """Never write weights that hold NaN or inf."""
    from modeling_shopperbert.encoder import non_finite_tensors

    bad = non_finite_tensors(model.named_parameters())
    if bad:
        raise RunError(f"{len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); not writing {what}", exit_code=1)


def resume_config(args, candidates: list[Path], data: PreparedData, fingerprint: str,
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
    check_config_matches_data(config, data, args.data, where, check_content=not args.resume_force)
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


def check_config_matches_data(config: ShopperBertConfig, data: PreparedData, data_path, where: str,
                              check_content: bool = True) -> None:
    """A checkpoint's vocabularies must be the data's: same sizes and, by content, the same vocabulary fingerprint
    (two vocabularies of the same sizes can give an id to different categories). The check is the encoder's
    (`check_vocabulary`, the one vocabulary check), worded for a resumed run."""
    data_where = f"--data {data_path}"
    try:
        check_data_matches_config(config, data.metadata, data_where)
    except ValueError as err:
        raise RunError(f"{err} (the data's metadata disagrees with the config of {where}: rebuild the data with the "
                       "same vocabulary, or start a new run)") from None
    if check_content:
        try:
            check_vocabulary(config, data.metadata, data.vocab, data_where, model=where)
        except ValueError as err:
            raise RunError(f"{err} (--resume-force resumes anyway)") from None


def is_first_rank() -> bool:
    """The main process, known before the Accelerator exists (launchers set RANK)."""
    return os.environ.get("RANK", "0") == "0"
