# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""PyTorch ShopperBERT model: the pre-trained model base, the encoder with its user vector, masked purchase
prediction (with the optional InfoNCE loss) and sequence classification. The building blocks they assemble (input
checks, purchase embedding, layers, encoder, heads) are in `modeling_shopperbert_layers.py`.

This file travels inside checkpoints as remote code: it imports only torch, transformers and the two files next to
it (configuration and layers).

Shapes in comments: B batch, T tokens ([CLS] + purchases), H hidden, nh heads, hs head size, D text dimension,
N masked purchases in the batch, V a head's vocabulary.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_shopperbert import CATEGORY_FIELDS, CLS_ID, MASK_ID, MPP_HEADS, PAD_ID, ShopperBertConfig
from .modeling_shopperbert_layers import (
    ShopperBertContrastiveHead,
    ShopperBertEmbeddings,
    ShopperBertEncoder,
    ShopperBertMPPHeads,
    PROFILE_FIELD,
    check_inputs,
    info_nce_loss,
    on_host,
    profile_loss,
)


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ShopperBertModelOutput(ModelOutput):
    """
    Output of [`ShopperBertModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Final hidden vector of every token; position 0 is [CLS].
        user_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The user representation: the mean of the final hidden vectors of the purchase tokens
            (`config.user_representation == "mean"`, the paper's MP) or the final [CLS] vector (`"cls"`).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The embedding output and the output of each layer, each `(batch_size, sequence_length, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Attention probabilities of each layer, each `(batch_size, num_heads, sequence_length, sequence_length)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ShopperBertForPreTrainingOutput(ModelOutput):
    """
    Output of [`ShopperBertForMaskedPurchasePrediction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            The MPP loss: mean over the heads of each head's cross-entropy (heads without any label in the batch
            are left out of the mean).
        loss (continued): plus `config.contrastive_weight` times `contrastive_loss` when that is computed, and
            `config.profile_weight` times `profile_loss`.
        head_losses (`torch.FloatTensor` of shape `(9,)`, *optional*, returned when `labels` is given):
            Cross-entropy of each head in `MPP_HEADS` order (0 for a head without labels in the batch).
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `view_index` is given and
            `config.contrastive_weight > 0`): the InfoNCE loss between the two views of each user.
        profile_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given and
            `config.profile_weight > 0`): the multi-label cross-entropy of the user vector's profile head (which
            `category_2` values the user's purchases hold; `profile_loss` in `modeling_shopperbert_layers`).
        logits (`tuple(torch.FloatTensor)` of 9 tensors, each `(num_masked, head_vocab_size)`):
            Prediction scores of each head for every masked purchase, in row-major order of `masked_positions`
            (so `logits[k][i]` predicts `labels[masked_positions][i, k]`).
        user_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The user representation (see [`ShopperBertModelOutput`]).
        hidden_states, attentions: as in [`ShopperBertModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    head_losses: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    profile_loss: torch.FloatTensor | None = None
    logits: tuple[torch.FloatTensor, ...] | None = None
    user_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ShopperBertForSequenceClassificationOutput(ModelOutput):
    """
    Output of [`ShopperBertForSequenceClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Cross-entropy (or MSE when `config.num_labels == 1`) of the user-level prediction.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification scores before softmax.
        user_embedding (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The user representation fed to the classifier.
        hidden_states, attentions: as in [`ShopperBertModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ----------------------------------------------------------------------------------------------------------------
# Every Auto class a ShopperBERT checkpoint loads with: written whole into each saved config's `auto_map`
# (transformers only writes the saved class's own entry), so one folder serves all of them with trust_remote_code.
AUTO_MAP = {
    "AutoConfig": "configuration_shopperbert.ShopperBertConfig",
    "AutoModel": "modeling_shopperbert.ShopperBertModel",
    "AutoModelForPreTraining": "modeling_shopperbert.ShopperBertForMaskedPurchasePrediction",
    "AutoModelForSequenceClassification": "modeling_shopperbert.ShopperBertForSequenceClassification",
}


class ShopperBertPreTrainedModel(PreTrainedModel):
    config_class = ShopperBertConfig
    base_model_prefix = "shopperbert"
    main_input_name = "category_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["ShopperBertLayer"]
    # The MPP heads of a pre-training checkpoint are not part of the encoder or of a downstream model.
    _keys_to_ignore_on_load_unexpected = [r"^mpp\.", r"^contrastive\."]

    def _init_weights(self, module):
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ShopperBertEmbeddings):
            with torch.no_grad():
                module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors), with the full `auto_map` and the remote-code files."""
        if self._auto_class is not None:
            self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


def user_pooling_mask(category_ids: torch.LongTensor) -> torch.BoolTensor:
    """Tokens that are purchases of the user (not padding, not [CLS]); [MASK]ed purchases count as purchases."""
    first = category_ids[..., 0]  # (B, T)
    return (first != PAD_ID) & (first != CLS_ID)  # (B, T)


def pool_user_embedding(last_hidden_state, category_ids, user_representation: str, attention_mask=None):
    """The paper's two user representations: MP (mean over purchase tokens) or the [CLS] vector. MP averages the
    purchase tokens that `attention_mask` (when given) also keeps: a token the mask hides is never pooled."""
    if user_representation == "cls":
        return last_hidden_state[:, 0]  # (B, H)
    mask = user_pooling_mask(category_ids)  # (B, T)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()  # (B, T)
    mask = mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    summed = (last_hidden_state * mask).sum(dim=1)  # (B, H)
    return summed / mask.sum(dim=1).clamp(min=1.0)  # (B, H)


class ShopperBertModel(ShopperBertPreTrainedModel):
    """The ShopperBERT encoder: purchase embeddings + a BERT encoder, returning token states and the user vector.

    Inputs (the collators in `modeling_shopperbert.collator` build them from prepared data):
        category_ids (`torch.LongTensor` of shape `(batch_size, sequence_length, 4)`): ids of the four category
            levels; position 0 is [CLS] (`CLS_ID` in every field) and padding is `PAD_ID`.
        date_ids (`torch.LongTensor` of shape `(batch_size, sequence_length, 5)`): year, month, day, weekday, hour.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_embedding_size)`): the
            Sentence-BERT vector of each purchased product's description (ignored at special tokens).
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for [CLS] and
            purchases, 0 for padding; derived from `category_ids` when omitted.
        position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*).
        return_dict (`bool`, *optional*): `False` returns a plain tuple of the output's non-None fields (defaults to
            `config.return_dict`). Every `forward` of this file takes it; an argument a `forward` does not name is
            a `TypeError` (a misspelt `attention_masks` must not silently drop the mask).
    """

    def __init__(self, config: ShopperBertConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = ShopperBertEmbeddings(config)
        self.encoder = ShopperBertEncoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        category_ids: torch.LongTensor,
        date_ids: torch.LongTensor,
        text_embeds: torch.FloatTensor,
        attention_mask: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ShopperBertModelOutput:
        output_attentions = bool(output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        if attention_mask is None:
            attention_mask = (category_ids[..., 0] != PAD_ID).long()  # (B, T)
        padded = check_inputs(self.config, category_ids, date_ids, text_embeds, attention_mask)

        hidden_states = self.embeddings(category_ids, date_ids, text_embeds, position_ids)  # (B, T, H)
        # Boolean key mask (True = attend); none without padding, so that SDPA can use its flash kernels.
        key_mask = attention_mask[:, None, None, :].bool() if padded else None  # (B, 1, 1, T)
        sequence_output, all_hidden, all_attn = self.encoder(
            hidden_states, key_mask, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        user_embedding = pool_user_embedding(sequence_output, category_ids, self.config.user_representation,
                                             attention_mask)  # (B, H)
        return ShopperBertModelOutput(
            last_hidden_state=sequence_output,
            user_embedding=user_embedding,
            hidden_states=all_hidden,
            attentions=all_attn,
        )


def resolve_masked_positions(category_ids, labels=None, masked_positions=None):
    """The one place that decides which purchases the MPP heads predict.

    Priority: the collator's explicit `masked_positions`; else every token with at least one label; else every
    token carrying the [MASK] id (inference on a hand-masked sequence). Returns a `(B, T)` bool tensor.
    """
    if masked_positions is not None:
        return masked_positions.bool()
    if labels is not None:
        return labels.ne(-100).any(dim=-1)  # (B, T)
    return category_ids[..., 0] == MASK_ID  # (B, T)


def resolve_masked_index(positions: torch.BoolTensor, masked_index: torch.LongTensor | None = None
                         ) -> torch.LongTensor:
    """Flat `(N,)` indices into the `B * T` tokens of the masked purchases `positions` (B, T), in row-major order.

    The collator's `masked_index` (computed on the host) is used as given, so a training step selects the masked
    tokens without a data-dependent shape, i.e. without a host-device synchronisation. It is checked against
    `positions`: with `ValueError` on the CPU, with `torch._assert_async` on an accelerator (a batch cut along its
    first dimension, by `nn.DataParallel` or accelerate's `split_batches`, would cut the flat index wrongly). Without
    it the indices come from `positions` through `nonzero` (one synchronisation on an accelerator).
    """
    flat = positions.flatten()  # (B*T,)
    if masked_index is None:
        return flat.nonzero().squeeze(-1)  # (N,)
    if masked_index.dim() != 1 or masked_index.dtype != torch.long:
        raise ValueError(f"masked_index must be a 1-D int64 tensor, got shape {tuple(masked_index.shape)} and "
                         f"dtype {masked_index.dtype}")
    if torch.compiler.is_compiling():
        return masked_index
    if on_host(flat):
        if not torch.equal(masked_index, flat.nonzero().squeeze(-1)):
            raise ValueError(
                "masked_index does not list the masked positions in row-major order (flat indices into batch x "
                "tokens, as the collator builds them): was the batch cut or reordered along its first dimension?")
        return masked_index
    inside = masked_index.clamp(0, max(flat.numel() - 1, 0))  # (N,)
    ordered = (masked_index[1:] > masked_index[:-1]).all()
    consistent = (flat.sum() == masked_index.numel()) & flat[inside].all() & ordered & (inside == masked_index).all()
    torch._assert_async(consistent, "masked_index does not list the masked positions in row-major order")
    return masked_index


class ShopperBertForMaskedPurchasePrediction(ShopperBertPreTrainedModel):
    """ShopperBERT with the masked purchase prediction (MPP) objective: nine heads, loss = mean of their CEs.

    With `config.user_representation == "mean"` (ShopperBERT-MP) each masked purchase is predicted from its own
    final hidden vector. With `"cls"` (ShopperBERT-CLS) every masked purchase of a user is predicted from that
    user's final [CLS] vector: the heads score the [CLS] vector once and the scores are compared with the labels
    of each masked purchase, i.e. [CLS] must summarise the distribution of the user's hidden purchases
    (see `model_card.md` for why this reading of the paper).

    Extra inputs:
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length, 9)`, *optional*): the original ids of the
            masked purchases in `MPP_HEADS` order; -100 everywhere else and for missing categories.
        masked_positions (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): the purchases
            selected for prediction (see `resolve_masked_positions`).
        masked_index (`torch.LongTensor` of shape `(num_masked,)`, *optional*): the same purchases as flat indices
            into `batch_size * sequence_length`, row-major (the collator provides it): the step then selects them
            without a host-device synchronisation (see `resolve_masked_index`).
        view_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*): rows with the same value are two views
            of one user (the collator's `num_views=2`); with `config.contrastive_weight > 0` they feed the InfoNCE
            loss.
    """

    def __init__(self, config: ShopperBertConfig):
        super().__init__(config)
        self.shopperbert = ShopperBertModel(config)
        self.mpp = ShopperBertMPPHeads(config)
        # Only built when used, so that no parameter goes without a gradient (DDP) and MPP-only checkpoints keep
        # their keys.
        self.contrastive = ShopperBertContrastiveHead(config) if config.contrastive_weight > 0 else None
        profile_size = config.category_vocab_sizes[CATEGORY_FIELDS.index(PROFILE_FIELD)]
        self.profile = nn.Linear(config.hidden_size, profile_size) if config.profile_weight > 0 else None
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        category_ids: torch.LongTensor,
        date_ids: torch.LongTensor,
        text_embeds: torch.FloatTensor,
        attention_mask: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
        masked_index: torch.LongTensor | None = None,
        view_index: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ShopperBertForPreTrainingOutput:
        if labels is not None and labels.shape != (*category_ids.shape[:2], len(MPP_HEADS)):
            raise ValueError(
                f"labels must have shape ({category_ids.shape[0]}, {category_ids.shape[1]}, {len(MPP_HEADS)}), "
                f"got {tuple(labels.shape)}"
            )
        outputs = self.shopperbert(
            category_ids, date_ids, text_embeds, attention_mask=attention_mask, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        positions = resolve_masked_positions(category_ids, labels, masked_positions)  # (B, T)
        index = resolve_masked_index(positions, masked_index)  # (N,) flat, row-major
        if self.config.user_representation == "cls":
            cls_logits = self.mpp(outputs.last_hidden_state[:, 0])  # 9 x (B, V_k)
            row_of_masked = torch.div(index, positions.shape[1], rounding_mode="floor")  # (N,) row of each masked
            logits = tuple(head_logits[row_of_masked] for head_logits in cls_logits)  # 9 x (N, V_k)
        else:
            masked_hidden = outputs.last_hidden_state.flatten(0, 1).index_select(0, index)  # (N, H)
            logits = self.mpp(masked_hidden)  # 9 x (N, V_k), heads on masked tokens only

        loss = head_losses = None
        if labels is not None:
            target = labels.flatten(0, 1).index_select(0, index)  # (N, 9)
            losses, has_label = [], []
            for k, head_logits in enumerate(logits):
                valid = target[:, k].ne(-100)  # (N,)
                has_label.append(valid.any())
                summed = F.cross_entropy(head_logits.float(), target[:, k], ignore_index=-100, reduction="sum")
                losses.append(summed / valid.sum().clamp(min=1))
            head_losses = torch.stack(losses)  # (9,)
            has_label = torch.stack(has_label).to(head_losses.dtype)  # (9,)
            loss = (head_losses * has_label).sum() / has_label.sum().clamp(min=1.0)

        contrastive_loss = None
        if view_index is not None and self.contrastive is not None:
            projected = self.contrastive(outputs.user_embedding)  # (B, H)
            contrastive_loss = info_nce_loss(projected, view_index, self.config.contrastive_temperature)
            if loss is not None:
                loss = loss + self.config.contrastive_weight * contrastive_loss

        user_profile_loss = None
        if labels is not None and self.profile is not None:
            logits_profile = self.profile(outputs.user_embedding)  # (B, V_category_2)
            user_profile_loss = profile_loss(logits_profile, category_ids, labels)
            loss = loss + self.config.profile_weight * user_profile_loss

        return ShopperBertForPreTrainingOutput(
            loss=loss,
            head_losses=head_losses,
            contrastive_loss=contrastive_loss,
            profile_loss=user_profile_loss,
            logits=logits,
            user_embedding=outputs.user_embedding,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def sequence_classification_loss(config: ShopperBertConfig, logits, labels):
    """BERT's rule: `config.problem_type` when set, else regression for one label, single-label classification for
    integer labels and multi-label classification otherwise (the chosen type is stored in the config)."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
        return F.mse_loss(logits.float(), labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.float().view(-1, config.num_labels), labels.view(-1), ignore_index=-100)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class ShopperBertForSequenceClassification(ShopperBertPreTrainedModel):
    """ShopperBERT with a user-level classifier on the user embedding, for fine-tuning (the paper's Table 5).

    The classifier is the paper's downstream MLP (input-512-256-128-64-output, ReLU) on `user_embedding`.
    """

    def __init__(self, config: ShopperBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.shopperbert = ShopperBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        widths = [config.hidden_size, 512, 256, 128, 64]
        layers = [nn.Dropout(dropout)]
        for d_in, d_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], config.num_labels))
        self.classifier = nn.Sequential(*layers)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        category_ids: torch.LongTensor,
        date_ids: torch.LongTensor,
        text_embeds: torch.FloatTensor,
        attention_mask: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ShopperBertForSequenceClassificationOutput:
        outputs = self.shopperbert(
            category_ids, date_ids, text_embeds, attention_mask=attention_mask, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(outputs.user_embedding)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels)
        return ShopperBertForSequenceClassificationOutput(
            loss=loss, logits=logits, user_embedding=outputs.user_embedding,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )


ShopperBertModel.register_for_auto_class("AutoModel")
ShopperBertForMaskedPurchasePrediction.register_for_auto_class("AutoModelForPreTraining")
ShopperBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "ShopperBertModel",
    "ShopperBertPreTrainedModel",
    "ShopperBertForMaskedPurchasePrediction",
    "ShopperBertForSequenceClassification",
    "ShopperBertModelOutput",
    "ShopperBertForPreTrainingOutput",
    "ShopperBertForSequenceClassificationOutput",
]
