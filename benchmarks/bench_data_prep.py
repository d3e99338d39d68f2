#!/usr/bin/env python
"""Speed and memory of data_prep, measured with public tools only.

Every measured step runs as its own child process (the real command line, imports included); wall time comes from
`time.perf_counter`, peak memory from the child's own `ru_maxrss` (`os.wait4`, the same figure `/usr/bin/time -v`
prints as "Maximum resident set size").

Steps:
  text_embedding    the one-time cost of the text model: a sample of Complete Journey descriptions encoded by
                    all-MiniLM-L6-v2 into an empty cache (descriptions/s); --text-sample 0 skips it
  cj_build          Complete Journey end to end (`python -m data_prep build --source completejourney`), text
                    embeddings already cached (a warm-up build fills the cache first, untimed if needed)
  synthetic_logs_N  writing N synthetic users' logs (sharded parquet)
  synthetic_build_N building the corpus from them (`--source files --partitioned-by-user`, hashing text encoder
                    by default: the synthetic catalog's ~20k descriptions would otherwise be a one-time MiniLM cost)

Usage:
    python benchmarks/bench_data_prep.py                          # text sample + CJ + 100k synthetic users
    python benchmarks/bench_data_prep.py --synthetic-users 100000 1000000 --json-out results/bench_data_prep.json

Prints one JSON document, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_child(argv: list, label: str, log_dir: Path) -> dict:
    """Run a command; return wall seconds and the child's peak RSS (GiB). Output goes to a log file."""
    log_path = log_dir / f"{label}.log"
    load_before = os.getloadavg()[0]  # the machine may be shared: a high load average explains slow figures
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{label} failed with exit code {proc.returncode}:\n{tail}")
    return {"seconds": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 1024**2, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "log": str(log_path)}


TEXT_CHILD = r"""
import json, sys, time
from data_prep import load_completejourney_log
from data_prep.text import SentenceTransformerEncoder, embed_texts
n, cache = int(sys.argv[1]), sys.argv[2]
texts = sorted(load_completejourney_log()["description"].astype(str).unique())
step = max(1, len(texts) // n)
sample = texts[::step][:n]
encoder = SentenceTransformerEncoder()
t = time.perf_counter(); encoder._load(); load = time.perf_counter() - t
_, stats = embed_texts(sample, encoder, cache_dir=cache, progress=False)
stats["model_load_seconds"] = round(load, 2)
stats["total_distinct_descriptions"] = len(texts)
print("RESULT " + json.dumps(stats))
"""


def bench_text(n: int, work: Path, logs: Path) -> dict:
    cache = work / "text-cache-cold"
    res = run_child([sys.executable, "-c", TEXT_CHILD, str(n), str(cache)], "text_embedding", logs)
    line = [l for l in Path(res["log"]).read_text().splitlines() if l.startswith("RESULT ")][-1]
    stats = json.loads(line[len("RESULT "):])
    res.update(descriptions=stats["encoded"], descriptions_per_second=stats["texts_per_second"],
               model_load_seconds=stats["model_load_seconds"],
               total_distinct_descriptions=stats["total_distinct_descriptions"],
               one_time_full_cost_seconds=round(stats["total_distinct_descriptions"] / stats["texts_per_second"], 1))
    shutil.rmtree(cache, ignore_errors=True)
    return res


def bench_cj(work: Path, logs: Path, cache_dir: str | None, end_date: str | None, text_model: str) -> dict:
    out = work / "cj"
    argv = [sys.executable, "-m", "data_prep", "build", "--source", "completejourney", "--out", str(out),
            "--overwrite", "--text-model", text_model]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    if end_date:
        argv += ["--end-date", end_date]
    warm = run_child(argv + ["--quiet"], "cj_build_warmup", logs)  # fills the text cache when it is cold
    meta = json.loads((out / "metadata.json").read_text())
    warm_encoded = meta["text_embedding_stats"]["encoded"]
    res = run_child(argv, "cj_build", logs)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["text_embedding_stats"]["encoded"] == 0, "the timed build was meant to hit the text cache"
    rows = meta["counts"]["raw_rows"]
    res.update(raw_rows=rows, rows_per_second=round(rows / res["seconds"]), users=meta["counts"]["users_kept"],
               purchases_kept=meta["counts"]["purchases_kept"], in_process_build_seconds=meta["build_seconds"],
               timings=meta["timings"], warmup_descriptions_encoded=warm_encoded,
               warmup_seconds=warm["seconds"], end_date=end_date, text_model=text_model)
    shutil.rmtree(out, ignore_errors=True)
    return res


def bench_synthetic(users: int, work: Path, logs: Path, text_model: str, cache_dir: str | None) -> tuple:
    folder = work / f"synthetic-logs-{users}"
    gen = run_child([sys.executable, "-m", "data_prep", "synthesize", "--users", str(users), "--out", str(folder),
                     "--overwrite", "--quiet"], f"synthetic_logs_{users}", logs)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("part-*.parquet"))
    size = sum(f.stat().st_size for f in folder.glob("part-*.parquet"))
    gen.update(users=users, rows=rows, rows_per_second=round(rows / gen["seconds"]), parquet_gib=round(size / 1024**3, 3))
    out = work / f"synthetic-{users}"
    argv = [sys.executable, "-m", "data_prep", "build", "--source", "files", "--input", str(folder),
            "--partitioned-by-user", "--out", str(out), "--overwrite", "--text-model", text_model]
    if cache_dir:
        argv += ["--cache-dir", cache_dir]
    build = run_child(argv, f"synthetic_build_{users}", logs)
    meta = json.loads((out / "metadata.json").read_text())
    dataset_bytes = sum(f.stat().st_size for f in (out / "dataset").rglob("*.arrow"))
    build.update(users=users, raw_rows=meta["counts"]["raw_rows"],
                 rows_per_second=round(meta["counts"]["raw_rows"] / build["seconds"]),
                 users_kept=meta["counts"]["users_kept"], purchases_kept=meta["counts"]["purchases_kept"],
                 dataset_gib=round(dataset_bytes / 1024**3, 3), timings=meta["timings"], text_model=text_model,
                 source=meta["source"])
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    return gen, build


def markdown(results: dict) -> str:
    lines = ["| step | wall s | rows | rows/s | peak RSS GiB | notes |", "|---|---:|---:|---:|---:|---|"]
    for name, r in results["steps"].items():
        rows = r.get("raw_rows", r.get("rows", r.get("descriptions", "")))
        rate = r.get("rows_per_second", "")
        note = ""
        if name == "text_embedding":
            rate = ""
            note = (f"{r['descriptions_per_second']} descriptions/s (MiniLM, cold cache); all "
                    f"{r['total_distinct_descriptions']:,} CJ descriptions ≈ {r['one_time_full_cost_seconds']} s once")
        elif name == "cj_build":
            note = f"text cached; {r['users']:,} users kept; in-process {r['in_process_build_seconds']} s"
        elif name.startswith("synthetic_build"):
            note = f"{r['users_kept']:,} users kept; dataset {r['dataset_gib']} GiB; text: {r['text_model']}"
        elif name.startswith("synthetic_logs"):
            note = f"{r['users']:,} users; parquet {r['parquet_gib']} GiB"
        rows_txt = f"{rows:,}" if isinstance(rows, int) else rows
        rate_txt = f"{rate:,}" if isinstance(rate, int) else rate
        lines.append(f"| {name} | {r['seconds']} | {rows_txt} | {rate_txt} | {r['peak_rss_gib']} | {note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text-sample", type=int, default=1000,
                   help="descriptions to encode for the text-embedding cost (0 skips)")
    p.add_argument("--skip-cj", action="store_true")
    p.add_argument("--cj-end-date", default=None, help="cutoff for the CJ build (default: none, all 1.47M rows)")
    p.add_argument("--cj-text-model", default="all-MiniLM-L6-v2")
    p.add_argument("--cache-dir", default=None, help="text cache for the CJ build (default: the usual cache)")
    p.add_argument("--synthetic-users", type=int, nargs="*", default=[100_000],
                   help="synthetic sizes (default 100000; add 1000000 for the big run, minutes)")
    p.add_argument("--synthetic-text-model", default="hashing")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary folder)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_prep_"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "workdir": str(work), "steps": {}}
    try:
        if args.text_sample:
            results["steps"]["text_embedding"] = bench_text(args.text_sample, work, logs)
        if not args.skip_cj:
            results["steps"]["cj_build"] = bench_cj(work, logs, args.cache_dir, args.cj_end_date, args.cj_text_model)
        for users in args.synthetic_users:
            gen, build = bench_synthetic(users, work, logs, args.synthetic_text_model, str(work / "text-cache"))
            results["steps"][f"synthetic_logs_{users}"] = gen
            results["steps"][f"synthetic_build_{users}"] = build
    finally:
        if not args.workdir:
            for child in work.iterdir():
                if child.name != "logs":
                    shutil.rmtree(child, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    print()
    print(markdown(results))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
