"""ShopperBERT: universal user representations pre-trained on purchase logs (Shin et al., 2021).

Importing this package registers the model and its downstream heads (the U-MLP classifier, the two-tower
recommender) with transformers' Auto classes, so that `AutoModel*.from_pretrained(path)` works without
`trust_remote_code`.
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
from .configuration_shopperbert_heads import ShopperBertTwoTowerConfig, ShopperBertUserMLPConfig
from .modeling_shopperbert import (
    ShopperBertForMaskedPurchasePrediction,
    ShopperBertForPreTrainingOutput,
    ShopperBertForSequenceClassification,
    ShopperBertForSequenceClassificationOutput,
    ShopperBertModel,
    ShopperBertModelOutput,
    ShopperBertPreTrainedModel,
)
from .modeling_shopperbert_heads import (
    ShopperBertMLP,
    ShopperBertTwoTowerModel,
    ShopperBertTwoTowerOutput,
    ShopperBertUserMLPForClassification,
    ShopperBertUserMLPOutput,
)
from .encoder import UserEncoder, read_user_embeddings, write_user_embeddings

AutoConfig.register(ShopperBertConfig.model_type, ShopperBertConfig, exist_ok=True)
AutoModel.register(ShopperBertConfig, ShopperBertModel, exist_ok=True)
AutoModelForPreTraining.register(ShopperBertConfig, ShopperBertForMaskedPurchasePrediction, exist_ok=True)
AutoModelForSequenceClassification.register(ShopperBertConfig, ShopperBertForSequenceClassification, exist_ok=True)
AutoConfig.register(ShopperBertUserMLPConfig.model_type, ShopperBertUserMLPConfig, exist_ok=True)
AutoModelForSequenceClassification.register(ShopperBertUserMLPConfig, ShopperBertUserMLPForClassification,
                                            exist_ok=True)
AutoConfig.register(ShopperBertTwoTowerConfig.model_type, ShopperBertTwoTowerConfig, exist_ok=True)
AutoModel.register(ShopperBertTwoTowerConfig, ShopperBertTwoTowerModel, exist_ok=True)

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
    "ShopperBertMLP",
    "ShopperBertTwoTowerConfig",
    "ShopperBertTwoTowerModel",
    "ShopperBertTwoTowerOutput",
    "ShopperBertUserMLPConfig",
    "ShopperBertUserMLPForClassification",
    "ShopperBertUserMLPOutput",
]
