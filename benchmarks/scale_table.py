#!/usr/bin/env python
"""README's scale table and its projection to the paper's 12.7M users, from the committed benchmark results
(tests/test_benchmark_claims.py checks that README holds exactly this table and this projection).

    python benchmarks/scale_table.py            # prints the markdown table, then the projection

Sources and the commands that wrote them (machine paths, `workdir` and `log`, removed before committing):
  benchmarks/results/data_prep_scale.json   python benchmarks/bench_data_prep.py --text-sample 0 --skip-cj
                                                --synthetic-users 1000000 5000000 --engines local --workdir W --keep
  benchmarks/results/data_prep_spark.json   python benchmarks/bench_data_prep.py --text-sample 0 --skip-cj
                                                --synthetic-users 100000 --engines spark local --workdir W2
  benchmarks/results/encode_scale.json      python benchmarks/bench_encode.py --corpus W/synthetic-1000000
                                                --json-out encode_scale.json, then the same with W/synthetic-5000000
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SOURCES = ("data_prep_scale.json", "data_prep_spark.json", "encode_scale.json")
PAPER_USERS = 12_700_000


def _gib(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rows(name: str, step: dict) -> tuple[str, str, str, str]:
    """(what, users, purchases, rate) of one benchmark step."""
    if name.startswith("encode_"):
        what = "encode, shards of 50k" + (f" ({step['note']})" if step.get("note") else "")
        return what, f"{step['users']:,}", "", f"{step['users_per_second']:,} users/s"
    engine = step.get("engine", "local")
    what = f"build, {engine} engine" + (f" ({step['note']})" if step.get("note") else "")
    return what, f"{step['users']:,}", f"{step['raw_rows'] / 1e6:.1f}M", f"{step['rows_per_second'] / 1e3:,.0f}k rows/s"


def scale_table(results_dir: Path = RESULTS) -> str:
    lines = ["| step | users | purchases | wall s | rate | peak RSS GiB | of which private | load average |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for source in SOURCES:
        steps = json.loads((results_dir / source).read_text())["steps"]
        for name, step in steps.items():
            if name.startswith("synthetic_logs"):
                continue
            what, users, purchases, rate = _rows(name, step)
            load = step["load_avg_1min"]
            lines.append(f"| {what} | {users} | {purchases} | {step['seconds']:,.0f} | {rate} | "
                         f"{_gib(step.get('peak_tree_rss_gib', step['peak_rss_gib']))} | "
                         f"{_gib(step.get('peak_tree_private_gib'))} | {load[0]:.1f} -> {load[1]:.1f} |")
    return "\n".join(lines)


def _local_builds(results_dir: Path) -> list[dict]:
    steps = json.loads((results_dir / "data_prep_scale.json").read_text())["steps"]
    builds = [s for n, s in steps.items()
              if n.startswith("synthetic_build") and not n.endswith("_before") and s.get("engine", "local") == "local"]
    return sorted(builds, key=lambda s: s["users"])


def _encode_rate(results_dir: Path, source: str, preset: str) -> float:
    rows = json.loads((results_dir / source).read_text())["encode_users"]
    return next(r["users_per_s"] for r in rows if r["preset"] == preset)


def projection(results_dir: Path = RESULTS) -> str:
    """README's paragraph on the paper's 12.7M users: the local engine's peak memory on the straight line through its
    two largest measured builds, its time at the largest build's rate, and encoding time at the measured users/s."""
    small, large = _local_builds(results_dir)[-2:]
    per_user = large["raw_rows"] / large["users"]
    slope = (large["peak_tree_rss_gib"] - small["peak_tree_rss_gib"]) / (large["users"] - small["users"])
    memory = large["peak_tree_rss_gib"] + slope * (PAPER_USERS - large["users"])
    minutes = PAPER_USERS * per_user / large["rows_per_second"] / 60
    gpu = _encode_rate(results_dir, "gpu_h200.json", "paper")
    cpu = _encode_rate(results_dir, "cpu.json", "small")
    return (
        f"Projection for the paper's 12.7M users (on paper, computed by `benchmarks/scale_table.py` from the figures "
        f"above and below; not measured): at the synthetic {per_user:.0f} purchases per user "
        f"({PAPER_USERS * per_user / 1e6:,.0f}M purchases) the local engine would need about {memory:.1f} GiB (the "
        f"straight line through its {small['users'] / 1e6:g}M and {large['users'] / 1e6:g}M peaks, "
        f"{slope * 1e6:.2f} GiB per million users) and, at its {large['users'] / 1e6:g}M rate, about "
        f"{minutes:.0f} min on one machine, if the logs are partitioned by user; the Spark engine is for logs that "
        "are not, or do not sit on one machine (its per-core rate on a cluster is not measured here). Encoding at "
        f"the paper's size runs at {gpu:,.0f} users/s on one H200 (`gpu_h200.json`): about "
        f"{PAPER_USERS / gpu / 3600:.1f} h for 12.7M users, about {PAPER_USERS / gpu / 8 / 60:.0f} min on 8 GPUs "
        "with `accelerate launch` (shards need no communication), if collation keeps up; on this CPU the `small` "
        f"preset's {cpu:,.0f} users/s would take {PAPER_USERS / cpu / 3600:.1f} h. The text model's cost depends on "
        "the distinct descriptions, not on users.")


if __name__ == "__main__":
    print(scale_table())
    print()
    print(projection())
    sys.exit(0)
