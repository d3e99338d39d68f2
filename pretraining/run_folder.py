"""The run folder: one run per `--output`, held by a lock file while training.

A non-empty `--output` is refused unless the run resumes itself (`--resume latest` or one of its own checkpoints);
`--overwrite` clears only a folder train.py wrote (its marker or `run_config.json`). Every file is written atomically.
`args` below is train.py's parsed `PretrainingArguments`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from data_prep.json_files import write_json
from pretraining.errors import RunError

# Files train.py keeps in `--output`: a lock while a run uses the folder, and a marker saying train.py made it (only
# such a folder may be cleared by --overwrite; `run_config.json` marks runs from before the marker).
LOCK_FILE = ".train.lock"
RUN_MARKER = ".train-run.json"
UMASK = os.umask(0o022)  # read once, at import (the only way to read it), and set back at once
os.umask(UMASK)


def claim_output(args, output: Path) -> Path:
    """Lock `output` for this run and make sure it holds no other run: a resume of its own run needs a train.py run
    folder (its marker or run_config.json); a new run (or one started from another folder's checkpoint) needs an
    empty folder, or with --overwrite one that train.py wrote, which is cleared. Returns the lock. Called once every
    option has been checked and the Accelerator built, so that a refused run never deletes anything."""
    if output.exists() and not output.is_dir():
        raise RunError(f"--output {output} is a file, not a folder")
    output.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(output / LOCK_FILE)
    try:
        others = sorted(p for p in output.iterdir() if p.name != LOCK_FILE)
        names = ", ".join(p.name for p in others[:5])
        is_run = (output / RUN_MARKER).is_file() or (output / "run_config.json").is_file()
        if continues_this_folder(args, output):
            if not is_run:
                raise RunError(f"--resume {args.resume}: --output {output} is not a train.py run folder (no "
                               f"{RUN_MARKER} or run_config.json; it holds {names}); refusing to resume into it")
        elif others:
            clear_earlier_run(args, output, others, names, is_run)
        if not continues_this_folder(args, output):
            write_json(output / RUN_MARKER, {"written_by": "train.py", "started": time.time(),
                                             "resumed_from": str(Path(args.resume).resolve()) if args.resume else None})
    except BaseException:
        release_lock(lock)
        raise
    return lock


def clear_earlier_run(args, output: Path, others: list[Path], names: str, is_run: bool) -> None:
    """Refuse a non-empty `output` for a new run, or with --overwrite clear it when train.py wrote it."""
    if args.resume:
        raise RunError(f"--output {output} is not empty (it holds {names}): --resume {args.resume}, a checkpoint of "
                       "another folder, starts a new run there and needs a new or empty --output")
    if not args.overwrite:
        raise RunError(f"--output {output} is not empty (it holds {names}): continue that run with --resume "
                       "latest, choose a new --output, or give --overwrite to replace an earlier train.py run")
    if not is_run:
        raise RunError(f"--overwrite: {output} is not a train.py run folder (no {RUN_MARKER} or "
                       f"run_config.json; it holds {names}); refusing to delete anything in it")
    print(f"--overwrite: clearing the earlier run in {output}", file=sys.stderr)
    for path in others:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def continues_this_folder(args, output: Path) -> bool:
    """Whether --resume continues the run of `output` (`latest`, or a checkpoint under its checkpoints/), rather
    than starting a new run folder from another folder's checkpoint."""
    if args.resume == "latest":
        return True
    return args.resume is not None and (output / "checkpoints").resolve() in Path(args.resume).resolve().parents


def holds_a_run(output: Path) -> bool:
    """Whether `output` holds anything besides a lock and a run marker (which another process may just have
    written while claiming it)."""
    return output.is_dir() and any(p.name not in (LOCK_FILE, RUN_MARKER) for p in output.iterdir())


def acquire_lock(path: Path) -> Path:
    """Create the lock file atomically (O_EXCL) holding this process's pid and host. A lock whose process is alive
    (or on another host, where it cannot be checked) refuses the run; one left by a dead process of this host is
    taken over with a warning."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            raw = path.read_text() if path.exists() else None
            if raw is None:
                continue  # released meanwhile
            holder = parse_lock(raw)
            if holder is None or lock_is_live(holder):
                who = f"process {holder['pid']} on {holder['host']}" if holder else "an unknown process"
                raise RunError(f"{path.parent} is in use by {who} (lock file {path}): wait for that run to end, or "
                               "remove the lock file if no run uses this folder any more")
            print(f"warning: taking over the lock {path} of process {holder['pid']}, which no longer runs",
                  file=sys.stderr)
            aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue  # another process took it over first
            if aside.read_text() != raw:  # we moved a lock taken meanwhile: put it back
                try:
                    os.link(aside, path)
                except FileExistsError:
                    pass
            aside.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
        return path
    raise RunError(f"could not take the lock {path}: other processes keep taking it")


def parse_lock(raw: str) -> dict | None:
    try:
        holder = json.loads(raw)
        return holder if isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str) else None
    except (ValueError, AttributeError):
        return None


def lock_is_live(holder: dict) -> bool:
    if holder["host"] != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_lock(path: Path | None) -> None:
    """Remove the lock file if this process still holds it."""
    if path is not None and path.is_file():
        holder = parse_lock(path.read_text())
        if holder and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            path.unlink(missing_ok=True)


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of a JSONL log up to `step`, atomically: a resumed run logs the later steps again. A line
    cut short by a kill is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and (record.get("step") or 0) <= step:
            kept.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def use_default_modes(folder: Path) -> None:
    """Give every file and folder under `folder` the mode the umask gives new files (some writers use 0600)."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~UMASK)
