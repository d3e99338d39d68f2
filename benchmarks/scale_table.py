#!/usr/bin/env python
"""README's scale table, from the committed benchmark results (tests/test_benchmark_claims.py checks that README holds
exactly this table).

    python benchmarks/scale_table.py            # prints the markdown table

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


def _gib(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _rows(name: str, step: dict) -> tuple[str, str, str, str]:
    """(what, users, purchases, rate) of one benchmark step."""
    if name.startswith("encode_"):
        what = "encode, shards of 50k" + (f" ({step['note']})" if step.get("note") else "")
        return what, f"{step['users']:,}", "", f"{step['users_per_second']:,} users/s"
    engine = step.get("engine", "local")
    return (f"build, {engine} engine", f"{step['users']:,}", f"{step['raw_rows'] / 1e6:.1f}M",
            f"{step['rows_per_second'] / 1e3:,.0f}k rows/s")


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


if __name__ == "__main__":
    print(scale_table())
    sys.exit(0)
