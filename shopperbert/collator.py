"""Batching for ShopperBERT: padding/truncation, Algorithm 1 augmentation and masked purchase prediction (MPP).

A *feature* is one user's row of a prepared dataset (see `data_prep`): equal-length, time-sorted sequences
`category_1..category_4`, `year, month, day, weekday, hour` (ids under the token contract of
`configuration_shopperbert`) and `text_idx` (rows of the text-embedding matrix). Collators turn a list of
features into model inputs:

    category_ids   (B, T, 4)  long   [CLS] at position 0, then the most recent purchases, then padding
    date_ids       (B, T, 5)  long
    text_embeds    (B, T, D)  float  gathered from the text-embedding matrix
    attention_mask (B, T)     long
and, for pre-training, `labels` (B, T, 9) (-100 where nothing is predicted), `masked_positions` (B, T) and
`masked_index` (N,), the same positions as flat row-major indices into B*T (so that the model selects them without
a host-device synchronisation).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .configuration_shopperbert import (
    CATEGORY_FIELDS,
    CLS_ID,
    DATE_FIELDS,
    MASK_ID,
    MPP_HEADS,
    PAD_ID,
    TEXT_INDEX_FIELD,
    UNK_ID,
    ShopperBertConfig,
)

ID_FIELDS = CATEGORY_FIELDS + DATE_FIELDS  # the nine id columns, in MPP_HEADS order
# What `Trainer(remove_unused_columns=True)` leaves of a prepared row: the model's argument names and the label
TRAINER_KEPT = frozenset({"label", "labels", "label_ids", "attention_mask", "position_ids"})
assert ID_FIELDS == MPP_HEADS


# ----------------------------------------------------------------------------------------------------------------
# Algorithm 1 (augmentation), as index maps so that every field of a purchase moves together
# ----------------------------------------------------------------------------------------------------------------
def crop_indices(length: int, rng: np.random.Generator, window_ratio: float = 0.3) -> np.ndarray:
    """Algorithm 1, crop branch: a contiguous span s[l:h] keeping between `window_ratio` and 100% of the sequence.

    l is drawn from [0, |s| - ceil(0.3|s|)] (the paper's [0, 0.7|s|]) and h from [l + ceil(0.3|s|), |s|].
    """
    if length <= 1:
        return np.arange(length)
    keep = max(1, math.ceil(length * window_ratio))
    start = int(rng.integers(0, length - keep + 1))
    end = int(rng.integers(start + keep, length + 1))
    return np.arange(start, end)


def shuffle_indices(length: int, rng: np.random.Generator, window_ratio: float = 0.3) -> np.ndarray:
    """Algorithm 1, shuffle branch: the order of a random window of round(0.3|s|) purchases is permuted."""
    order = np.arange(length)
    window = min(length, max(1, round(length * window_ratio)))
    if window < 2:
        return order
    start = int(rng.integers(0, length - window + 1))
    order[start:start + window] = rng.permutation(order[start:start + window])
    return order


def augment_indices(length: int, rng: np.random.Generator, crop_probability: float = 0.5,
                    window_ratio: float = 0.3) -> np.ndarray:
    """Algorithm 1: crop with probability `crop_probability`, else shuffle. Returns indices into the sequence."""
    if rng.random() < crop_probability:
        return crop_indices(length, rng, window_ratio)
    return shuffle_indices(length, rng, window_ratio)


# ----------------------------------------------------------------------------------------------------------------
# Collators
# ----------------------------------------------------------------------------------------------------------------
def _as_embedding_matrix(text_embeddings) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(text_embeddings) if not torch.is_tensor(text_embeddings) else text_embeddings)
    if matrix.dim() != 2:
        raise ValueError(f"text_embeddings must be a 2-D matrix (products, dim), got shape {tuple(matrix.shape)}")
    return matrix.float()


class ShopperBertCollator:
    """Pads and truncates users' purchase sequences into model inputs (no masking): for encoding users.

    Args:
        text_embeddings: `(num_products, text_dim)` matrix indexed by the features' `text_idx`.
        max_length: most purchases kept per user (the most recent ones); defaults to 350 (the paper's).
        pad_to_multiple_of: pad the token axis to a multiple of this (useful on GPUs).
        allow_empty: accept users without purchases (they become a lone [CLS]); off by default, since a user
            representation of nothing is usually a data error.
        vocab_sizes: the nine id columns' vocabulary sizes (`config.head_vocab_sizes`, which `from_config` passes):
            an id outside `[0, size)` is refused here, on the host, naming the feature, the column and the value
            (on a GPU the model only checks ids asynchronously). None: not checked here.
    """

    def __init__(self, text_embeddings, max_length: int = 350, pad_to_multiple_of: int | None = None,
                 allow_empty: bool = False, vocab_sizes: Sequence[int] | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if vocab_sizes is not None and len(vocab_sizes) != len(ID_FIELDS):
            raise ValueError(f"vocab_sizes must give {len(ID_FIELDS)} sizes ({ID_FIELDS}), got {list(vocab_sizes)}")
        self.text_embeddings = _as_embedding_matrix(text_embeddings)
        self.max_length = int(max_length)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.allow_empty = allow_empty
        self.vocab_sizes = None if vocab_sizes is None else np.asarray(vocab_sizes, dtype=np.int64)

    @classmethod
    def from_config(cls, config: ShopperBertConfig, text_embeddings, **kwargs):
        if config.text_embedding_size != np.shape(text_embeddings)[1]:
            raise ValueError(
                f"text embeddings have dimension {np.shape(text_embeddings)[1]} but the model expects "
                f"config.text_embedding_size={config.text_embedding_size}"
            )
        kwargs.setdefault("max_length", config.max_purchases)
        kwargs.setdefault("vocab_sizes", config.head_vocab_sizes)
        return cls(text_embeddings, **kwargs)

    # -- reading features ------------------------------------------------------------------------------------------
    def _read(self, feature: Mapping, index: int) -> np.ndarray:
        """One feature as a `(n, 10)` int64 array: nine id columns then text_idx, the most recent `max_length`."""
        missing = [f for f in ID_FIELDS + (TEXT_INDEX_FIELD,) if f not in feature]
        if missing:
            hint = ("; with transformers.Trainer pass TrainingArguments(remove_unused_columns=False), or Trainer drops "
                    "the data columns the model's forward does not name") if set(feature) <= TRAINER_KEPT else ""
            raise ValueError(f"feature {index} lacks the columns {missing}; it has {sorted(feature)}{hint}")
        columns = [np.asarray(feature[f], dtype=np.int64).reshape(-1) for f in ID_FIELDS + (TEXT_INDEX_FIELD,)]
        lengths = {len(c) for c in columns}
        if len(lengths) != 1:
            raise ValueError(f"feature {index}: sequence columns differ in length {sorted(lengths)}")
        rows = np.stack(columns, axis=1)  # (n, 10)
        if len(rows) == 0:
            if self.allow_empty:
                return rows
            raise ValueError(f"feature {index} has no purchases; a user needs at least one")
        text_idx = rows[:, -1]
        if text_idx.min() < 0 or text_idx.max() >= len(self.text_embeddings):
            bad = text_idx.max() if text_idx.max() >= len(self.text_embeddings) else text_idx.min()
            raise ValueError(
                f"feature {index}: {TEXT_INDEX_FIELD} {bad} is outside the text-embedding matrix "
                f"({len(self.text_embeddings)} rows)"
            )
        rows = rows[-self.max_length:]
        self._check_ids(rows[:, :-1], index)
        return rows

    def _check_ids(self, ids: np.ndarray, index: int) -> None:
        """Refuse ids outside the vocabularies (`vocab_sizes`), naming the feature, the column and the value."""
        if self.vocab_sizes is None:
            return
        low, high = ids.min(axis=0), ids.max(axis=0)  # (9,)
        for k in np.flatnonzero((low < 0) | (high >= self.vocab_sizes)):
            bad = high[k] if high[k] >= self.vocab_sizes[k] else low[k]
            raise ValueError(f"feature {index}: {ID_FIELDS[k]} id {bad} is outside its vocabulary "
                             f"[0, {self.vocab_sizes[k]}) (the model config's vocabulary sizes)")

    def _pad(self, sequences: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """[CLS] + purchases + padding for each user."""
        seq_len = 1 + max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            seq_len = int(math.ceil(seq_len / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        batch = np.full((len(sequences), seq_len, len(ID_FIELDS) + 1), PAD_ID, dtype=np.int64)  # (B, T, 10)
        batch[:, 0, :-1] = CLS_ID
        batch[:, :, -1] = 0  # text row for [CLS]/padding: ignored by the model
        attention_mask = np.zeros((len(sequences), seq_len), dtype=np.int64)  # (B, T)
        for row, seq in enumerate(sequences):
            batch[row, 1:1 + len(seq)] = seq
            attention_mask[row, :1 + len(seq)] = 1
        ids = torch.from_numpy(batch)
        text_embeds = self.text_embeddings[ids[..., -1]]  # (B, T, D)
        text_embeds = text_embeds * ids[..., 0].gt(CLS_ID).unsqueeze(-1)  # zero at [CLS]/padding
        return {
            "category_ids": ids[..., :len(CATEGORY_FIELDS)].contiguous(),  # (B, T, 4)
            "date_ids": ids[..., len(CATEGORY_FIELDS):-1].contiguous(),  # (B, T, 5)
            "text_embeds": text_embeds,  # (B, T, D)
            "attention_mask": torch.from_numpy(attention_mask),  # (B, T)
        }

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        batch = self._pad([self._read(f, i) for i, f in enumerate(features)])
        labels = user_labels(features)
        if labels is not None:
            batch["labels"] = labels  # (B,) or (B, num_labels)
        return batch


def user_labels(features: Sequence[Mapping]) -> torch.Tensor | None:
    """The user-level targets of a batch (a `label` or `labels` column, as `datasets` and `Trainer` name it), for
    fine-tuning: integers give a long tensor (class ids), floats a float tensor (regression or multi-label); None
    when no feature has one. Raises ValueError when only some features carry a label."""
    key = next((k for k in ("labels", "label") if k in features[0]), None)
    if key is None:
        if any("labels" in f or "label" in f for f in features):
            raise ValueError("some features have a label and feature 0 has none; every user of a batch needs one")
        return None
    missing = [i for i, f in enumerate(features) if key not in f or f[key] is None]
    if missing:
        raise ValueError(f"features {missing[:5]} lack the `{key}` that feature 0 has")
    values = np.asarray([f[key] for f in features])
    if values.dtype.kind in "iub":
        return torch.from_numpy(values.astype(np.int64))
    if values.dtype.kind == "f":
        return torch.from_numpy(values.astype(np.float32))
    raise ValueError(f"`{key}` must be numbers (class ids, floats or multi-hot lists), got {values.dtype} values")


def sample_key(feature: Mapping) -> int:
    """A stable 64-bit key of a user's row: its `user_id` when present, else a hash of its purchases."""
    digest = hashlib.blake2b(digest_size=8)
    if "user_id" in feature:
        digest.update(b"user:" + str(feature["user_id"]).encode("utf-8"))
    else:
        for field in ID_FIELDS + (TEXT_INDEX_FIELD,):
            digest.update(np.asarray(feature[field], dtype=np.int64).tobytes())
    return int.from_bytes(digest.digest(), "little")


class DataCollatorForMaskedPurchasePrediction(ShopperBertCollator):
    """Collator for pre-training: Algorithm 1 augmentation, then BERT-style masking for the nine MPP heads.

    Of the purchase tokens (never [CLS] or padding), `mlm_probability` are selected (at least one per user);
    of those, `mask_replace_prob` become [MASK] (all nine ids and the text vector hidden), `random_replace_prob`
    become a random purchase drawn from the batch, and the rest stay unchanged. Labels are the original ids of the
    selected tokens (-100 elsewhere, and for a category that is unknown/missing).

    Before masking, `augmentation_probability` of the sequences are augmented by Algorithm 1 (crop with
    `crop_probability`, else shuffle a window).

    Randomness is a pure function of `(seed, epoch, user)`: each user's draws come from a generator seeded with the
    collator's `seed`, the epoch set by `set_epoch` and a stable key of the user (see `sample_key`). So a user gets
    the same augmentation and masks whatever batch, process or data-loader worker it lands in, and a resumed run
    sees exactly the masks of an uninterrupted one; only the donor pool of random replacements (the batch) depends
    on the batch. Call `set_epoch(epoch)` at the start of each epoch to draw new masks.

    With `num_views=2` (for the user-level contrastive loss, `config.contrastive_weight > 0`) each user gives two
    rows, each augmented by Algorithm 1 (always, unless augmentation is off) and masked independently: rows
    `0..B-1` are the first views, rows `B..2B-1` the second, and `view_index` (2B,) names the user of each row.
    """

    def __init__(self, text_embeddings, max_length: int = 350, mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 augmentation_probability: float = 0.3, crop_probability: float = 0.5,
                 augmentation_window_ratio: float = 0.3, seed: int = 0, pad_to_multiple_of: int | None = None,
                 num_views: int = 1, vocab_sizes: Sequence[int] | None = None):
        super().__init__(text_embeddings, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
                         vocab_sizes=vocab_sizes)
        if num_views not in (1, 2):
            raise ValueError(f"num_views must be 1 or 2, got {num_views}")
        self.num_views = num_views
        for name, value in [("mlm_probability", mlm_probability), ("mask_replace_prob", mask_replace_prob),
                            ("random_replace_prob", random_replace_prob),
                            ("augmentation_probability", augmentation_probability),
                            ("crop_probability", crop_probability),
                            ("augmentation_window_ratio", augmentation_window_ratio)]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
            raise ValueError("mask_replace_prob + random_replace_prob must not exceed 1")
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.augmentation_probability = augmentation_probability
        self.crop_probability = crop_probability
        self.augmentation_window_ratio = augmentation_window_ratio
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def from_config(cls, config: ShopperBertConfig, text_embeddings, augmentation: bool = True, **kwargs):
        """Masking and augmentation rates from the config; `augmentation=False` turns Algorithm 1 off; two views per
        user when the config has a contrastive loss (`num_views=1` overrides, e.g. for validation)."""
        kwargs.setdefault("mlm_probability", config.mlm_probability)
        kwargs.setdefault("mask_replace_prob", config.mask_replace_prob)
        kwargs.setdefault("random_replace_prob", config.random_replace_prob)
        kwargs.setdefault("augmentation_probability", config.augmentation_probability if augmentation else 0.0)
        kwargs.setdefault("crop_probability", config.crop_probability)
        kwargs.setdefault("augmentation_window_ratio", config.augmentation_window_ratio)
        kwargs.setdefault("num_views", 2 if config.contrastive_weight > 0 else 1)
        return super().from_config(config, text_embeddings, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentations and masks for a new epoch."""
        self.epoch = int(epoch)

    def generator_for(self, feature: Mapping, view: int = 0) -> np.random.Generator:
        key = [self.seed, self.epoch, sample_key(feature)]
        return np.random.default_rng(key if view == 0 else key + [view])

    # -- the batch ---------------------------------------------------------------------------------------------------
    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("cannot collate an empty list of features")
        read = [self._read(f, i) for i, f in enumerate(features)]
        rngs = [self.generator_for(f, view) for view in range(self.num_views) for f in features]
        sequences = read * self.num_views  # (V*B) rows: all first views, then all second views
        if self.augmentation_probability > 0:
            for i, (seq, rng) in enumerate(zip(sequences, rngs)):
                if self.num_views > 1 or rng.random() < self.augmentation_probability:
                    sequences[i] = seq[augment_indices(len(seq), rng, self.crop_probability,
                                                       self.augmentation_window_ratio)]
        batch = self._pad(sequences)
        self._mask(batch, sequences, rngs)
        if self.num_views > 1:
            batch["view_index"] = torch.arange(len(features)).repeat(self.num_views)  # (V*B,)
        return batch

    def _mask(self, batch: dict[str, torch.Tensor], sequences: Sequence[np.ndarray],
              rngs: Sequence[np.random.Generator]) -> None:
        category_ids, date_ids, text_embeds = batch["category_ids"], batch["date_ids"], batch["text_embeds"]
        ids = torch.cat([category_ids, date_ids], dim=-1)  # (B, T, 9) originals
        batch_size, seq_len = ids.shape[:2]
        is_purchase = ids[..., 0].gt(CLS_ID).numpy()  # (B, T)
        donors = np.flatnonzero(is_purchase.reshape(-1))  # flat (B*T) positions of every purchase in the batch

        selected = np.zeros((batch_size, seq_len), dtype=bool)  # (B, T)
        to_mask = np.zeros_like(selected)
        to_random = np.zeros_like(selected)
        donor_of = np.zeros((batch_size, seq_len), dtype=np.int64)
        for row, (seq, rng) in enumerate(zip(sequences, rngs)):
            n = len(seq)
            chosen = rng.random(n) < self.mlm_probability  # (n,)
            if not chosen.any():  # at least one prediction per user
                chosen[rng.integers(n)] = True
            action = rng.random(n)  # (n,)
            selected[row, 1:1 + n] = chosen
            to_mask[row, 1:1 + n] = chosen & (action < self.mask_replace_prob)
            to_random[row, 1:1 + n] = chosen & (action >= self.mask_replace_prob) & (
                action < self.mask_replace_prob + self.random_replace_prob)
            donor_of[row, 1:1 + n] = donors[rng.integers(len(donors), size=n)]

        selected_t = torch.from_numpy(selected)
        labels = torch.full_like(ids, -100)  # (B, T, 9)
        labels[selected_t] = ids[selected_t]
        labels[..., :len(CATEGORY_FIELDS)][labels[..., :len(CATEGORY_FIELDS)] == UNK_ID] = -100  # missing label

        if to_random.any():
            target = torch.from_numpy(to_random)
            picked = torch.from_numpy(donor_of[to_random])  # flat (B*T) positions of the donors
            new_ids = ids.reshape(-1, ids.shape[-1])[picked]  # (R, 9)
            new_text = text_embeds.reshape(-1, text_embeds.shape[-1])[picked]  # (R, D)
            category_ids[target] = new_ids[:, :len(CATEGORY_FIELDS)]
            date_ids[target] = new_ids[:, len(CATEGORY_FIELDS):]
            text_embeds[target] = new_text
        if to_mask.any():
            target = torch.from_numpy(to_mask)
            category_ids[target] = MASK_ID
            date_ids[target] = MASK_ID
            text_embeds[target] = 0.0

        batch["labels"] = labels
        batch["masked_positions"] = selected_t
        batch["masked_index"] = torch.from_numpy(np.flatnonzero(selected))  # (N,) flat row-major, for the model


__all__ = [
    "ShopperBertCollator",
    "DataCollatorForMaskedPurchasePrediction",
    "augment_indices",
    "crop_indices",
    "sample_key",
    "shuffle_indices",
]
