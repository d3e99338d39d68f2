"""Writing a `datasets.DatasetDict` folder from Arrow stream shards, without copying the data through
`save_to_disk` (the last step of `data_prep build`)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa

from .json_files import write_json

MAX_SHARD_BYTES = 500 * 1000**2  # a new shard file starts above this size (datasets' default)


class ShardWriter:
    """Writes one split's rows as Arrow stream files (the format of `Dataset.save_to_disk`), starting a new
    shard when the current one exceeds `max_shard_bytes` (datasets' default 500 MB)."""

    def __init__(self, folder: Path, schema: pa.Schema, max_shard_bytes: int | None = None):
        self.folder, self.schema = folder, schema
        self.max_shard_bytes = MAX_SHARD_BYTES if max_shard_bytes is None else max_shard_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._sink = self._writer = None
        self._bytes = 0

    def _open(self):
        path = self.folder / f"shard-{len(self.files):05d}.arrow"
        self.files.append(path)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._bytes = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None or (self._bytes and self._bytes + table.nbytes > self.max_shard_bytes):
            self.close()
            self._open()
        self._writer.write_table(table)
        self._bytes += table.nbytes

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def finish(self) -> list[Path]:
        """Close and return the shard files (one empty shard for an empty split)."""
        self.close()
        if not self.files:
            self._open()
            self.close()
        return self.files


def assemble_dataset_dict(writers: dict, schema: pa.Schema, target: Path, split_counts: dict) -> None:
    """Turn the shard files into a folder that `datasets.load_from_disk` reads, without copying the data.

    `DatasetDict.save_to_disk` of empty splits with the same features writes the bookkeeping files (dataset_dict.json,
    per split state.json and dataset_info.json) of the installed `datasets` version; the written shards then replace
    its empty data file and its state.json lists them. Copying the data through `save_to_disk` instead would double
    the disk traffic and map the whole dataset into memory. The result is checked by loading it back.
    """
    import datasets

    empty = datasets.DatasetDict({name: datasets.Dataset(schema.empty_table()) for name in writers})
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        empty.save_to_disk(str(target), num_shards={name: 1 for name in writers})
    finally:
        if enabled:
            datasets.enable_progress_bars()
    for name, writer in writers.items():
        split_dir = target / name
        state_path = split_dir / "state.json"
        state = json.loads(state_path.read_text())
        for entry in state["_data_files"]:
            (split_dir / entry["filename"]).unlink()
        files = writer.finish()
        names = [f"data-{i:05d}-of-{len(files):05d}.arrow" for i in range(len(files))]
        for src, dst in zip(files, names):
            os.replace(src, split_dir / dst)
        state["_data_files"] = [{"filename": n} for n in names]
        state["_fingerprint"] = uuid.uuid4().hex[:16]
        write_json(state_path, state, newline=True)
    loaded = datasets.load_from_disk(str(target))
    for name in writers:
        if loaded[name].num_rows != split_counts[name]["users"]:
            raise RuntimeError(f"assembled split {name} has {loaded[name].num_rows} rows, expected "
                               f"{split_counts[name]['users']}")
    del loaded


__all__ = ["MAX_SHARD_BYTES", "ShardWriter", "assemble_dataset_dict"]
