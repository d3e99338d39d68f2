"""Task 1, ``kids`` (the paper's Gender Classification): does the household have children?

Population: households with demographics and a purchase before the cutoff. The label comes from demographics
(``kids_count``), which carry no date: the one task with a static label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .building import classification_task, uid
from .protocol import max_timestamp, split_time
from .task import Task, TaskSpec


def build_kids(tables: dict) -> Task:
    tx, demo = tables["transactions"], tables["demographics"]
    pre, _ = split_time(tx)
    active = set(pre["household_id"].unique().tolist())
    demo = demo.dropna(subset=["kids_count"])
    kc = demo["kids_count"].astype(str).str.strip().str.rstrip("+")
    kids = pd.to_numeric(kc, errors="coerce")
    keep = demo["household_id"].isin(active).to_numpy() & kids.notna().to_numpy()
    users = pd.DataFrame({"user_id": uid(demo["household_id"].to_numpy()[keep]),
                          "label": (kids.to_numpy()[keep] > 0).astype(np.int64)})
    notes = {"dropped_no_purchase_before_cutoff": int((~demo["household_id"].isin(active)).sum())}
    return classification_task(SPEC, users, pd.DataFrame({"user_id": pd.Series(dtype=object),
                                                          "timestamp": pd.Series(dtype="datetime64[ns]")}),
                               max_timestamp(pre["transaction_timestamp"]), notes)


SPEC = TaskSpec(
    number=1,
    name="kids",
    kind="classification",
    paper_analogue="Gender Classification (GC)",
    definition="Households with demographics and at least one purchase before the cutoff; label 1 if kids_count > 0 "
               "(kids_count is '1', '2' or '3+'), 0 if '0'. Static label (demographics carry no date).",
    tables=("transactions", "demographics"),
    build=build_kids,
    static_label=True,
)
