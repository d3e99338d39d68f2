"""Encode users at scale: the input read one shard at a time, each shard written as its own parquet file, on one
process or several (`accelerate launch`), with memory bounded by one shard.

    python -m modeling_shopperbert.encode --model M --data data/big --out users/ --shard-size 100000
    accelerate launch --num_processes 4 -m modeling_shopperbert.encode --model M --data data/big --out users/ \\
        --shard-size 100000
    python -m modeling_shopperbert.encode --model M --logs logs_by_user/ --out users/      # one shard per file

Shards belong to the input, not to the processes. Shard i of `--data` holds the users at positions
`[i * shard_size, (i + 1) * shard_size)` of the chosen splits (train, then validation: the single-file order); shard i
of a `--logs` folder holds the users of its i-th file (sorted paths; each user's purchases in one file, as `data_prep
build --partitioned-by-user` expects; a user found in two files is an error). Process r of P encodes shards r, r + P,
...; each is written atomically as `part-00000.parquet` (the single-file columns: user_id, embedding). So the shard
files do not depend on the number of processes, and their concatenation in order holds the single-file output's users
in its order (the vectors agree to ~1e-5: users are batched within a shard, not across the whole input).

Memory: one shard of users and their vectors, plus what every encode holds (the model, the corpus' text-embedding
matrix and descriptions); the prepared corpus is memory-mapped. For a `--logs` folder the main process checks at the
end that no user is in two shards (16 bytes per user). With several machines, `--out` must be on a filesystem all
of them see.

The folder is complete when `_manifest.json` exists: the main process writes it once every shard is there (shards,
users, dimension, the job). `read_user_embeddings` refuses a folder without it (and loads a complete one whole).
`_job.json`, written first, records the job (digest of config and weights, the corpus' metadata.json digest or the log
files' sizes and times, shard size, pooling); `--resume` checks it and keeps the shards a killed run wrote (a smaller
`--batch-size` is allowed, e.g. after running out of GPU memory).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np

JOB_FILE = "_job.json"
MANIFEST_FILE = "_manifest.json"
MANIFEST_FORMAT = "shopperbert-user-embeddings/1"
# settings a resumed run must share with the run that wrote the shards (the model path may be spelled differently)
# (not the batch size: a run killed for memory resumes with a smaller one; shards agree to ~1e-5 across batchings)
RESUME_KEYS = ("weights", "input", "shard_size", "num_shards", "user_representation", "normalize", "hidden_size")
SHARD_FILE = re.compile(r"part-\d{5}\.parquet(\.tmp)?")
# processes wait for the slowest at the end (uneven shards, a resumed run): far beyond torch's 10-30 min default
BARRIER_TIMEOUT = timedelta(hours=24)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def is_sharded(args) -> bool:
    """Sharded output: asked for with `--shard-size`, or implied by a `--logs` folder."""
    return args.shard_size is not None or (args.logs is not None and Path(args.logs).is_dir())


def own_files(folder: Path) -> bool:
    """True when `folder` is empty, or holds a readable `_job.json` and nothing but what this module writes (so
    `--overwrite` may empty it)."""
    names = {path.name for path in folder.iterdir()}
    if not names:
        return True
    try:
        json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError):
        return False
    return all((folder / name).is_file() and (name in (JOB_FILE, MANIFEST_FILE, JOB_FILE + ".tmp",
                                                        MANIFEST_FILE + ".tmp") or SHARD_FILE.fullmatch(name))
               for name in names)


def check_out_folder(out: Path, resume: bool, overwrite: bool, logs: str | None = None) -> str | None:
    """Why a sharded `--out` is refused (None when it is fine)."""
    if logs is not None:
        target, source = out.resolve(), Path(logs).resolve()
        if target == source or source in target.parents or target in source.parents:
            return f"--out {out} is, contains or lies inside --logs {logs}; write the shards elsewhere"
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; sharded output (--shard-size, or a --logs folder) goes into a folder"
    if not out.exists():
        return "--resume: --out {out} does not exist; nothing to resume".format(out=out) if resume else None
    if resume:
        return None if (out / JOB_FILE).is_file() else (f"--resume: {out} holds no {JOB_FILE}; it was not written "
                                                         "by a sharded encode")
    if not overwrite:
        return (f"--out {out} already exists; --resume continues the run that wrote it, --overwrite replaces it (a "
                "folder of shards this command wrote only)")
    if not own_files(out):
        return (f"--out {out} holds files this command did not write; refusing to replace it even with --overwrite "
                "(nothing was deleted)")
    return None


def files_digest(paths) -> str:
    """sha256 (16 hex digits) over the content of `paths`, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


def weights_digest(model_folder: Path) -> str:
    """The identity of a model: its config.json and weight files (safetensors or .bin)."""
    weights = sorted([*model_folder.glob("*.safetensors"), *model_folder.glob("*.bin")])
    if not weights:
        raise ValueError(f"--model {model_folder}: no weight file (*.safetensors or *.bin)")
    return files_digest([model_folder / "config.json", *weights])


def input_shards(args, encoder):
    """`(describe, shards, users)`: what the input is (for the job record), one entry per shard (`(start, stop)` rows
    of the prepared users, or a log file's path), and the prepared users (None for log files)."""
    if args.data is not None:
        users = data_users(encoder, args.split)
        size = args.shard_size
        shards = [(start, min(start + size, len(users))) for start in range(0, len(users), size)]
        corpus = Path(args.data)  # metadata.json changes with every build (its timings and creation time)
        return {"data": str(corpus.resolve()), "split": args.split, "users": len(users),
                "metadata": files_digest([corpus / "metadata.json"])}, shards, users
    from data_prep.sources import list_input_files

    files = list_input_files([args.logs])
    describe = {"logs": str(Path(args.logs).resolve()), "end_date": args.end_date,
                "files": [[str(f.relative_to(args.logs)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]}
    return describe, files, None


def data_users(encoder, split: str):
    """The prepared users of `split` ("all": train then validation), memory-mapped."""
    from datasets import concatenate_datasets

    splits = ["train", "validation"] if split == "all" else [split]
    return concatenate_datasets([encoder.data.dataset[s] for s in splits])


def encode_shard(encoder, args, shard, users=None):
    """`(user_ids, embeddings)` of one shard; an input file with no purchase in the time window gives none."""
    from .processing_shopperbert import DroppedUsersWarning, NoPurchasesInWindowError

    options = dict(batch_size=args.batch_size, user_representation=args.user_representation,
                   normalize=args.normalize, show_progress_bar=False, return_user_ids=True)
    if users is not None:
        return encoder.encode(users.select(range(*shard)), **options)
    from data_prep.sources import read_log_file

    logs = read_log_file(shard).drop(columns=["_file", "_row"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DroppedUsersWarning)
        try:
            result = encoder.encode(logs, end_date=args.end_date, **options)
        except NoPurchasesInWindowError:
            window = f" before --end-date {args.end_date}" if args.end_date else ""
            print(f"warning: {shard}: no purchase{window}; its shard is empty", file=sys.stderr)
            return [], None
        except ValueError as err:
            raise ValueError(f"{shard}: {err}") from None
    for warning in caught:
        print(f"warning: {shard}: {warning.message}", file=sys.stderr)
    return result


def prepare_folder(out: Path, job: dict, resume: bool) -> None:
    """Main process, before any shard: check a resumed job against `_job.json`, or start a fresh folder (an
    `--overwrite` folder holds only our files: see `check_out_folder`)."""
    from data_prep.json_files import write_json

    if resume:
        recorded = json.loads((out / JOB_FILE).read_text())
        changed = [k for k in RESUME_KEYS if recorded.get(k) != job.get(k)]
        if changed:
            raise ValueError(f"--resume: {out / JOB_FILE} records another job ({', '.join(changed)} differ: "
                             f"{ {k: recorded.get(k) for k in changed} } there, { {k: job.get(k) for k in changed} } "
                             "now); use a new --out")
        (out / MANIFEST_FILE).unlink(missing_ok=True)
    else:
        if out.exists():
            for path in out.iterdir():  # own_files(out) held: only shards and records of this command
                path.unlink()
        out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.tmp"):
        stale.unlink()
    write_json(out / JOB_FILE, job, newline=True)


def write_manifest(out: Path, job: dict, num_shards: int) -> dict:
    """Main process, after every shard: check that all are there and (a `--logs` folder) that no user is in two
    shards, then write `_manifest.json` (which makes the folder complete)."""
    import pyarrow.parquet as pq

    from data_prep.json_files import write_json

    missing = [shard_name(i) for i in range(num_shards) if not (out / shard_name(i)).is_file()]
    if missing:
        raise RuntimeError(f"{out}: {len(missing)} shards missing ({', '.join(missing[:3])}); no manifest written "
                           "(--resume encodes the missing ones)")
    if "logs" in job["input"]:  # a corpus holds one row per user: only log files can split a user
        check_no_repeated_user(out, num_shards)
    sizes = [pq.ParquetFile(out / shard_name(i)).metadata.num_rows for i in range(num_shards)]
    manifest = {"format": MANIFEST_FORMAT, "users": sum(sizes), "dimension": job["hidden_size"],
                "shards": [{"file": shard_name(i), "users": n} for i, n in enumerate(sizes)], "job": job}
    write_json(out / MANIFEST_FILE, manifest, newline=True)
    return manifest


def _shard_user_ids(out: Path, index: int) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(out / shard_name(index), columns=["user_id"]).column("user_id").to_numpy(
        zero_copy_only=False)


def check_no_repeated_user(out: Path, num_shards: int) -> None:
    """Raise `ValueError` naming a user found in two shards. Memory: 16 bytes per user (64-bit hashes, sorted), not
    a hash table of all ids (Arrow's `value_counts` took 0.7 GB at 4.7M users); hash collisions are checked on the
    ids themselves."""
    import pandas as pd

    hashes = [pd.util.hash_array(_shard_user_ids(out, i)) for i in range(num_shards)]
    flat = np.sort(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)
    suspects = set(flat[1:][flat[1:] == flat[:-1]].tolist())
    del flat
    if not suspects:
        return
    seen: dict[str, int] = {}
    for i, shard_hashes in enumerate(hashes):
        ids = _shard_user_ids(out, i)
        for row in np.flatnonzero(np.isin(shard_hashes, list(suspects))):
            user = str(ids[row])
            if user in seen and seen[user] != i:
                raise ValueError(f"user {user!r} is in several shards ({shard_name(seen[user])}, {shard_name(i)}): "
                                 "a --logs folder must hold each user's purchases in one file; no manifest written")
            seen[user] = i


def encode_sharded(args) -> dict:
    """Encode every shard this process owns, then (main process) write the manifest; returns the manifest (on every
    process, read back once the main process wrote it)."""
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu", timeout=BARRIER_TIMEOUT)
    try:
        return _encode_shards(args, state)
    finally:
        if state.num_processes > 1:
            state.destroy_process_group()


def _encode_shards(args, state) -> dict:
    from tqdm.auto import tqdm

    from .encoder import UserEncoder, write_user_embeddings

    device = args.device
    if state.num_processes > 1 and device in (None, "cuda"):
        device = str(state.device)  # one GPU per process (cuda:LOCAL_RANK), or the CPU
    encoder = UserEncoder.from_pretrained(args.model, data=args.data, device=device)
    describe, shards, users = input_shards(args, encoder)
    out = Path(args.out)
    job = {"model": str(args.model), "weights": weights_digest(Path(args.model)), "input": describe,
           "shard_size": args.shard_size, "num_shards": len(shards), "batch_size": args.batch_size,
           "user_representation": encoder._representation(args.user_representation), "normalize": args.normalize,
           "hidden_size": encoder.config.hidden_size}
    if state.is_main_process:
        prepare_folder(out, job, args.resume)
    state.wait_for_everyone()
    mine = [i for i in range(state.process_index, len(shards), state.num_processes)
            if not (out / shard_name(i)).is_file()]  # --resume keeps finished shards
    label = f"encoding shards (process {state.process_index + 1}/{state.num_processes})"
    for index in tqdm(mine, desc=label, disable=args.quiet, position=state.process_index):
        ids, embeddings = encode_shard(encoder, args, shards[index], users)
        if embeddings is None:
            embeddings = np.zeros((0, job["hidden_size"]), dtype=np.float32)
        write_user_embeddings(out / shard_name(index), ids, embeddings)
    state.wait_for_everyone()
    if state.is_main_process:
        write_manifest(out, job, len(shards))
    state.wait_for_everyone()
    return json.loads((out / MANIFEST_FILE).read_text())


def read_sharded(folder: Path):
    """`(user_ids, embeddings)` of a complete shard folder, shards in order."""
    from .encoder import read_user_embeddings

    if not (folder / MANIFEST_FILE).is_file():
        raise ValueError(f"{folder} is not a complete set of user-embedding shards (no {MANIFEST_FILE}: the run "
                         "was killed or is still going; `--resume` finishes it)")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    parts = [read_user_embeddings(folder / shard["file"]) for shard in manifest["shards"]]
    ids = [user for part_ids, _ in parts for user in part_ids]
    vectors = [v for _, v in parts if len(v)]
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, manifest["dimension"]), dtype=np.float32)
    return ids, matrix
