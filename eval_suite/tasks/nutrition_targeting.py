"""Task 3, ``nutrition_targeting`` (the paper's Live Commerce Targeting): households that never bought from the
NUTRITION department before the cutoff: will they in the window?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .building import product_lookup, targeting_task
from .task import Task, TaskSpec

NUTRITION_DEPARTMENT = "NUTRITION"


def build_nutrition_targeting(tables: dict) -> Task:
    tx, products = tables["transactions"], tables["products"]
    dept = product_lookup(products, tx["product_id"].to_numpy(), "department")
    event = np.asarray(pd.Series(dept, dtype=object).eq(NUTRITION_DEPARTMENT).to_numpy(), dtype=bool)
    return targeting_task(SPEC, tx, event)


SPEC = TaskSpec(
    number=3,
    name="nutrition_targeting",
    kind="classification",
    paper_analogue="Live Commerce Targeting (LCT)",
    definition="Households with at least one purchase before the cutoff and no purchase from the NUTRITION "
               "department before the cutoff; label 1 if they buy any NUTRITION product in [cutoff, window end).",
    tables=("transactions", "products"),
    build=build_nutrition_targeting,
)
