"""`python -m eval_suite release-record`: tie the shipped checkpoint to the evaluation behind the card.

    python -m eval_suite release-record --model shopperbert --results results/release/cls --label ShopperBERT \\
        --data data/cj --out results/release

Writes into `--out` (committed with the card):
    release.json            sha256 of the checkpoint's weights and of the user embeddings the evaluation wrote, the
                            embeddings file, and a sample of the households' inputs
    embeddings.parquet      the user embeddings every U-MLP number of the card was computed from (copied from the
                            evaluation's `embeddings/<label>.parquet`)
    sample_inputs.npz       the encoded purchase rows of a few households and the text vectors they index, so that a
                            test re-encodes them with the shipped weights and compares with `embeddings.parquet`
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from data_prep.json_files import write_json

ID_COLUMNS = ("category_1", "category_2", "category_3", "category_4", "year", "month", "day", "weekday", "hour")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_inputs(rows: list, text_embeddings: np.ndarray, user_ids, count: int) -> tuple[list, np.ndarray]:
    """`count` households with purchases (the shortest histories, to keep the file small), as JSON-ready rows whose
    `text_idx` index a compact matrix."""
    nonempty = [i for i in range(len(rows)) if len(rows[i]["text_idx"])]
    chosen = sorted(nonempty, key=lambda i: (len(rows[i]["text_idx"]), str(user_ids[i])))[:count]
    used = np.unique(np.concatenate([np.asarray(rows[i]["text_idx"]) for i in chosen]))
    remap = {int(old): new for new, old in enumerate(used)}
    out = []
    for i in chosen:
        row = {"user_id": str(user_ids[i])}
        row.update({c: [int(v) for v in rows[i][c]] for c in ID_COLUMNS})
        row["text_idx"] = [remap[int(v)] for v in rows[i]["text_idx"]]
        out.append(row)
    return out, np.asarray(text_embeddings[used], dtype=np.float32)


def record_release(model: Path, results: Path, label: str, data: Path, out: Path, count: int = 6,
                   command: str | None = None) -> dict:
    from .inputs import Corpus, purchase_inputs

    weights = model / "model.safetensors"
    embeddings = results / "embeddings" / f"{label}.parquet"
    for path in (weights, embeddings):
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (evaluate the checkpoint with `eval_suite run` first)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(embeddings, out / "embeddings.parquet.tmp")
    os.replace(out / "embeddings.parquet.tmp", out / "embeddings.parquet")
    purchases = purchase_inputs(Corpus.load(data))
    rows, text = sample_inputs(purchases.rows, purchases.text_embeddings, purchases.user_ids, count)
    np.savez_compressed(out / "sample_inputs.tmp.npz", rows=np.array(json.dumps(rows)), text_embeddings=text)
    os.replace(out / "sample_inputs.tmp.npz", out / "sample_inputs.npz")
    record = {"model": str(model), "model_sha256": sha256(weights), "results": str(results), "label": label,
              "embeddings_file": "embeddings.parquet", "embeddings_sha256": sha256(out / "embeddings.parquet"),
              "sample_inputs_file": "sample_inputs.npz", "sample_users": [r["user_id"] for r in rows],
              "command": command or "python -m eval_suite release-record"}
    write_json(out / "release.json", record, indent=1, newline=True)
    return record


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eval_suite release-record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shopperbert", help="the released checkpoint folder")
    parser.add_argument("--results", required=True, help="the `eval_suite run` output folder that evaluated it")
    parser.add_argument("--label", required=True, help="the checkpoint's name in that run (`--model NAME=...`)")
    parser.add_argument("--data", default="data/cj", help="the corpus the run used")
    parser.add_argument("--out", default="results/release", help="where release.json and its files go")
    parser.add_argument("--sample", type=int, default=6, help="households whose inputs are kept for the test")
    return parser


def main(argv=None) -> int:
    import shlex
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.sample < 1:
        raise SystemExit(f"error: --sample must be at least 1, got {args.sample}")
    record = record_release(Path(args.model), Path(args.results), args.label, Path(args.data), Path(args.out),
                            args.sample, command=shlex.join(["python", "-m", "eval_suite", "release-record", *argv]))
    print(json.dumps(record, indent=1))
    return 0
