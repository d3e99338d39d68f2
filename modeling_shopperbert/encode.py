"""Command line: embed users with a pre-trained ShopperBERT and write them to parquet, keyed by user id.

    python -m modeling_shopperbert.encode --model shopperbert-completejourney-small --data data/cj --out users.parquet
    python -m modeling_shopperbert.encode --model runs/cj-small/final --logs new_logs.parquet --out users.parquet
    shopperbert-encode --model runs/cj-small/final --logs new_logs.parquet --out users.parquet   # console script

At scale (memory bounded by one shard; see `encode_shards.py`): `--shard-size N` writes a folder of parquet shards
of N users each, and `accelerate launch ... -m modeling_shopperbert.encode ...` shares the shards among processes or
GPUs; a `--logs` folder (each user's purchases in one file) is encoded one file, one shard, at a time.

    python -m modeling_shopperbert.encode --model M --data data/big --out users/ --shard-size 100000
    accelerate launch --num_processes 2 -m modeling_shopperbert.encode --model M --data data/big --out users/ \
        --shard-size 100000

`--data` encodes the users of a data_prep folder (`--split train|validation|all`); `--logs` encodes raw purchase logs
in the canonical schema (user_id, timestamp, category_1..4, description, ...; a parquet, CSV or TSV file; ids are read
as text, so "0005" and "5" are two users), mapping them with the model's own vocabulary (unknown categories become
[UNK], new descriptions are embedded). With `--end-date`, users of the log with no purchase before that date get no
row: the command says how many (and which) on stderr.

Refused before any work (exit 2): an `--out` that is a folder, or an existing file (unless `--overwrite`, and then only
a file this command wrote); for sharded output, an `--out` that is a file, an existing folder without `--resume` or
`--overwrite` (which replaces only a folder of shards) or that overlaps a `--logs` folder; `--device cuda` without
CUDA, a `--data` built with another vocabulary than the model's (sizes, and content when the model or the corpus
records a vocabulary fingerprint). A `--resume` of another job (weights, corpus, shard size, pooling) is refused once the model
is loaded. Non-finite (NaN/inf) weights or embeddings stop it with exit 1 and nothing written (sharded: not that
shard, and no manifest). Errors print `error: ...` (a traceback only with `--debug`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

OUTPUT_COLUMNS = ["user_id", "embedding"]


class UsageError(ValueError):
    """A bad option, found before any work (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "shopperbert-encode" else
                                     "python -m modeling_shopperbert.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved ShopperBERT folder (train.py's final/ or best/)")
    parser.add_argument("--data", default=None, help="a data_prep output folder whose users to encode")
    parser.add_argument("--split", default="all", choices=["train", "validation", "all"],
                        help="which users of --data (default: all)")
    parser.add_argument("--logs", default=None,
                        help="raw purchase logs (parquet/CSV/TSV, canonical columns; ids read as text) to encode: a "
                             "file, or a folder of files each holding whole users (one output shard per file)")
    parser.add_argument("--end-date", default=None,
                        help="with --logs: only purchases before this date; users with none get no row (their "
                             "number and ids are printed on stderr)")
    parser.add_argument("--out", required=True,
                        help="output parquet file (user_id, embedding), or the folder of shards of a sharded run")
    parser.add_argument("--shard-size", type=int, default=None,
                        help="with --data: write a folder of parquet shards of this many users each (memory bounded "
                             "by one shard; with several processes, this or a --logs folder)")
    parser.add_argument("--resume", action="store_true",
                        help="sharded output: continue the run that wrote --out, keeping its finished shards")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (only a user_id/embedding parquet file this command wrote)")
    parser.add_argument("--batch-size", type=int, default=64, help="users per forward pass (default 64)")
    parser.add_argument("--user-representation", choices=["mean", "cls"], default=None,
                        help="pooling (default: the model's own)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    return parser


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a folder, and an existing file unless `overwrite` and it is an encode output (user_id, embedding)."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a parquet file name (e.g. {out / 'users.parquet'})")
    if not out.exists():
        return
    if not overwrite:
        raise UsageError(f"--out {out} already exists; pass --overwrite to replace it")
    import pyarrow.parquet as pq

    try:
        columns = list(pq.read_schema(out).names)
    except Exception:  # noqa: BLE001  (not parquet at all)
        columns = None
    if columns != OUTPUT_COLUMNS:
        raise UsageError(f"--out {out} is not a user-embedding file this command wrote (columns {columns}); "
                         "refusing to replace it even with --overwrite")


def check_device(device: str | None) -> None:
    """Refuse an unknown device or one this machine lacks (before loading anything)."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {device}: {err}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                         "use --device cpu")


def check_args(args) -> None:
    """Every option check that needs no model or data loaded."""
    if (args.data is None) == (args.logs is None):
        raise UsageError("give exactly one of --data (a data_prep folder) or --logs (a raw purchase-log file)")
    if not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: no such folder")
    if not (Path(args.model) / "config.json").is_file():
        raise UsageError(f"--model {args.model}: not a saved model folder (no config.json)")
    if args.logs is not None and not Path(args.logs).exists():
        raise UsageError(f"--logs {args.logs}: no such file or folder")
    if args.end_date is not None and args.logs is None:
        raise UsageError("--end-date applies to --logs only")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_sharding(args)
    check_device(args.device)


def check_sharding(args) -> None:
    """Sharded output (`--shard-size`, a `--logs` folder, several processes) and its `--out` folder; else the file."""
    from .encode_shards import check_out_folder, is_sharded

    if args.shard_size is not None and args.data is None:
        raise UsageError("--shard-size applies to --data; a --logs folder is sharded by its files (one shard each), "
                         "and a single --logs file is read whole")
    if args.shard_size is not None and args.shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a run, --overwrite replaces it: give one of them")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if not is_sharded(args):
        if args.resume:
            raise UsageError("--resume applies to sharded output (--shard-size, or a --logs folder)")
        if processes > 1:
            raise UsageError(f"{processes} processes (WORLD_SIZE) write shards: give --data with --shard-size, or a "
                             "--logs folder, and an --out folder")
        check_output(Path(args.out), args.overwrite)
        return
    if os.environ.get("RANK", "0") != "0":
        return  # the main process checks --out (the others could see it already prepared by the main process)
    problem = check_out_folder(Path(args.out), args.resume, args.overwrite, args.logs)
    if problem:
        raise UsageError(problem)


def read_logs(path: Path):
    """A parquet, CSV or TSV purchase log with canonical column names, read exactly as `data_prep build` reads one
    (`data_prep.sources.read_log_file`: ids as text, literal NA/None/nan categories kept as values, integer ids of
    parquet files cast to text)."""
    from data_prep.sources import read_log_file

    return read_log_file(path).drop(columns=["_file", "_row"])


def encode(args):
    """Load, encode and write; returns the embeddings (a sharded run: its manifest)."""
    import warnings

    from .encode_shards import encode_sharded, is_sharded
    from .encoder import DroppedUsersWarning, UserEncoder

    if is_sharded(args):
        return encode_sharded(args)  # the manifest of the shard folder
    encoder = UserEncoder.from_pretrained(args.model, data=args.data, device=args.device)
    if args.data is not None:
        from datasets import concatenate_datasets

        splits = ["train", "validation"] if args.split == "all" else [args.split]
        users = concatenate_datasets([encoder.data.dataset[s] for s in splits])
    else:
        users = read_logs(Path(args.logs))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DroppedUsersWarning)
        embeddings = encoder.encode(users, batch_size=args.batch_size, user_representation=args.user_representation,
                                    normalize=args.normalize, output_path=args.out, end_date=args.end_date)
    for warning in caught:
        if issubclass(warning.category, DroppedUsersWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return embeddings


def exit_status(err: Exception) -> int:
    """2 for bad input (options, files, data), 1 for runtime faults (non-finite weights or embeddings, I/O)."""
    from .encoder import NonFiniteError

    if isinstance(err, NonFiniteError):
        return 1
    return 2 if isinstance(err, (ValueError, FileNotFoundError)) else 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        check_args(args)
        embeddings = encode(args)
    except Exception as err:  # noqa: BLE001  (every failure ends in one `error:` line; --debug shows the traceback)
        if args.debug:
            raise
        status = exit_status(err)
        known = status == 2 or isinstance(err, (ValueError, OSError))
        print(f"error: {err}" if known else f"error: {type(err).__name__}: {err} (--debug shows the traceback)",
              file=sys.stderr)
        return status
    seconds = time.perf_counter() - start
    if os.environ.get("RANK", "0") != "0":
        return 0  # the main process reports
    if isinstance(embeddings, dict):  # a sharded run's manifest
        users, dimension = embeddings["users"], embeddings["dimension"]
        where = f"{len(embeddings['shards'])} shards in "
    else:
        users, dimension, where = len(embeddings), embeddings.shape[1], ""
    print(f"wrote {users} users x {dimension} to {where}{args.out} in {seconds:.1f} s ({users / seconds:.0f} users/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
