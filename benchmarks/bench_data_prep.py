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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _sample_tree_rss(pid: int, peak: list, stop: threading.Event) -> None:
    """Every 0.2 s, the summed resident memory of `pid` and all its descendants (a Spark build's JVM and Python
    workers are children of the command: `ru_maxrss` sees only the largest single process). Peaks in bytes:
    `peak[0]` all resident memory, `peak[1]` the private part (resident minus file-backed and shared pages: what
    memory-mapped Arrow files add to RSS is page cache the kernel can drop, and grows with the file, not the work)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.wait(0.2):
        total = private = 0
        try:
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_info()
                except psutil.NoSuchProcess:
                    continue
                total += info.rss
                private += info.rss - getattr(info, "shared", 0)
        except psutil.NoSuchProcess:
            return
        peak[0], peak[1] = max(peak[0], total), max(peak[1], private)


def run_child(argv: list, label: str, log_dir: Path) -> dict:
    """Run a command; return wall seconds, the child's peak RSS (GiB, its own `ru_maxrss`) and the sampled peak of
    its whole process tree. Output goes to a log file."""
    log_path = log_dir / f"{label}.log"
    load_before = os.getloadavg()[0]  # the machine may be shared: a high load average explains slow figures
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        peak, stop = [0, 0], threading.Event()
        sampler = threading.Thread(target=_sample_tree_rss, args=(proc.pid, peak, stop), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{label} failed with exit code {proc.returncode}:\n{tail}")
    return {"seconds": round(wall, 2), "peak_rss_gib": round(usage.ru_maxrss / 1024**2, 3),
            "peak_tree_rss_gib": round(peak[0] / 1024**3, 3), "peak_tree_private_gib": round(peak[1] / 1024**3, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "log": log_path.name}


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
    line = [l for l in (logs / res["log"]).read_text().splitlines() if l.startswith("RESULT ")][-1]
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


def bench_synthetic(users: int, work: Path, logs: Path, text_model: str, cache_dir: str | None,
                    engines=("local",), keep: bool = False) -> dict:
    """Steps `synthetic_logs_N`, then `synthetic_build_N` (local engine) and/or `synthetic_build_spark_N` on the same
    logs. With `keep`, the logs and the corpora stay in `work` (for the encode benchmark)."""
    folder = work / f"synthetic-logs-{users}"
    gen = run_child([sys.executable, "-m", "data_prep", "synthesize", "--users", str(users), "--out", str(folder),
                     "--overwrite", "--quiet"], f"synthetic_logs_{users}", logs)
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("part-*.parquet"))
    size = sum(f.stat().st_size for f in folder.glob("part-*.parquet"))
    gen.update(users=users, rows=rows, rows_per_second=round(rows / gen["seconds"]),
               parquet_gib=round(size / 1024**3, 3))
    steps = {f"synthetic_logs_{users}": gen}
    for engine in engines:
        label = f"synthetic_build_{users}" if engine == "local" else f"synthetic_build_{engine}_{users}"
        out = work / (f"synthetic-{users}" if engine == "local" else f"synthetic-{engine}-{users}")
        argv = [sys.executable, "-m", "data_prep", "build", "--source", "files", "--input", str(folder),
                "--partitioned-by-user", "--out", str(out), "--overwrite", "--text-model", text_model,
                "--engine", engine]
        if cache_dir:
            argv += ["--cache-dir", cache_dir]
        build = run_child(argv + (["--quiet"] if engine == "spark" else []), label, logs)
        meta = json.loads((out / "metadata.json").read_text())
        dataset_bytes = sum(f.stat().st_size for f in (out / "dataset").rglob("*.arrow"))
        build.update(users=users, engine=engine, raw_rows=meta["counts"]["raw_rows"],
                     rows_per_second=round(meta["counts"]["raw_rows"] / build["seconds"]),
                     users_kept=meta["counts"]["users_kept"], purchases_kept=meta["counts"]["purchases_kept"],
                     dataset_gib=round(dataset_bytes / 1024**3, 3), timings=meta["timings"], text_model=text_model,
                     source=meta["source"])
        steps[label] = build
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return steps


def markdown(results: dict) -> str:
    lines = ["| step | wall s | rows | rows/s | peak RSS GiB (largest process) | peak RSS GiB (process tree) | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
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
            note = (f"{r.get('engine', 'local')} engine; {r['users_kept']:,} users kept; "
                    f"dataset {r['dataset_gib']} GiB; text: {r['text_model']}")
        elif name.startswith("synthetic_logs"):
            note = f"{r['users']:,} users; parquet {r['parquet_gib']} GiB"
        rows_txt = f"{rows:,}" if isinstance(rows, int) else rows
        rate_txt = f"{rate:,}" if isinstance(rate, int) else rate
        lines.append(f"| {name} | {r['seconds']} | {rows_txt} | {rate_txt} | {r['peak_rss_gib']} | "
                     f"{r.get('peak_tree_rss_gib', '')} | {note} |")
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
    p.add_argument("--engines", nargs="+", choices=("local", "spark"), default=["local"],
                   help="engines that build the synthetic corpora (default: local; spark needs pyspark and Java)")
    p.add_argument("--keep", action="store_true",
                   help="keep the synthetic logs and corpora in --workdir (e.g. for benchmarks/bench_encode.py)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary folder)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    if args.keep and not args.workdir:
        p.error("--keep needs --workdir (a temporary folder is removed at the end)")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_prep_"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "steps": {}}
    try:
        if args.text_sample:
            results["steps"]["text_embedding"] = bench_text(args.text_sample, work, logs)
        if not args.skip_cj:
            results["steps"]["cj_build"] = bench_cj(work, logs, args.cache_dir, args.cj_end_date, args.cj_text_model)
        for users in args.synthetic_users:
            results["steps"].update(bench_synthetic(users, work, logs, args.synthetic_text_model,
                                                    str(work / "text-cache"), args.engines, args.keep))
            write_results(results, args.json_out)  # partial results survive a later step's failure
    finally:
        if not args.workdir:  # only a temporary folder of our own is emptied
            for child in work.iterdir():
                if child.name != "logs":
                    shutil.rmtree(child, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print()
    print(markdown(results))
    write_results(results, args.json_out)
    return 0


def write_results(results: dict, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
