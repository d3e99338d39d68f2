"""Task 2, ``coupon_targeting`` (the paper's Membership Targeting): households that never used a coupon before the
cutoff (``coupon_disc > 0`` never seen): will they use one in the window?"""

from __future__ import annotations

from .building import targeting_task
from .task import Task, TaskSpec


def build_coupon_targeting(tables: dict) -> Task:
    tx = tables["transactions"]
    return targeting_task(SPEC, tx, (tx["coupon_disc"].fillna(0) > 0).to_numpy())


SPEC = TaskSpec(
    number=2,
    name="coupon_targeting",
    kind="classification",
    paper_analogue="Membership Targeting (MT)",
    definition="Households with at least one purchase before the cutoff and no purchase line with coupon_disc > 0 "
               "before the cutoff; label 1 if any purchase line in [cutoff, window end) has coupon_disc > 0.",
    tables=("transactions",),
    build=build_coupon_targeting,
)
