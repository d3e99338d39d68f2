"""Model inputs of the downstream experiments, all strictly before the cutoff T.

- purchase sequences of every Complete Journey household (P-Trans, UP-Trans, fine-tuning, and the pre-trained user
  embeddings), encoded with the pre-training corpus' vocabularies and text vectors;
- task-specific history sequences (T-Trans), the task's events as tokens of the same kind;
- item feature matrices (recommendation item tower): the item text's sentence vector plus standardised features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .tasks import CUTOFF, MISSING_DESCRIPTION, Task, task_spec
from .tasks.task import HISTORY_LOG_COLUMNS


@dataclass
class Corpus:
    """The pre-training corpus whose vocabularies every downstream input uses."""

    path: Path
    vocab: dict
    metadata: dict
    embeddings: np.ndarray
    descriptions: list

    @classmethod
    def load(cls, path) -> "Corpus":
        from data_prep import load_descriptions, load_embeddings, load_metadata, load_vocab

        path = Path(path)
        return cls(path, load_vocab(path), load_metadata(path), load_embeddings(path),
                   list(load_descriptions(path)["description"]))

    def fourth_level(self) -> str:
        return self.metadata.get("source_details", {}).get("fourth_level", "manufacturer")


@dataclass
class SequenceInputs:
    """Per-user sequences (data_prep rows as numpy dicts, in `user_ids` order; empty lists where a user has none)
    and the text matrix their `text_idx` index."""

    user_ids: np.ndarray
    rows: list
    text_embeddings: np.ndarray
    lengths: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = np.array([len(r["text_idx"]) for r in self.rows], dtype=np.int64)


def _rows_by_user(dataset, user_ids) -> list:
    """Align a data_prep Dataset (one row per user) with `user_ids`; users without a row get empty sequences."""
    columns = list(dataset.column_names)
    table = dataset.with_format("numpy", columns=columns)
    position = {str(u): i for i, u in enumerate(dataset["user_id"])}
    empty = {c: np.zeros(0, dtype=np.int64) for c in columns if c not in ("user_id", "num_purchases")}
    rows = []
    for user in user_ids:
        i = position.get(str(user))
        if i is None:
            rows.append({"user_id": str(user), **empty})
        else:
            row = dict(table[i])
            row["user_id"] = str(user)
            rows.append(row)
    return rows


def purchase_inputs(corpus: Corpus, user_ids=None, cutoff=CUTOFF, cache_dir=None, start_date="corpus"
                    ) -> SequenceInputs:
    """Every household's purchases before the cutoff, encoded like the corpus (no user filter: the downstream
    populations include households the pre-training filters dropped).

    `start_date` (default: the corpus' own, None for the full history) keeps only purchases in the corpus' time
    window, so that a model pre-trained on the last k months also encodes users from those months (Figure 3);
    households with no purchase in the window keep an empty sequence.
    """
    from data_prep import encode_logs, load_completejourney_log

    if start_date == "corpus":
        start_date = corpus.metadata.get("start_date")
    log = load_completejourney_log(end_date=cutoff, fourth_level=corpus.fourth_level())
    population = sorted(set(map(str, pd.unique(log["user_id"]))))
    dataset, matrix = encode_logs(log, corpus.vocab, corpus.metadata, corpus.embeddings, corpus.descriptions,
                                  start_date=start_date, end_date=cutoff, cache_dir=cache_dir)
    ids = np.array(population if user_ids is None else list(user_ids), dtype=object)
    return SequenceInputs(ids, _rows_by_user(dataset, ids), matrix)


def embed_users(checkpoint, purchases: SequenceInputs, user_ids=None, device: str = "cpu", batch_size: int = 64
                ) -> np.ndarray:
    """Pre-trained user embeddings of a checkpoint (a folder) or a loaded ``UserEncoder``, from the purchase
    sequences of ``purchase_inputs``: one float32 row per user of ``user_ids`` (default: every user of
    ``purchases``, in its order). A user without any purchase in the corpus window gets the zero vector (the mean
    of nothing), as U-MLP sees it in ``eval_suite run``.

        vectors = embed_users("runs/cj-small/final", purchase_inputs(Corpus.load("data/cj")))  # (2447, hidden)
    """
    from modeling_shopperbert import UserEncoder

    encoder = checkpoint if isinstance(checkpoint, UserEncoder) else UserEncoder.from_pretrained(checkpoint,
                                                                                                 device=device)
    encoder.text_embeddings = purchases.text_embeddings
    if user_ids is None:
        positions = np.arange(len(purchases.user_ids))
    else:
        index = {u: i for i, u in enumerate(purchases.user_ids)}
        missing = [u for u in user_ids if u not in index]
        if missing:
            raise KeyError(f"{len(missing)} users have no purchase sequence (not households of the corpus' source), "
                           f"e.g. {missing[:3]}")
        positions = np.array([index[u] for u in user_ids], dtype=np.int64)
    keep = np.flatnonzero(purchases.lengths[positions] > 0)
    vectors = np.zeros((len(positions), encoder.config.hidden_size), dtype=np.float32)
    if len(keep):
        vectors[keep] = encoder.encode([purchases.rows[positions[i]] for i in keep], batch_size=batch_size,
                                       show_progress_bar=False)
    return vectors


def _history_log(task: Task, tables: dict, corpus: Corpus) -> pd.DataFrame:
    """The task's history events as a canonical purchase log (categories + description + time); the categories and
    description come from the task file's ``history_log``."""
    spec = task_spec(task.name)
    if spec.history_log is None:
        raise ValueError(f"task {task.name!r} has no history log (T-Trans does not apply)")
    history = task.history
    out = pd.DataFrame({"user_id": history["user_id"].astype(str).to_numpy(),
                        "timestamp": pd.to_datetime(history["timestamp"]).to_numpy()})
    columns = spec.history_log(task, tables, corpus.fourth_level())
    for column in HISTORY_LOG_COLUMNS:
        out[column] = columns[column].to_numpy(dtype=object)
    out["description"] = out["description"].fillna(MISSING_DESCRIPTION)
    return out


def history_inputs(task: Task, tables: dict, corpus: Corpus, user_ids, cutoff=CUTOFF, cache_dir=None
                   ) -> SequenceInputs:
    """T-Trans inputs: each user's task-specific history before the cutoff as tokens (empty where none)."""
    from data_prep import encode_logs

    if task.history is None:
        raise ValueError(f"task {task.name!r} has no task-specific history (T-Trans does not apply)")
    ids = np.asarray(list(user_ids), dtype=object)
    log = _history_log(task, tables, corpus)
    log = log[log["user_id"].isin(set(ids))]
    if len(log) == 0:
        return SequenceInputs(ids, _rows_by_user_empty(ids), corpus.embeddings)
    dataset, matrix = encode_logs(log, corpus.vocab, corpus.metadata, corpus.embeddings, corpus.descriptions,
                                  end_date=cutoff, dedup=False, cache_dir=cache_dir)
    return SequenceInputs(ids, _rows_by_user(dataset, ids), matrix)


def _rows_by_user_empty(ids) -> list:
    from modeling_shopperbert.collator import ID_FIELDS

    empty = {c: np.zeros(0, dtype=np.int64) for c in ID_FIELDS + ("text_idx",)}
    return [{"user_id": str(u), **empty} for u in ids]


def item_features(task: Task, corpus: Corpus, cache_dir=None) -> np.ndarray:
    """Item tower input: the sentence vector of the item's text (the corpus' text model) and its numeric
    features (standardised; computed by the task builder from data before the cutoff)."""
    from data_prep import embed_texts, resolve_text_encoder

    encoder = resolve_text_encoder(corpus.metadata.get("text_model"))
    texts = task.items["text"].fillna("unknown").astype(str).tolist()
    vectors, _ = embed_texts(texts, encoder, cache_dir=cache_dir, progress=False)
    parts = [np.asarray(vectors, dtype=np.float32)]
    if task.item_feature_columns:
        numeric = task.items[list(task.item_feature_columns)].to_numpy(dtype=np.float64)
        numeric = (numeric - numeric.mean(0)) / np.maximum(numeric.std(0), 1e-6)
        parts.append(numeric.astype(np.float32))
    return np.concatenate(parts, axis=1)


__all__ = ["Corpus", "SequenceInputs", "embed_users", "history_inputs", "item_features", "purchase_inputs"]
