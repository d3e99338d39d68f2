"""The data contract between a corpus and a model, in the standard library only.

The token contract: the reserved ids every vocabulary shares, the names of the id fields (the nine masked-purchase-
prediction heads) and of the text column, the sizes of the date vocabularies. A model's category heads and embeddings are indexed by the ids of the corpus it was pre-trained on. Two
vocabularies of the same sizes can still give the same id to different categories, so compatibility is checked by
content: `vocabulary_fingerprint` hashes the vocabulary (`vocab.json` of a `data_prep` corpus: level -> list of
names, the position being the id); the corpus records it in `metadata.json` and the model in its config
(`vocab_fingerprint`).

It is the one module `data_prep` imports from the model package, and it travels with the configuration file as remote
code (`configuration_shopperbert.py` imports it relatively; `save_pretrained` and the Hub loader copy it along).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# ---------------------------------------------------------------------------------------------------------------
# The token contract shared by the model, the collator and data_prep.
#
# Every one of the nine categorical vocabularies (four category levels, five date fields) reserves the same four
# leading ids, so that a [MASK] or [CLS] token hides *all* of a purchase (its product and its date) and padding is
# recognisable from any field.
# ---------------------------------------------------------------------------------------------------------------
PAD_ID = 0  # padding
MASK_ID = 1  # [MASK]: the purchase is hidden from the encoder
CLS_ID = 2  # [CLS]: the user token prepended to every sequence
UNK_ID = 3  # an unknown or missing value (category missing in the log, product unseen in pre-training, ...)
NUM_SPECIAL_IDS = 4
SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]")

CATEGORY_FIELDS = ("category_1", "category_2", "category_3", "category_4")
DATE_FIELDS = ("year", "month", "day", "weekday", "hour")
# The nine masked-purchase-prediction heads, in the order of `labels[..., k]` and `outputs.logits[k]`.
MPP_HEADS = CATEGORY_FIELDS + DATE_FIELDS
# Dataset column holding, for each purchase, its row in the text-embedding matrix.
TEXT_INDEX_FIELD = "text_idx"
# The corpus files a checkpoint carries beside its weights (train.py copies them, publish ships them, encode reads them):
# what turning new purchase logs into model inputs needs.
CHECKPOINT_DATA_FILES = ("metadata.json", "vocab.json")

# Date ids: id = NUM_SPECIAL_IDS + offset, with offset = year - date_base_year, month - 1, day - 1,
# weekday (Monday = 0) and hour. These sizes include the reserved ids.
MONTH_VOCAB_SIZE = NUM_SPECIAL_IDS + 12
DAY_VOCAB_SIZE = NUM_SPECIAL_IDS + 31
WEEKDAY_VOCAB_SIZE = NUM_SPECIAL_IDS + 7
HOUR_VOCAB_SIZE = NUM_SPECIAL_IDS + 24

# The key under which a corpus' metadata.json and a model's config record the vocabulary fingerprint.
FINGERPRINT_KEY = "vocab_fingerprint"


def vocabulary_fingerprint(vocab: Mapping) -> str:
    """A short, stable hash of a vocabulary's content (`level -> [names]` as data_prep writes it, or any JSON
    mapping): equal fingerprints mean every name has the same id at every level. The order of the levels does not
    matter; any other difference (a name, its position, a level) does.

    >>> a = vocabulary_fingerprint({"category_1": {"x": 4, "y": 5}})
    >>> a == vocabulary_fingerprint({"category_1": {"y": 5, "x": 4}})
    True
    >>> a == vocabulary_fingerprint({"category_1": {"x": 5, "y": 4}})
    False
    """
    if not isinstance(vocab, Mapping):
        raise TypeError(f"a vocabulary is a mapping level -> names, got {type(vocab).__name__}")
    canonical = json.dumps(vocab, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def check_fingerprints(expected: str | None, found: str | None, *, expected_from: str, found_from: str) -> None:
    """Raise ValueError naming both sources when two recorded fingerprints differ. A missing one (older corpora and
    checkpoints) is not an error: the callers' size checks still apply."""
    if expected and found and expected != found:
        raise ValueError(f"{found_from} was built with another vocabulary than {expected_from} "
                         f"({FINGERPRINT_KEY} {found} != {expected}): the category ids mean different things; "
                         "use the corpus the model was pre-trained on (or re-train)")


__all__ = [
    "CATEGORY_FIELDS",
    "CHECKPOINT_DATA_FILES",
    "CLS_ID",
    "DATE_FIELDS",
    "DAY_VOCAB_SIZE",
    "FINGERPRINT_KEY",
    "HOUR_VOCAB_SIZE",
    "MASK_ID",
    "MONTH_VOCAB_SIZE",
    "MPP_HEADS",
    "NUM_SPECIAL_IDS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TEXT_INDEX_FIELD",
    "UNK_ID",
    "WEEKDAY_VOCAB_SIZE",
    "check_fingerprints",
    "vocabulary_fingerprint",
]
