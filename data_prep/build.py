"""Build a pre-training corpus folder from a purchase-log source.

    <out>/
      dataset/                     DatasetDict.save_to_disk: splits train, validation; one row per user
      text_embeddings.safetensors  tensor "embeddings": float32 (num_descriptions, text_dim), L2-normalised rows
      descriptions.parquet         text_idx -> description, purchases, product ids
      vocab.json                   {"category_1": ["[PAD]", "[MASK]", "[CLS]", "[UNK]", value, ...], ...}
      metadata.json                vocabulary sizes (ShopperBertConfig.from_data_metadata), vocab_fingerprint, ...
      .shopperbert-corpus          marker: written by `data_prep build` (--overwrite replaces only such a folder)

The build runs in three passes over chunks of complete users (one chunk for Complete Journey), so memory is
bounded by the largest chunk plus a few bytes per user (the user ids wait on disk, `data_prep.id_ranks`):

1. `_load_chunks`: cutoff + de-duplication per chunk, per-user purchase counts and the rank of every user id
   (chunks are spilled to parquet when there are several);
2. `_filter_and_split`: user filters and the split on the per-user table; `_count_vocabularies`: vocabulary counts
   (train users only) and the distinct descriptions; `_write_texts`: text embeddings (cached);
3. `_write_user_rows`: per-user rows written as Arrow streams, then assembled as a DatasetDict
   (`data_prep.dataset_writer`).

Everything is written into a temporary folder beside the target and renamed at the end, so an interrupted build
never leaves a half-written dataset at `<out>`. `--overwrite` replaces only a folder this command wrote (marker file,
or a corpus from before the marker) that holds nothing else, and never an input (`data_prep.corpus_folder`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modeling_shopperbert.contract import NUM_SPECIAL_IDS, TEXT_INDEX_FIELD, vocabulary_fingerprint

from . import processing as P
from .corpus_metadata import corpus_metadata, iso_time
from .corpus_folder import (
    DATASET_DIR,
    DESCRIPTIONS_FILE,
    EMBEDDINGS_FILE,
    FORMAT_VERSION,
    MARKER_FILE,
    METADATA_FILE,
    VOCAB_FILE,
    check_output_location,
    commit,
    pid_alive,
    prepare_target,
    write_marker,
)
from .id_ranks import ExternalIdRanks
from .json_files import write_json
from .dataset_writer import MAX_SHARD_BYTES, ShardWriter, assemble_dataset_dict
from .schema import DataPrepError, parse_date
from .sources import LogSource
from .text import embed_texts, encoder_id, encoder_name, resolve_text_encoder

MAX_PRODUCT_IDS_PER_DESCRIPTION = 50
#: Pass 2 sums the per-chunk tallies (category values, descriptions, (description, product) pairs) every this many
#: chunks, so that its memory is bounded by the catalogue, not by the number of files.
REDUCE_TALLIES_EVERY = 8
_commit, _pid_alive = commit, pid_alive  # their names before data_prep.corpus_folder (tests, synthetic.py)


class _ChunkStore:
    """Compact logs of the chunks after pass 1: kept in memory while there is one, spilled to parquet files in
    `work` as soon as there are several."""

    def __init__(self, work: Path):
        self.work = work
        self.items: list = []  # DataFrame or Path

    def add(self, compact: pd.DataFrame) -> None:
        self.items.append(compact)
        if len(self.items) > 1:
            self.work.mkdir(parents=True, exist_ok=True)
            for i, item in enumerate(self.items):
                if isinstance(item, pd.DataFrame):
                    path = self.work / f"compact-{i:05d}.parquet"
                    pq.write_table(pa.Table.from_pandas(item, preserve_index=False), path, compression="lz4")
                    self.items[i] = path

    def __len__(self):
        return len(self.items)

    def get(self, i: int, columns=None) -> pd.DataFrame:
        item = self.items[i]
        if isinstance(item, pd.DataFrame):
            return item if columns is None else item[list(columns)]
        df = pd.read_parquet(item, columns=list(columns) if columns is not None else None)
        for col in df.columns:  # an all-null level (a log without category_3, say) comes back without its dtype
            if col != "ts" and not isinstance(df[col].dtype, pd.CategoricalDtype):
                df[col] = df[col].astype("category")
        return df


def _take_rows(compact: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    if mask.all():
        return compact
    out = compact.loc[mask].reset_index(drop=True)
    out["user_id"] = out["user_id"].cat.remove_unused_categories()
    return out


def build_dataset(source: LogSource, out, *, options: P.ProcessingOptions | None = None, text_encoder=None,
                  cache_dir=None, text_batch_size: int = 1024, overwrite: bool = False, progress: bool = True,
                  build_args: dict | None = None, log=None, engine: str = "local",
                  spark_master: str | None = None, text_device: str = "cpu", text_processes: int = 1) -> dict:
    """Build the pre-training corpus of `source` into the folder `out`; returns the metadata dict.

    Args:
        source: a `LogSource` (`CompleteJourneySource`, `FileSource`, `DataFrameSource`, ...).
        out: output folder; must not exist unless `overwrite`.
        options: `ProcessingOptions` (cutoff, de-duplication, filters, split, ...).
        text_encoder: text model spec or object (see `data_prep.text.resolve_text_encoder`); default MiniLM.
        cache_dir: text-embedding cache root (default `$SHOPPERBERT_CACHE/text` or `~/.cache/shopperbert/text`).
        text_batch_size: descriptions per encoding batch / cache shard.
        overwrite: replace an existing `out` (only a corpus folder this function wrote; see
            `check_output_location`).
        progress: show progress bars.
        build_args: free-form record of how the build was invoked (stored in metadata).
        log: a function taking one string (default: print to stderr).
        engine: "local" (pandas, this machine) or "spark" (the same pipeline as Spark DataFrame operations,
            `data_prep.spark_engine`; needs pyspark and Java); both write the same corpus folder.
        spark_master: the Spark master of `engine="spark"`: None (an active session, else the master `spark-submit`
            was given, else `local[*]`), `local[N]` or a cluster URL.
        text_device, text_processes: where the sentence-transformers model runs, and in how many worker processes
            (descriptions new to the cache only; either engine embeds them on the driver).
    """
    started = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    options = options or P.ProcessingOptions()
    options.check()
    check_text_batch_size(text_batch_size)
    start_ts = parse_date(options.start_date, "--start-date") if options.start_date is not None else None
    end_ts = parse_date(options.end_date, "--end-date") if options.end_date is not None else None
    build = _engine(engine, spark_master)
    encoder = resolve_text_encoder(text_encoder, device=text_device, processes=text_processes)
    out = Path(out)
    tmp = prepare_target(out, overwrite, getattr(source, "input_paths", ()))
    run = _BuildRun(source=source, tmp=tmp, options=options, start_ts=start_ts, end_ts=end_ts, encoder=encoder,
                    cache_dir=cache_dir, text_batch_size=text_batch_size, progress=progress, log=log,
                    build_args=build_args or {}, started=started, engine=engine)
    try:
        metadata = build(run)
        write_marker(tmp, metadata)
        commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {metadata['build_seconds']:.1f} s")
    return metadata


ENGINES = ("local", "spark")


def _engine(engine: str, spark_master: str | None) -> Callable[["_BuildRun"], dict]:
    """The function that writes the corpus files of one build: `_build` (local) or the Spark engine's (checked for
    pyspark before any work)."""
    if engine == "local":
        return _build
    if engine != "spark":
        raise DataPrepError(f"--engine must be one of {ENGINES}, got {engine!r}")
    from .spark_engine import check_spark_available, spark_build

    check_spark_available()
    return lambda run: spark_build(run, spark_master)


def check_text_batch_size(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataPrepError(f"--text-batch-size must be a positive integer, got {value!r}")


# -- the build, step by step ------------------------------------------------------------------------------------------

@dataclass
class _BuildRun:
    """What every step of one build reads: the checked arguments of `build_dataset`, its temporary folder and the
    step timings it fills in."""

    source: LogSource
    tmp: Path  # the temporary corpus folder, renamed to `out` at the end
    options: P.ProcessingOptions
    start_ts: pd.Timestamp | None  # options.start_date, parsed
    end_ts: pd.Timestamp | None  # options.end_date, parsed
    encoder: object  # a resolved text encoder (`data_prep.text.resolve_text_encoder`)
    cache_dir: object
    text_batch_size: int
    progress: bool
    log: Callable[[str], None]
    build_args: dict
    started: float  # time.perf_counter() when build_dataset began
    timings: dict = field(default_factory=dict)  # "<step>_seconds" -> seconds, stored in metadata.json
    engine: str = "local"  # "local" or "spark" (see `build_dataset`)

    @property
    def work(self) -> Path:
        """Scratch folder inside `tmp` (spilled chunks, shard files); deleted once the dataset is assembled."""
        return self.tmp / "_work"


@dataclass
class _Loaded:
    """Pass 1: one row per user (the local engine: the column n of `processing.user_table`, its users in chunk then
    user-code order; the Spark engine: all its columns), the row counts of metadata.json's "counts", and the first and
    last raw purchase (unix seconds)."""

    users: pd.DataFrame | None  # None once the filters and the split have run (local engine)
    counts: dict
    raw_first: int
    raw_last: int
    id_rank: np.ndarray | None = None  # local engine: per user, the rank of its id (`users` has no user_id column)
    data_span: tuple | None = None  # local engine: first and last purchase after the time window (unix seconds)
    chunk_starts: np.ndarray | None = None  # local engine: the first row of each chunk's users, then the row count


@dataclass
class _Split:
    """The kept users with their split (column "split": 1 train, 2 validation), the filter report, and (local engine)
    per chunk the status of its users (`_filter_and_split`; None when the filters removed all of them)."""

    users: pd.DataFrame
    filter_report: list
    chunk_status: list
    kept: np.ndarray | None = None  # which rows of the loaded user table were kept (until chunk_status is made)


@dataclass
class _Vocabularies:
    """Pass 2: the category vocabularies (train split), the year range of the date ids and the distinct
    descriptions of the kept purchases (text_idx = row)."""

    vocab: dict
    date_base_year: int
    last_year: int
    year_vocab_size: int
    descriptions: pd.DataFrame
    kept_span: tuple | None = None  # local engine: the first and last kept purchase (unix seconds)


@dataclass
class _Texts:
    """The text-embedding step: the embedding size and statistics (texts, cached, encoded, ...)."""

    embedding_size: int
    stats: dict


@dataclass
class _Rows:
    """Pass 3: users and purchases per split, and every written row's sequence length."""

    split_counts: dict
    lengths: np.ndarray


def _build(run: _BuildRun) -> dict:
    """Write the corpus files into `run.tmp`; returns the metadata written to metadata.json."""
    store = _ChunkStore(run.work)
    loaded = _load_chunks(run, store)
    split = _filter_and_split(run, store, loaded)
    loaded.users = loaded.id_rank = None  # per user read; split.chunk_status keeps what the passes that follow need
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages (the sorts of every user id)
    vocabularies = _count_vocabularies(run, store, split.chunk_status)
    texts = _write_texts(run, vocabularies.descriptions)
    rows = _write_user_rows(run, store, split.chunk_status, vocabularies)
    return finish_build(run, loaded, split, vocabularies, texts, rows)


def finish_build(run: _BuildRun, loaded: _Loaded, split: _Split, vocabularies: _Vocabularies, texts: _Texts,
                 rows: _Rows) -> dict:
    """The last step of either engine: vocab.json, its fingerprint and metadata.json; returns the metadata."""
    write_json(run.tmp / VOCAB_FILE, vocabularies.vocab, newline=True)
    fingerprint = vocabulary_fingerprint(json.loads((run.tmp / VOCAB_FILE).read_text()))  # of the file's content
    metadata = corpus_metadata(run, loaded, split, vocabularies, texts, rows, fingerprint)
    write_json(run.tmp / METADATA_FILE, metadata, newline=True)
    split_counts = rows.split_counts
    run.log(f"splits: train {split_counts['train']['users']:,} users / {split_counts['train']['purchases']:,} "
            f"purchases; validation {split_counts['validation']['users']:,} users / "
            f"{split_counts['validation']['purchases']:,} purchases")
    return metadata


def _load_chunks(run: _BuildRun, store: _ChunkStore) -> _Loaded:
    """Pass 1: time window and de-duplication per chunk, per-user counts; the compact chunks go to `store`, the user ids
    to an `ExternalIdRanks` (on disk: memory then holds a few bytes per user, not the ids)."""
    t0 = time.perf_counter()
    counts = {"raw_rows": 0, "rows_in_time_window": 0, "duplicates_removed": 0, "rows_after_dedup": 0}
    ids = ExternalIdRanks(run.work / "ids")
    n_parts, chunk_users, labels = [], [], []
    raw_first = raw_last = data_first = data_last = None
    for label, df in run.source.chunks():
        counts["raw_rows"] += len(df)
        ts = df["timestamp"].to_numpy()
        first, last = P.to_unix_seconds(ts.min()).item(), P.to_unix_seconds(ts.max()).item()
        raw_first = first if raw_first is None else min(raw_first, first)
        raw_last = last if raw_last is None else max(raw_last, last)
        df = P.apply_time_window(df, run.start_ts, run.end_ts)
        counts["rows_in_time_window"] += len(df)
        if len(df) == 0:
            continue
        compact, removed = P.compact_log(df, dedup=run.options.dedup)
        del df
        counts["duplicates_removed"] += removed
        counts["rows_after_dedup"] += len(compact)
        table = P.user_table(compact)  # one row per user, in user-code order
        ids.add(table["user_id"])
        n_parts.append(table["n"].to_numpy())
        first, last = int(table["first_ts"].min()), int(table["last_ts"].max())
        data_first = first if data_first is None else min(data_first, first)
        data_last = last if data_last is None else max(data_last, last)
        chunk_users.append(len(table))
        labels.append(label)
        store.add(compact)
        del compact, table
    run.timings["load_dedup_seconds"] = round(time.perf_counter() - t0, 2)
    _check_purchases_left(run, counts, raw_first, raw_last)
    id_rank, chunk_starts = ids.ranks(), np.r_[0, np.cumsum(chunk_users)].astype(np.int64)
    if ids.duplicate is not None:
        _refuse_duplicate(ids.duplicate, chunk_starts, labels)
    users = pd.DataFrame({"n": np.concatenate(n_parts)})
    del n_parts
    loaded = loaded_users(run, users, counts, raw_first, raw_last)
    loaded.id_rank, loaded.data_span, loaded.chunk_starts = id_rank, (data_first, data_last), chunk_starts
    return loaded


def loaded_users(run: _BuildRun, users: pd.DataFrame, counts: dict, raw_first: int, raw_last: int) -> _Loaded:
    """Pass 1's result (both engines): the user table and the row counts, logged."""
    counts["users_after_dedup"] = len(users)
    run.log(f"read {counts['raw_rows']:,} purchases; {counts['rows_in_time_window']:,} in the time window; "
            f"{counts['rows_after_dedup']:,} after de-duplication ({counts['duplicates_removed']:,} repeats removed); "
            f"{len(users):,} users")
    return _Loaded(users=users, counts=counts, raw_first=raw_first, raw_last=raw_last)


def _check_purchases_left(run: _BuildRun, counts: dict, raw_first, raw_last) -> None:
    """Refuse a source without purchases, or a time window that leaves none."""
    if counts["raw_rows"] == 0:
        raise DataPrepError("the source holds no purchase")
    if counts["rows_in_time_window"] == 0:
        start_ts, end_ts = run.start_ts, run.end_ts
        window = " and ".join(filter(None, [f"at or after --start-date {start_ts}" if start_ts is not None else "",
                                            f"before --end-date {end_ts}" if end_ts is not None else ""]))
        raise DataPrepError(f"no purchase is left {window}: the data spans {iso_time(raw_first)} to {iso_time(raw_last)}")


def _refuse_duplicate(duplicate: tuple, chunk_starts: np.ndarray, labels: list) -> None:
    """Refuse a user found in several chunks (files claimed to be partitioned by user): `duplicate` is
    `ExternalIdRanks.duplicate`, (id, the rows holding it)."""
    uid, rows = duplicate
    where = sorted({labels[c] for c in np.searchsorted(chunk_starts, rows, side="right") - 1})
    raise DataPrepError(f"user {uid!r} appears in several input files ({where[:2]}); the files must be "
                        "partitioned by user (every user in one file), or drop --partitioned-by-user")


def _filter_and_split(run: _BuildRun, store: _ChunkStore, loaded: _Loaded) -> _Split:
    """The user filters (minimum activity, top buyers) and the train/validation split of the kept users; per chunk,
    the status of its users (0 filtered out, 1 train, 2 validation; in user-code order) or None if none is kept."""
    split = filter_and_split_users(
        run, loaded.users, lambda start: _covered_windows(store, start, run.options.min_monthly_rate),
        id_rank=loaded.id_rank, data_span=loaded.data_span)
    status = np.zeros(len(loaded.users), dtype=np.int8)
    status[split.kept] = split.users["split"].to_numpy()
    starts = loaded.chunk_starts
    split.chunk_status = [status[a:b] if status[a:b].any() else None for a, b in zip(starts[:-1], starts[1:])]
    split.kept = None
    return split


def filter_and_split_users(run: _BuildRun, users: pd.DataFrame, covered_windows: Callable[[int], np.ndarray],
                           id_rank: np.ndarray, data_span: tuple | None = None) -> _Split:
    """The user filters and the split on a user table, shared by both engines: one row per user with the column n
    (purchases), and first_ts and last_ts unless `data_span` gives the first and last purchase (unix seconds);
    `id_rank` is per row the rank of its user id in code-point order (`id_ranks.ExternalIdRanks`, Spark's sort),
    which stands in for the ids.
    `covered_windows(period_start)` gives, per row of `users`, the activity windows holding a purchase (called only
    for the "windows" rule). The result's `users` are the kept rows with a column "split" (1 train, 2 validation),
    its `kept` the mask of them; `chunk_status` is left empty."""
    options = run.options
    data_first, data_last = data_span or (int(users["first_ts"].min()), int(users["last_ts"].max()))
    period_start = max(data_first, P.timestamp_to_seconds(run.start_ts)) if run.start_ts is not None else data_first
    period_end = P.timestamp_to_seconds(run.end_ts) if run.end_ts is not None else data_last
    covered = None
    if options.min_monthly_rate > 0 and options.activity_rule == "windows":
        covered = covered_windows(period_start)
    kept, filter_report = P.apply_user_filters(users, period_start, period_end, options, covered, id_rank=id_rank)
    for item in filter_report:
        run.log(f"filter {item['filter']}: {item['rule']}: removed {item['users_removed']:,} users "
                f"({item['purchases_removed']:,} purchases)")
    everyone = kept.all()
    users = users.loc[kept].reset_index(drop=True) if not everyone else users
    is_val = P.split_users(None, options.validation_fraction, options.seed,
                           id_rank=id_rank if everyone else id_rank[kept])
    users["split"] = np.where(is_val, 2, 1).astype(np.int8)  # 1 train, 2 validation
    return _Split(users=users, filter_report=filter_report, chunk_status=[], kept=kept)


def _covered_windows(store: _ChunkStore, period_start: int, min_monthly_rate: float) -> np.ndarray:
    """Per user (in chunk and user-code order): the number of activity windows holding one of their purchases."""
    parts = []
    for i in range(len(store)):
        c = store.get(i, ["user_id", "ts"])
        frame = pd.DataFrame({"u": c["user_id"].cat.codes.to_numpy(),
                              "w": P.window_ids(c["ts"].to_numpy(), period_start, min_monthly_rate)})
        parts.append(frame.drop_duplicates().groupby("u").size().to_numpy())
    return np.concatenate(parts)


def _count_vocabularies(run: _BuildRun, store: _ChunkStore, chunk_status: list) -> _Vocabularies:
    """Pass 2: vocabulary counts (train users only), the year range and the distinct descriptions."""
    t0 = time.perf_counter()
    train_counts, desc_parts = [], []
    train_years = [None, None]
    all_years = [None, None]
    kept_span = None
    for i, group in enumerate(chunk_status):
        if group is None:
            continue
        compact = store.get(i)
        row_split = _row_split(compact, group)
        kept_rows = row_split > 0
        train_rows = row_split == 1
        if train_rows.any():
            train_counts.append(P.count_category_values(_take_rows(compact, train_rows)))
            train_years = _widen_years(train_years, compact["ts"].to_numpy()[train_rows])
        kept_ts = compact["ts"].to_numpy()[kept_rows]
        all_years = _widen_years(all_years, kept_ts)
        span = (int(kept_ts.min()), int(kept_ts.max()))
        kept_span = span if kept_span is None else (min(kept_span[0], span[0]), max(kept_span[1], span[1]))
        desc_parts.append(_description_stats(compact, kept_rows))
        del compact
        if len(desc_parts) >= REDUCE_TALLIES_EVERY:  # one tally per chunk would grow with the number of files
            desc_parts = [_combine_description_stats(desc_parts)]
            train_counts = [P.merge_counts(train_counts)] if train_counts else []
    vocabularies = vocabularies_from_counts(run, train_counts, train_years, all_years, desc_parts)
    vocabularies.kept_span = kept_span
    run.timings["vocab_seconds"] = round(time.perf_counter() - t0, 2)
    return vocabularies


def vocabularies_from_counts(run: _BuildRun, train_counts: list, train_years: list, all_years: list,
                             desc_parts: list) -> _Vocabularies:
    """The vocabularies, year range and description table from counted parts, shared by both engines.

    Args:
        train_counts: per part, `processing.count_category_values` of its train rows.
        train_years, all_years: [first, last] calendar year of the train rows and of all kept rows.
        desc_parts: per part, (descriptions with "num_purchases", distinct (description, product_id) pairs or None),
            as `_description_stats` returns them.
    """
    vocab = P.build_vocab(P.merge_counts(train_counts), run.options.min_category_count)
    date_base_year = int(train_years[0])
    last_year = int(max(all_years[1], train_years[1]))
    year_vocab_size = NUM_SPECIAL_IDS + (last_year - date_base_year + 1)
    descriptions = _merge_description_stats(desc_parts)
    run.log("vocabularies (train split): " + ", ".join(f"{k} {len(v) - NUM_SPECIAL_IDS:,}" for k, v in vocab.items())
            + f"; years {date_base_year}-{last_year}; {len(descriptions):,} distinct descriptions")
    return _Vocabularies(vocab=vocab, date_base_year=date_base_year, last_year=last_year,
                         year_vocab_size=year_vocab_size, descriptions=descriptions)


def _widen_years(years: list, ts: np.ndarray) -> list:
    """[first, last] calendar year (None while unknown) widened to cover the purchase times `ts` (unix seconds)."""
    y = P.date_parts(np.array([ts.min(), ts.max()]))["year"]
    return [y[0] if years[0] is None else min(years[0], y[0]), y[1] if years[1] is None else max(years[1], y[1])]


def _write_texts(run: _BuildRun, descriptions: pd.DataFrame) -> _Texts:
    """Embed the descriptions (cached) and write text_embeddings.safetensors and descriptions.parquet."""
    t0 = time.perf_counter()
    try:
        embeddings, text_stats = embed_texts(descriptions["description"].tolist(), run.encoder,
                                             cache_dir=run.cache_dir, batch_size=run.text_batch_size,
                                             progress=run.progress)
    finally:
        if getattr(run.encoder, "_pool", None) is not None:  # the worker processes of --text-processes
            run.encoder.close()
    run.timings["text_seconds"] = round(time.perf_counter() - t0, 2)
    if embeddings.ndim != 2 or len(embeddings) != len(descriptions) or len(embeddings) == 0:
        raise RuntimeError(f"the text embeddings have shape {embeddings.shape} for {len(descriptions)} "
                           "descriptions; no corpus was written")
    run.log(f"text embeddings: {text_stats['texts']:,} descriptions, {text_stats['cached']:,} from the cache, "
            f"{text_stats['encoded']:,} encoded" + (f" ({text_stats['texts_per_second']} /s)"
                                                    if text_stats["encoded"] else ""))
    path = run.tmp / EMBEDDINGS_FILE
    write_safetensors(path, {"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)},
                      {"text_model": encoder_name(run.encoder), "text_model_id": encoder_id(run.encoder)})
    os.chmod(path, 0o644)
    pq.write_table(pa.Table.from_pandas(descriptions, preserve_index=False), run.tmp / DESCRIPTIONS_FILE)
    return _Texts(embedding_size=int(embeddings.shape[1]), stats=text_stats)


#: numpy dtypes -> safetensors' names, for `write_safetensors`.
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "float64": "F64", "int64": "I64", "int32": "I32"}


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """A safetensors file whose bytes depend on its content only (safetensors' own writer orders the header's keys
    like a hash map, which changes between runs: same tensors, another checksum): the header with sorted keys (the
    format's 8-byte length, JSON, spaces to an 8-byte boundary), then each tensor's bytes in name order, written
    from the arrays without a copy of the whole file in memory."""
    import struct

    arrays = {name: np.ascontiguousarray(tensors[name]) for name in sorted(tensors)}
    header, offset = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}, 0
    for name, array in arrays.items():
        if array.dtype.name not in SAFETENSORS_DTYPES:
            raise ValueError(f"write_safetensors: tensor {name!r} has dtype {array.dtype}, not one of "
                             f"{sorted(SAFETENSORS_DTYPES)}")
        header[name] = {"dtype": SAFETENSORS_DTYPES[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for array in arrays.values():
            if array.size:
                handle.write(memoryview(array.reshape(-1)).cast("B"))  # the array's own bytes, no copy


def _write_user_rows(run: _BuildRun, store: _ChunkStore, chunk_status: list,
                     vocabularies: _Vocabularies) -> _Rows:
    """Pass 3: the per-user rows of each split as Arrow shards, assembled into the DatasetDict folder."""
    t0 = time.perf_counter()
    descriptions = vocabularies.descriptions["description"]
    description_index = pd.Index(descriptions.to_numpy(dtype=object), dtype=object)
    schema = P.output_schema()
    split_names = {1: "train", 2: "validation"}
    writers = {name: ShardWriter(run.work / name, schema, MAX_SHARD_BYTES) for name in split_names.values()}
    split_counts = {name: {"users": 0, "purchases": 0} for name in split_names.values()}
    seq_lengths = []
    try:
        for i, group in enumerate(chunk_status):
            if group is None:
                continue
            compact = store.get(i)
            row_split = _row_split(compact, group)
            for code, name in split_names.items():
                rows = row_split == code
                if not rows.any():
                    continue
                table = P.encode_rows(_take_rows(compact, rows), vocabularies.vocab, description_index,
                                      vocabularies.date_base_year, vocabularies.year_vocab_size)
                writers[name].write(table)
                split_counts[name]["users"] += table.num_rows
                split_counts[name]["purchases"] += int(rows.sum())
                seq_lengths.append(table.column("num_purchases").to_numpy())
            del compact
    finally:
        for writer in writers.values():
            writer.close()
    run.timings["encode_seconds"] = round(time.perf_counter() - t0, 2)
    assemble_splits(run, writers, split_counts)
    return _Rows(split_counts=split_counts, lengths=np.concatenate(seq_lengths) if seq_lengths else np.zeros(0))


def assemble_splits(run: _BuildRun, writers: dict, split_counts: dict) -> None:
    """The written shards of each split (`ShardWriter`s) into the DatasetDict folder; the scratch folder goes."""
    t0 = time.perf_counter()
    assemble_dataset_dict(writers, P.output_schema(), run.tmp / DATASET_DIR, split_counts)
    shutil.rmtree(run.work, ignore_errors=True)
    run.timings["save_seconds"] = round(time.perf_counter() - t0, 2)


def _row_split(compact: pd.DataFrame, status: np.ndarray) -> np.ndarray:
    """Per row of a chunk's compact log: 0 filtered out, 1 train, 2 validation, from the status of the chunk's users
    in user-code order (`_filter_and_split`; `processing.user_table`'s rows)."""
    codes = compact["user_id"].cat.codes.to_numpy()
    starts = P.user_offsets(codes)[:-1]
    if len(starts) != len(status):
        raise RuntimeError(f"a chunk holds {len(starts)} users, its status {len(status)}")  # internal invariant
    by_code = np.zeros(len(compact["user_id"].cat.categories), dtype=np.int8)
    by_code[codes[starts]] = status
    return by_code[codes]


def _description_stats(compact: pd.DataFrame, rows: np.ndarray) -> tuple:
    """(descriptions with purchase counts, distinct (description, product id) pairs or None) of the given rows
    of a chunk."""
    desc = compact["description"]
    codes = desc.cat.codes.to_numpy()[rows]
    tally = np.bincount(codes, minlength=len(desc.cat.categories))
    used = np.flatnonzero(tally)
    frame = pd.DataFrame({"description": np.asarray(desc.cat.categories, dtype=object)[used],
                          "num_purchases": tally[used].astype(np.int64)})
    pid = compact["product_id"]
    pairs = None
    if pid.notna().any():
        pairs = pd.DataFrame({"d": codes, "p": pid.cat.codes.to_numpy()[rows]})
        pairs = pairs[pairs["p"] >= 0].drop_duplicates()
        pairs = pd.DataFrame({
            "description": np.asarray(desc.cat.categories, dtype=object)[pairs["d"].to_numpy()],
            "product_id": np.asarray(pid.cat.categories, dtype=object)[pairs["p"].to_numpy()].astype(str)})
    return frame, pairs


def _combine_description_stats(parts: list) -> tuple:
    """Several `_description_stats` parts as one: purchase counts summed per description, pairs made distinct."""
    frame = pd.concat([p[0] for p in parts], ignore_index=True).groupby(
        "description", sort=False, as_index=False)["num_purchases"].sum()
    pairs = [p[1] for p in parts if p[1] is not None]
    return frame, (pd.concat(pairs, ignore_index=True).drop_duplicates(ignore_index=True) if pairs else None)


def _merge_description_stats(parts: list) -> pd.DataFrame:
    """Sorted distinct descriptions (text_idx = row) with their purchase counts and up to 50 product ids."""
    counts, pairs = _combine_description_stats(parts)
    counts = counts.sort_values("description", kind="stable", ignore_index=True)
    frame = pd.DataFrame({TEXT_INDEX_FIELD: np.arange(len(counts), dtype=np.int32),
                          "description": counts["description"].to_numpy(dtype=object),
                          "num_purchases": counts["num_purchases"].to_numpy(dtype=np.int64)})
    if pairs is not None:
        grouped = pairs.groupby("description", sort=False)["product_id"].agg(
            lambda s: sorted(s.tolist())[:MAX_PRODUCT_IDS_PER_DESCRIPTION])
        ids = grouped.reindex(frame["description"])
        frame["product_ids"] = [list(v) if isinstance(v, list) else [] for v in ids.to_numpy(dtype=object)]
        frame["num_products"] = pairs.groupby("description")["product_id"].size().reindex(
            frame["description"]).fillna(0).to_numpy(dtype=np.int64)
    else:
        frame["product_ids"] = [[] for _ in range(len(frame))]
        frame["num_products"] = np.zeros(len(frame), dtype=np.int64)
    return frame


__all__ = ["build_dataset", "check_output_location", "check_text_batch_size", "FORMAT_VERSION", "MARKER_FILE",
           "DATASET_DIR", "EMBEDDINGS_FILE", "DESCRIPTIONS_FILE", "VOCAB_FILE",
           "METADATA_FILE"]
