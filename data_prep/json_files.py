"""Writing JSON files: the one writer of the corpus folder's, train.py's run folder's and eval_suite's JSON files.

Every write is atomic (a temporary file beside the target, then a rename), so a reader never sees half a file and a
killed process leaves the previous version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def to_json_value(value):
    """`json.dumps`' `default`: numpy scalars and arrays become Python numbers and lists; anything else (paths,
    dates) its `str`."""
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # np.integer, np.floating, np.bool_, ndarray
        return value.tolist()
    return str(value)


def write_json(path, value, *, indent: int = 2, newline: bool = False) -> None:
    """Write `value` as JSON to `path` atomically (with `indent`, and a final newline when `newline`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=indent, default=to_json_value) + ("\n" if newline else ""))
    os.replace(tmp, path)


__all__ = ["to_json_value", "write_json"]
