"""metadata.json of a corpus: what `data_prep build` (either engine) records about the data, the options and the
software. `ShopperBertConfig.from_data_metadata` reads its vocabulary sizes."""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa

from modeling_shopperbert.contract import (
    CATEGORY_FIELDS,
    DAY_VOCAB_SIZE,
    FINGERPRINT_KEY,
    HOUR_VOCAB_SIZE,
    MONTH_VOCAB_SIZE,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    WEEKDAY_VOCAB_SIZE,
)

from .corpus_folder import FORMAT_VERSION
from .text import encoder_id, encoder_name


def iso_time(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s"))


def corpus_metadata(run, loaded, split, vocabularies, texts, rows, fingerprint: str) -> dict:
    """The content of metadata.json, from a build's record (`build._BuildRun`, `_Loaded`, `_Split`, `_Vocabularies`,
    `_Texts`, `_Rows`) and the vocabulary fingerprint."""
    source, vocab, users = run.source, vocabularies.vocab, split.users
    start_ts, end_ts, raw_first, raw_last = run.start_ts, run.end_ts, loaded.raw_first, loaded.raw_last
    kept_first, kept_last = vocabularies.kept_span or (int(users["first_ts"].min()), int(users["last_ts"].max()))
    counts = {**loaded.counts, "users_kept": int(len(users)), "purchases_kept": int(users["n"].sum())}
    return {
        "format_version": FORMAT_VERSION,
        "source": source.name,
        "source_details": source.describe(),
        "synthetic": source.name == "synthetic",
        "engine": run.engine,
        "category_levels": {**{f: "" for f in CATEGORY_FIELDS}, **source.category_levels()},
        # --- the fields ShopperBertConfig.from_data_metadata reads ---
        "category_vocab_sizes": [len(vocab[f]) for f in CATEGORY_FIELDS],
        "text_embedding_size": texts.embedding_size,
        "year_vocab_size": int(vocabularies.year_vocab_size),
        "month_vocab_size": MONTH_VOCAB_SIZE,
        "day_vocab_size": DAY_VOCAB_SIZE,
        "weekday_vocab_size": WEEKDAY_VOCAB_SIZE,
        "hour_vocab_size": HOUR_VOCAB_SIZE,
        "date_base_year": vocabularies.date_base_year,
        FINGERPRINT_KEY: fingerprint,
        # --- the rest ---
        "special_tokens": list(SPECIAL_TOKENS),
        "unk_id": UNK_ID,
        "text_index_field": TEXT_INDEX_FIELD,
        "text_model": encoder_name(run.encoder),
        "text_model_id": encoder_id(run.encoder),
        "num_descriptions": int(len(vocabularies.descriptions)),
        "text_embedding_stats": texts.stats,
        "start_date": str(start_ts) if start_ts is not None else None,
        "end_date": str(end_ts) if end_ts is not None else None,
        "date_range": {"first": iso_time(kept_first), "last": iso_time(kept_last), "first_unix": kept_first,
                       "last_unix": kept_last, "raw_first": iso_time(raw_first), "raw_last": iso_time(raw_last)},
        "years": [vocabularies.date_base_year, vocabularies.last_year],
        "counts": counts,
        "filters": split.filter_report,
        "splits": rows.split_counts,
        "sequence_length": sequence_length_stats(rows.lengths),
        "options": run.options.to_dict(),
        "build_args": run.build_args,
        "timings": run.timings,
        "build_seconds": round(time.perf_counter() - run.started, 2),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": software_versions(),
    }


def sequence_length_stats(lengths: np.ndarray) -> dict:
    return {
        "mean": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "median": float(np.median(lengths)) if len(lengths) else 0.0,
        "max": int(lengths.max()) if len(lengths) else 0,
        "share_over_350": round(float((lengths > 350).mean()), 4) if len(lengths) else 0.0,
    }


def software_versions() -> dict:
    import datasets

    return {"python": platform.python_version(), "pandas": pd.__version__, "pyarrow": pa.__version__,
            "numpy": np.__version__, "datasets": datasets.__version__}


__all__ = ["corpus_metadata", "iso_time", "sequence_length_stats", "software_versions"]
