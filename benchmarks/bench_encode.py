#!/usr/bin/env python
"""Speed and memory of `python -m modeling_shopperbert.encode` on large corpora, measured with public tools only.

Each measured step is the real command line in its own child process (`bench_data_prep.run_child`: wall time, the
child's `ru_maxrss`, and the sampled peak of its whole process tree). The model is a randomly initialised ShopperBERT
built for each corpus' vocabulary (`--hidden-size`, `--layers`, `--max-purchases`): what is measured is the streaming
of users through the collator and the encoder and the writing of shards, whose memory must not grow with the number of
users. The throughput of the real presets is `benchmarks/bench_train.py`'s `encode_users` figure.

Memory: the peak RSS of the process tree, and its private part (without the file-backed pages of the memory-mapped
corpus, which the kernel can drop and which grow with the corpus file, not with the work).

Steps, per corpus (a data_prep folder, e.g. kept by `bench_data_prep.py --keep`):
  encode_sharded_N  `--shard-size` output (a folder of parquet shards), one process
  encode_single_N   the single-file output, which keeps every embedding in memory (with --single; for comparison)

Usage:
    python benchmarks/bench_data_prep.py --synthetic-users 1000000 5000000 --workdir /scratch/bdp --keep
    python benchmarks/bench_encode.py --corpus /scratch/bdp/synthetic-1000000 /scratch/bdp/synthetic-5000000 \\
        --json-out benchmarks/results/encode_scale.json

Prints one JSON document, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_prep import run_child, write_results  # noqa: E402

MODEL_CHILD = r"""
import json, shutil, sys
from pathlib import Path
from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction
corpus, out, hidden, layers, max_purchases = Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:6])
metadata = json.loads((corpus / "metadata.json").read_text())
config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=hidden, num_hidden_layers=layers,
                                              num_attention_heads=2, intermediate_size=4 * hidden,
                                              max_position_embeddings=max_purchases + 1)
ShopperBertForMaskedPurchasePrediction(config).save_pretrained(out)
for name in ("metadata.json", "vocab.json"):
    shutil.copy(corpus / name, out / name)
"""


def users_of(corpus: Path) -> int:
    meta = json.loads((corpus / "metadata.json").read_text())
    return int(meta["counts"]["users_kept"])


def bench_corpus(corpus: Path, work: Path, logs: Path, args) -> dict:
    users = users_of(corpus)
    model = work / f"model-{corpus.name}"
    run_child([sys.executable, "-c", MODEL_CHILD, str(corpus), str(model), str(args.hidden_size), str(args.layers),
               str(args.max_purchases)], f"model_{corpus.name}", logs)
    steps = {}
    outputs = {"encode_sharded": (work / f"shards-{corpus.name}", ["--shard-size", str(args.shard_size)])}
    if args.single:
        outputs["encode_single"] = (work / f"single-{corpus.name}.parquet", [])
    for name, (out, extra) in outputs.items():
        argv = [sys.executable, "-m", "modeling_shopperbert.encode", "--model", str(model), "--data", str(corpus),
                "--out", str(out), "--batch-size", str(args.batch_size), "--device", "cpu", "--quiet", *extra]
        res = run_child(argv, f"{name}_{users}", logs)
        res.update(users=users, users_per_second=round(users / res["seconds"]), corpus=corpus.name,
                   shard_size=args.shard_size if extra else None, batch_size=args.batch_size,
                   model={"hidden_size": args.hidden_size, "layers": args.layers,
                          "max_purchases": args.max_purchases})
        steps[f"{name}_{users}"] = res
        remove(out)
    shutil.rmtree(model, ignore_errors=True)
    return steps


def remove(path: Path) -> None:
    """Remove a scratch file or folder of this benchmark (inside its own temporary folder)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def markdown(results: dict) -> str:
    lines = ["| step | users | wall s | users/s | peak RSS GiB | of which private GiB | load avg |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results["steps"].items():
        lines.append(f"| {name} | {r['users']:,} | {r['seconds']} | {r['users_per_second']:,} | "
                     f"{r['peak_tree_rss_gib']} | {r['peak_tree_private_gib']} | "
                     f"{r['load_avg_1min'][0]} -> {r['load_avg_1min'][1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", nargs="+", required=True, help="data_prep folders to encode (smallest first)")
    p.add_argument("--shard-size", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=32)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--max-purchases", type=int, default=64)
    p.add_argument("--single", action="store_true", help="also time the single-file output (all in memory)")
    p.add_argument("--json-out", default=None,
                   help="results file; steps of an earlier run in it are kept (run corpora one at a time)")
    args = p.parse_args(argv)
    for corpus in args.corpus:
        if not (Path(corpus) / "metadata.json").is_file():
            p.error(f"--corpus {corpus}: not a data_prep folder (no metadata.json)")

    work = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    logs = work / "logs"
    logs.mkdir()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()}, "steps": {}}
    if args.json_out and Path(args.json_out).is_file():
        results["steps"] = json.loads(Path(args.json_out).read_text())["steps"]
    try:
        for corpus in args.corpus:
            results["steps"].update(bench_corpus(Path(corpus), work, logs, args))
            write_results(results, args.json_out)
    finally:
        for child in work.iterdir():
            if child.name != "logs":
                remove(child)
    print(json.dumps(results, indent=2))
    print()
    print(markdown(results))
    write_results(results, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
