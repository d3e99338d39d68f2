# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""ShopperBERT's `feature-extraction` pipeline: raw purchase logs in, one embedding per user out, keyed by user id.

This file travels inside checkpoints as remote code (torch, transformers, numpy and the standard library only). A
folder saved with `save_pipeline_files` names it in `config.json` (`custom_pipelines`), so that

```python
>>> from transformers import pipeline
>>> extractor = pipeline("feature-extraction", model="shopperbert", trust_remote_code=True)
>>> embeddings = extractor(logs)   # pandas DataFrame (or list of records, datasets.Dataset) of raw purchases
>>> list(embeddings)[:3]           # user ids (text), in the order of each user's first row
['2', '10', '1']
>>> len(embeddings["2"])           # hidden_size floats
128
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.base import ChunkPipeline

from .processing_shopperbert import ShopperBertProcessor

PIPELINE_TASK = "feature-extraction"


def _one_log(logs):
    """A list of records or a `datasets.Dataset` is ONE log (the base Pipeline would split it into rows): its dict of
    columns. A DataFrame, a dict of columns or a list of DataFrames pass unchanged."""
    if hasattr(logs, "column_names") and hasattr(logs, "to_dict"):  # datasets.Dataset
        return logs.to_dict()
    if isinstance(logs, (list, tuple)) and logs and all(isinstance(r, Mapping) for r in logs):
        names = list(dict.fromkeys(k for record in logs for k in record))
        return {n: [record.get(n) for record in logs] for n in names}
    if isinstance(logs, (list, tuple)) and not logs:
        raise ValueError("the purchase log is empty (an empty list)")
    return logs


class ShopperBertFeatureExtractionPipeline(ChunkPipeline):
    """User embeddings from raw purchase logs: the processor encodes the log (vocabularies, dates, text vectors),
    the model pools each user's purchases (its `user_embedding`, the checkpoint's own representation).

    Call it on a pandas DataFrame, a list of purchase records or a `datasets.Dataset` with the canonical columns
    (`user_id`, `timestamp`, `description`, optional `category_1..4`, `product_id`). It returns a dict user id ->
    embedding (a list of floats; a 1-D tensor with `return_tensors=True`) whose keys follow the order of each user's
    first row. A list of DataFrames gives a list of such dicts.

    Arguments of a call: `start_date` / `end_date` (only purchases in [start, end) count; users without any are
    left out with a `DroppedUsersWarning`), `user_batch_size` (users per forward pass, default 64),
    `normalize_embeddings` (L2-normalise), `return_tensors`.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "logs_to_rows"):
            raise ValueError("the ShopperBERT pipeline needs its processor: save the model folder with "
                             "`save_pipeline_files` (processor_config.json) or pass processor=ShopperBertProcessor")
        self.processor.check_config(self.model.config, "the pipeline's model")

    def _sanitize_parameters(self, start_date=None, end_date=None, user_batch_size=None, normalize_embeddings=None,
                             return_tensors=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        preprocess = {k: v for k, v in (("start_date", start_date), ("end_date", end_date),
                                        ("user_batch_size", user_batch_size)) if v is not None}
        if user_batch_size is not None and int(user_batch_size) < 1:
            raise ValueError(f"user_batch_size must be at least 1, got {user_batch_size}")
        postprocess = {k: v for k, v in (("normalize_embeddings", normalize_embeddings),
                                         ("return_tensors", return_tensors)) if v is not None}
        return preprocess, {}, postprocess

    def __call__(self, logs, **kwargs):
        """Embed the users of `logs` (see the class docstring); returns a dict user id -> embedding."""
        return super().__call__(_one_log(logs), **kwargs)

    def preprocess(self, logs, start_date=None, end_date=None, user_batch_size: int = 64):
        rows, text_embeddings = self.processor.logs_to_rows(logs, start_date=start_date, end_date=end_date)
        for start in range(0, len(rows), int(user_batch_size)):
            batch = self.processor.pad(rows[start:start + int(user_batch_size)], text_embeddings)
            batch["is_last"] = start + int(user_batch_size) >= len(rows)
            yield batch

    def _forward(self, model_inputs):
        user_ids = model_inputs.pop("user_ids")
        is_last = model_inputs.pop("is_last")
        outputs = self.model(**model_inputs, return_dict=True)
        return {"user_ids": user_ids, "embeddings": outputs.user_embedding, "is_last": is_last}  # (B, H)

    def postprocess(self, all_outputs, normalize_embeddings: bool = False, return_tensors: bool = False):
        user_ids = [u for output in all_outputs for u in output["user_ids"]]
        embeddings = torch.cat([output["embeddings"] for output in all_outputs]).float()  # (N, H)
        if normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        if return_tensors:
            return dict(zip(user_ids, embeddings))
        return dict(zip(user_ids, embeddings.tolist()))


def save_pipeline_files(folder, processor: ShopperBertProcessor | None = None) -> list[str]:
    """Make a saved model folder work with `pipeline("feature-extraction", model=folder, trust_remote_code=True)`
    and `AutoProcessor`: save `processor` (default: built from the folder's vocab.json / metadata.json /
    config.json) with its code, copy this file, and name the pipeline in config.json (`custom_pipelines`).
    Returns the files written."""
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{folder} has no config.json: save the model there first")
    if processor is None:
        processor = ShopperBertProcessor.from_model_folder(folder)
    files = [str(f) for f in processor.save_pretrained(folder)]
    files += [str(f) for f in custom_object_save(ShopperBertFeatureExtractionPipeline, folder)]
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    module = ShopperBertFeatureExtractionPipeline.__module__.split(".")[-1]
    config["custom_pipelines"] = {PIPELINE_TASK: {"impl": f"{module}.ShopperBertFeatureExtractionPipeline",
                                                  "pt": ["AutoModel"]}}
    with open(config_file, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return sorted(set(files + [config_file]))


__all__ = ["PIPELINE_TASK", "ShopperBertFeatureExtractionPipeline", "save_pipeline_files"]
