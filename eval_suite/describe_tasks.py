"""Build the six downstream tasks on Complete Journey and print what they hold (the numbers in TASKS.md).

    python -m eval_suite.describe_tasks [--tasks kids,featured_products] [--seed 0] [--json out.json]

Per task: definition, users, instances / class balance, positives per user, candidate-set sizes, task-specific
history lengths, split sizes for one seed, cold/heavy thresholds on its test users, build time. Pure pandas.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from eval_suite import tasks as T


def _fmt(d) -> str:
    if not isinstance(d, dict):
        return str(d)
    if d.get("n", 1) == 0:
        return "n=0"
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def describe(task: T.Task, seed: int) -> dict:
    s = task.summary()
    split = T.split_users(task, seed)
    s["split_sizes"] = {k: int(len(v)) for k, v in split.items()}
    if task.kind == "classification":
        lab = task.users.set_index("user_id")["label"]
        s["split_positive_rate"] = {k: round(float(lab.loc[v].mean()), 4) for k, v in split.items()}
    else:
        inst = task.instances
        s["split_instances"] = {k: int(inst["user_id"].isin(set(v)).sum()) for k, v in split.items()}
        cold, heavy = T.cold_heavy_users(task, split["test"])
        hl = task.history_lengths(split["test"])
        s["test_cold_heavy"] = {"n_cold": int(len(cold)), "n_heavy": int(len(heavy)),
                                "cold_max_history": int(hl.loc[cold].max()),
                                "heavy_min_history": int(hl.loc[heavy].min()),
                                "cold_instances": int(inst["user_id"].isin(set(cold)).sum()),
                                "heavy_instances": int(inst["user_id"].isin(set(heavy)).sum())}
        ps = task.pool_sizes()
        s["groups_with_pool_below_100"] = int((ps["pool_size"] < 100).sum())
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval_suite describe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(T.TASK_NAMES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the summaries to this JSON file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in T.TASK_NAMES]
    if unknown or not names:
        ap.error(f"--tasks {args.tasks!r}: unknown tasks {unknown}; choose from {', '.join(T.TASK_NAMES)}")

    print(f"cutoff {T.CUTOFF} | label window [{T.CUTOFF}, {T.WINDOW_END}) | featured mailer codes "
          f"{T.FEATURED_MAILER_CODES}")
    t0 = time.perf_counter()
    tables = T.load_raw_tables(tables=T.tables_for(names))
    t_load = time.perf_counter() - t0
    print(f"loaded {', '.join(f'{k} ({len(v):,} rows)' for k, v in tables.items())} in {t_load:.1f} s")
    out = {"load_seconds": round(t_load, 2), "tasks": {}}
    t_all = 0.0
    for name in names:
        t1 = time.perf_counter()
        task = T.build_task(name, tables)
        dt = time.perf_counter() - t1
        t_all += dt
        T.assert_no_leakage(task)
        s = describe(task, args.seed)
        s["build_seconds"] = round(dt, 2)
        out["tasks"][name] = s
        print(f"\n=== {name} ({task.paper_analogue}; {task.kind}) built in {dt:.2f} s; leakage check passed")
        print(f"definition: {task.definition}")
        for k, v in s.items():
            if k in ("name", "kind", "paper_analogue", "build_seconds"):
                continue
            print(f"  {k}: {_fmt(v)}")
        if task.kind == "recommendation":
            ex = task.items.sample(min(3, len(task.items)), random_state=0)
            for _, r in ex.iterrows():
                feats = ", ".join(f"{c}={r[c]:.2f}" for c in task.item_feature_columns)
                print(f"  example item {r['item_id']!r}: {r['text']!r} ({feats})")
        t1 = time.perf_counter()
        if task.kind == "recommendation":
            T.sample_negatives(task, args.seed, 100)
            print(f"  sample_negatives(seed={args.seed}, 100): {time.perf_counter() - t1:.2f} s")
    print(f"\nall builds: {t_all:.1f} s (+ {t_load:.1f} s loading)")
    out["build_seconds_total"] = round(t_all, 2)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
