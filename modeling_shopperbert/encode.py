"""Command line: embed users with a pre-trained ShopperBERT and write them to parquet, keyed by user id.

    python -m modeling_shopperbert.encode --model shopperbert-completejourney-small --data data/cj --out users.parquet
    python -m modeling_shopperbert.encode --model runs/cj-small/final --logs new_logs.parquet --out users.parquet

`--data` encodes the users of a data_prep folder (`--split train|validation|all`); `--logs` encodes raw purchase logs
in the canonical schema (user_id, timestamp, category_1..4, description, ...; a parquet or CSV file), mapping them
with the model's own vocabulary (unknown categories become [UNK], new descriptions are embedded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeling_shopperbert.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved ShopperBERT folder (train.py's final/ or best/)")
    parser.add_argument("--data", default=None, help="a data_prep output folder whose users to encode")
    parser.add_argument("--split", default="all", choices=["train", "validation", "all"],
                        help="which users of --data (default: all)")
    parser.add_argument("--logs", default=None, help="raw purchase logs (parquet/CSV, canonical columns) to encode")
    parser.add_argument("--end-date", default=None, help="with --logs: only purchases before this date")
    parser.add_argument("--out", required=True, help="output parquet: user_id, embedding")
    parser.add_argument("--batch-size", type=int, default=64, help="users per forward pass (default 64)")
    parser.add_argument("--user-representation", choices=["mean", "cls"], default=None,
                        help="pooling (default: the model's own)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if (args.data is None) == (args.logs is None):
        print("error: give exactly one of --data (a data_prep folder) or --logs (a raw purchase-log file)",
              file=sys.stderr)
        return 2
    if not Path(args.model).is_dir():
        print(f"error: --model {args.model}: no such folder", file=sys.stderr)
        return 2
    from .encoder import UserEncoder

    start = time.perf_counter()
    try:
        encoder = UserEncoder.from_pretrained(args.model, data=args.data, device=args.device)
        if args.data is not None:
            from datasets import concatenate_datasets

            splits = ["train", "validation"] if args.split == "all" else [args.split]
            users = concatenate_datasets([encoder.data.dataset[s] for s in splits])
        else:
            import pandas as pd

            path = Path(args.logs)
            users = pd.read_csv(path) if path.suffix.lower() in (".csv", ".tsv") else pd.read_parquet(path)
        embeddings = encoder.encode(users, batch_size=args.batch_size, user_representation=args.user_representation,
                                    normalize=args.normalize, output_path=args.out, end_date=args.end_date)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {len(embeddings)} users x {embeddings.shape[1]} to {args.out} in {seconds:.1f} s "
          f"({len(embeddings) / seconds:.0f} users/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
