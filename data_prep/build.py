"""Build a pre-training corpus folder from a purchase-log source.

    <out>/
      dataset/                     DatasetDict.save_to_disk: splits train, validation; one row per user
      text_embeddings.safetensors  tensor "embeddings": float32 (num_descriptions, text_dim), L2-normalised rows
      descriptions.parquet         text_idx -> description, purchases, product ids
      vocab.json                   {"category_1": ["[PAD]", "[MASK]", "[CLS]", "[UNK]", value, ...], ...}
      metadata.json                vocabulary sizes (ShopperBertConfig.from_data_metadata), vocab_fingerprint, ...
      .shopperbert-corpus          marker: written by `data_prep build` (--overwrite replaces only such a folder)

The build runs in three passes over chunks of complete users (one chunk for Complete Journey), so memory is
bounded by the largest chunk plus per-user counters:

1. cutoff + de-duplication per chunk, per-user counts (chunks are spilled to parquet when there are several);
2. user filters and the split on the per-user table; then vocabulary counts (train users only) and the distinct
   descriptions; text embeddings (cached);
3. per-user rows written as Arrow streams, then saved as a DatasetDict.

Everything is written into a temporary folder beside the target and renamed at the end, so an interrupted build
never leaves a half-written dataset at `<out>`. `--overwrite` replaces only a folder this command wrote (marker file,
or a corpus from before the marker) that holds nothing else, and never an input.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modeling_shopperbert.contract import (
    CATEGORY_FIELDS,
    DAY_VOCAB_SIZE,
    FINGERPRINT_KEY,
    HOUR_VOCAB_SIZE,
    MONTH_VOCAB_SIZE,
    NUM_SPECIAL_IDS,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    WEEKDAY_VOCAB_SIZE,
    vocabulary_fingerprint,
)

from . import processing as P
from .schema import DataPrepError, parse_date
from .sources import LogSource
from .text import embed_texts, encoder_id, encoder_name, resolve_text_encoder

FORMAT_VERSION = 1
DATASET_DIR = "dataset"
EMBEDDINGS_FILE = "text_embeddings.safetensors"
DESCRIPTIONS_FILE = "descriptions.parquet"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "metadata.json"
MARKER_FILE = ".shopperbert-corpus"
CORPUS_ENTRIES = (DATASET_DIR, EMBEDDINGS_FILE, DESCRIPTIONS_FILE, VOCAB_FILE, METADATA_FILE, MARKER_FILE)
MAX_PRODUCT_IDS_PER_DESCRIPTION = 50
MAX_SHARD_BYTES = 500 * 1000**2  # a new dataset shard file starts above this size (datasets' default)


def _iso(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s"))


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
        return df


def _take_rows(compact: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    if mask.all():
        return compact
    out = compact.loc[mask].reset_index(drop=True)
    out["user_id"] = out["user_id"].cat.remove_unused_categories()
    return out


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def check_output_location(out, overwrite: bool = False, inputs=()) -> Path:
    """Refuse (`DataPrepError`, before any work) an output folder that is, contains or lies inside one of `inputs`,
    that exists without `overwrite`, that `overwrite` must not replace (see `_not_replaceable`), or whose parent
    cannot be created. Returns `out` as a Path."""
    out = Path(out)
    target = out.resolve()
    for item in inputs:
        path = Path(item).resolve()
        if target == path or target in path.parents or path in target.parents:
            raise DataPrepError(f"--out {out} is, contains or lies inside the input {item}; write the corpus to "
                                "another folder")
    if out.exists():
        if not overwrite:
            raise DataPrepError(f"output folder {out} already exists; pass --overwrite to replace it")
        if not out.is_dir():
            raise DataPrepError(f"output path {out} exists and is not a folder")
        _check_replaceable(out)
    _check_parent(out)
    return out


def _check_replaceable(out: Path) -> None:
    reason = _not_replaceable(out)
    if reason:
        raise DataPrepError(f"--overwrite refused for {out}: {reason}; nothing was deleted. Choose another --out, or "
                            "move that folder away yourself")


def _not_replaceable(folder: Path) -> str | None:
    """Why `--overwrite` must not replace `folder`, or None: it may replace an empty folder or a corpus this command
    wrote (marker file; corpora from before the marker are recognised by their files) holding only corpus files."""
    names = {p.name for p in folder.iterdir()}
    extra = sorted(names - set(CORPUS_ENTRIES))
    if names and MARKER_FILE not in names and not {DATASET_DIR, METADATA_FILE, VOCAB_FILE} <= names:
        return f"it was not written by `data_prep build` (no {MARKER_FILE} marker; it holds {sorted(names)[:5]})"
    if extra:
        return f"it holds files that are not part of a corpus ({extra[:5]})"
    return None


def _check_parent(out: Path) -> None:
    parent = out.absolute().parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise DataPrepError(f"cannot create {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataPrepError(f"cannot create {out}: no permission to write in {existing}")


def _prepare_target(out: Path, overwrite: bool, inputs=()) -> Path:
    check_output_location(out, overwrite, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise DataPrepError(f"cannot create {out}: {exc}") from None
    return tmp


def _write_marker(folder: Path, metadata: dict) -> None:
    _write_json(folder / MARKER_FILE, {"written_by": "python -m data_prep build", "format_version": FORMAT_VERSION,
                                       FINGERPRINT_KEY: metadata[FINGERPRINT_KEY]})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary folders of earlier builds of `out` whose process is gone (killed without cleanup)."""
    for path in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(path.name[len(f".{out.name}.tmp-"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    for path in out.parent.glob(f".{out.name}.old-*"):  # a replaced corpus whose deletion was interrupted
        if path.is_dir() and _not_replaceable(path) is None:
            shutil.rmtree(path, ignore_errors=True)


def _commit(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` with renames (the old folder is moved aside first, then deleted)."""
    old = None
    if out.exists():
        _check_replaceable(out)  # again: the user may have put files there while the build ran
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_dataset(source: LogSource, out, *, options: P.ProcessingOptions | None = None, text_encoder=None,
                  cache_dir=None, text_batch_size: int = 1024, overwrite: bool = False, progress: bool = True,
                  build_args: dict | None = None, log=None) -> dict:
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
    """
    started = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    options = options or P.ProcessingOptions()
    options.check()
    check_text_batch_size(text_batch_size)
    start_ts = parse_date(options.start_date, "--start-date") if options.start_date is not None else None
    end_ts = parse_date(options.end_date, "--end-date") if options.end_date is not None else None
    encoder = resolve_text_encoder(text_encoder)
    out = Path(out)
    tmp = _prepare_target(out, overwrite, getattr(source, "input_paths", ()))
    try:
        metadata = _build(source, out, tmp, options, start_ts, end_ts, encoder, cache_dir, text_batch_size,
                          progress, build_args, log, started)
        _write_marker(tmp, metadata)
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out} in {metadata['build_seconds']:.1f} s")
    return metadata


def check_text_batch_size(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataPrepError(f"--text-batch-size must be a positive integer, got {value!r}")


def _build(source, out, tmp, options, start_ts, end_ts, encoder, cache_dir, text_batch_size, progress,
           build_args, log, started) -> dict:
    work = tmp / "_work"
    store = _ChunkStore(work)
    counts = {"raw_rows": 0, "rows_in_time_window": 0, "duplicates_removed": 0, "rows_after_dedup": 0}
    user_tables, labels = [], []
    raw_first = raw_last = None
    timings = {}

    # -- pass 1: cutoff, de-duplication, per-user counts ------------------------------------------------------------
    t0 = time.perf_counter()
    for label, df in source.chunks():
        counts["raw_rows"] += len(df)
        ts = df["timestamp"].to_numpy()
        first, last = P.to_unix_seconds(ts.min()).item(), P.to_unix_seconds(ts.max()).item()
        raw_first = first if raw_first is None else min(raw_first, first)
        raw_last = last if raw_last is None else max(raw_last, last)
        df = P.apply_time_window(df, start_ts, end_ts)
        counts["rows_in_time_window"] += len(df)
        if len(df) == 0:
            continue
        compact, removed = P.compact_log(df, dedup=options.dedup)
        del df
        counts["duplicates_removed"] += removed
        counts["rows_after_dedup"] += len(compact)
        table = P.user_table(compact)
        table["chunk"] = len(store)
        user_tables.append(table)
        labels.append(label)
        store.add(compact)
        del compact
    timings["load_dedup_seconds"] = round(time.perf_counter() - t0, 2)
    if counts["raw_rows"] == 0:
        raise DataPrepError("the source holds no purchase")
    if counts["rows_in_time_window"] == 0:
        window = " and ".join(filter(None, [f"at or after --start-date {start_ts}" if start_ts is not None else "",
                                            f"before --end-date {end_ts}" if end_ts is not None else ""]))
        raise DataPrepError(f"no purchase is left {window}: the data spans {_iso(raw_first)} to {_iso(raw_last)}")
    users = pd.concat(user_tables, ignore_index=True) if len(user_tables) > 1 else user_tables[0]
    del user_tables
    if len(store) > 1:
        dup = users["user_id"].duplicated(keep=False)
        if dup.any():
            uid = users.loc[dup, "user_id"].iloc[0]
            where = sorted({labels[c] for c in users.loc[users["user_id"] == uid, "chunk"]})
            raise DataPrepError(f"user {uid!r} appears in several input files ({where[:2]}); the files must be "
                                "partitioned by user (every user in one file), or drop --partitioned-by-user")
    counts["users_after_dedup"] = len(users)
    log(f"read {counts['raw_rows']:,} purchases; {counts['rows_in_time_window']:,} in the time window; "
        f"{counts['rows_after_dedup']:,} after de-duplication ({counts['duplicates_removed']:,} repeats removed); "
        f"{len(users):,} users")

    # -- user filters and split ----------------------------------------------------------------------------------
    data_first = int(users["first_ts"].min())
    data_last = int(users["last_ts"].max())
    period_start = max(data_first, P.timestamp_to_seconds(start_ts)) if start_ts is not None else data_first
    period_end = P.timestamp_to_seconds(end_ts) if end_ts is not None else data_last
    covered = None
    if options.min_monthly_rate > 0 and options.activity_rule == "windows":
        parts = []
        for i in range(len(store)):
            c = store.get(i, ["user_id", "ts"])
            frame = pd.DataFrame({"u": c["user_id"].cat.codes.to_numpy(),
                                  "w": P.window_ids(c["ts"].to_numpy(), period_start, options.min_monthly_rate)})
            parts.append(frame.drop_duplicates().groupby("u").size().to_numpy())
        covered = np.concatenate(parts)
    kept, filter_report = P.apply_user_filters(users, period_start, period_end, options, covered)
    for item in filter_report:
        log(f"filter {item['filter']}: {item['rule']}: removed {item['users_removed']:,} users "
            f"({item['purchases_removed']:,} purchases)")
    users = users.loc[kept].reset_index(drop=True) if not kept.all() else users
    is_val = P.split_users(users["user_id"].to_numpy(), options.validation_fraction, options.seed)
    users["split"] = np.where(is_val, 2, 1).astype(np.int8)  # 1 train, 2 validation
    # per chunk: its kept users with their split (None when the filters removed all of them)
    kept_by_chunk = dict(tuple(users.groupby("chunk", sort=True)))
    chunk_status = [kept_by_chunk.get(i) for i in range(len(store))]

    # -- pass 2: vocabulary counts (train users only), descriptions, years ----------------------------------------------
    t0 = time.perf_counter()
    train_counts, desc_parts = [], []
    train_years = [None, None]
    all_years = [None, None]
    for i in range(len(store)):
        group = chunk_status[i]
        if group is None:
            continue
        compact = store.get(i)
        row_split = _row_split(compact, group)
        kept_rows = row_split > 0
        train_rows = row_split == 1
        if train_rows.any():
            train_counts.append(P.count_category_values(_take_rows(compact, train_rows)))
            ts_train = compact["ts"].to_numpy()[train_rows]
            y = P.date_parts(np.array([ts_train.min(), ts_train.max()]))["year"]
            train_years = [y[0] if train_years[0] is None else min(train_years[0], y[0]),
                           y[1] if train_years[1] is None else max(train_years[1], y[1])]
        ts_kept = compact["ts"].to_numpy()[kept_rows]
        y = P.date_parts(np.array([ts_kept.min(), ts_kept.max()]))["year"]
        all_years = [y[0] if all_years[0] is None else min(all_years[0], y[0]),
                     y[1] if all_years[1] is None else max(all_years[1], y[1])]
        desc_parts.append(_description_stats(compact, kept_rows))
        del compact
    vocab = P.build_vocab(P.merge_counts(train_counts), options.min_category_count)
    del train_counts
    date_base_year = int(train_years[0])
    last_year = int(max(all_years[1], train_years[1]))
    year_vocab_size = NUM_SPECIAL_IDS + (last_year - date_base_year + 1)
    descriptions = _merge_description_stats(desc_parts)
    del desc_parts
    timings["vocab_seconds"] = round(time.perf_counter() - t0, 2)
    log("vocabularies (train split): " + ", ".join(f"{k} {len(v) - NUM_SPECIAL_IDS:,}" for k, v in vocab.items())
        + f"; years {date_base_year}-{last_year}; {len(descriptions):,} distinct descriptions")

    # -- text embeddings ----------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    embeddings, text_stats = embed_texts(descriptions["description"].tolist(), encoder, cache_dir=cache_dir,
                                         batch_size=text_batch_size, progress=progress)
    timings["text_seconds"] = round(time.perf_counter() - t0, 2)
    if embeddings.ndim != 2 or len(embeddings) != len(descriptions) or len(embeddings) == 0:
        raise RuntimeError(f"the text embeddings have shape {embeddings.shape} for {len(descriptions)} "
                           "descriptions; no corpus was written")
    log(f"text embeddings: {text_stats['texts']:,} descriptions, {text_stats['cached']:,} from the cache, "
        f"{text_stats['encoded']:,} encoded" + (f" ({text_stats['texts_per_second']} /s)"
                                                if text_stats["encoded"] else ""))
    from safetensors.numpy import save_file

    save_file({"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}, str(tmp / EMBEDDINGS_FILE),
              metadata={"text_model": encoder_name(encoder), "text_model_id": encoder_id(encoder)})
    os.chmod(tmp / EMBEDDINGS_FILE, 0o644)
    pq.write_table(pa.Table.from_pandas(descriptions, preserve_index=False), tmp / DESCRIPTIONS_FILE)
    description_index = pd.Index(descriptions["description"].to_numpy(dtype=object), dtype=object)

    # -- pass 3: per-user rows ------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    schema = P.output_schema()
    split_names = {1: "train", 2: "validation"}
    writers = {name: _ShardWriter(work / name, schema) for name in split_names.values()}
    split_counts = {name: {"users": 0, "purchases": 0} for name in split_names.values()}
    seq_lengths = []
    try:
        for i in range(len(store)):
            group = chunk_status[i]
            if group is None:
                continue
            compact = store.get(i)
            row_split = _row_split(compact, group)
            for code, name in split_names.items():
                rows = row_split == code
                if not rows.any():
                    continue
                table = P.encode_rows(_take_rows(compact, rows), vocab, description_index, date_base_year,
                                      year_vocab_size)
                writers[name].write(table)
                split_counts[name]["users"] += table.num_rows
                split_counts[name]["purchases"] += int(rows.sum())
                seq_lengths.append(table.column("num_purchases").to_numpy())
            del compact
    finally:
        for writer in writers.values():
            writer.close()
    timings["encode_seconds"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    _assemble_dataset_dict(writers, schema, tmp / DATASET_DIR, split_counts)
    shutil.rmtree(work, ignore_errors=True)
    timings["save_seconds"] = round(time.perf_counter() - t0, 2)

    # -- vocab and metadata -------------------------------------------------------------------------------------------
    _write_json(tmp / VOCAB_FILE, vocab)
    fingerprint = vocabulary_fingerprint(json.loads((tmp / VOCAB_FILE).read_text()))  # of the file's content
    lengths = np.concatenate(seq_lengths) if seq_lengths else np.zeros(0)
    kept_first = int(users["first_ts"].min())
    kept_last = int(users["last_ts"].max())
    counts.update({
        "users_kept": int(len(users)),
        "purchases_kept": int(users["n"].sum()),
    })
    metadata = {
        "format_version": FORMAT_VERSION,
        "source": source.name,
        "source_details": source.describe(),
        "synthetic": source.name == "synthetic",
        "category_levels": {**{f: "" for f in CATEGORY_FIELDS}, **source.category_levels()},
        # --- the fields ShopperBertConfig.from_data_metadata reads ---
        "category_vocab_sizes": [len(vocab[f]) for f in CATEGORY_FIELDS],
        "text_embedding_size": int(embeddings.shape[1]),
        "year_vocab_size": int(year_vocab_size),
        "month_vocab_size": MONTH_VOCAB_SIZE,
        "day_vocab_size": DAY_VOCAB_SIZE,
        "weekday_vocab_size": WEEKDAY_VOCAB_SIZE,
        "hour_vocab_size": HOUR_VOCAB_SIZE,
        "date_base_year": date_base_year,
        FINGERPRINT_KEY: fingerprint,
        # --- the rest ---
        "special_tokens": list(SPECIAL_TOKENS),
        "unk_id": UNK_ID,
        "text_index_field": TEXT_INDEX_FIELD,
        "text_model": encoder_name(encoder),
        "text_model_id": encoder_id(encoder),
        "num_descriptions": int(len(descriptions)),
        "text_embedding_stats": text_stats,
        "start_date": str(start_ts) if start_ts is not None else None,
        "end_date": str(end_ts) if end_ts is not None else None,
        "date_range": {"first": _iso(kept_first), "last": _iso(kept_last), "first_unix": kept_first,
                       "last_unix": kept_last, "raw_first": _iso(raw_first), "raw_last": _iso(raw_last)},
        "years": [date_base_year, last_year],
        "counts": counts,
        "filters": filter_report,
        "splits": split_counts,
        "sequence_length": {
            "mean": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            "median": float(np.median(lengths)) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
            "share_over_350": round(float((lengths > 350).mean()), 4) if len(lengths) else 0.0,
        },
        "options": options.to_dict(),
        "build_args": build_args or {},
        "timings": timings,
        "build_seconds": round(time.perf_counter() - started, 2),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": _versions(),
    }
    _write_json(tmp / METADATA_FILE, metadata)
    log(f"splits: train {split_counts['train']['users']:,} users / {split_counts['train']['purchases']:,} "
        f"purchases; validation {split_counts['validation']['users']:,} users / "
        f"{split_counts['validation']['purchases']:,} purchases")
    return metadata


def _row_split(compact: pd.DataFrame, group: pd.DataFrame) -> np.ndarray:
    """Per row of a chunk's compact log: 0 filtered out, 1 train, 2 validation."""
    cats = compact["user_id"].cat.categories
    status = np.zeros(len(cats) + 1, dtype=np.int8)
    pos = pd.Index(np.asarray(cats, dtype=object), dtype=object).get_indexer(
        pd.Index(group["user_id"].to_numpy(dtype=object), dtype=object))
    status[pos[pos >= 0]] = group["split"].to_numpy()[pos >= 0]
    return status[compact["user_id"].cat.codes.to_numpy()]


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


def _merge_description_stats(parts: list) -> pd.DataFrame:
    """Sorted distinct descriptions (text_idx = row) with their purchase counts and up to 50 product ids."""
    counts = pd.concat([p[0] for p in parts], ignore_index=True).groupby("description", sort=True)[
        "num_purchases"].sum()
    frame = pd.DataFrame({TEXT_INDEX_FIELD: np.arange(len(counts), dtype=np.int32),
                          "description": counts.index.to_numpy(dtype=object),
                          "num_purchases": counts.to_numpy(dtype=np.int64)})
    pairs = [p[1] for p in parts if p[1] is not None]
    if pairs:
        pairs = pd.concat(pairs, ignore_index=True).drop_duplicates()
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


class _ShardWriter:
    """Writes one split's rows as Arrow stream files (the format of `Dataset.save_to_disk`), starting a new
    shard when the current one exceeds `max_shard_bytes` (datasets' default 500 MB)."""

    def __init__(self, folder: Path, schema: pa.Schema, max_shard_bytes: int | None = None):
        self.folder, self.schema = folder, schema
        self.max_shard_bytes = MAX_SHARD_BYTES if max_shard_bytes is None else max_shard_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._sink = self._writer = None
        self._bytes = 0

    def _open(self):
        path = self.folder / f"shard-{len(self.files):05d}.arrow"
        self.files.append(path)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._bytes = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None or (self._bytes and self._bytes + table.nbytes > self.max_shard_bytes):
            self.close()
            self._open()
        self._writer.write_table(table)
        self._bytes += table.nbytes

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def finish(self) -> list[Path]:
        """Close and return the shard files (one empty shard for an empty split)."""
        self.close()
        if not self.files:
            self._open()
            self.close()
        return self.files


def _assemble_dataset_dict(writers: dict, schema: pa.Schema, target: Path, split_counts: dict) -> None:
    """Turn the shard files into a folder that `datasets.load_from_disk` reads, without copying the data.

    `DatasetDict.save_to_disk` of empty splits with the same features writes the bookkeeping files (dataset_dict.json,
    per split state.json and dataset_info.json) of the installed `datasets` version; the written shards then replace
    its empty data file and its state.json lists them. Copying the data through `save_to_disk` instead would double
    the disk traffic and map the whole dataset into memory. The result is checked by loading it back.
    """
    import datasets

    empty = datasets.DatasetDict({name: datasets.Dataset(schema.empty_table()) for name in writers})
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        empty.save_to_disk(str(target), num_shards={name: 1 for name in writers})
    finally:
        if enabled:
            datasets.enable_progress_bars()
    for name, writer in writers.items():
        split_dir = target / name
        state_path = split_dir / "state.json"
        state = json.loads(state_path.read_text())
        for entry in state["_data_files"]:
            (split_dir / entry["filename"]).unlink()
        files = writer.finish()
        names = [f"data-{i:05d}-of-{len(files):05d}.arrow" for i in range(len(files))]
        for src, dst in zip(files, names):
            os.replace(src, split_dir / dst)
        state["_data_files"] = [{"filename": n} for n in names]
        state["_fingerprint"] = uuid.uuid4().hex[:16]
        _write_json(state_path, state)
    loaded = datasets.load_from_disk(str(target))
    for name in writers:
        if loaded[name].num_rows != split_counts[name]["users"]:
            raise RuntimeError(f"assembled split {name} has {loaded[name].num_rows} rows, expected "
                               f"{split_counts[name]['users']}")
    del loaded


def _versions() -> dict:
    import datasets

    return {"python": platform.python_version(), "pandas": pd.__version__, "pyarrow": pa.__version__,
            "numpy": np.__version__, "datasets": datasets.__version__}


__all__ = ["build_dataset", "check_output_location", "check_text_batch_size", "FORMAT_VERSION", "MARKER_FILE",
           "DATASET_DIR", "EMBEDDINGS_FILE", "DESCRIPTIONS_FILE", "VOCAB_FILE",
           "METADATA_FILE"]
