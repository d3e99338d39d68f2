"""Reading a prepared corpus, and encoding new purchase logs with an existing one's vocabularies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from modeling_shopperbert.contract import (
    CATEGORY_FIELDS,
    FINGERPRINT_KEY,
    NUM_SPECIAL_IDS,
    SPECIAL_TOKENS,
    vocabulary_fingerprint,
)

from . import processing as P
from .build import DATASET_DIR, DESCRIPTIONS_FILE, EMBEDDINGS_FILE, FORMAT_VERSION, METADATA_FILE, VOCAB_FILE
from .schema import DataPrepError, validate_log
from .text import embed_texts, resolve_text_encoder


class PreparedData(NamedTuple):
    """What `load_prepared` returns; unpacks as `dataset, embeddings, metadata, vocab = load_prepared(path)`."""

    dataset: "datasets.DatasetDict"  # noqa: F821
    embeddings: np.ndarray
    metadata: dict
    vocab: dict


def _folder(path) -> Path:
    path = Path(path)
    missing = [n for n in (DATASET_DIR, EMBEDDINGS_FILE, METADATA_FILE, VOCAB_FILE) if not (path / n).exists()]
    if missing:
        raise DataPrepError(f"{path} is not a prepared corpus (missing {missing}); build one with "
                            "`python -m data_prep build ... --out PATH`")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataPrepError(f"{path}: cannot read it as JSON ({exc}); rebuild the corpus") from None


def load_metadata(path) -> dict:
    """metadata.json of a prepared corpus (e.g. for `ShopperBertConfig.from_data_metadata`). Corpora built since
    the vocabulary fingerprint exists record it as `metadata["vocab_fingerprint"]` (see `load_vocab`)."""
    meta = _read_json(_folder(path) / METADATA_FILE)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataPrepError(f"{path}: format_version {meta.get('format_version')!r} is not supported "
                            f"(this data_prep reads version {FORMAT_VERSION}); rebuild the corpus")
    return meta


def load_embeddings(path) -> np.ndarray:
    """The text-embedding matrix (float32, num_descriptions x text_dim) of a prepared corpus."""
    from safetensors.numpy import load_file

    return load_file(str(_folder(path) / EMBEDDINGS_FILE))["embeddings"]


def load_vocab(path) -> dict:
    """vocab.json: {"category_1": [tokens...], ...}; list index = id.

    When metadata.json records a vocabulary fingerprint (`metadata["vocab_fingerprint"]`), the file must still match
    it: a vocab.json changed after the build raises `DataPrepError` (a ValueError) naming the file. Corpora built
    before the fingerprint existed load unchecked.
    """
    folder = _folder(path)
    vocab = _read_json(folder / VOCAB_FILE)
    if not isinstance(vocab, dict):
        raise DataPrepError(f"{folder / VOCAB_FILE}: expected a dictionary level -> tokens, got "
                            f"{type(vocab).__name__}")
    recorded = _read_json(folder / METADATA_FILE).get(FINGERPRINT_KEY)
    found = vocabulary_fingerprint(vocab) if recorded else None
    if recorded and found != recorded:
        raise DataPrepError(f"{folder / VOCAB_FILE} does not match the {FINGERPRINT_KEY} {recorded} recorded in "
                            f"{folder / METADATA_FILE} (the file's is {found}): it was changed after the build; "
                            "rebuild the corpus")
    return vocab


def load_descriptions(path) -> pd.DataFrame:
    """descriptions.parquet: one row per text_idx: description, num_purchases, product_ids, num_products."""
    return pd.read_parquet(_folder(path) / DESCRIPTIONS_FILE)


def load_prepared(path, keep_in_memory: bool = False) -> PreparedData:
    """Load a corpus written by `python -m data_prep build`.

    Returns `(dataset, embeddings, metadata, vocab)`: the `DatasetDict` (splits "train", "validation"; memory-
    mapped), the float32 text-embedding matrix as a numpy array (row `text_idx`), metadata.json and vocab.json.
    """
    import datasets

    folder = _folder(path)
    metadata = load_metadata(folder)
    dataset = datasets.load_from_disk(str(folder / DATASET_DIR), keep_in_memory=keep_in_memory)
    embeddings = load_embeddings(folder)
    if embeddings.shape[1] != metadata["text_embedding_size"]:
        raise DataPrepError(f"{folder}: embeddings have dimension {embeddings.shape[1]} but metadata says "
                            f"{metadata['text_embedding_size']}")
    return PreparedData(dataset, embeddings, metadata, load_vocab(folder))


def _description_texts(descriptions) -> list:
    if descriptions is None:
        raise DataPrepError("encode_logs needs the descriptions of the existing embedding matrix "
                            "(load_descriptions(path) or its 'description' column)")
    if isinstance(descriptions, (str, Path)):
        descriptions = load_descriptions(descriptions)
    if isinstance(descriptions, pd.DataFrame):
        if "description" not in descriptions.columns:
            raise DataPrepError(f"descriptions DataFrame has no 'description' column; it has "
                                f"{list(descriptions.columns)}")
        if "text_idx" in descriptions.columns:
            descriptions = descriptions.sort_values("text_idx")
        descriptions = descriptions["description"]
    return [str(d) for d in descriptions]


def encode_logs(df: pd.DataFrame, vocab: dict, metadata: dict, embeddings, descriptions, text_encoder=None,
                end_date=None, start_date=None, dedup: bool = True, cache_dir=None, progress: bool = False,
                return_descriptions: bool = False):
    """Turn a purchase log of (possibly new) users into per-user rows compatible with an existing corpus.

    The rows follow exactly the corpus' contract (same columns as its `dataset/` splits), using the corpus'
    vocabularies and date ids: categories missing from `vocab` (e.g. new products' categories) become [UNK] (id 3),
    years outside the corpus' known years become [UNK]. Descriptions already in the corpus reuse their `text_idx`;
    new descriptions are embedded with the text model and appended to a copy of the matrix, which is returned.
    No user filter is applied (every user with at least one purchase in the window gets a row); repeated
    purchases of a product on one day are de-duplicated like the corpus was (`dedup`).

    Args:
        df: a purchase log with the canonical columns (`user_id`, `timestamp`, `description`, optional
            `category_1..4`, `product_id`, ...); validated like any input.
        vocab, metadata, embeddings: from `load_prepared(path)`.
        descriptions: the texts of the matrix' rows in `text_idx` order: `load_descriptions(path)`, its
            "description" column, a list, or the corpus path.
        text_encoder: for new descriptions: an object with `encode(list[str]) -> np.ndarray`, or a text-model spec;
            default: the corpus' own `metadata["text_model"]`. Its vectors must have the corpus' dimension.
        end_date / start_date: keep purchases in [start_date, end_date) (e.g. before a label window).
        dedup: de-duplicate repeated purchases of a product by a user on one day (as the corpus build does).
        cache_dir: text-embedding cache root (default as in the build).
        progress: show a progress bar while embedding new descriptions.
        return_descriptions: also return the extended list of descriptions (text_idx order).

    Returns:
        `(dataset, embeddings)`: a `datasets.Dataset` with one row per user (users sorted by id) and the embedding
        matrix (numpy float32, the input rows first, then one row per new description); with
        `return_descriptions`, `(dataset, embeddings, descriptions)`.
    """
    import datasets

    for level in CATEGORY_FIELDS:
        if level not in vocab or list(vocab[level][:NUM_SPECIAL_IDS]) != list(SPECIAL_TOKENS):
            raise DataPrepError(f"vocab lacks {level!r} or does not start with {list(SPECIAL_TOKENS)}")
    for key in ("date_base_year", "year_vocab_size", "text_embedding_size"):
        if key not in metadata:
            raise DataPrepError(f"metadata lacks {key!r}; pass the metadata of a prepared corpus")
    matrix = embeddings.detach().cpu().numpy() if hasattr(embeddings, "detach") else np.asarray(embeddings)
    matrix = matrix.astype(np.float32, copy=False)
    texts = _description_texts(descriptions)
    if len(texts) != len(matrix):
        raise DataPrepError(f"{len(texts)} descriptions for an embedding matrix of {len(matrix)} rows")

    log = validate_log(df, origin="encode_logs input")
    log = P.apply_time_window(log, start_date, end_date)
    if len(log) == 0:
        raise DataPrepError(f"encode_logs: no purchase in the time window [{start_date}, {end_date})")
    compact, _ = P.compact_log(log, dedup=dedup)
    del log

    index = pd.Index(texts, dtype=object)
    if not index.is_unique:
        raise DataPrepError("the corpus descriptions are not unique")
    used = np.asarray(compact["description"].cat.categories, dtype=object)
    used = used[np.unique(compact["description"].cat.codes.to_numpy())]
    new = sorted(set(used[index.get_indexer(pd.Index(used, dtype=object)) < 0].tolist()))
    if new:
        encoder = text_encoder if text_encoder is not None else metadata.get("text_model")
        try:
            encoder = resolve_text_encoder(encoder)
        except DataPrepError as exc:
            raise DataPrepError(f"{len(new)} descriptions are new and need the text model, but "
                                f"{metadata.get('text_model')!r} cannot be loaded ({exc}); pass text_encoder=") from None
        vectors, _ = embed_texts(new, encoder, cache_dir=cache_dir, progress=progress)
        if vectors.shape[1] != matrix.shape[1]:
            raise DataPrepError(f"the text encoder gives {vectors.shape[1]}-dim vectors but the corpus uses "
                                f"{matrix.shape[1]}-dim ones (metadata text_model {metadata.get('text_model')!r})")
        matrix = np.vstack([matrix, vectors])
        texts = texts + new
        index = pd.Index(texts, dtype=object)
    table = P.encode_rows(compact, vocab, index, int(metadata["date_base_year"]), int(metadata["year_vocab_size"]))
    dataset = datasets.Dataset(table)
    return (dataset, matrix, texts) if return_descriptions else (dataset, matrix)


__all__ = ["PreparedData", "load_prepared", "load_metadata", "load_embeddings", "load_vocab", "load_descriptions",
           "encode_logs"]
