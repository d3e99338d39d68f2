"""`python -m eval_suite costs`: the paper's Table 3 (computational costs of the downstream models) on this machine.

    python -m eval_suite costs --model runs/cj-small/final --data data/cj --out results/costs
    python -m eval_suite costs --model ... --data ... --out ... --steps 1000 --max-seconds 60 --device cuda

Three ways to serve a downstream task, measured on the real inputs of the real users of one task (default
`coupon_targeting`, our analogue of the paper's Membership Targeting):

- ShopperBERT (fine-tuning): `ShopperBertForSequenceClassification` from the checkpoint, reading each user's most
  recent `max_position_embeddings - 1` purchases;
- P-Trans: the small downstream Transformer (L=4, H=128, A=4, shared layer) on the most recent `--trans-max-length`
  purchases (default 128);
- U-MLP: the downstream MLP on the pre-trained user embedding (the checkpoint's, computed once beforehand).

Inference speed: the paper's protocol (batch 128, gradients off, 1,000 steps) with a per-model time budget
(`--max-seconds`): a model stops early when the budget is spent and the report says how many steps were timed
(never extrapolated). A step is the model's forward pass on one batch already collated into tensors; the time to
collate the batch from stored sequences (index the text vectors, pad) is reported separately. Weights are random
(speed does not depend on their values) except the pre-trained encoder, which is loaded from the checkpoint.

Parameters: every parameter of the module that runs at inference (embedding layers, encoder, prediction layers).
The Sentence-BERT text vectors are counted as data, not as parameters (they are looked up, not computed).

Data sizes: the bytes needed to store the inputs of all the task's users. U-MLP: the float32 user embeddings.
Sequence models: the purchases they read (nine int32 ids and one int32 text index per purchase, as data_prep
stores them) plus the float32 rows of the text-vector matrix those purchases index (each distinct description
once). `costs.json` also gives the size with every purchase's text vector stored inline and the size of the full
purchase histories (before truncation to the model's length).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DEFAULT_TASK = "coupon_targeting"
ID_COLUMNS = 10  # category_1..4, year, month, day, weekday, hour, text_idx
ID_BYTES = 4  # data_prep stores the id lists as int32
FLOAT_BYTES = 4


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------
def parameter_count(module: torch.nn.Module) -> int:
    """Every parameter of the module (shared parameters once): embeddings, encoder and prediction layers."""
    return int(sum(p.numel() for p in module.parameters()))


def embedding_data_bytes(num_users: int, dim: int) -> dict:
    """Storage of float32 user embeddings."""
    return {"kind": "float32 user embeddings", "users": int(num_users), "dim": int(dim),
            "bytes": int(num_users) * int(dim) * FLOAT_BYTES}


def sequence_data_bytes(rows, max_length: int, text_dim: int) -> dict:
    """Storage of the purchase sequences a sequence model reads: the most recent `max_length` purchases of each
    user as int32 ids plus the float32 text vectors they index (each distinct description once).

    Also: `inline_bytes` (every purchase carries its own text vector), and the same two figures for the full
    histories (`full_*`, before truncation to `max_length`).
    """
    tokens = full_tokens = 0
    used, full_used = [], []
    for row in rows:
        text_idx = np.asarray(row["text_idx"])
        full_tokens += len(text_idx)
        full_used.append(text_idx)
        recent = text_idx[-max_length:] if max_length else text_idx
        tokens += len(recent)
        used.append(recent)
    unique = int(len(np.unique(np.concatenate(used)))) if used else 0
    full_unique = int(len(np.unique(np.concatenate(full_used)))) if full_used else 0
    id_bytes = tokens * ID_COLUMNS * ID_BYTES
    text_bytes = unique * text_dim * FLOAT_BYTES
    return {
        "kind": "purchase sequences: int32 ids + the float32 text-vector rows they index",
        "users": len(rows), "max_length": int(max_length), "purchases": int(tokens),
        "distinct_texts": unique, "text_dim": int(text_dim),
        "id_bytes": int(id_bytes), "text_bytes": int(text_bytes), "bytes": int(id_bytes + text_bytes),
        "inline_bytes": int(tokens * ((ID_COLUMNS - 1) * ID_BYTES + text_dim * FLOAT_BYTES)),
        "full_purchases": int(full_tokens), "full_distinct_texts": full_unique,
        "full_bytes": int(full_tokens * ID_COLUMNS * ID_BYTES + full_unique * text_dim * FLOAT_BYTES),
        "full_inline_bytes": int(full_tokens * ((ID_COLUMNS - 1) * ID_BYTES + text_dim * FLOAT_BYTES)),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(model: torch.nn.Module, user_inputs, user_ids, batch_size: int = 128, steps: int = 1000,
                   max_seconds: float | None = 60.0, warmup: int = 2, device="cpu", seed: int = 0) -> dict:
    """Median seconds per inference step (forward pass of one batch, gradients off).

    Batches walk through the users in a seeded random order (wrapping around), so every step reads real inputs.
    Up to `steps` timed steps after `warmup` untimed ones; stops early once the timed steps (collation included)
    have used `max_seconds`. Returns the steps actually timed and summary statistics of the per-step times.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    order = np.random.default_rng(seed).permutation(np.asarray(list(user_ids), dtype=object))
    if len(order) == 0:
        raise ValueError("no users to time")
    forward, collate = [], []
    position = 0
    budget_start = None
    stopped_early = False
    with torch.inference_mode():
        for step in range(warmup + steps):
            take = np.arange(position, position + batch_size) % len(order)
            position = (position + batch_size) % len(order)
            t0 = time.perf_counter()
            batch = user_inputs.batch(list(order[take]))
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            _synchronize(device)
            t1 = time.perf_counter()
            model(batch)
            _synchronize(device)
            t2 = time.perf_counter()
            if step < warmup:
                continue
            if budget_start is None:
                budget_start = t0
            forward.append(t2 - t1)
            collate.append(t1 - t0)
            if max_seconds is not None and len(forward) < steps and t2 - budget_start >= max_seconds:
                stopped_early = True
                break
    return {
        "steps_requested": int(steps), "steps_timed": len(forward), "warmup_steps": int(warmup),
        "stopped_early": stopped_early, "max_seconds": max_seconds,
        "batch_size": int(batch_size), "distinct_users": int(len(order)),
        "median_s": statistics.median(forward), "mean_s": statistics.fmean(forward),
        "p10_s": float(np.percentile(forward, 10)), "p90_s": float(np.percentile(forward, 90)),
        "collate_median_s": statistics.median(collate), "timed_seconds": float(sum(forward) + sum(collate)),
    }


# ---------------------------------------------------------------------------------------------------------------
# The three models
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Subject:
    name: str
    inputs: str
    model: torch.nn.Module
    user_inputs: object
    data: dict
    notes: dict = field(default_factory=dict)


def task_users(task_name: str, max_users: int | None = None, seed: int = 0) -> np.ndarray:
    from ..tasks import build_task, load_raw_tables, tables_for

    task = build_task(task_name, load_raw_tables(tables=tables_for([task_name])))
    users = task.users["user_id"].astype(str).to_numpy(dtype=object)
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users


def user_embeddings(checkpoint: Path, purchases, users, embeddings_path: Path | None, device: str, log) -> tuple:
    """The task users' pre-trained embeddings: read from a runner parquet or encoded now with the checkpoint.
    Returns (vectors aligned with `users`, seconds spent encoding or None)."""
    if embeddings_path is not None:
        from modeling_shopperbert import read_user_embeddings

        ids, vectors = read_user_embeddings(embeddings_path)
        position = {u: i for i, u in enumerate(ids)}
        missing = [u for u in users if u not in position]
        if missing:
            raise SystemExit(f"error: --embeddings {embeddings_path} lacks {len(missing)} of the task's users, "
                             f"e.g. {missing[:3]}")
        return vectors[[position[u] for u in users]], None
    from ..inputs import embed_users

    start = time.perf_counter()
    # a user without purchases in the corpus window gets the zero vector, as in `eval_suite run`
    vectors = embed_users(checkpoint, purchases, users, device=device)
    seconds = time.perf_counter() - start
    log(f"encoded {len(users)} users with the checkpoint in {seconds:.1f} s (U-MLP's one-off pre-computation)")
    return np.asarray(vectors, dtype=np.float32), seconds


def build_subjects(checkpoint: Path, corpus, purchases, users, vectors, trans_max_length: int) -> list[Subject]:
    from ..models import UserInputs, UserTower, small_transformer_config
    from ..run import FineTuneTower

    config = json.loads((checkpoint / "config.json").read_text())
    bert_length = int(config["max_position_embeddings"]) - 1
    index = {u: i for i, u in enumerate(purchases.user_ids)}
    rows = [purchases.rows[index[u]] for u in users]
    text_dim = purchases.text_embeddings.shape[1]
    ids = np.asarray(users, dtype=object)

    def sequences(max_length):
        return UserInputs(ids, rows=rows, text_embeddings=purchases.text_embeddings, max_length=max_length)

    finetune = FineTuneTower(checkpoint)
    ptrans = UserTower("trans", 1, transformer_config=small_transformer_config(corpus.metadata, trans_max_length))
    umlp = UserTower("mlp", 1, user_embedding_size=vectors.shape[1])
    return [
        Subject("ShopperBERT (fine-tuning)", "Purchase logs", finetune, sequences(bert_length),
                sequence_data_bytes(rows, bert_length, text_dim),
                {"max_length": bert_length, "hidden_size": config["hidden_size"],
                 "num_hidden_layers": config["num_hidden_layers"]}),
        Subject("P-Trans", "Purchase logs", ptrans, sequences(trans_max_length),
                sequence_data_bytes(rows, trans_max_length, text_dim),
                {"max_length": trans_max_length, "hidden_size": 128, "num_hidden_layers": 4}),
        Subject("U-MLP", "Pre-trained user repr.", umlp, UserInputs(ids, vectors=vectors),
                embedding_data_bytes(len(users), vectors.shape[1]), {"embedding_dim": int(vectors.shape[1])}),
    ]


def measure(args, log=print) -> dict:
    from ..inputs import Corpus, purchase_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = Path(args.model)
    start = time.perf_counter()
    load_before = _load_average()
    corpus = Corpus.load(args.data)
    purchases = purchase_inputs(corpus)
    users = task_users(args.task, args.max_users, args.seed)
    known = set(purchases.user_ids)
    users = np.asarray([u for u in users if u in known], dtype=object)
    log(f"{args.task}: {len(users)} users, inputs loaded in {time.perf_counter() - start:.1f} s")
    vectors, encode_seconds = user_embeddings(checkpoint, purchases, users,
                                              Path(args.embeddings) if args.embeddings else None, device, log)
    torch.manual_seed(args.seed)
    subjects = build_subjects(checkpoint, corpus, purchases, users, vectors, args.trans_max_length)
    rows = []
    for subject in subjects:
        timing = time_inference(subject.model, subject.user_inputs, users, batch_size=args.batch_size,
                                steps=args.steps, max_seconds=args.max_seconds, warmup=args.warmup, device=device,
                                seed=args.seed)
        entry = {"name": subject.name, "inputs": subject.inputs, "parameters": parameter_count(subject.model),
                 "data": subject.data, "data_bytes": subject.data["bytes"], "timing": timing, **subject.notes}
        rows.append(entry)
        log(f"{subject.name}: {timing['median_s'] * 1e3:.2f} ms/step over {timing['steps_timed']} steps"
            f"{' (time budget reached)' if timing['stopped_early'] else ''}, {entry['parameters']:,} parameters, "
            f"{human_bytes(entry['data_bytes'])}")
        subject.model.to("cpu")
    reference = rows[0]["timing"]["median_s"]
    for entry in rows:
        entry["speedup"] = reference / entry["timing"]["median_s"]
    return {
        "task": args.task, "users": int(len(users)), "checkpoint": str(checkpoint), "data": str(args.data),
        "device": device, "device_name": _device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "batch_size": args.batch_size, "steps": args.steps, "max_seconds": args.max_seconds, "warmup": args.warmup,
        "u_mlp_encoding_seconds": encode_seconds,
        "load_average": {"before": load_before, "after": _load_average(), "cpus": os.cpu_count()},
        "models": rows,
        "protocol": ("median forward-pass seconds per batch (torch.inference_mode, eval mode) on real inputs, "
                     "collation timed separately; speedup = ShopperBERT's median / the model's median; no "
                     "extrapolation beyond the steps timed"),
        "seconds": time.perf_counter() - start,
    }


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def human_count(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_speedup(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if abs(x - 1.0) < 1e-9:
        return "1"
    if x >= 10:
        return f"{x:.0f}x"
    return f"{x:.1f}x" if x >= 1 else f"{x:.2g}x"


def table3(costs: dict) -> str:
    lines = [
        f"Computational costs on `{costs['task']}` ({costs['users']} users), {costs['device']} "
        f"({costs['device_name']}, torch {costs['torch']}, torch threads: {costs['threads']}), "
        f"batch {costs['batch_size']}, gradients off.",
        "",
        "| Models | Inputs | Inference speedup | Parameters | Data sizes | Data sizes (text vectors inline) "
        "| ms/step (median) | collate ms/step | steps timed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in costs["models"]:
        t = m["timing"]
        steps = f"{t['steps_timed']}/{t['steps_requested']}" + (" (time budget)" if t["stopped_early"] else "")
        inline = human_bytes(m["data"]["inline_bytes"]) if "inline_bytes" in m["data"] else human_bytes(m["data_bytes"])
        lines.append(f"| {m['name']} | {m['inputs']} | {format_speedup(m['speedup'])} | {human_count(m['parameters'])} "
                     f"| {human_bytes(m['data_bytes'])} | {inline} | {t['median_s'] * 1e3:.2f} "
                     f"| {t['collate_median_s'] * 1e3:.2f} | {steps} |")
    notes = [
        "",
        "- Speedup: ShopperBERT's median forward time per batch divided by the model's (the paper's Table 3: "
        "1 / 21x / 2458x on a P40 GPU). A step is one forward pass on a collated batch; collation (text-vector "
        "lookup and padding from stored sequences) is listed separately.",
        "- Steps timed: timed steps / requested steps; fewer when the per-model time budget "
        f"(--max-seconds {costs['max_seconds']}) ran out. Medians are over the steps actually timed.",
        "- Parameters: all parameters of the model that runs (embedding, encoder and prediction layers).",
        "- Data sizes: U-MLP = float32 user embeddings; sequence models = the purchases they read (most recent "
        + ", ".join(f"{m['max_length']} for {m['name']}" for m in costs["models"] if "max_length" in m)
        + ") as int32 ids plus the float32 text-vector rows those purchases index (each description once); "
        "'inline' stores every purchase's text vector with it.",
    ]
    load = costs.get("load_average") or {}
    if load.get("before") and load.get("cpus") and max(load["before"][0], (load.get("after") or [0])[0]) > 0.5:
        notes.append(f"- Machine load average (1 min) {load['before'][0]} before, {(load.get('after') or ['?'])[0]} "
                     f"after, on {load['cpus']} CPUs: other processes shared the CPU, so absolute times are "
                     "inflated; with several torch threads on a busy CPU, small models slow down the most "
                     "(OpenMP synchronisation); `--threads 1` is fairer there.")
    if costs.get("u_mlp_encoding_seconds") is not None:
        notes.append(f"- U-MLP's embeddings were computed once beforehand: {costs['users']} users in "
                     f"{costs['u_mlp_encoding_seconds']:.1f} s (not part of the inference time).")
    return "\n".join(lines + notes) + "\n"


def write(costs: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "costs.json", out / "table3.md"
    json_path.write_text(json.dumps(costs, indent=1))
    md_path.write_text(table3(costs))
    return json_path, md_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval_suite costs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a pre-trained ShopperBERT folder (e.g. runs/cj-small/final)")
    p.add_argument("--data", default="data/cj", help="the model's pre-training corpus (data_prep folder)")
    p.add_argument("--out", default="results/costs", help="output folder (costs.json, table3.md)")
    p.add_argument("--task", default=DEFAULT_TASK, help=f"the task whose users are measured (default {DEFAULT_TASK})")
    p.add_argument("--steps", type=int, default=1000, help="timed inference steps per model (the paper's 1,000)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="time budget per model; stops early and reports the steps timed (0 = no budget)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    p.add_argument("--batch-size", type=int, default=128, help="users per step (the paper's 128)")
    p.add_argument("--trans-max-length", type=int, default=128, help="purchases P-Trans reads (default 128)")
    p.add_argument("--embeddings", default=None,
                   help="user embeddings parquet (user_id, embedding) from `eval_suite run`; default: encode the "
                        "task's users with --model")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--max-users", type=int, default=None, help="subsample the task's users (smoke runs and tests)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        print(f"error: --model {args.model}: not a saved ShopperBERT folder (no config.json)", file=sys.stderr)
        return 2
    if not Path(args.data).is_dir():
        print(f"error: --data {args.data}: no such folder", file=sys.stderr)
        return 2
    if args.steps < 1 or args.batch_size < 1 or args.warmup < 0:
        print("error: --steps and --batch-size must be at least 1, --warmup at least 0", file=sys.stderr)
        return 2
    from ..tasks import TASK_NAMES, TASK_KINDS

    if args.task not in TASK_NAMES:
        print(f"error: unknown task {args.task!r}; choose from {list(TASK_NAMES)}", file=sys.stderr)
        return 2
    if TASK_KINDS[args.task] != "classification":
        print(f"error: --task {args.task}: choose a classification task (one logit per user)", file=sys.stderr)
        return 2
    if not args.max_seconds:
        args.max_seconds = None
    costs = measure(args)
    json_path, md_path = write(costs, Path(args.out))
    print("\n## Table 3 analogue\n\n" + md_path.read_text())
    print(f"wrote {json_path} and {md_path} ({costs['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
