"""Representation baselines: user vectors anyone can compute from the same pre-cutoff purchases the checkpoints
encode (``inputs.purchase_inputs``), to ask whether pre-training is worth anything over them.

- ``svd``: truncated SVD of the user x product-category TF-IDF matrix (``svd_vectors``);
- ``sbert``: the mean of the text vectors of the user's purchases (``sbert_vectors``);
- ``random``: a seeded Gaussian vector per user, a sanity floor (``random_vectors``);
- ``activity``: four numbers on how much and how recently the user shops (``activity_vectors``);
- ``svd+activity``: the SVD vector with the four activity numbers in its last columns (``svd_activity_vectors``).

Every builder reads only a ``SequenceInputs`` (the rows the checkpoints encode, in ``user_ids`` order) and returns a
float32 matrix (U, D) in the same order. Households without a purchase in the corpus window get the zero vector,
as the checkpoints give them. Nothing here sees a label. ``build_representations`` puts them under the names the
downstream suite uses (``DISPLAY_NAMES``: "SVD", "SBERT-mean", "Random", "Activity", "SVD+activity"; U-MLP rows
"U-MLP SVD", ...).

Pure numpy / scipy / scikit-learn; no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

#: CLI names -> the names of their vectors in ``Inputs.embeddings`` (and of their U-MLP rows, "U-MLP <name>").
DISPLAY_NAMES = {"svd": "SVD", "sbert": "SBERT-mean", "random": "Random", "activity": "Activity",
                 "svd+activity": "SVD+activity"}
REPRESENTATIONS = tuple(DISPLAY_NAMES)
#: The category level of the SVD vocabulary (``category_2``: the product category, 300-odd values on Complete
#: Journey; see ``svd_vectors``).
SVD_LEVEL = "category_2"


def parse_representations(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"svd,sbert,random"`` (or a sequence of names) -> a tuple of known names; ``"none"`` or empty -> ``()``.

    Raises ValueError with a message naming the unknown value(s) and the choices."""
    if text is None:
        return ()
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t and t.strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in DISPLAY_NAMES]
    if unknown:
        raise ValueError(f"unknown representation(s) {unknown}; choose from {', '.join(REPRESENTATIONS)} "
                         "(comma-separated) or none")
    return tuple(dict.fromkeys(names))


def _nonempty(purchases) -> np.ndarray:
    """Positions of the users with at least one purchase."""
    return np.flatnonzero(np.asarray(purchases.lengths) > 0)


def category_tfidf(purchases, level: str = SVD_LEVEL) -> sp.csr_matrix:
    """User x category TF-IDF (U, V): term count = the number of the user's purchases of the category (the corpus'
    ``level`` ids; the special ids [PAD]/[MASK]/[CLS]/[UNK] are left out), weighted by sklearn's
    ``TfidfTransformer(sublinear_tf=True)`` (1 + log tf, smooth idf over all households, rows L2-normalised).
    Users without a purchase get an all-zero row. Columns: the id range of the level (unused ids stay empty)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    from modeling_shopperbert.configuration_shopperbert import NUM_SPECIAL_IDS

    rows, cols = [], []
    for i, row in enumerate(purchases.rows):
        ids = np.asarray(row[level], dtype=np.int64)
        ids = ids[ids >= NUM_SPECIAL_IDS] - NUM_SPECIAL_IDS
        rows.append(np.full(len(ids), i, dtype=np.int64))
        cols.append(ids)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    width = int(cols.max()) + 1 if len(cols) else 1
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(purchases.rows), width))
    counts.sum_duplicates()  # (U, V) purchase counts
    return sp.csr_matrix(TfidfTransformer(sublinear_tf=True).fit_transform(counts))


def svd_vectors(purchases, dim: int, seed: int = 0, level: str = SVD_LEVEL) -> np.ndarray:
    """Truncated SVD (sklearn ``TruncatedSVD``, randomized, ``random_state=seed``) of ``category_tfidf`` -> (U, dim).

    The vocabulary is ``category_2``, the product category (Complete Journey's ``product_category``, about 300
    values): the finest-but-one level of the product hierarchy, between the 30-odd departments (``category_1``) and
    the 2,000-odd product types (``category_3``; ``category_4`` is the manufacturer, not a finer level). It is
    fixed, not tuned on any task (issue 11 asks for "the user x category TF-IDF matrix"). It is fitted on all
    households' pre-cutoff
    purchases (label-free, like the IDF weights of the classical baselines). ``dim`` is the hidden size of the
    first checkpoint, so U-MLP reads inputs of the same width; when the vocabulary or the population is too small
    for ``dim`` components (tiny test data), the missing components are zero. SVD does not centre, so a user
    without purchases (a zero row) gets the zero vector. Deterministic for a given ``seed``."""
    from sklearn.decomposition import TruncatedSVD

    tfidf = category_tfidf(purchases, level)  # (U, V)
    out = np.zeros((tfidf.shape[0], dim), dtype=np.float32)
    k = min(dim, tfidf.shape[1] - 1, tfidf.shape[0] - 1)
    if k >= 1 and tfidf.nnz:
        out[:, :k] = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7,
                                  random_state=seed).fit_transform(tfidf)
    return out


def sbert_vectors(purchases) -> np.ndarray:
    """The mean of the text vectors of each user's purchases (rows of ``purchases.text_embeddings`` indexed by
    ``text_idx``: the corpus' Sentence-BERT vectors of the product descriptions) -> (U, text dim). One vector per
    purchase, so a product bought often weighs more; users without purchases get the zero vector."""
    text = np.asarray(purchases.text_embeddings, dtype=np.float32)  # (N_text, D)
    out = np.zeros((len(purchases.rows), text.shape[1]), dtype=np.float32)
    for i in _nonempty(purchases):
        out[i] = text[np.asarray(purchases.rows[i]["text_idx"], dtype=np.int64)].mean(axis=0)
    return out


def random_vectors(purchases, dim: int, seed: int = 0) -> np.ndarray:
    """A standard Gaussian vector per user (``np.random.default_rng(seed)``, in ``user_ids`` order) -> (U, dim);
    zero for users without purchases. A representation that knows nothing: the floor every other must clear."""
    out = np.random.default_rng(seed).standard_normal((len(purchases.rows), dim)).astype(np.float32)
    empty = np.asarray(purchases.lengths) == 0
    out[empty] = 0.0
    return out


#: The columns of ``activity_vectors``, each log1p-transformed then standardised.
ACTIVITY_FEATURES = ("purchases", "baskets", "days_since_last_purchase", "distinct_products")


def activity_vectors(purchases) -> np.ndarray:
    """How much and how recently each user shops, from the same sequences -> (U, 4), ``ACTIVITY_FEATURES``: the
    number of purchases, of baskets (distinct timestamps), of days from the user's last purchase to the last
    purchase of anyone in ``purchases``, and of distinct products (``text_idx``), each log1p-transformed and
    standardised with the mean and spread of the users with purchases. A user without any counts none and is as
    far from the last purchase as the first purchase in the data (not the average user that a zero row would be).
    The RFM features of the classical baselines without the money (the corpus has no prices), as a
    representation: a linear probe of the released checkpoint found its edge on the targeting tasks in what these
    count (its mean position embedding alone encodes the sequence length)."""
    nonempty = _nonempty(purchases)
    out = np.zeros((len(purchases.rows), len(ACTIVITY_FEATURES)), dtype=np.float64)
    if not len(nonempty):
        return out.astype(np.float32)
    missing = [i for i in nonempty if "timestamp" not in purchases.rows[i]]
    if missing:
        raise ValueError(f"activity vectors need each purchase's `timestamp`; the rows of user "
                         f"{purchases.rows[missing[0]].get('user_id', missing[0])} have none")
    stamps = [np.asarray(purchases.rows[i]["timestamp"], dtype=np.int64) for i in nonempty]
    first, last = min(int(t.min()) for t in stamps), max(int(t.max()) for t in stamps)
    out[:, 2] = (last - first) / 86400.0  # users without purchases: the whole span
    for i, t in zip(nonempty, stamps):
        products = np.asarray(purchases.rows[i]["text_idx"], dtype=np.int64)
        out[i] = [len(t), len(np.unique(t)), (last - int(t.max())) / 86400.0, len(np.unique(products))]
    logged = np.log1p(out)
    mean, scale = logged[nonempty].mean(axis=0), logged[nonempty].std(axis=0)
    return ((logged - mean) / np.where(scale > 0, scale, 1.0)).astype(np.float32)


def svd_activity_vectors(purchases, dim: int, seed: int = 0) -> np.ndarray:
    """``svd_vectors`` of ``dim - 4`` dimensions (unit RMS) then the four ``activity_vectors`` columns -> (U, dim):
    what the products say and how much and how recently the user shops, in the checkpoint's width."""
    width = dim - len(ACTIVITY_FEATURES)
    if width < 1:
        raise ValueError(f"svd+activity needs a dimension above {len(ACTIVITY_FEATURES)}, got {dim}")
    return np.hstack([unit_rms(svd_vectors(purchases, width, seed)), activity_vectors(purchases)])


def unit_rms(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` times one global factor so that the root mean square of the entries of the non-zero rows is 1.

    U-MLP trains on raw vectors; an SVD of L2-normalised TF-IDF rows or a mean of unit text vectors has entries of
    about 0.05, which would handicap these baselines against a checkpoint's O(1) hidden states. One factor for the
    whole matrix keeps every direction and relative norm (unlike a per-dimension standardisation)."""
    nonzero = np.any(vectors != 0, axis=1)
    if not nonzero.any():
        return vectors
    rms = float(np.sqrt(np.mean(np.square(vectors[nonzero], dtype=np.float64))))
    return (vectors / rms).astype(np.float32) if rms > 0 else vectors


def build_representations(names: Iterable[str], purchases, dim: int, seed: int = 0, rescale: bool = True
                          ) -> dict[str, np.ndarray]:
    """The requested representations (CLI names, ``REPRESENTATIONS``) of ``purchases``' users, keyed by
    ``DISPLAY_NAMES``: (U, dim) for ``svd``, ``random`` and ``svd+activity``, (U, text dim) for ``sbert``, (U, 4) for
    ``activity``. ``rescale`` applies ``unit_rms`` to svd and sbert (random is already unit-variance, the activity
    columns standardised)."""
    builders = {"svd": lambda: svd_vectors(purchases, dim, seed), "sbert": lambda: sbert_vectors(purchases),
                "random": lambda: random_vectors(purchases, dim, seed),
                "activity": lambda: activity_vectors(purchases),
                "svd+activity": lambda: svd_activity_vectors(purchases, dim, seed)}
    out: dict[str, np.ndarray] = {}
    for name in parse_representations(list(names)):
        vectors = builders[name]()
        out[DISPLAY_NAMES[name]] = unit_rms(vectors) if rescale and name in ("svd", "sbert") else vectors
    return out


__all__ = ["ACTIVITY_FEATURES", "DISPLAY_NAMES", "REPRESENTATIONS", "SVD_LEVEL", "activity_vectors",
           "build_representations", "category_tfidf", "parse_representations", "random_vectors", "sbert_vectors",
           "svd_activity_vectors", "svd_vectors", "unit_rms"]
