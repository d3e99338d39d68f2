"""A synthetic purchase-log generator for scale tests and benchmarks. NOT real data.

Users have latent tastes, so there is something to learn:

- a fixed catalog (seeded): 12 departments > ~240 categories > ~2,100 product types > ~3,400 sub-types (the
  paper's vocabulary sizes are 12, 234, 2,092 and 3,379), ~20,000 products with made-up description texts;
- `num_tastes` tastes, each a sparse preference over categories (Dirichlet) and a preferred hour of the day;
- each user mixes two tastes, has a personal activity level (log-normal, mean ~64 purchases like the paper's
  average sequence length), a period of activity, a preferred weekday, shops in baskets, and re-buys favourites.

`write_synthetic_logs` writes sharded parquet files (`part-00000.parquet`, ...), each holding complete users, in
memory bounded by `users_per_shard` whatever the number of users. Every file carries the metadata marker
`shopperbert.source = synthetic`, and builds from them record `"source": "synthetic"`. The folder gets a marker file
(`.shopperbert-synthetic`) when the generator claims it; `overwrite` replaces only a folder that holds nothing but
the generator's own files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import DataPrepError
from .sources import SYNTHETIC_MARKER_KEY, SYNTHETIC_MARKER_VALUE, is_synthetic_file

SYNTHETIC_DIR_MARKER = ".shopperbert-synthetic"
README_FILE = "_SYNTHETIC_README.txt"
_GENERATED = re.compile(r"part-\d{5}\.parquet|\.part-\d{5}\.parquet\.tmp|" + re.escape(README_FILE) + "|"
                        + re.escape(SYNTHETIC_DIR_MARKER))

_DEPARTMENTS = ("grocery", "produce", "dairy", "beverages", "household", "personal care", "baby", "pets",
                "electronics", "clothing", "home and garden", "toys")
_SYLLABLES = ("ka", "lo", "mi", "ra", "te", "no", "su", "vi", "de", "po", "ri", "an", "el", "or", "ta", "ne", "zu",
              "ba", "ki", "mo", "fa", "lu", "sen", "tor", "mar", "vel", "dor", "lin", "quo", "ber")
_ADJECTIVES = ("organic", "classic", "fresh", "premium", "light", "family size", "mini", "extra", "natural",
               "original", "deluxe", "value pack", "spicy", "sweet", "unscented", "compact")
_SIZES = ("100 g", "250 g", "500 g", "1 kg", "2 kg", "330 ml", "500 ml", "1 l", "2 l", "6 pack", "12 pack", "1 ct",
          "2 ct", "10 ct", "small", "medium", "large")


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic generator (all defaults give paper-like shapes)."""

    num_users: int = 10_000
    seed: int = 0
    start_date: str = "2018-10-01"
    days: int = 730  # the paper's two years
    mean_purchases: float = 64.0  # mean purchases per user before de-duplication
    num_tastes: int = 16
    num_products: int = 20_000
    categories_per_department: int = 20
    types_per_category: int = 9
    repeat_probability: float = 0.3  # share of purchases that re-buy one of the user's other products
    users_per_shard: int = 25_000

    def check(self) -> None:
        if self.num_users < 1:
            raise DataPrepError(f"--users must be at least 1, got {self.num_users}")
        if self.users_per_shard < 1 or self.days < 1 or not self.mean_purchases > 0 or self.num_tastes < 1:
            raise DataPrepError("synthetic: users_per_shard, days, mean_purchases and num_tastes must be positive")
        if not math.isfinite(self.mean_purchases):
            raise DataPrepError(f"--mean-purchases must be a finite number, got {self.mean_purchases}")


def _words(rng: np.random.Generator, count: int, syllables: int) -> list[str]:
    """`count` distinct made-up words of `syllables` syllables (in a seeded order)."""
    syl = np.array(_SYLLABLES, dtype=object)
    picks = rng.integers(0, len(_SYLLABLES), size=(count * 3 + 100, syllables))
    words = syl[picks[:, 0]]
    for j in range(1, syllables):
        words = words + syl[picks[:, j]]
    _, first = np.unique(words, return_index=True)
    unique = words[np.sort(first)]
    if len(unique) < count:
        raise ValueError(f"cannot make {count} distinct words of {syllables} syllables")
    return list(unique[:count])


class Catalog:
    """The hierarchical product catalog (deterministic for a seed). Arrays are indexed by product."""

    def __init__(self, config: SyntheticConfig):
        rng = np.random.default_rng([config.seed, 1])
        n_dept = len(_DEPARTMENTS)
        n_cat = n_dept * config.categories_per_department
        n_type = n_cat * config.types_per_category
        cat_names = _words(rng, n_cat, 2)
        type_names = _words(rng, n_type, 3)
        brands = _words(rng, 600, 2)
        self.category_dept = np.repeat(np.arange(n_dept), config.categories_per_department)
        self.type_cat = np.repeat(np.arange(n_cat), config.types_per_category)
        # ~1.6 sub-types per type (1 or 2, with some types getting 3)
        sub_per_type = rng.choice([1, 2, 3], size=n_type, p=[0.5, 0.4, 0.1])
        self.sub_type = np.repeat(np.arange(n_type), sub_per_type)
        n_sub = len(self.sub_type)
        sub_rank = np.concatenate([np.arange(k) for k in sub_per_type])
        variants = np.array(["regular", "premium", "store brand"])
        self.level1 = np.array(_DEPARTMENTS, dtype=object)
        self.level2 = np.array([f"{_DEPARTMENTS[self.category_dept[c]]} {cat_names[c]}" for c in range(n_cat)],
                               dtype=object)
        self.level3 = np.array([f"{type_names[t]} {cat_names[self.type_cat[t]]}" for t in range(n_type)], dtype=object)
        self.level4 = np.array([f"{self.level3[self.sub_type[s]]} {variants[sub_rank[s]]}" for s in range(n_sub)],
                               dtype=object)
        # products: every sub-type gets at least one; the rest spread with a skew
        n_prod = max(config.num_products, n_sub)
        extra = rng.choice(n_sub, size=n_prod - n_sub, p=_zipf(n_sub, 0.6, rng))
        prod_sub = np.sort(np.r_[np.arange(n_sub), extra])
        self.product_sub = prod_sub
        self.product_type = self.sub_type[prod_sub]
        self.product_cat = self.type_cat[self.product_type]
        self.product_dept = self.category_dept[self.product_cat]
        adjective = rng.integers(0, len(_ADJECTIVES), size=n_prod)
        size = rng.integers(0, len(_SIZES), size=n_prod)
        brand = rng.integers(0, len(brands), size=n_prod)
        text = np.array([
            f"{brands[brand[p]]} {_ADJECTIVES[adjective[p]]} {type_names[self.product_type[p]]} "
            f"({self.level4[prod_sub[p]]}, {_SIZES[size[p]]})" for p in range(n_prod)], dtype=object)
        # two products may share a description: keep the distinct texts and a product -> text index
        self.descriptions, self.product_description = np.unique(text, return_inverse=True)
        self.price = np.round(np.exp(rng.normal(1.2, 0.8, size=n_prod)), 2)
        # products of each category, for sampling: the catalog is sorted by sub-type, hence by category
        order = np.argsort(self.product_cat, kind="stable")
        self.products_by_cat = order
        self.cat_start = np.searchsorted(self.product_cat[order], np.arange(n_cat))
        self.cat_count = np.bincount(self.product_cat, minlength=n_cat)
        # tastes: sparse preferences over categories, and an hour of the day
        taste_rng = np.random.default_rng([config.seed, 2])
        self.taste_cat_cdf = np.cumsum(taste_rng.dirichlet(np.full(n_cat, 0.05), size=config.num_tastes), axis=1)
        self.taste_cat_cdf /= self.taste_cat_cdf[:, -1:]
        self.taste_hour = taste_rng.uniform(8, 21, size=config.num_tastes)
        # a share of every basket goes to staples, common to all users
        self.staple_cdf = np.cumsum(_zipf(n_cat, 1.1, taste_rng))

    @property
    def num_products(self) -> int:
        return len(self.product_sub)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    weights = weights[rng.permutation(n)]
    return weights / weights.sum()


def _dictionary(indices: np.ndarray, values: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values.tolist(), pa.string()))


def generate_shard(config: SyntheticConfig, catalog: Catalog, first_user: int, num_users: int) -> pa.Table:
    """Purchase logs of users `first_user ... first_user + num_users - 1` as an Arrow table (canonical columns,
    categories and descriptions dictionary-encoded). Deterministic for (seed, first_user)."""
    rng = np.random.default_rng([config.seed, 3, first_user])
    users = np.arange(num_users)
    # activity: log-normal counts with the configured mean
    sigma = 0.8
    counts = np.maximum(1, np.round(rng.lognormal(np.log(config.mean_purchases) - sigma**2 / 2, sigma,
                                                  size=num_users))).astype(np.int64)
    total = int(counts.sum())
    user_of = np.repeat(users, counts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.arange(total) - starts[user_of]
    # tastes: a main and a second taste per user
    taste_a = rng.integers(0, config.num_tastes, size=num_users)
    taste_b = rng.integers(0, config.num_tastes, size=num_users)
    weight_a = rng.beta(4, 2, size=num_users)
    taste = np.where(rng.random(total) < weight_a[user_of], taste_a[user_of], taste_b[user_of])
    category = np.empty(total, dtype=np.int64)
    u = rng.random(total)
    staple = rng.random(total) < 0.2
    for k in range(config.num_tastes):
        idx = np.flatnonzero((taste == k) & ~staple)
        category[idx] = np.searchsorted(catalog.taste_cat_cdf[k], u[idx], side="right")
    category[staple] = np.searchsorted(catalog.staple_cdf, u[staple], side="right")
    category = np.minimum(category, len(catalog.cat_count) - 1)
    # product within the category: skewed to the category's first products
    within = np.floor(catalog.cat_count[category] * rng.random(total) ** 2.5).astype(np.int64)
    product = catalog.products_by_cat[catalog.cat_start[category] + within]
    # favourites: some purchases re-buy another purchase of the same user
    repeat = rng.random(total) < config.repeat_probability
    source = starts[user_of] + np.floor(rng.random(total) * counts[user_of]).astype(np.int64)
    product = np.where(repeat, product[source], product)
    # time: each user is active over a random sub-period, shops in baskets of ~4 items on preferred weekdays
    active_from = rng.integers(0, config.days // 2 + 1, size=num_users)
    basket_size = 1 + rng.poisson(3, size=num_users)
    basket = position // basket_size[user_of]
    n_baskets = (counts + basket_size - 1) // basket_size
    basket_offset = np.r_[0, np.cumsum(n_baskets)[:-1]]
    basket_day = np.floor(rng.random(int(n_baskets.sum())) * (config.days - np.repeat(active_from, n_baskets)))
    basket_day = (np.repeat(active_from, n_baskets) + basket_day).astype(np.int64)
    likes_weekend = rng.random(int(n_baskets.sum())) < np.repeat(rng.beta(1, 3, size=num_users), n_baskets)
    basket_day = np.where(likes_weekend, basket_day - (basket_day % 7) + 5, basket_day)  # move to a "weekend"
    basket_day = np.clip(basket_day, 0, config.days - 1)
    hour = np.clip(np.round(rng.normal(catalog.taste_hour[taste_a], 2.0)), 6, 23).astype(np.int64)
    basket_seconds = rng.integers(0, 3600, size=int(n_baskets.sum()))
    flat_basket = basket_offset[user_of] + basket
    start = int(np.datetime64(pd.Timestamp(config.start_date), "s").astype(np.int64))
    ts = start + basket_day[flat_basket] * 86_400 + hour[user_of] * 3600 + basket_seconds[flat_basket]
    quantity = 1 + rng.poisson(0.3, size=total)
    user_ids = np.array([f"synthetic-{first_user + i:09d}" for i in users], dtype=object)
    columns = {
        "user_id": _dictionary(user_of, user_ids),
        "timestamp": pa.array(ts.astype("datetime64[s]")),
        "category_1": _dictionary(catalog.product_dept[product], catalog.level1),
        "category_2": _dictionary(catalog.product_cat[product], catalog.level2),
        "category_3": _dictionary(catalog.product_type[product], catalog.level3),
        "category_4": _dictionary(catalog.product_sub[product], catalog.level4),
        "description": _dictionary(catalog.product_description[product], catalog.descriptions),
        "product_id": pa.array(product.astype(np.int64)),
        "quantity": pa.array(quantity.astype(np.float64)),
        "price": pa.array(np.round(quantity * catalog.price[product], 2)),
    }
    return pa.table(columns)


def write_synthetic_logs(out, config: SyntheticConfig, progress: bool = True, overwrite: bool = False) -> list[Path]:
    """Write `config.num_users` users' purchase logs as sharded parquet files under `out` (a folder).

    Memory is bounded by `config.users_per_shard` (a shard is generated, written and freed before the next).
    Each file is written under a temporary name and renamed when complete. Returns the files.
    """
    config.check()
    out = Path(out)
    _claim_folder(out, overwrite, config)
    catalog = Catalog(config)
    marker = {SYNTHETIC_MARKER_KEY: SYNTHETIC_MARKER_VALUE,
              b"shopperbert.synthetic_config": json.dumps(asdict(config)).encode()}
    from tqdm.auto import tqdm

    files = []
    n_shards = (config.num_users + config.users_per_shard - 1) // config.users_per_shard
    for shard in tqdm(range(n_shards), desc="synthetic shards", disable=not progress, leave=False):
        first = shard * config.users_per_shard
        table = generate_shard(config, catalog, first, min(config.users_per_shard, config.num_users - first))
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **marker})
        path = out / f"part-{shard:05d}.parquet"
        tmp = out / f".part-{shard:05d}.parquet.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        files.append(path)
        del table
    (out / README_FILE).write_text(
        "These purchase logs were generated by data_prep.synthetic. They are NOT real data.\n"
        + json.dumps(asdict(config), indent=2) + "\n")
    return files


def written_by_generator(path: Path) -> bool:
    """True for a file `write_synthetic_logs` writes (a part file must also carry the parquet marker)."""
    if not path.is_file() or not _GENERATED.fullmatch(path.name):
        return False
    if path.name.startswith("part-"):
        try:
            return is_synthetic_file(path)
        except DataPrepError:
            return False
    return True


def _claim_folder(out: Path, overwrite: bool, config: SyntheticConfig) -> None:
    """Create `out` (or take an empty one) and mark it; with `overwrite`, empty a folder that holds only generated
    logs. A folder holding anything else is refused: no file of the user's is deleted or mixed into a build."""
    if out.exists() and not out.is_dir():
        raise DataPrepError(f"synthetic logs folder {out} exists and is not a folder")
    entries = sorted(out.iterdir()) if out.exists() else []
    if entries and not overwrite:
        raise DataPrepError(f"output folder {out} already exists and is not empty; pass --overwrite to replace it")
    foreign = [p.name for p in entries if not written_by_generator(p)]
    if foreign:
        raise DataPrepError(f"{out} holds files the synthetic generator did not write ({foreign[:5]}); --overwrite "
                            "only replaces a folder of generated logs: choose a new or empty folder")
    try:
        for path in entries:
            path.unlink()
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f"{SYNTHETIC_DIR_MARKER}.tmp"
        tmp.write_text(json.dumps({"written_by": "data_prep synthetic generator", "config": asdict(config)}) + "\n")
        os.replace(tmp, out / SYNTHETIC_DIR_MARKER)
    except OSError as exc:
        raise DataPrepError(f"cannot write synthetic logs to {out}: {exc}") from None


def remove_stale_synthetic_folders(out: Path) -> list[Path]:
    """Delete the temporary logs folders `.<out>.synthetic-<pid>-*` of earlier builds of `out` that were killed
    before their cleanup: their process is gone and they hold only the generator's files. Returns them."""
    from .build import _pid_alive

    out = Path(out)
    prefix = f".{out.name}.synthetic-"
    removed = []
    for path in out.parent.glob(prefix + "*"):
        pid, _, rest = path.name[len(prefix):].partition("-")
        if rest and pid.isdigit() and _pid_alive(int(pid)):
            continue  # a build running now (older names carry no process id)
        if path.is_dir() and all(written_by_generator(p) for p in path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


__all__ = ["SyntheticConfig", "Catalog", "generate_shard", "write_synthetic_logs", "remove_stale_synthetic_folders",
           "written_by_generator", "SYNTHETIC_DIR_MARKER"]
