"""data_prep: purchase logs -> a ShopperBERT pre-training corpus (a `datasets.DatasetDict` on disk).

Sources: Complete Journey (built in), a retailer's parquet/CSV logs (column mapping), a synthetic generator.
Command line: `python -m data_prep build --source completejourney --out data/cj` (see data_prep/README.md).

Python API:

    from data_prep import load_prepared, encode_logs, load_descriptions
    dataset, embeddings, metadata, vocab = load_prepared("data/cj")
    config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=128, ...)
    rows, embeddings2 = encode_logs(new_log_df, vocab, metadata, embeddings, load_descriptions("data/cj"))

From the model package, data_prep imports only the data contract (`modeling_shopperbert.contract`, standard
library only: no torch, no transformers). Names are imported lazily (pandas, pyarrow and datasets are slow to import),
so `python -m data_prep --help` answers at once.
"""

import importlib

_EXPORTS = {
    "api": ("PreparedData", "encode_logs", "load_descriptions", "load_embeddings", "load_metadata", "load_prepared",
            "load_vocab"),
    "build": ("build_dataset",),
    "processing": ("ProcessingOptions",),
    "schema": ("CANONICAL_COLUMNS", "CANONICAL_NAMES", "DataPrepError", "canonical_features", "validate_log"),
    "sources": ("ColumnMapping", "CompleteJourneySource", "DataFrameSource", "FileSource", "LogSource",
                "load_completejourney_log"),
    "synthetic": ("SyntheticConfig", "write_synthetic_logs"),
    "text": ("HashingTextEncoder", "SentenceTransformerEncoder", "embed_texts", "resolve_text_encoder"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
