"""The data contract between a corpus and a model, in the standard library only.

A model's category heads and embeddings are indexed by the ids of the corpus it was pre-trained on. Two
vocabularies of the same sizes can still give the same id to different categories, so compatibility is checked by
content: `vocabulary_fingerprint` hashes the vocabulary (`vocab.json` of a `data_prep` corpus: level -> list of
names, the position being the id); the corpus records it in `metadata.json` and the model in its config
(`vocab_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

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


__all__ = ["FINGERPRINT_KEY", "check_fingerprints", "vocabulary_fingerprint"]
