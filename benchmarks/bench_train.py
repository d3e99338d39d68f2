"""Training throughput of ShopperBERT presets against a stock `transformers` BertForMaskedLM, on this machine.

    python benchmarks/bench_train.py                       # small and base presets, fp32 and bf16 autocast
    python benchmarks/bench_train.py --presets small --steps 5 --json out.json

For each preset, one training step (forward + backward + AdamW step) on the same batch shape:
- ShopperBERT MPP (nine heads, evaluated at the masked positions only), fp32 and bf16 autocast, on one
  pre-collated batch;
- the same end to end ("loader+step"): a `DataLoader` collating fresh users with the training collator
  (augmentation on, `--num-workers` workers, pinned memory and `non_blocking` copies on CUDA) feeds each step;
- stock BertForMaskedLM with the identical encoder (hidden, layers, heads, 4H feed-forward, sequence length,
  batch), its MLM head over the sum of the nine heads' vocabularies (so both predict the same number of classes),
  labels at the same 15% of positions (BERT still scores every position);
- a plain `torch.matmul` measurement (fp32 and bf16) on this machine for the achieved-GFLOP/s comparison.
Prints JSON and a markdown table. Only public tools (time.perf_counter, torch, transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction  # noqa: E402
from modeling_shopperbert.collator import DataCollatorForMaskedPurchasePrediction  # noqa: E402
from train import PRESETS  # noqa: E402

# Complete Journey's vocabularies (data/cj/metadata.json) when the data exists; these figures otherwise.
DEFAULT_VOCAB = dict(category_vocab_sizes=[34, 303, 2131, 4562], text_embedding_size=384, year_vocab_size=5,
                     date_base_year=2017)


def vocab_from_data(path: Path) -> dict:
    meta = path / "metadata.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        return {k: m[k] for k in DEFAULT_VOCAB}
    return dict(DEFAULT_VOCAB)


def fake_features(config: ShopperBertConfig, batch_size: int, length: int, num_texts: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = []
    for u in range(batch_size):
        row = {"user_id": str(u)}
        for name, size in zip(("category_1", "category_2", "category_3", "category_4", "year", "month", "day",
                               "weekday", "hour"), config.head_vocab_sizes):
            row[name] = torch.randint(4, size, (length,), generator=g).numpy()
        row["text_idx"] = torch.randint(0, num_texts, (length,), generator=g).numpy()
        features.append(row)
    return features


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int | None = None, repeats: int = 20) -> float:
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def encoder_flops_per_token(h: int, inter: int, layers: int, seq: int) -> float:
    """Forward multiply-adds x2 per token: Q,K,V,O projections, feed-forward, attention scores and mixing."""
    return layers * (2 * (4 * h * h + 2 * h * inter) + 2 * 2 * seq * h)


def time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_loader_steps(step, loader, steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per step when each step first takes its batch from `loader` (collation included)."""
    batches = iter(loader)

    def loader_step():
        step({k: v.to(device, non_blocking=True) for k, v in next(batches).items()})

    for _ in range(warmup):
        loader_step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loader_step()
    sync(device)
    return (time.perf_counter() - start) / steps


def bench_preset(name: str, vocab: dict, batch_size: int, steps: int, warmup: int, device: torch.device,
                 num_workers: int = 0) -> list[dict]:
    preset = dict(PRESETS[name])
    length = preset.pop("max_length")
    config = ShopperBertConfig(**vocab, **preset, max_position_embeddings=length + 1)
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    seq = length + 1
    num_texts = 2000
    text = torch.randn(num_texts, config.text_embedding_size)
    collator = DataCollatorForMaskedPurchasePrediction.from_config(config, text, augmentation=False)
    batch = {k: v.to(device) for k, v in collator(fake_features(config, batch_size, length, num_texts)).items()}
    loader = torch.utils.data.DataLoader(
        fake_features(config, batch_size * (steps + warmup), length, num_texts, seed=1), batch_size=batch_size,
        collate_fn=DataCollatorForMaskedPurchasePrediction.from_config(config, text), num_workers=num_workers,
        pin_memory=device.type == "cuda")
    masked = int(batch["masked_positions"].sum())
    tokens = batch_size * length  # purchase tokens per step

    rows = []
    # ShopperBERT, fp32 and bf16 autocast
    heads_flops = masked * sum(2 * (h * h + h * v) for v in config.head_vocab_sizes)
    embed_flops = tokens * 2 * (5 * h * h + config.text_embedding_size * h)
    ours_fwd = tokens * encoder_flops_per_token(h, inter, layers, seq) + embed_flops + heads_flops
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = ShopperBertForMaskedPurchasePrediction(config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(inputs=batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = time_steps(step, steps, warmup, device)
        row = {"preset": name, "model": "ShopperBERT MPP", "precision": precision, "batch": batch_size,
               "seq_len": seq, "hidden": h, "layers": layers, "seconds_per_step": seconds,
               "tokens_per_s": tokens / seconds, "gflops": 3 * ours_fwd / seconds / 1e9,
               "parameters": sum(p.numel() for p in model.parameters())}
        end_to_end = time_loader_steps(step, loader, steps, warmup, device)
        rows += [row, {**row, "model": "ShopperBERT MPP (loader+step)", "num_workers": num_workers,
                       "seconds_per_step": end_to_end, "tokens_per_s": tokens / end_to_end,
                       "gflops": 3 * ours_fwd / end_to_end / 1e9, "end_to_end_vs_precollated": seconds / end_to_end}]

    # stock BertForMaskedLM with the identical encoder
    from transformers import BertConfig, BertForMaskedLM

    total_classes = sum(config.head_vocab_sizes)
    bert_config = BertConfig(vocab_size=total_classes, hidden_size=h, num_hidden_layers=layers,
                             num_attention_heads=config.num_attention_heads, intermediate_size=inter,
                             max_position_embeddings=seq, attn_implementation="sdpa",
                             hidden_dropout_prob=config.hidden_dropout_prob,
                             attention_probs_dropout_prob=config.attention_probs_dropout_prob)
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, total_classes, (batch_size, seq), generator=g)
    labels = torch.full_like(input_ids, -100)
    positions = torch.zeros(batch_size, seq, dtype=torch.bool)
    positions[:, 1:] = batch["masked_positions"][:, 1:seq].cpu()
    labels[positions] = input_ids[positions]
    input_ids, labels = input_ids.to(device), labels.to(device)
    bert_fwd = batch_size * seq * (encoder_flops_per_token(h, inter, layers, seq) + 2 * (h * h + h * total_classes))
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        bert = BertForMaskedLM(bert_config).to(device).train()
        optimizer = torch.optim.AdamW(bert.parameters(), lr=1e-4)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = bert(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = time_steps(step, steps, warmup, device)
        rows.append({"preset": name, "model": "BertForMaskedLM", "precision": precision, "batch": batch_size,
                     "seq_len": seq, "hidden": h, "layers": layers, "seconds_per_step": seconds,
                     "tokens_per_s": tokens / seconds, "gflops": 3 * bert_fwd / seconds / 1e9,
                     "parameters": sum(p.numel() for p in bert.parameters())})
    return rows


def bench_encode(name: str, vocab: dict, num_users: int, batch_size: int, device: torch.device) -> dict:
    """Users per second of `UserEncoder.encode` (inference, sorted-length batching) on random users."""
    from modeling_shopperbert import ShopperBertModel, UserEncoder

    preset = dict(PRESETS[name])
    length = preset.pop("max_length")
    config = ShopperBertConfig(**vocab, **preset, max_position_embeddings=length + 1)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, length + 1, (num_users,), generator=g).tolist()
    rows = []
    for u, n in enumerate(lengths):
        row = fake_features(config, 1, n, 2000, seed=u)[0]
        row["user_id"] = str(u)
        rows.append(row)
    encoder = UserEncoder(ShopperBertModel(config), text_embeddings=torch.randn(2000, config.text_embedding_size),
                          device=str(device))
    encoder.encode(rows[:batch_size], batch_size=batch_size)  # warm-up
    sync(device)
    start = time.perf_counter()
    encoder.encode(rows, batch_size=batch_size, show_progress_bar=False)
    sync(device)
    seconds = time.perf_counter() - start
    return {"preset": name, "users": num_users, "batch_size": batch_size, "mean_purchases": sum(lengths) / num_users,
            "seconds": seconds, "users_per_s": num_users / seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="small,base", help="comma-separated presets (default: small,base)")
    parser.add_argument("--batch-size", type=int, default=16, help="users per step (default 16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--data", default="data/cj", help="data_prep folder for realistic vocabulary sizes")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--encode-users", type=int, default=512, help="users for the encode_users measurement")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers of the loader+step rows (default: 0 on CPU, where workers take "
                             "the cores the step uses; on CUDA min(4, cores - 1))")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = min(4, (os.cpu_count() or 1) - 1) if device.type == "cuda" else 0
    vocab = vocab_from_data(Path(args.data))
    peak = {"fp32": matmul_gflops(torch.float32, device), "bf16": matmul_gflops(torch.bfloat16, device)}
    rows = []
    for name in args.presets.split(","):
        rows += bench_preset(name.strip(), vocab, args.batch_size, args.steps, args.warmup, device, num_workers)
    encode = [bench_encode(name.strip(), vocab, args.encode_users, 64, device) for name in args.presets.split(",")]
    for row in rows:
        row["fraction_of_matmul_peak"] = row["gflops"] / peak[row["precision"]]
        if row["model"].startswith("ShopperBERT MPP"):
            ref = next(r for r in rows if r["preset"] == row["preset"] and r["model"] == "BertForMaskedLM"
                       and r["precision"] == row["precision"])
            row["speed_ratio_vs_bert"] = row["tokens_per_s"] / ref["tokens_per_s"]
    machine = {"platform": platform.platform(), "torch": torch.__version__, "device": str(device),
               "threads": torch.get_num_threads(), "processor": platform.processor()}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    result = {"machine": machine, "matmul_peak_gflops": peak, "vocab": vocab, "rows": rows, "encode_users": encode}
    print(json.dumps(result, indent=2))
    print()
    print(f"{machine.get('gpu', machine['processor'] or 'cpu')}: torch.matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    print("| preset | model | precision | batch x seq | tokens/s | GFLOP/s | % of matmul peak | ratio vs BERT |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['speed_ratio_vs_bert']:.2f}" if "speed_ratio_vs_bert" in r else ""
        if "end_to_end_vs_precollated" in r:
            ratio = f"{ratio} ({100 * r['end_to_end_vs_precollated']:.0f}% of pre-collated)"
        print(f"| {r['preset']} | {r['model']} | {r['precision']} | {r['batch']} x {r['seq_len']} | "
              f"{r['tokens_per_s']:,.0f} | {r['gflops']:.0f} | {100 * r['fraction_of_matmul_peak']:.0f}% | {ratio} |")
    print()
    print("| preset | encode_users: users | mean purchases | users/s |")
    print("|---|---:|---:|---:|")
    for e in encode:
        print(f"| {e['preset']} | {e['users']} | {e['mean_purchases']:.0f} | {e['users_per_s']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
