# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Configurations of the downstream heads on a frozen ShopperBERT user vector (the paper's section 4.2).

This file travels inside saved heads as remote code: it imports only `transformers` (and the standard library).
"""

from transformers import PretrainedConfig

# The paper's downstream MLP: input-512-256-128-64-output.
PAPER_MLP_HIDDEN_SIZES = (512, 256, 128, 64)
# The item tower of eval_suite's two-tower recommender: input-256-128-output.
ITEM_TOWER_HIDDEN_SIZES = (256, 128)
_VALID_ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_sizes(name: str, values) -> list[int]:
    values = list(values)
    for value in values:
        _check_size(name, value)
    return values


def _check_common(hidden_act: str, mlp_dropout: float) -> None:
    if hidden_act not in _VALID_ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {_VALID_ACTIVATIONS}, got {hidden_act!r}")
    if isinstance(mlp_dropout, bool) or not isinstance(mlp_dropout, (int, float)) or not 0.0 <= mlp_dropout < 1.0:
        raise ValueError(f"mlp_dropout must be a number in [0, 1), got {mlp_dropout!r}")


class ShopperBertUserMLPConfig(PretrainedConfig):
    r"""
    Configuration of [`ShopperBertUserMLPForClassification`]: the paper's U-MLP, an MLP classifier on a frozen
    pre-trained user embedding (e.g. `UserEncoder.encode` output of a ShopperBERT checkpoint).

    Args:
        user_embedding_size (`int`, *optional*, defaults to 550):
            Dimension of the input user vector (the encoder's `hidden_size`; 550 for the paper's ShopperBERT).
        hidden_sizes (`list[int]`, *optional*, defaults to `[512, 256, 128, 64]`):
            Widths of the hidden layers: the paper's input-512-256-128-64-output.
        hidden_act (`str`, *optional*, defaults to `"relu"`):
            Activation after every hidden layer (the paper: ReLU); one of `"relu"`, `"gelu"`, `"silu"`, `"tanh"`.
        mlp_dropout (`float`, *optional*, defaults to 0.0):
            Dropout after every hidden activation (the paper states none).
        num_labels (`int`, *optional*, defaults to 1):
            Number of outputs. One logit is trained with binary cross-entropy (the paper's binary tasks), more with
            cross-entropy over the classes.

    Example:

    ```python
    >>> from modeling_shopperbert import ShopperBertUserMLPConfig, ShopperBertUserMLPForClassification

    >>> config = ShopperBertUserMLPConfig(user_embedding_size=128)
    >>> model = ShopperBertUserMLPForClassification(config)
    ```
    """

    model_type = "shopperbert-user-mlp"

    def __init__(
        self,
        user_embedding_size: int = 550,
        hidden_sizes=PAPER_MLP_HIDDEN_SIZES,
        hidden_act: str = "relu",
        mlp_dropout: float = 0.0,
        num_labels: int | None = None,
        **kwargs,
    ):
        _check_size("user_embedding_size", user_embedding_size)
        if num_labels is None and "id2label" not in kwargs:
            num_labels = 1  # not transformers' 2: the paper's tasks are binary, one logit
        if num_labels is not None:
            _check_size("num_labels", num_labels)
            kwargs["num_labels"] = num_labels
        _check_common(hidden_act, mlp_dropout)
        self.user_embedding_size = user_embedding_size
        self.hidden_sizes = _check_sizes("hidden_sizes", hidden_sizes)
        self.hidden_act = hidden_act
        self.mlp_dropout = float(mlp_dropout)
        super().__init__(**kwargs)

    def to_diff_dict(self) -> dict:
        """`PretrainedConfig.to_diff_dict` with the labels always written: transformers leaves out the two labels of
        its own default, which would come back here as our default of one."""
        out = super().to_diff_dict()
        out.setdefault("id2label", {str(k): v for k, v in self.id2label.items()})
        out.setdefault("label2id", dict(self.label2id))
        return out


class ShopperBertTwoTowerConfig(PretrainedConfig):
    r"""
    Configuration of [`ShopperBertTwoTowerModel`]: the two-tower recommender of the paper's section 4.2.2, a user
    tower (the paper's MLP on a frozen user vector) and an item tower (an MLP on the item's features), scored by the
    dot product of their outputs.

    Args:
        user_embedding_size (`int`, *optional*, defaults to 550):
            Dimension of the input user vector (the encoder's `hidden_size`).
        item_feature_size (`int`, *optional*, defaults to 384):
            Dimension of an item's input features: its description's sentence vector (384 for all-MiniLM-L6-v2),
            followed by any numeric features (`eval_suite.inputs.item_features` builds them).
        embedding_size (`int`, *optional*, defaults to 64):
            Dimension of the user and item vectors whose dot product is the score.
        user_hidden_sizes (`list[int]`, *optional*, defaults to `[512, 256, 128, 64]`):
            Hidden widths of the user tower (the paper's MLP).
        item_hidden_sizes (`list[int]`, *optional*, defaults to `[256, 128]`):
            Hidden widths of the item tower.
        hidden_act (`str`, *optional*, defaults to `"relu"`):
            Activation after every hidden layer of both towers; one of `"relu"`, `"gelu"`, `"silu"`, `"tanh"`.
        mlp_dropout (`float`, *optional*, defaults to 0.0):
            Dropout after every hidden activation of both towers.

    Example:

    ```python
    >>> from modeling_shopperbert import ShopperBertTwoTowerConfig, ShopperBertTwoTowerModel

    >>> config = ShopperBertTwoTowerConfig(user_embedding_size=128, item_feature_size=390)
    >>> model = ShopperBertTwoTowerModel(config)
    ```
    """

    model_type = "shopperbert-two-tower"

    def __init__(
        self,
        user_embedding_size: int = 550,
        item_feature_size: int = 384,
        embedding_size: int = 64,
        user_hidden_sizes=PAPER_MLP_HIDDEN_SIZES,
        item_hidden_sizes=ITEM_TOWER_HIDDEN_SIZES,
        hidden_act: str = "relu",
        mlp_dropout: float = 0.0,
        **kwargs,
    ):
        for name, value in (("user_embedding_size", user_embedding_size), ("item_feature_size", item_feature_size),
                            ("embedding_size", embedding_size)):
            _check_size(name, value)
        _check_common(hidden_act, mlp_dropout)
        self.user_embedding_size = user_embedding_size
        self.item_feature_size = item_feature_size
        self.embedding_size = embedding_size
        self.user_hidden_sizes = _check_sizes("user_hidden_sizes", user_hidden_sizes)
        self.item_hidden_sizes = _check_sizes("item_hidden_sizes", item_hidden_sizes)
        self.hidden_act = hidden_act
        self.mlp_dropout = float(mlp_dropout)
        super().__init__(**kwargs)


ShopperBertUserMLPConfig.register_for_auto_class()
ShopperBertTwoTowerConfig.register_for_auto_class()

__all__ = ["ShopperBertTwoTowerConfig", "ShopperBertUserMLPConfig"]
