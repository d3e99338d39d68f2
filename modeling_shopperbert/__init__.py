"""ShopperBERT: universal user representations pre-trained on purchase logs (Shin et al., 2021).

Importing this package registers the model with transformers' Auto classes, so that
`AutoModel.from_pretrained(path)` works without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_shopperbert import (
    CATEGORY_FIELDS,
    CLS_ID,
    DATE_FIELDS,
    MASK_ID,
    MPP_HEADS,
    NUM_SPECIAL_IDS,
    PAD_ID,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    ShopperBertConfig,
)
from .modeling_shopperbert import (
    ShopperBertForMaskedPurchasePrediction,
    ShopperBertForPreTrainingOutput,
    ShopperBertForSequenceClassification,
    ShopperBertForSequenceClassificationOutput,
    ShopperBertModel,
    ShopperBertModelOutput,
    ShopperBertPreTrainedModel,
)
from .encoder import UserEncoder, read_user_embeddings, write_user_embeddings

AutoConfig.register(ShopperBertConfig.model_type, ShopperBertConfig, exist_ok=True)
AutoModel.register(ShopperBertConfig, ShopperBertModel, exist_ok=True)
AutoModelForPreTraining.register(ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, exist_ok=True)
AutoModelForSequenceClassification.register(ShopperBertConfig, ShopperBertForSequenceClassification, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "CATEGORY_FIELDS",
    "CLS_ID",
    "DATE_FIELDS",
    "MASK_ID",
    "MPP_HEADS",
    "NUM_SPECIAL_IDS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TEXT_INDEX_FIELD",
    "UNK_ID",
    "UserEncoder",
    "read_user_embeddings",
    "write_user_embeddings",
    "ShopperBertConfig",
    "ShopperBertForMaskedPurchasePrediction",
    "ShopperBertForPreTrainingOutput",
    "ShopperBertForSequenceClassification",
    "ShopperBertForSequenceClassificationOutput",
    "ShopperBertModel",
    "ShopperBertModelOutput",
    "ShopperBertPreTrainedModel",
]
