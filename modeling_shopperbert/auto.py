"""Registration of ShopperBERT, its downstream heads and its processor with transformers' Auto classes.

It sits on the encoding floor (the processor pads with the collator); the package `__init__` reaches it lazily, through
its table, the first time a model, config, head, processor or `UserEncoder` name is used.
"""

_registered = False


def register_auto_classes() -> None:
    """Register ShopperBERT and its downstream heads with transformers' Auto classes (imports torch and
    transformers; calling it again does nothing).

    After it, `AutoConfig`, `AutoModel`, `AutoModelForPreTraining`, `AutoModelForSequenceClassification` and
    `AutoProcessor` load a saved ShopperBERT folder without `trust_remote_code`.
    """
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForPreTraining,
        AutoModelForSequenceClassification,
        AutoProcessor,
    )

    from .configuration_shopperbert import ShopperBertConfig
    from .configuration_shopperbert_heads import ShopperBertTwoTowerConfig, ShopperBertUserMLPConfig
    from .modeling_shopperbert import (
        ShopperBertForMaskedPurchasePrediction,
        ShopperBertForSequenceClassification,
        ShopperBertModel,
    )
    from .modeling_shopperbert_heads import ShopperBertTwoTowerModel, ShopperBertUserMLPForClassification
    from .processing_shopperbert import ShopperBertProcessor

    AutoConfig.register(ShopperBertConfig.model_type, ShopperBertConfig, exist_ok=True)
    AutoModel.register(ShopperBertConfig, ShopperBertModel, exist_ok=True)
    AutoModelForPreTraining.register(ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, exist_ok=True)
    AutoModelForSequenceClassification.register(ShopperBertConfig, ShopperBertForSequenceClassification,
                                                exist_ok=True)
    AutoConfig.register(ShopperBertUserMLPConfig.model_type, ShopperBertUserMLPConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(ShopperBertUserMLPConfig, ShopperBertUserMLPForClassification,
                                                exist_ok=True)
    AutoConfig.register(ShopperBertTwoTowerConfig.model_type, ShopperBertTwoTowerConfig, exist_ok=True)
    AutoModel.register(ShopperBertTwoTowerConfig, ShopperBertTwoTowerModel, exist_ok=True)
    AutoProcessor.register(ShopperBertConfig, ShopperBertProcessor, exist_ok=True)
    _registered = True

__all__ = ["register_auto_classes"]
