"""The corpus folder: its layout, and how `data_prep build` writes it safely.

A build writes into a temporary folder beside `<out>` (`prepare_target`) and swaps it in with renames at the end
(`commit`). `--overwrite` replaces only a folder this command wrote (marker file `.shopperbert-corpus`, or a
corpus from before the marker) that holds nothing else, and never an input (`check_output_location`). Temporary
folders of killed builds are removed by the next build of the same `<out>`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from modeling_shopperbert.contract import FINGERPRINT_KEY

from .json_files import write_json
from .schema import DataPrepError

FORMAT_VERSION = 1
DATASET_DIR = "dataset"
EMBEDDINGS_FILE = "text_embeddings.safetensors"
DESCRIPTIONS_FILE = "descriptions.parquet"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "metadata.json"
MARKER_FILE = ".shopperbert-corpus"
CORPUS_ENTRIES = (DATASET_DIR, EMBEDDINGS_FILE, DESCRIPTIONS_FILE, VOCAB_FILE, METADATA_FILE, MARKER_FILE)


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


def prepare_target(out: Path, overwrite: bool, inputs=()) -> Path:
    check_output_location(out, overwrite, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise DataPrepError(f"cannot create {out}: {exc}") from None
    return tmp


def write_marker(folder: Path, metadata: dict) -> None:
    marker = {"written_by": "python -m data_prep build", "format_version": FORMAT_VERSION,
              FINGERPRINT_KEY: metadata[FINGERPRINT_KEY]}
    write_json(folder / MARKER_FILE, marker, newline=True)


def pid_alive(pid: int) -> bool:
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
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
    for path in out.parent.glob(f".{out.name}.old-*"):  # a replaced corpus whose deletion was interrupted
        if path.is_dir() and _not_replaceable(path) is None:
            shutil.rmtree(path, ignore_errors=True)


def commit(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` with renames (the old folder is moved aside first, then deleted)."""
    old = None
    if out.exists():
        _check_replaceable(out)  # again: the user may have put files there while the build ran
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["FORMAT_VERSION", "DATASET_DIR", "EMBEDDINGS_FILE", "DESCRIPTIONS_FILE", "VOCAB_FILE", "METADATA_FILE",
           "MARKER_FILE", "CORPUS_ENTRIES", "check_output_location", "prepare_target", "write_marker", "commit",
           "pid_alive"]
