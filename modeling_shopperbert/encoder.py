"""Encode users with a pre-trained ShopperBERT, the way sentence-transformers encodes sentences.

```python
>>> from modeling_shopperbert import UserEncoder
>>> encoder = UserEncoder.from_pretrained("shopperbert-completejourney-small", data="data/cj")
>>> dataset = encoder.data.dataset["validation"]              # prepared users (data_prep rows)
>>> embeddings = encoder.encode(dataset, batch_size=64)
>>> embeddings.shape
(244, 128)
>>> encoder.encode(logs_dataframe, output_path="users.parquet")  # raw purchase logs of new users, keyed by user_id
```
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .collator import ShopperBertCollator
from .configuration_shopperbert import TEXT_INDEX_FIELD, ShopperBertConfig
from .contract import CHECKPOINT_DATA_FILES, FINGERPRINT_KEY, check_fingerprints, vocabulary_fingerprint
from .modeling_shopperbert import ShopperBertModel, ShopperBertPreTrainedModel, pool_user_embedding
from .processing_shopperbert import DroppedUsersWarning, ShopperBertProcessor

VOCABULARY_SIZES = ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "date_base_year")


class NonFiniteError(ValueError):
    """Weights or embeddings hold NaN or inf (e.g. a diverged training run); nothing was written."""


def _setting(config, name: str):
    """A config value from a `ShopperBertConfig` or a config.json dict (None when absent)."""
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def check_data_matches_config(config, metadata: dict, where: str) -> None:
    """Raise `ValueError` when prepared data's vocabulary sizes differ from the model's (`config`: a
    `ShopperBertConfig` or a config.json dict)."""
    for name in VOCABULARY_SIZES:
        expected = _setting(config, name)
        if name in metadata and expected is not None and metadata[name] != expected:
            raise ValueError(
                f"{where} has {name}={metadata[name]} but the model was trained with {name}="
                f"{expected}: encode users with the vocabulary the model was pre-trained on"
            )


def corpus_fingerprint(metadata: Mapping | None, vocab: Mapping | None) -> str | None:
    """A corpus' vocabulary fingerprint: the one its metadata.json records, else computed from its vocab.json
    content (older corpora); None when neither is known."""
    if metadata and metadata.get(FINGERPRINT_KEY):
        return metadata[FINGERPRINT_KEY]
    return vocabulary_fingerprint(vocab) if vocab is not None else None


def check_vocabulary(config, metadata: Mapping | None, vocab: Mapping | None, where: str, *,
                     model: str = "the model", model_fingerprint: str | None = None) -> None:
    """Raise `ValueError` when a corpus (`metadata`, `vocab`, read from `where`) is not the model's: its sizes differ,
    or its vocabulary content differs from the model's (config `vocab_fingerprint`, else `model_fingerprint`, e.g.
    of the checkpoint's own vocab.json). With no fingerprint on either side only the sizes are checked."""
    check_data_matches_config(config, dict(metadata or {}), where)
    expected = _setting(config, FINGERPRINT_KEY) or model_fingerprint
    check_fingerprints(expected, corpus_fingerprint(metadata, vocab), expected_from=model, found_from=where)


def non_finite_tensors(named_tensors) -> list[str]:
    """Names of the floating-point tensors of `(name, tensor)` pairs that hold NaN or inf."""
    return [name for name, tensor in named_tensors
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def check_finite_weights(model: torch.nn.Module, where: str) -> None:
    """Raise `NonFiniteError` naming the first parameters or buffers of `model` that hold NaN or inf."""
    bad = non_finite_tensors(list(model.named_parameters()) + list(model.named_buffers()))
    if bad:
        raise NonFiniteError(f"{where} has non-finite (NaN/inf) weights in {len(bad)} tensors ({', '.join(bad[:3])}"
                             f"{', ...' if len(bad) > 3 else ''}): the training run diverged; use an earlier "
                             "checkpoint (e.g. best/) or re-train")


class UserEncoder:
    """A pre-trained ShopperBERT encoder plus what it needs to turn purchase logs into user embeddings.

    Args:
        model: a `ShopperBertModel` (or any ShopperBERT model: its encoder is used).
        text_embeddings: `(num_descriptions, dim)` matrix that prepared rows' `text_idx` index.
        descriptions: texts of those rows (needed to encode raw logs whose products are already embedded).
        vocab, metadata: the pre-training corpus' `vocab.json` / `metadata.json` (to encode raw logs).
        device: where to run; defaults to CUDA when available.
        where: how messages name the model (e.g. its folder).

    Raises `NonFiniteError` when the model's weights hold NaN or inf, and `ValueError` when `vocab` / `metadata` are
    not the model's vocabulary (sizes, and content when the config records a `vocab_fingerprint`).
    """

    def __init__(self, model: ShopperBertPreTrainedModel, text_embeddings=None, descriptions=None, vocab=None,
                 metadata=None, device: str | torch.device | None = None, where: str = "the model"):
        if not isinstance(model, ShopperBertModel):
            model = getattr(model, "shopperbert", model)
        if not isinstance(model, ShopperBertModel) and type(model).__name__ != "ShopperBertModel":
            raise TypeError(f"UserEncoder needs a ShopperBERT model, got {type(model).__name__}")
        check_finite_weights(model, where)
        self.where = where
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.text_embeddings = None if text_embeddings is None else np.asarray(text_embeddings, dtype=np.float32)
        self.descriptions = descriptions
        self.vocab = vocab
        self.metadata = metadata
        self.processor = None  # a ShopperBertProcessor (processor_config.json) for checkpoints without vocab.json
        self.data = None
        if metadata is not None or vocab is not None:
            check_vocabulary(self.config, metadata, vocab, f"the vocab.json/metadata.json of {where}", model=where)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, data: str | os.PathLike | None = None,
                        device: str | None = None, **kwargs) -> "UserEncoder":
        """Load a saved model folder or Hub repo id (with its `vocab.json` / `metadata.json`) and, optionally, a
        data_prep folder whose text-embedding matrix and descriptions encode its users without re-embedding."""
        from transformers import AutoModel

        from . import register_auto_classes

        register_auto_classes()  # AutoModel then loads our saved heads and models without trust_remote_code

        path = Path(path)
        if not path.is_dir():  # a Hub repo id: fetch the whole folder (weights, config, vocab, metadata)
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(path), revision=kwargs.pop("revision", None)))
        model = AutoModel.from_pretrained(path, **kwargs)
        vocab = metadata = None
        if (path / "vocab.json").is_file():
            vocab = json.loads((path / "vocab.json").read_text())
        if (path / "metadata.json").is_file():
            metadata = json.loads((path / "metadata.json").read_text())
        encoder = cls(model, vocab=vocab, metadata=metadata, device=device, where=f"model {path}")
        if (path / "processor_config.json").is_file():
            encoder.processor = ShopperBertProcessor.from_pretrained(path)
            encoder.processor.check_config(encoder.config, encoder.where)
        if data is not None:
            encoder.attach_data(data)
        return encoder

    def attach_data(self, data) -> None:
        """Use a data_prep folder's text-embedding matrix and descriptions (checked against the model)."""
        from data_prep import load_descriptions, load_prepared

        prepared = load_prepared(data)
        own = corpus_fingerprint(self.metadata, self.vocab)  # the checkpoint's copy of its corpus' vocab.json
        check_vocabulary(self.config, prepared.metadata, prepared.vocab, f"data folder {data}", model=self.where,
                         model_fingerprint=own)
        self.data = prepared
        self.text_embeddings = np.asarray(prepared.embeddings, dtype=np.float32)
        self.descriptions = list(load_descriptions(data)["description"])
        self.vocab = self.vocab or prepared.vocab
        self.metadata = self.metadata or prepared.metadata

    # -- inputs ------------------------------------------------------------------------------------------------------
    def get_processor(self) -> ShopperBertProcessor:
        """The processor that turns raw logs into rows for this model: the checkpoint's own (processor_config.json)
        or one built from its vocab.json / metadata.json, with the attached text-embedding matrix as its text table.
        Descriptions missing from the table are embedded with the corpus' text model (data_prep's cached encoder)."""
        if self.vocab is not None and self.metadata is not None:
            processor = ShopperBertProcessor.from_corpus(self.vocab, self.metadata,
                                                         max_length=self.config.max_purchases)
        elif self.processor is not None:
            processor = copy.copy(self.processor)
        else:
            raise ValueError("encoding raw purchase logs needs the model's vocab.json and metadata.json "
                             "(a folder written by train.py has them) or its processor_config.json")
        if self.text_embeddings is not None:
            descriptions = [] if self.descriptions is None else list(self.descriptions)
            if len(descriptions) != len(self.text_embeddings):
                raise ValueError(f"{len(descriptions)} descriptions for a text-embedding matrix of "
                                 f"{len(self.text_embeddings)} rows: attach a data folder (`data=`) or pass both")
            processor.set_text_table(descriptions, self.text_embeddings)
        if getattr(self, "_text_encoder", None) is None or self._text_encoder.text_model != processor.text_model:
            self._text_encoder = _CorpusTextEncoder(processor.text_model)  # kept: its model loads once per encoder
        processor.text_encoder = self._text_encoder
        return processor

    def prepare_users(self, users, end_date=None, show_progress_bar: bool = False):
        """Turn `users` into (rows, text matrix): a `datasets.Dataset`/list of prepared rows passes through; a
        pandas DataFrame of raw purchase logs (canonical columns) is encoded by the processor (`get_processor`)."""
        if hasattr(users, "columns") and hasattr(users, "to_numpy"):  # a pandas DataFrame of raw logs
            processor = self.get_processor()
            processor.text_encoder.progress = show_progress_bar
            rows, text = processor.logs_to_rows(users, end_date=end_date)
            return rows, np.asarray(text, dtype=np.float32)
        if self.text_embeddings is None:
            raise ValueError("prepared rows index a text-embedding matrix: pass `text_embeddings=` or "
                             "`UserEncoder.from_pretrained(..., data=<data_prep folder>)`")
        return users, self.text_embeddings

    @staticmethod
    def user_ids(rows) -> list[str]:
        if hasattr(rows, "column_names"):
            return [str(u) for u in rows["user_id"]]
        return [str(r["user_id"]) for r in rows]

    # -- encoding ----------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        users,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        user_representation: str | None = None,
        normalize: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        output_path: str | os.PathLike | None = None,
        end_date=None,
        normalize_embeddings: bool | None = None,
        return_user_ids: bool = False,
        hidden_layer: int | None = None,
    ):
        """Embed users; returns `(num_users, hidden_size)` in the order of `users`.

        Args:
            users: a `datasets.Dataset` or list of prepared rows (data_prep format), or a pandas DataFrame of raw
                purchase logs (canonical columns: user_id, timestamp, category_1..4, description, ...); a
                DataFrame's users come back in the order of their first row.
            batch_size: users per forward pass (users are sorted by length to pad little).
            show_progress_bar: defaults to True when more than one batch.
            user_representation: `"mean"` or `"cls"`; defaults to the model's own (a warning when it differs: the
                other vector was not trained to describe the user).
            normalize / normalize_embeddings (sentence-transformers' name): L2-normalise each embedding.
            convert_to_numpy / convert_to_tensor: numpy array (default) or torch tensor.
            output_path: also write a parquet file with `user_id` and `embedding` columns.
            end_date: for raw logs, keep only purchases before this date; users with no purchase before it get no
                row (a `DroppedUsersWarning` says how many).
            return_user_ids: return `(user_ids, embeddings)`, the ids (str) row by row.
            hidden_layer: pool the states of this layer instead of the last (transformers' `hidden_states` index:
                0 = the input embeddings, `num_hidden_layers` = the last; negative counts from the end). A probe of
                what each layer holds (`python -m eval_suite probe --layers`); the checkpoint's user vector is the
                default.

        Raises `NonFiniteError` (nothing written) when an embedding holds NaN or inf.
        """
        normalize = normalize if normalize_embeddings is None else normalize_embeddings
        representation = self._representation(user_representation)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._check_hidden_layer(hidden_layer)
        rows, text = self.prepare_users(users, end_date=end_date, show_progress_bar=bool(show_progress_bar))
        if hasattr(rows, "with_format"):
            columns = [c for c in rows.column_names if c != "timestamp"]
            rows = rows.with_format("numpy", columns=columns)
        num_users = len(rows)
        if num_users == 0:
            raise ValueError("no users to encode")
        if show_progress_bar is None:
            show_progress_bar = num_users > batch_size
        embeddings = self._embed_rows(rows, text, batch_size, representation, hidden_layer, show_progress_bar)
        if normalize:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        bad = int((~torch.isfinite(embeddings).all(dim=-1)).sum())
        if bad:
            raise NonFiniteError(f"{bad} of {num_users} user embeddings of {self.where} are not finite (NaN/inf); "
                                 "nothing was written: check the weights and the text-embedding matrix")
        if output_path is not None:
            write_user_embeddings(output_path, self.user_ids(rows), embeddings.numpy())
        if not convert_to_tensor and convert_to_numpy:
            embeddings = embeddings.numpy()
        return (self.user_ids(rows), embeddings) if return_user_ids else embeddings

    def _check_hidden_layer(self, hidden_layer: int | None) -> None:
        layers = self.config.num_hidden_layers
        if hidden_layer is not None and not -(layers + 1) <= hidden_layer <= layers:
            raise ValueError(f"hidden_layer must be in [{-(layers + 1)}, {layers}] for a model of {layers} layers, "
                             f"got {hidden_layer}")

    def _embed_rows(self, rows, text, batch_size: int, representation: str, hidden_layer: int | None,
                    show_progress_bar: bool) -> torch.Tensor:
        """`(len(rows), H)` float32 user vectors on the CPU, in the order of `rows` (batched longest first, so that
        a batch pads little)."""
        collator = ShopperBertCollator.from_config(self.config, text)
        order = np.argsort(-sequence_lengths(rows), kind="stable")
        if hasattr(rows, "with_format"):  # a datasets.Dataset: read through Arrow, batch by batch
            rows = rows.with_format("arrow", columns=[c for c in rows.column_names if c != "timestamp"])
        chunks = []
        for start in tqdm(range(0, len(rows), batch_size), desc="encoding users", disable=not show_progress_bar):
            batch = collator(rows_at(rows, order[start:start + batch_size]))
            batch = {k: v.to(self.device) for k, v in batch.items()}
            batch.pop("labels", None)  # rows of a labelled split (fine-tuning data) encode like any rows
            if hidden_layer is None:
                hidden = self.model(**batch, return_dict=True).last_hidden_state  # (B, T, H)
            else:
                hidden = self.model(**batch, output_hidden_states=True, return_dict=True).hidden_states[hidden_layer]
            chunks.append(pool_user_embedding(hidden, batch["category_ids"], representation,
                                              batch.get("attention_mask")).float().cpu())  # (B, H)
        embeddings = torch.empty(len(rows), chunks[0].shape[-1])
        embeddings[torch.from_numpy(order)] = torch.cat(chunks)
        return embeddings

    def _representation(self, user_representation: str | None) -> str:
        """The pooling to use: the model's own unless asked otherwise (then a warning)."""
        import warnings

        own = self.config.user_representation
        representation = user_representation or own
        if representation not in ("mean", "cls"):
            raise ValueError(f"user_representation must be 'mean' or 'cls', got {representation!r}")
        if representation != own:
            warnings.warn(f"user_representation={representation!r} on a checkpoint pre-trained with {own!r}: its "
                          f"{'[CLS] vector' if representation == 'cls' else 'mean of purchase vectors'} was not "
                          "trained to describe the user", UserWarning, stacklevel=4)
        return representation


def sequence_lengths(rows) -> np.ndarray:
    """Purchases per row; a `datasets.Dataset` is read column-wise through Arrow, a few thousand rows at a time."""
    if hasattr(rows, "with_format"):
        import pyarrow.compute as pc

        batches = rows.with_format("arrow", columns=[TEXT_INDEX_FIELD]).iter(batch_size=8192)
        return np.concatenate([pc.list_value_length(b.column(TEXT_INDEX_FIELD)).to_numpy() for b in batches])
    return np.array([len(row[TEXT_INDEX_FIELD]) for row in rows])


def rows_at(rows, indices: np.ndarray) -> list[dict]:
    """The rows at `indices` as dicts of numpy arrays (the collator's input). A `datasets.Dataset` in "arrow" format is
    read in one Arrow `take` and split column-wise (row-by-row access through `datasets`' numpy formatter costs ~2 ms a
    row)."""
    if not (hasattr(rows, "format") and rows.format.get("type") == "arrow"):
        return [rows[int(i)] for i in indices]
    import pyarrow as pa
    import pyarrow.compute as pc

    table = rows[[int(i) for i in indices]]
    fields = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            ends = np.cumsum(pc.list_value_length(column).to_numpy(zero_copy_only=False))
            fields[name] = np.split(column.flatten().to_numpy(zero_copy_only=False), ends[:-1])
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            fields[name] = column.to_pylist()
        else:
            fields[name] = column.to_numpy(zero_copy_only=False)
    return [{name: values[i] for name, values in fields.items()} for i in range(len(indices))]


class _CorpusTextEncoder:
    """Embeds descriptions new to a checkpoint with its corpus' text model, through data_prep's on-disk cache (the
    vectors `data_prep.encode_logs` gives); loaded on first use."""

    def __init__(self, text_model):
        self.text_model = text_model
        self.progress = False

    def encode(self, texts: list[str]) -> np.ndarray:
        from data_prep.schema import DataPrepError
        from data_prep.text import embed_texts, resolve_text_encoder

        try:
            encoder = resolve_text_encoder(self.text_model)
        except DataPrepError as exc:
            raise ValueError(f"{len(texts)} descriptions are new and need the text model, but {self.text_model!r} "
                             f"cannot be loaded ({exc})") from None
        vectors, _ = embed_texts(list(texts), encoder, progress=self.progress)
        return vectors


def write_user_embeddings(path, user_ids: Sequence[str], embeddings: np.ndarray) -> Path:
    """Parquet with `user_id` (string) and `embedding` (list<float32>) columns, written atomically (nothing is left
    behind on failure). Raises `NonFiniteError` on NaN/inf embeddings and `IsADirectoryError` when `path` is a
    folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if len(user_ids) != len(embeddings):
        raise ValueError(f"{len(user_ids)} user ids for {len(embeddings)} embeddings")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name for the embeddings (e.g. users.parquet)")
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise NonFiniteError(f"{int((~np.isfinite(matrix).all(axis=1)).sum())} embeddings are not finite (NaN/inf); "
                             f"{path} was not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    table = pa.table({"user_id": pa.array([str(u) for u in user_ids], pa.string()), "embedding": vectors})
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_user_embeddings(path) -> tuple[list[str], np.ndarray]:
    """`(user_ids, (num_users, H) float32)` of an encode output: a parquet file, or a complete folder of shards
    (`encode --shard-size`; refused without its `_manifest.json`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        from .encode_shards import read_sharded

        return read_sharded(path)
    table = pq.read_table(path)
    column = table.column("embedding")
    if pa.types.is_fixed_size_list(column.type):  # what write_user_embeddings writes (also 0 rows)
        flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.reshape(len(column), column.type.list_size).astype(np.float32)
    else:
        vectors = np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)
    return [str(u) for u in table.column("user_id").to_pylist()], vectors


__all__ = ["DroppedUsersWarning", "NonFiniteError", "UserEncoder", "check_data_matches_config", "check_vocabulary",
           "corpus_fingerprint", "read_user_embeddings", "write_user_embeddings"]
