"""The rank of every user id of a build in code-point order, computed without holding the ids in memory.

The local engine reads a log one chunk (input file) at a time and keeps one row per user until its filters and split
have run; the ids were the largest part of that row, and the split and the top-frequency filter need only their
order. `ExternalIdRanks` keeps them on disk: each chunk's ids go to a file sorted by id, with a sample of every
`SAMPLE_EVERY`-th; once every chunk is in, the sample gives range boundaries, each chunk file is cut at them into
buckets of about `BUCKET_USERS` ids, and every bucket is sorted on its own. Memory: one bucket, one chunk, and the
8-byte rank of every user. Limits: a bucket can exceed `BUCKET_USERS` by up to `SAMPLE_EVERY` ids per chunk; every
bucket file is open while the chunks are cut (about 1,000 at a billion users, the usual open-file limit).

The ranks are those of `processing.id_order` (Arrow's stable sort of the ids as text): rank r is the position of the
user in that order, so equal ids (which the caller refuses) rank in row order. Rows are numbered in the order the
chunks were added, each chunk's users in the order given.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from .processing import user_id_array

#: ids per bucket sorted in memory (about 60 MB of Arrow strings, row numbers and sort indices at 1M).
BUCKET_USERS = 1 << 20
#: one id of every this many (of each chunk's sorted ids) is kept to choose the bucket boundaries.
SAMPLE_EVERY = 64
_SCHEMA = pa.schema([("id", pa.large_string()), ("row", pa.int64())])


def _write(path: Path, table: pa.Table) -> None:
    with ipc.new_file(path, _SCHEMA) as writer:
        writer.write_table(table)


def _read(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:  # read into memory: the file goes once read
        return ipc.open_file(source).read_all()


class ExternalIdRanks:
    """Collects the user ids of a build chunk by chunk (`add`), then gives every row's rank (`ranks`).

    `work` is a scratch folder of this object's own (created; the caller deletes it with the build's scratch).
    """

    def __init__(self, work: Path, bucket_users: int | None = None, sample_every: int | None = None):
        self.work = Path(work)
        self.bucket_users = bucket_users or BUCKET_USERS
        self.sample_every = sample_every or SAMPLE_EVERY
        self.n_buckets = 0  # set by `ranks`
        self.chunks: list = []  # one file per chunk added, its ids sorted
        self.samples: list = []  # Arrow arrays
        self.total = 0
        self.duplicate: tuple | None = None  # (id, rows) of the smallest id found more than once, after `ranks`

    def add(self, user_ids) -> None:
        """The ids of the next chunk's users (any array `processing.user_id_array` takes), in row order."""
        ids = user_id_array(user_ids)
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        order = pc.sort_indices(ids)
        table = pa.table({"id": ids.take(order), "row": pc.add(order.cast(pa.int64()), self.total)}, schema=_SCHEMA)
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / f"ids-{len(self.chunks):05d}.arrow"
        _write(path, table)
        self.samples.append(table.column("id").take(pa.array(np.arange(0, len(ids), self.sample_every))))
        self.chunks.append(path)
        self.total += len(ids)

    def ranks(self) -> np.ndarray:
        """Per row (int64): the position of its id in the code-point order of every id added. Sets `duplicate`."""
        rank = np.empty(self.total, dtype=np.int64)
        buckets = self._bucket_files()
        offset = 0
        for path in buckets:
            table = _read(path)
            order = pc.sort_indices(table, sort_keys=[("id", "ascending"), ("row", "ascending")])
            ids, rows = table.column("id").take(order), table.column("row").take(order).to_numpy()
            rank[rows] = offset + np.arange(len(rows))
            offset += len(rows)
            if self.duplicate is None and len(ids) > 1:
                self.duplicate = _first_duplicate(ids, rows)
            del table, ids, rows
            path.unlink()
        if offset != self.total:
            raise RuntimeError(f"ranked {offset} of {self.total} user ids")  # internal invariant
        return rank

    def _bucket_files(self) -> list:
        """Cut every chunk file at the sampled boundaries into one file per bucket; returns them in id order."""
        n_buckets = self.n_buckets = max(1, math.ceil(self.total / self.bucket_users))
        sample = pa.chunked_array(self.samples, pa.large_string()).combine_chunks()
        sample = sample.take(pc.sort_indices(sample))
        splitters = [sample[len(sample) * k // n_buckets].as_py() for k in range(1, n_buckets)]
        self.samples = []
        paths = [self.work / f"bucket-{b:05d}.arrow" for b in range(n_buckets)]
        writers = [ipc.new_file(p, _SCHEMA) for p in paths]
        try:
            for path in self.chunks:
                table = _read(path)  # one chunk, sorted by id: a bucket's part is the ids below its upper boundary
                ids = table.column("id")
                cuts = [0, *(_count_below(ids, s) for s in splitters), len(ids)]
                for writer, a, b in zip(writers, cuts[:-1], cuts[1:]):
                    if b > a:
                        writer.write_table(table.slice(a, b - a))
                del table, ids
                path.unlink()
        finally:
            for writer in writers:
                writer.close()
        return paths


def _count_below(ids, value: str) -> int:
    """How many ids of a sorted Arrow string array are below `value` (a binary search: Python compares str by code
    point, the order of UTF-8 bytes that Arrow sorts by)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if ids[mid].as_py() < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _first_duplicate(ids: pa.Array, rows: np.ndarray) -> tuple | None:
    """(id, rows holding it) of the first id equal to its successor in a sorted array, or None."""
    same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(same)
    if not len(hits):
        return None
    uid = ids[int(hits[0])].as_py()
    equal = pc.equal(ids, pa.scalar(uid, pa.large_string())).to_numpy(zero_copy_only=False)
    return uid, rows[equal]
