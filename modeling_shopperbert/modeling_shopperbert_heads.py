# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""Downstream heads on a frozen ShopperBERT user vector (the paper's section 4.2), as transformers models.

- [`ShopperBertUserMLPForClassification`]: the paper's U-MLP, an MLP (input-512-256-128-64-output, ReLU) classifier on a
  pre-trained user embedding.
- [`ShopperBertTwoTowerModel`]: the two-tower recommender, score(u, i) = user_tower(u) . item_tower(i), a user tower
  (the same MLP) on the user embedding and an item tower on the item's features (description vector and numeric
  features).

Both keep PyTorch's default initialisation of `nn.Linear` (what eval_suite's downstream models always used), drawn
once per layer in the order the layers are created, so that a seed gives the same weights as before.

This file travels inside saved heads as remote code: it imports only torch, `transformers` and the standard library.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_shopperbert_heads import (
    PAPER_MLP_HIDDEN_SIZES,
    ShopperBertTwoTowerConfig,
    ShopperBertUserMLPConfig,
)


@dataclass
class ShopperBertUserMLPOutput(ModelOutput):
    """
    Output of [`ShopperBertUserMLPForClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Binary cross-entropy with logits when `config.num_labels == 1`, else cross-entropy over the classes.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification scores before sigmoid / softmax.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


@dataclass
class ShopperBertTwoTowerOutput(ModelOutput):
    """
    Output of [`ShopperBertTwoTowerModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Binary cross-entropy with logits of the (user, item) pairs (1 = the user bought the item).
        logits (`torch.FloatTensor` of shape `(batch_size,)` or `(batch_size, num_items)`):
            Score of each (user, item) pair: the dot product of the two towers' outputs, before the sigmoid.
        user_embeds (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
            Output of the user tower.
        item_embeds (`torch.FloatTensor` of shape `(batch_size, [num_items,] embedding_size)`):
            Output of the item tower.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    user_embeds: torch.FloatTensor | None = None
    item_embeds: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------
class ShopperBertMLP(nn.Sequential):
    """The paper's downstream MLP: input-hidden_sizes-output, `hidden_act` (ReLU) after every hidden layer.

    Built on its own it has PyTorch's default initialisation; inside the models below its layers are created
    uninitialised (`torch.nn.utils.skip_init`) and initialised by the model's `_init_weights`, to the same values.
    """

    def __init__(self, in_features: int, out_features: int, hidden_sizes=PAPER_MLP_HIDDEN_SIZES,
                 hidden_act: str = "relu", dropout: float = 0.0, device=None):
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden_sizes:
            layers += [nn.Linear(previous, width, device=device), ACT2FN[hidden_act]]
            if dropout:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, out_features, device=device))
        super().__init__(*layers)


def _uninitialised_mlp(*args, **kwargs) -> ShopperBertMLP:
    """A `ShopperBertMLP` whose parameters are left for `_init_weights` (created on the current default device, the
    meta device when `from_pretrained` builds the model)."""
    return torch.nn.utils.skip_init(ShopperBertMLP, *args, device=torch.get_default_device(), **kwargs)


def _check_last_dim(name: str, tensor: torch.Tensor, size: int, config_field: str) -> None:
    if tensor.dim() < 2 or tensor.shape[-1] != size:
        raise ValueError(f"{name} must have shape (batch, {size}) (config.{config_field}), got {tuple(tensor.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# U-MLP
# ----------------------------------------------------------------------------------------------------------------
class ShopperBertUserMLPPreTrainedModel(PreTrainedModel):
    config_class = ShopperBertUserMLPConfig
    base_model_prefix = "user_mlp"
    main_input_name = "user_embedding"

    def _init_weights(self, module):
        """PyTorch's default `nn.Linear` initialisation (Kaiming-uniform weights, uniform biases): the paper gives
        none, and eval_suite's U-MLP has always used it."""
        if isinstance(module, nn.Linear):
            module.reset_parameters()


class ShopperBertUserMLPForClassification(ShopperBertUserMLPPreTrainedModel):
    """The paper's U-MLP: an MLP classifier (input-512-256-128-64-output, ReLU) on a frozen pre-trained user vector.

    Example:

    ```python
    >>> import torch
    >>> from modeling_shopperbert import ShopperBertUserMLPConfig, ShopperBertUserMLPForClassification

    >>> model = ShopperBertUserMLPForClassification(ShopperBertUserMLPConfig(user_embedding_size=128))
    >>> out = model(user_embedding=torch.randn(3, 128), labels=torch.tensor([1.0, 0.0, 1.0]))
    >>> out.logits.shape
    torch.Size([3, 1])
    ```
    """

    def __init__(self, config: ShopperBertUserMLPConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mlp = _uninitialised_mlp(config.user_embedding_size, config.num_labels, config.hidden_sizes,
                                      config.hidden_act, config.mlp_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        user_embedding: torch.FloatTensor,
        labels: torch.Tensor | None = None,
    ) -> ShopperBertUserMLPOutput:
        r"""
        user_embedding (`torch.FloatTensor` of shape `(batch_size, user_embedding_size)`):
            Pre-trained user vectors (e.g. `UserEncoder.encode` of a ShopperBERT checkpoint).
        labels (`torch.Tensor` of shape `(batch_size,)`, *optional*):
            0/1 targets when `config.num_labels == 1` (binary cross-entropy), else class ids in
            `[0, num_labels)` (cross-entropy; -100 is ignored).
        """
        _check_last_dim("user_embedding", user_embedding, self.config.user_embedding_size, "user_embedding_size")
        logits = self.mlp(user_embedding)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.binary_cross_entropy_with_logits(logits.float().view(-1), labels.float().view(-1))
            else:
                loss = F.cross_entropy(logits.float(), labels.long().view(-1), ignore_index=-100)
        return ShopperBertUserMLPOutput(loss=loss, logits=logits)


# ----------------------------------------------------------------------------------------------------------------
# Two-tower recommender
# ----------------------------------------------------------------------------------------------------------------
class ShopperBertTwoTowerPreTrainedModel(PreTrainedModel):
    config_class = ShopperBertTwoTowerConfig
    base_model_prefix = "two_tower"
    main_input_name = "user_embedding"

    def _init_weights(self, module):
        """PyTorch's default `nn.Linear` initialisation, as eval_suite's two-tower recommender has always used."""
        if isinstance(module, nn.Linear):
            module.reset_parameters()


class ShopperBertTwoTowerModel(ShopperBertTwoTowerPreTrainedModel):
    """The two-tower recommender (section 4.2.2): score(u, i) = user_tower(user vector) . item_tower(item features),
    a probability through a sigmoid; trained with binary cross-entropy on bought and sampled (negative) items.

    `item_features` may hold one item per user `(B, F)` (pairs) or several `(B, N, F)` (a candidate list per user).

    Example:

    ```python
    >>> import torch
    >>> from modeling_shopperbert import ShopperBertTwoTowerConfig, ShopperBertTwoTowerModel

    >>> model = ShopperBertTwoTowerModel(ShopperBertTwoTowerConfig(user_embedding_size=128, item_feature_size=390))
    >>> out = model(user_embedding=torch.randn(3, 128), item_features=torch.randn(3, 390),
    ...             labels=torch.tensor([1.0, 0.0, 0.0]))
    >>> out.logits.shape
    torch.Size([3])
    ```
    """

    def __init__(self, config: ShopperBertTwoTowerConfig):
        super().__init__(config)
        # created in this order (user, then item tower): a seed gives eval_suite's weights
        self.user_tower = _uninitialised_mlp(config.user_embedding_size, config.embedding_size,
                                             config.user_hidden_sizes, config.hidden_act, config.mlp_dropout)
        self.item_tower = _uninitialised_mlp(config.item_feature_size, config.embedding_size,
                                             config.item_hidden_sizes, config.hidden_act, config.mlp_dropout)
        self.post_init()

    def get_user_embeddings(self, user_embedding: torch.FloatTensor) -> torch.FloatTensor:
        """User tower: `(..., user_embedding_size)` pre-trained user vectors -> `(..., embedding_size)`."""
        _check_last_dim("user_embedding", user_embedding, self.config.user_embedding_size, "user_embedding_size")
        return self.user_tower(user_embedding)

    def get_item_embeddings(self, item_features: torch.FloatTensor) -> torch.FloatTensor:
        """Item tower: `(..., item_feature_size)` item features -> `(..., embedding_size)`."""
        _check_last_dim("item_features", item_features, self.config.item_feature_size, "item_feature_size")
        return self.item_tower(item_features)

    @can_return_tuple
    def forward(
        self,
        user_embedding: torch.FloatTensor,
        item_features: torch.FloatTensor,
        labels: torch.Tensor | None = None,
    ) -> ShopperBertTwoTowerOutput:
        r"""
        user_embedding (`torch.FloatTensor` of shape `(batch_size, user_embedding_size)`):
            Pre-trained user vectors.
        item_features (`torch.FloatTensor` of shape `(batch_size, [num_items,] item_feature_size)`):
            Features of the item paired with each user, or of each user's `num_items` candidate items.
        labels (`torch.Tensor` of the shape of the scores, `(batch_size,)` or `(batch_size, num_items)`, *optional*):
            1 for an item the user bought, 0 for a negative.
        """
        if item_features.dim() not in (2, 3) or item_features.shape[0] != user_embedding.shape[0]:
            raise ValueError("item_features must have shape (batch, item_feature_size) or (batch, items, "
                             f"item_feature_size) with the batch of user_embedding {tuple(user_embedding.shape)}, "
                             f"got {tuple(item_features.shape)}")
        users = self.get_user_embeddings(user_embedding)  # (B, E)
        items = self.get_item_embeddings(item_features)  # (B, E) or (B, N, E)
        if items.dim() == 3:
            logits = (users.unsqueeze(1) * items).sum(-1)  # (B, N)
        else:
            logits = (users * items).sum(-1)  # (B,)
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float().view_as(logits))
        return ShopperBertTwoTowerOutput(loss=loss, logits=logits, user_embeds=users, item_embeds=items)


ShopperBertUserMLPForClassification.register_for_auto_class("AutoModelForSequenceClassification")
ShopperBertTwoTowerModel.register_for_auto_class("AutoModel")

__all__ = [
    "ShopperBertMLP",
    "ShopperBertTwoTowerModel",
    "ShopperBertTwoTowerOutput",
    "ShopperBertTwoTowerPreTrainedModel",
    "ShopperBertUserMLPForClassification",
    "ShopperBertUserMLPOutput",
    "ShopperBertUserMLPPreTrainedModel",
]
