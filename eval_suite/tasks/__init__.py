"""The six downstream tasks on Complete Journey: analogues of the paper's six (section 4.2.3).

One file per task (``kids.py``, ``coupon_targeting.py``, ``nutrition_targeting.py``, ``featured_products.py``,
``campaign_coupons.py``, ``next_product_type.py``), each with its name, kind, paper analogue, definition, the raw
tables it reads, its builder and, for the recommendation tasks, its history log (T-Trans inputs) and its
co-occurrence link (the classical baseline), all in one ``SPEC``. The registry (``registry.py``) collects the files;
the protocol every task shares (cutoff, user splits, negatives, cold/heavy users, leakage check) is ``protocol.py``;
the raw tables come through data_prep's reader (``tables.py``); the builders' shared parts are ``building.py``.

Tasks (``TASK_NAMES`` order; paper analogue in brackets):

1. ``kids`` (Gender Classification): does the household have children (``kids_count > 0``)?
2. ``coupon_targeting`` (Membership Targeting): households that never used a coupon before the cutoff
   (``coupon_disc > 0`` never seen): will they use one in the window?
3. ``nutrition_targeting`` (Live Commerce Targeting): households that never bought from the NUTRITION department
   before the cutoff: will they in the window?
4. ``featured_products`` (Product Collection Recommendation): a featured product (front page, back page, wrap
   front or wrap back feature of the household's store's weekly mailer) that the household had never bought before
   the cutoff and bought in that store-week; candidates are the same store-week's featured set.
5. ``campaign_coupons`` (Marketing Message Recommendation): a campaign coupon the household redeemed in the window;
   candidates are the coupons of all campaigns running in the window.
6. ``next_product_type`` (Shopping Search Query Recommendation): a product type the household first buys in the
   window; candidates are the types the household never bought at any time.

Everything is keyed by ``user_id = str(household_id)`` (as in the pre-training data). Builders take the raw tables
as a dict of DataFrames (``load_raw_tables``), so tests can pass hand-made miniature tables with the same columns.
Pure pandas/numpy; no torch.
"""

from .building import MISSING_DESCRIPTION, WINDOW_CONTEXT, product_descriptions
from .nutrition_targeting import NUTRITION_DEPARTMENT
from .protocol import (
    COLD_HEAVY_FRACTION,
    CUTOFF,
    SPLIT_FRACTIONS,
    WINDOW_END,
    LeakageError,
    assert_no_leakage,
    cold_heavy_users,
    fixed_negatives,
    instances_fingerprint,
    load_negatives,
    negatives_path,
    sample_negatives,
    sample_training_pairs,
    save_negatives,
    split_users,
)
from .registry import (
    BUILDERS,
    DEFINITIONS,
    PAPER_ANALOGUES,
    SPECS,
    TASK_KINDS,
    TASK_NAMES,
    TASK_TABLES,
    build_all,
    build_task,
    tables_for,
    task_spec,
)
from .tables import FEATURED_MAILER_CODES, RAW_COLUMNS, load_raw_tables
from .task import RankingGroup, Task, TaskSpec

__all__ = [
    "BUILDERS", "COLD_HEAVY_FRACTION", "CUTOFF", "DEFINITIONS", "FEATURED_MAILER_CODES", "LeakageError",
    "MISSING_DESCRIPTION", "NUTRITION_DEPARTMENT", "PAPER_ANALOGUES", "RAW_COLUMNS", "RankingGroup", "SPECS",
    "SPLIT_FRACTIONS", "TASK_KINDS", "TASK_NAMES", "TASK_TABLES", "Task", "TaskSpec", "WINDOW_CONTEXT", "WINDOW_END",
    "assert_no_leakage", "build_all", "build_task", "cold_heavy_users", "fixed_negatives",
    "instances_fingerprint", "load_negatives", "load_raw_tables", "negatives_path", "product_descriptions",
    "sample_negatives", "sample_training_pairs", "save_negatives", "split_users", "tables_for", "task_spec",
]
