"""ShopperBERT: universal user representations pre-trained on purchase logs (Shin et al., 2021).

Importing the package is light: it loads neither torch nor transformers, so that the data contract
(`modeling_shopperbert.contract`: special ids, field names) and the command lines answer at once. The model names are
imported on first use (PEP 562): `from modeling_shopperbert import ShopperBertModel` (or any model, config, head or
`UserEncoder` name) imports the model code and registers the model and its downstream heads (the U-MLP classifier,
the two-tower recommender) and the processor with transformers' Auto classes (`modeling_shopperbert.auto`), so that
`AutoModel*.from_pretrained(path)` and `AutoProcessor.from_pretrained(path)` work without `trust_remote_code`. Code
that uses the Auto classes without touching one of these names calls `register_auto_classes()` (idempotent).
"""

import importlib

__version__ = "0.1.0"

# name -> submodule. The contract's names are stdlib-only; the others import torch and transformers.
_CONTRACT_NAMES = ("CATEGORY_FIELDS", "CLS_ID", "DATE_FIELDS", "MASK_ID", "MPP_HEADS", "NUM_SPECIAL_IDS", "PAD_ID",
                   "SPECIAL_TOKENS", "TEXT_INDEX_FIELD", "UNK_ID")
_EXPORTS = {
    "contract": _CONTRACT_NAMES,
    "configuration_shopperbert": ("ShopperBertConfig",),
    "configuration_shopperbert_heads": ("ShopperBertTwoTowerConfig", "ShopperBertUserMLPConfig"),
    "modeling_shopperbert": ("ShopperBertForMaskedPurchasePrediction", "ShopperBertForPreTrainingOutput",
                             "ShopperBertForSequenceClassification", "ShopperBertForSequenceClassificationOutput",
                             "ShopperBertModel", "ShopperBertModelOutput", "ShopperBertPreTrainedModel"),
    "modeling_shopperbert_heads": ("ShopperBertMLP", "ShopperBertTwoTowerModel", "ShopperBertTwoTowerOutput",
                                   "ShopperBertUserMLPForClassification", "ShopperBertUserMLPOutput"),
    "encoder": ("UserEncoder", "read_user_embeddings", "write_user_embeddings"),
    "processing_shopperbert": ("ShopperBertProcessor",),
    "pipeline_shopperbert": ("ShopperBertFeatureExtractionPipeline", "save_pipeline_files"),
    "auto": ("register_auto_classes",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'modeling_shopperbert' has no attribute {name!r}")
    if module not in ("contract", "auto"):
        __getattr__("register_auto_classes")()
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = sorted(_WHERE)
