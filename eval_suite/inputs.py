"""Model inputs of the downstream experiments, all strictly before the cutoff T.

- purchase sequences of every Complete Journey household (P-Trans, UP-Trans, fine-tuning, and the pre-trained user
  embeddings), encoded with the pre-training corpus' vocabularies and text vectors;
- task-specific history sequences (T-Trans), the task's events as tokens of the same kind;
- item feature matrices (recommendation item tower): the item text's sentence vector plus standardised features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .models import UserInputs
from .representations import build_representations, parse_representations
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


def embed_users(checkpoint, purchases: SequenceInputs, user_ids=None, device: str = "cpu", batch_size: int = 64,
                **encode_options) -> np.ndarray:
    """Pre-trained user embeddings of a checkpoint (a folder) or a loaded ``UserEncoder``, from the purchase
    sequences of ``purchase_inputs``: one float32 row per user of ``user_ids`` (default: every user of
    ``purchases``, in its order). A user without any purchase in the corpus window gets the zero vector (the mean
    of nothing), as U-MLP sees it in ``eval_suite run``. ``encode_options`` go to ``UserEncoder.encode`` (e.g.
    ``hidden_layer=0`` or ``user_representation="cls"``).

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
                                       show_progress_bar=False, **encode_options)
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



# ---------------------------------------------------------------------------------------------------------------
# Per-run shared inputs
# ---------------------------------------------------------------------------------------------------------------
class Inputs:
    """What every model of a run reads, computed once: the purchase sequences, each checkpoint's user embeddings and
    the representation baselines (`embeddings`, keyed by checkpoint name and by "SVD" / "SBERT-mean" / "Random";
    `representations` lists the latter: they are not checkpoints), task histories, item features and the
    label-free recommenders. `options`: the run's `eval_suite.run.RunOptions` (its representations and
    trans_max_length)."""

    def __init__(self, corpus: Corpus, checkpoints: dict[str, Path], out: Path, options, log,
                 representation_dim: int | None = None):
        self.corpus = corpus
        self.out = out
        self.options = options
        self.log = log
        start = time.perf_counter()
        self.purchases: SequenceInputs = purchase_inputs(corpus)
        log(f"purchase sequences of {len(self.purchases.user_ids)} households before the cutoff "
            f"({time.perf_counter() - start:.1f} s)")
        self.embeddings = {name: self._user_embeddings(name, path) for name, path in checkpoints.items()}
        self.checkpoints = checkpoints
        self.representations = self._representations(representation_dim)
        self._histories: dict[str, SequenceInputs] = {}
        self._items: dict[str, np.ndarray] = {}
        self._recommenders: dict[tuple[str, str], object] = {}

    def _representations(self, dim: int | None) -> list[str]:
        """The representation baselines of `options.representations`, added to `embeddings` and written to
        out/embeddings/<name>.parquet; dimension = the first checkpoint's hidden size (or `dim`)."""
        names = parse_representations(self.options.representations)
        if not names:
            return []
        if dim is None:
            if not self.embeddings:
                raise ValueError("the representation baselines need a checkpoint (its hidden size) or a dimension")
            dim = next(iter(self.embeddings.values())).shape[1]
        start = time.perf_counter()
        vectors = build_representations(names, self.purchases, dim)
        for name, matrix in vectors.items():
            if name in self.embeddings:
                raise ValueError(f"a checkpoint is named {name!r} like a representation baseline; rename it")
            self.embeddings[name] = matrix
            self._write_embeddings(name, matrix)
        self.log(f"representation baselines {', '.join(f'{n} {v.shape}' for n, v in vectors.items())} in "
                 f"{time.perf_counter() - start:.1f} s")
        return list(vectors)

    def _write_embeddings(self, name: str, vectors: np.ndarray) -> None:
        from modeling_shopperbert import write_user_embeddings

        write_user_embeddings(self.out / "embeddings" / f"{name}.parquet", self.purchases.user_ids, vectors)

    def _user_embeddings(self, name: str, path: Path) -> np.ndarray:
        start = time.perf_counter()
        vectors = embed_users(path, self.purchases)  # zero vectors for households without purchases
        empty = int((self.purchases.lengths == 0).sum())
        if empty:
            self.log(f"{empty} of {len(vectors)} households have no purchase in the corpus window "
                     f"[{self.corpus.metadata.get('start_date')}, cutoff): zero user embeddings")
        self._write_embeddings(name, vectors)
        self.log(f"user embeddings {name}: {vectors.shape} in {time.perf_counter() - start:.1f} s")
        return vectors

    def vectors(self, name: str) -> UserInputs:
        return UserInputs(self.purchases.user_ids, vectors=self.embeddings[name], device=self.options.device)

    def sequences(self, with_vectors: str | None = None) -> UserInputs:
        return UserInputs(self.purchases.user_ids, vectors=self.embeddings[with_vectors] if with_vectors else None,
                          rows=self.purchases.rows, text_embeddings=self.purchases.text_embeddings,
                          max_length=self.options.trans_max_length, device=self.options.device)

    def history(self, task, tables) -> UserInputs:
        if task.name not in self._histories:
            self._histories[task.name] = history_inputs(task, tables, self.corpus, self.purchases.user_ids)
        h = self._histories[task.name]
        return UserInputs(h.user_ids, rows=h.rows, text_embeddings=h.text_embeddings,
                          max_length=self.options.trans_max_length, device=self.options.device)

    def items(self, task) -> np.ndarray:
        if task.name not in self._items:
            self._items[task.name] = item_features(task, self.corpus)
        return self._items[task.name]

    def recommender(self, kind: str, task, tables):
        """A label-free recommender ("popularity", "cooccurrence") of the task, built once for all seeds."""
        from . import baselines

        key = (kind, task.name)
        if key not in self._recommenders:
            self._recommenders[key] = baselines.make_recommender(kind, task, tables)
        return self._recommenders[key]

__all__ = ["Corpus", "Inputs", "SequenceInputs", "embed_users", "history_inputs", "item_features", "purchase_inputs"]
