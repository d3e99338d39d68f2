# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""ShopperBERT model configuration.

This file travels inside checkpoints as remote code: it imports only `transformers`, the standard library and the
data contract `contract.py` (relatively, so that `save_pretrained` and the Hub loader copy it along).
"""

from transformers import PretrainedConfig

# The token contract (special ids, field names, date vocabulary sizes), re-exported here for existing imports.
from .contract import (
    CATEGORY_FIELDS,
    CLS_ID,
    DATE_FIELDS,
    DAY_VOCAB_SIZE,
    HOUR_VOCAB_SIZE,
    MASK_ID,
    MONTH_VOCAB_SIZE,
    MPP_HEADS,
    NUM_SPECIAL_IDS,
    PAD_ID,
    SPECIAL_TOKENS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    WEEKDAY_VOCAB_SIZE,
)

# The paper's category vocabularies (section 4.1.1), without our reserved ids.
PAPER_CATEGORY_VOCAB_SIZES = (12, 234, 2092, 3379)

_VALID_USER_REPRESENTATIONS = ("mean", "cls")
_VALID_EMBEDDING_COMBINATIONS = ("mean", "grouped")
_VALID_ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")


class ShopperBertConfig(PretrainedConfig):
    r"""
    Configuration of a ShopperBERT model ("One4all User Representation for Recommender Systems in E-commerce",
    Shin et al., 2021). The defaults reproduce the paper's encoder: H=550, L=20, A=10, 350 purchases, the paper's
    four category vocabularies and a 768-dimensional Sentence-BERT text vector.

    Args:
        category_vocab_sizes (`list[int]`, *optional*, defaults to `[16, 238, 2096, 3383]`):
            Size of the embedding table of each of the four category levels (coarse to fine), *including* the four
            reserved ids (pad, mask, cls, unknown). The default is the paper's 12, 234, 2092 and 3379 plus 4.
        text_embedding_size (`int`, *optional*, defaults to 768):
            Dimension of the product-description vector given as `text_embeds` (768 for the paper's Sentence-BERT,
            384 for all-MiniLM-L6-v2).
        year_vocab_size (`int`, *optional*, defaults to 7):
            Size of the year embedding table including the reserved ids: years `date_base_year` ...
            `date_base_year + year_vocab_size - 5` are known; others map to the unknown id.
        month_vocab_size (`int`, *optional*, defaults to 16):
            Size of the month embedding table (12 months + 4 reserved ids).
        day_vocab_size (`int`, *optional*, defaults to 35):
            Size of the day-of-month embedding table (31 days + 4 reserved ids).
        weekday_vocab_size (`int`, *optional*, defaults to 11):
            Size of the day-of-week embedding table (7 days + 4 reserved ids).
        hour_vocab_size (`int`, *optional*, defaults to 28):
            Size of the hour embedding table (24 hours + 4 reserved ids).
        date_base_year (`int`, *optional*, defaults to 2018):
            The calendar year that gets the first year id (the paper's data starts in October 2018).
        hidden_size (`int`, *optional*, defaults to 550):
            Dimension of every embedding and of the encoder layers (the paper's H).
        num_hidden_layers (`int`, *optional*, defaults to 20):
            Number of Transformer blocks (the paper's L).
        num_attention_heads (`int`, *optional*, defaults to 10):
            Number of attention heads in each block (the paper's A); must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to `4 * hidden_size`):
            Dimension of the feed-forward layer of each block (the paper sets it to 4H).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layers and of the prediction heads.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings and on the outputs of attention and feed-forward sub-layers.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities. The paper states no dropout; 0 keeps the fused SDPA kernels (on 2
            CPU cores, 0.1 made training 3.6x slower, all of it in the dropout mask of the T x T attention).
        max_position_embeddings (`int`, *optional*, defaults to 351):
            Size of the position table: the longest purchase sequence (350) plus the [CLS] token.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialiser of all weight matrices.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the layer normalisation layers.
        user_representation (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (the paper's ShopperBERT-MP: mean of the final hidden vectors of the purchase tokens, MPP heads
            read each masked token) or `"cls"` (ShopperBERT-CLS: the final [CLS] vector, MPP heads read [CLS]).
        mlm_probability (`float`, *optional*, defaults to 0.15):
            Share of purchase tokens selected for masked purchase prediction.
        mask_replace_prob (`float`, *optional*, defaults to 0.8):
            Share of selected tokens replaced by [MASK].
        random_replace_prob (`float`, *optional*, defaults to 0.1):
            Share of selected tokens replaced by a random purchase of the batch (the rest stay unchanged).
        augmentation_probability (`float`, *optional*, defaults to 0.3):
            Share of sequences in a batch transformed by Algorithm 1 (crop or shuffle).
        crop_probability (`float`, *optional*, defaults to 0.5):
            Among augmented sequences, the share cropped (the others are shuffled): the paper's 1:1 ratio.
        augmentation_window_ratio (`float`, *optional*, defaults to 0.3):
            Length of the shuffled window, and shortest share of the sequence a crop keeps (Algorithm 1's 0.30).
        embedding_combination (`str`, *optional*, defaults to `"mean"`):
            How a purchase's token vector is made from its parts (the paper's "average the x_prod and five types of
            date embedding" read two ways): `"mean"` averages seven vectors, x_prod, the five date embeddings and the
            position, so the product is 1/7 of the token; `"grouped"` averages three, x_prod, the mean of the five
            date embeddings and the position, so the product is 1/3 of the token (see `model_card.md`).
        contrastive_weight (`float`, *optional*, defaults to 0.0):
            Weight of a user-level InfoNCE loss added to the MPP loss (beyond the paper; the authors' follow-up CLUE
            trains user vectors contrastively): two Algorithm 1 views of each user, their user embeddings passed
            through a projection head, in-batch negatives. 0 is the paper's MPP-only pre-training.
        contrastive_temperature (`float`, *optional*, defaults to 0.1):
            Temperature of the InfoNCE softmax over cosine similarities.
        profile_weight (`float`, *optional*, defaults to 0.0):
            Weight of a user-level profile loss added to the MPP loss (beyond the paper): a linear head on the user
            vector predicts which product categories (`category_2`, the level of the SVD baseline) the user bought
            among the purchases the model sees (multi-label binary cross-entropy over that vocabulary, averaged over
            categories and users). It asks the user vector to say *what* the household buys, which mean-pooled MPP
            states say less well than an SVD of category counts (`python -m eval_suite probe --parts`). 0 builds no
            head.
        classifier_dropout (`float`, *optional*):
            Dropout of downstream classification heads; defaults to `hidden_dropout_prob`.
        vocab_fingerprint (`str`, *optional*):
            Content fingerprint of the corpus vocabulary the model was pre-trained on (`vocab_fingerprint` of the
            corpus' `metadata.json`), so that a corpus whose ids mean other categories is recognised even when its
            vocabulary sizes match. `None` for models from before it was recorded: only the sizes are then checked.
        pad_token_id (`int`, *optional*, defaults to 0):
            The padding id of every vocabulary (fixed by the token contract).

    Example:

    ```python
    >>> from modeling_shopperbert import ShopperBertConfig, ShopperBertModel

    >>> config = ShopperBertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4)
    >>> model = ShopperBertModel(config)
    ```"""

    model_type = "shopperbert"

    def __init__(
        self,
        category_vocab_sizes=None,
        text_embedding_size=768,
        year_vocab_size=NUM_SPECIAL_IDS + 3,
        month_vocab_size=MONTH_VOCAB_SIZE,
        day_vocab_size=DAY_VOCAB_SIZE,
        weekday_vocab_size=WEEKDAY_VOCAB_SIZE,
        hour_vocab_size=HOUR_VOCAB_SIZE,
        date_base_year=2018,
        hidden_size=550,
        num_hidden_layers=20,
        num_attention_heads=10,
        intermediate_size=None,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=351,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        user_representation="mean",
        mlm_probability=0.15,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
        augmentation_probability=0.3,
        crop_probability=0.5,
        augmentation_window_ratio=0.3,
        embedding_combination="mean",
        contrastive_weight=0.0,
        contrastive_temperature=0.1,
        profile_weight=0.0,
        classifier_dropout=None,
        vocab_fingerprint=None,
        pad_token_id=PAD_ID,
        **kwargs,
    ):
        if category_vocab_sizes is None:
            category_vocab_sizes = [n + NUM_SPECIAL_IDS for n in PAPER_CATEGORY_VOCAB_SIZES]
        category_vocab_sizes = [int(n) for n in category_vocab_sizes]
        if intermediate_size is None:
            intermediate_size = 4 * hidden_size

        self.category_vocab_sizes = category_vocab_sizes
        self.text_embedding_size = text_embedding_size
        self.year_vocab_size = year_vocab_size
        self.month_vocab_size = month_vocab_size
        self.day_vocab_size = day_vocab_size
        self.weekday_vocab_size = weekday_vocab_size
        self.hour_vocab_size = hour_vocab_size
        self.date_base_year = date_base_year
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.user_representation = user_representation
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.augmentation_probability = augmentation_probability
        self.crop_probability = crop_probability
        self.augmentation_window_ratio = augmentation_window_ratio
        self.embedding_combination = embedding_combination
        self.contrastive_weight = contrastive_weight
        self.contrastive_temperature = contrastive_temperature
        self.profile_weight = profile_weight
        self.classifier_dropout = classifier_dropout
        self.vocab_fingerprint = vocab_fingerprint
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self._validate()

    # -- validation ------------------------------------------------------------------------------------------------
    def _validate(self):
        def fail(field, message):
            raise ValueError(f"ShopperBertConfig.{field}: {message} (got {getattr(self, field)!r})")

        if len(self.category_vocab_sizes) != len(CATEGORY_FIELDS):
            fail("category_vocab_sizes", f"needs exactly {len(CATEGORY_FIELDS)} sizes, one per category level")
        for field in ("year_vocab_size",) + tuple(f"{f}_vocab_size" for f in DATE_FIELDS[1:]):
            if not isinstance(getattr(self, field), int) or getattr(self, field) <= NUM_SPECIAL_IDS:
                fail(field, f"must be an integer above the {NUM_SPECIAL_IDS} reserved ids")
        if any(n <= NUM_SPECIAL_IDS for n in self.category_vocab_sizes):
            fail("category_vocab_sizes", f"every size must exceed the {NUM_SPECIAL_IDS} reserved ids")
        minimum = {"month_vocab_size": MONTH_VOCAB_SIZE, "day_vocab_size": DAY_VOCAB_SIZE,
                   "weekday_vocab_size": WEEKDAY_VOCAB_SIZE, "hour_vocab_size": HOUR_VOCAB_SIZE}
        for field, size in minimum.items():
            if getattr(self, field) < size:
                fail(field, f"must be at least {size} to hold every value plus the reserved ids")
        for field in ("text_embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "intermediate_size", "max_position_embeddings"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                fail(field, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"ShopperBertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.max_position_embeddings < 2:
            fail("max_position_embeddings", "must hold the [CLS] token and at least one purchase")
        if self.user_representation not in _VALID_USER_REPRESENTATIONS:
            fail("user_representation", f"must be one of {_VALID_USER_REPRESENTATIONS}")
        if self.embedding_combination not in _VALID_EMBEDDING_COMBINATIONS:
            fail("embedding_combination", f"must be one of {_VALID_EMBEDDING_COMBINATIONS}")
        if not isinstance(self.contrastive_weight, (int, float)) or not 0.0 <= self.contrastive_weight < float("inf"):
            fail("contrastive_weight", "must be a finite number >= 0")
        temperature = self.contrastive_temperature
        if not isinstance(temperature, (int, float)) or not 0.0 < temperature < float("inf"):
            fail("contrastive_temperature", "must be a finite number > 0")
        weight = self.profile_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < float("inf"):
            fail("profile_weight", "must be a finite number >= 0")
        if self.hidden_act not in _VALID_ACTIVATIONS:
            fail("hidden_act", f"must be one of {_VALID_ACTIVATIONS}")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "mlm_probability", "mask_replace_prob",
                      "random_replace_prob", "augmentation_probability", "crop_probability",
                      "augmentation_window_ratio"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                fail(field, "must be a probability in [0, 1]")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout <= 1.0:
            fail("classifier_dropout", "must be a probability in [0, 1] or None")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                "ShopperBertConfig.mask_replace_prob + random_replace_prob must not exceed 1 "
                f"(got {self.mask_replace_prob} + {self.random_replace_prob})"
            )
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            raise ValueError("ShopperBertConfig.layer_norm_eps and initializer_range must be positive")
        if self.vocab_fingerprint is not None and (not isinstance(self.vocab_fingerprint, str)
                                                   or not self.vocab_fingerprint):
            fail("vocab_fingerprint", "must be a non-empty string or None")
        if self.pad_token_id != PAD_ID:
            fail("pad_token_id", f"is fixed at {PAD_ID} by the token contract")

    # -- helpers ---------------------------------------------------------------------------------------------------
    @property
    def max_purchases(self) -> int:
        """The longest purchase sequence the position table holds (one position goes to [CLS])."""
        return self.max_position_embeddings - 1

    @property
    def head_vocab_sizes(self) -> list:
        """Number of classes of each of the nine MPP heads, in `MPP_HEADS` order."""
        return list(self.category_vocab_sizes) + [self.year_vocab_size, self.month_vocab_size, self.day_vocab_size,
                                                  self.weekday_vocab_size, self.hour_vocab_size]

    @classmethod
    def from_data_metadata(cls, metadata: dict, **kwargs) -> "ShopperBertConfig":
        """Build a config whose vocabularies match a `data_prep` output folder's `metadata.json` (a dict), with its
        `vocab_fingerprint` when the metadata records one.

        Any keyword (e.g. `hidden_size=128`) overrides; vocabulary fields come from the metadata.
        """
        fields = ("category_vocab_sizes", "text_embedding_size", "year_vocab_size", "month_vocab_size",
                  "day_vocab_size", "weekday_vocab_size", "hour_vocab_size", "date_base_year")
        missing = [f for f in fields if f not in metadata]
        if missing:
            raise ValueError(f"data metadata lacks {missing}; it holds {sorted(metadata)}")
        values = {f: metadata[f] for f in fields}
        if metadata.get("vocab_fingerprint"):
            values["vocab_fingerprint"] = metadata["vocab_fingerprint"]
        values.update(kwargs)
        return cls(**values)


ShopperBertConfig.register_for_auto_class()

__all__ = [
    "CATEGORY_FIELDS",
    "CLS_ID",
    "DATE_FIELDS",
    "DAY_VOCAB_SIZE",
    "HOUR_VOCAB_SIZE",
    "MASK_ID",
    "MONTH_VOCAB_SIZE",
    "MPP_HEADS",
    "NUM_SPECIAL_IDS",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TEXT_INDEX_FIELD",
    "UNK_ID",
    "WEEKDAY_VOCAB_SIZE",
    "ShopperBertConfig",
]
