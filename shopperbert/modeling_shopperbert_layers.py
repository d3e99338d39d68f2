# Copyright 2026 The shopperbert authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""PyTorch ShopperBERT building blocks: the input checks, the averaged purchase embedding, the BERT layers and encoder,
the nine masked-purchase-prediction heads and the InfoNCE head. `modeling_shopperbert.py` assembles them into the
pre-trained model classes (Embeddings -> Layer -> Encoder here, then PreTrainedModel -> Model -> For* there).

This file travels inside checkpoints as remote code, next to `modeling_shopperbert.py` (which imports it relatively, so
`save_pretrained` and the Hub loader copy it along): it imports only torch, transformers and the configuration file.

Shapes in comments: B batch, T tokens ([CLS] + purchases), H hidden, nh heads, hs head size, D text dimension,
N masked purchases in the batch, V a head's vocabulary.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_shopperbert import (
    CATEGORY_FIELDS,
    CLS_ID,
    DATE_FIELDS,
    MPP_HEADS,
    NUM_SPECIAL_IDS,
    PAD_ID,
    ShopperBertConfig,
)

# ----------------------------------------------------------------------------------------------------------------
# Input checks: a bad id must fail here with a message, not as an index error deep inside torch
# ----------------------------------------------------------------------------------------------------------------
def on_host(tensor: torch.Tensor) -> bool:
    """Whether reading `tensor`'s values costs no host-device synchronisation (a CPU tensor)."""
    return tensor.device.type == "cpu"


def check_inputs(config: ShopperBertConfig, category_ids, date_ids, text_embeds, attention_mask=None) -> bool:
    """Validate the model inputs against `config`.

    Shapes are checked everywhere. Id ranges: on the CPU, `ValueError` naming the field and the value; on an
    accelerator, one `torch._assert_async` (no host-device synchronisation, so a training step never waits here; a
    bad id fails at the next synchronisation, and the collator built with `from_config` catches it on the host with
    the field and the value before it gets there).

    Returns whether a key mask is needed: on the CPU, whether `attention_mask` masks anything (padding), read in the
    same single read of the values; on an accelerator always True (knowing would need a synchronisation).
    """
    if category_ids.dim() != 3 or category_ids.shape[-1] != len(CATEGORY_FIELDS):
        raise ValueError(f"category_ids must have shape (batch, tokens, 4), got {tuple(category_ids.shape)}")
    batch_size, seq_len = category_ids.shape[:2]
    if date_ids.shape != (batch_size, seq_len, len(DATE_FIELDS)):
        raise ValueError(f"date_ids must have shape ({batch_size}, {seq_len}, 5), got {tuple(date_ids.shape)}")
    if text_embeds.shape != (batch_size, seq_len, config.text_embedding_size):
        raise ValueError(
            f"text_embeds must have shape ({batch_size}, {seq_len}, {config.text_embedding_size}) "
            f"(config.text_embedding_size), got {tuple(text_embeds.shape)}"
        )
    if attention_mask is not None and attention_mask.shape != (batch_size, seq_len):
        raise ValueError(f"attention_mask must have shape ({batch_size}, {seq_len}), got {tuple(attention_mask.shape)}")
    if seq_len > config.max_position_embeddings:
        raise ValueError(
            f"sequence of {seq_len} tokens is longer than the position table "
            f"(config.max_position_embeddings={config.max_position_embeddings}: [CLS] + {config.max_purchases} "
            "purchases); truncate to the most recent purchases (the collator's max_length does this)"
        )
    if torch.compiler.is_compiling() or category_ids.numel() == 0:
        return True
    names = CATEGORY_FIELDS + DATE_FIELDS
    sizes = config.head_vocab_sizes
    ids = torch.cat([category_ids, date_ids], dim=-1)  # (B, T, 9)
    if not on_host(ids):
        # non_blocking: a plain host-to-device copy would wait for the device (cudaStreamSynchronize)
        upper = torch.tensor(sizes).to(ids.device, non_blocking=True)  # (9,)
        torch._assert_async(
            ((ids >= 0) & (ids < upper)).all(),
            f"an id of category_ids/date_ids is outside its vocabulary {dict(zip(names, sizes))} (the config's "
            "category_vocab_sizes and *_vocab_size); run on the CPU, or collate with from_config, to see which",
        )
        return True
    padded = (attention_mask == 0).any() if attention_mask is not None else ids.new_zeros(())
    stats = torch.cat([ids.amin(dim=(0, 1)), ids.amax(dim=(0, 1)), padded.long().reshape(1)]).tolist()  # one sync
    lowest, highest = stats[:len(names)], stats[len(names):2 * len(names)]
    for name, size, low, high in zip(names, sizes, lowest, highest):
        if low < 0 or high >= size:
            bad = high if high >= size else low
            raise ValueError(
                f"{name} id {bad} is outside its vocabulary [0, {size}) "
                f"(config.{'category_vocab_sizes' if name in CATEGORY_FIELDS else name + '_vocab_size'})"
            )
    return bool(stats[-1])


# ----------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------
class ShopperBertEmbeddings(nn.Module):
    """Token vector of a purchase: the average of the product embedding, five date embeddings and the position.

    x_prod = f_prod([g(c1) || g(c2) || g(c3) || g(c4) || f_text(e)])       (paper, eq. 1)
    token  = mean(x_prod, g(year), g(month), g(day), g(weekday), g(hour), p)      embedding_combination="mean"
    token  = mean(x_prod, mean(g(year), ..., g(hour)), p)                         embedding_combination="grouped"

    [CLS], [MASK] and padding carry their reserved id in all nine fields, so a masked token hides both its product
    and its date; their text vector is zeroed here, whatever the caller passed.
    """

    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        hidden = config.hidden_size
        self.category_embeddings = nn.ModuleList(
            [nn.Embedding(size, hidden, padding_idx=PAD_ID) for size in config.category_vocab_sizes]
        )
        self.text_projection = nn.Linear(config.text_embedding_size, hidden)  # f_text
        self.product_projection = nn.Linear(hidden * (len(CATEGORY_FIELDS) + 1), hidden)  # f_prod
        self.date_embeddings = nn.ModuleList(
            [nn.Embedding(size, hidden, padding_idx=PAD_ID) for size in config.head_vocab_sizes[len(CATEGORY_FIELDS):]]
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)
        self.combination = config.embedding_combination

    def forward(self, category_ids, date_ids, text_embeds, position_ids=None):
        seq_len = category_ids.shape[1]
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_len]  # (1, T)
        is_purchase = category_ids[..., 0] > CLS_ID  # (B, T) real purchases, [UNK] category included
        text = text_embeds.to(self.text_projection.weight.dtype) * is_purchase.unsqueeze(-1)  # (B, T, D)
        parts = [emb(category_ids[..., i]) for i, emb in enumerate(self.category_embeddings)]  # 4 x (B, T, H)
        parts.append(self.text_projection(text))  # (B, T, H)
        x_prod = self.product_projection(torch.cat(parts, dim=-1))  # (B, T, H)
        dates = self.date_embeddings[0](date_ids[..., 0])  # (B, T, H)
        for i, emb in enumerate(self.date_embeddings[1:], start=1):
            dates = dates + emb(date_ids[..., i])  # (B, T, H) sum of the five date embeddings
        position = self.position_embeddings(position_ids)  # (1 or B, T, H)
        if self.combination == "grouped":
            embeddings = (x_prod + dates / len(DATE_FIELDS) + position) / 3  # mean(x_prod, mean(dates), p)
        else:
            embeddings = (x_prod + dates + position) / (len(DATE_FIELDS) + 2)  # average of 7 vectors, (B, T, H)
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Reference attention: softmax(q k^T * scaling, masked) v. Same signature as transformers' interfaces.

    `attention_mask` is a boolean `(B, 1, 1, T)` key mask (True = attend), or None to attend everywhere.
    """
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, T)
    if attention_mask is not None:
        attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, nh, T, T)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)  # (B, nh, T, hs)
    return attn_output.transpose(1, 2).contiguous(), attn_weights  # (B, T, nh, hs)


class ShopperBertSelfAttention(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_causal = False

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        input_shape = hidden_states.shape[:-1]  # (B, T)
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nh, T, hs)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nh, T, hs)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, nh, T, hs)

        implementation = self.config._attn_implementation
        if output_attentions or implementation in (None, "eager"):
            attention_interface: Callable = eager_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS[implementation]
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, H)
        return attn_output, attn_weights


class ShopperBertSelfOutput(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        hidden_states = self.dropout(self.dense(hidden_states))  # (B, T, H)
        return self.LayerNorm(hidden_states + input_tensor)  # (B, T, H)


class ShopperBertAttention(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.self = ShopperBertSelfAttention(config)
        self.output = ShopperBertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attn_output, attn_weights = self.self(hidden_states, attention_mask, output_attentions)
        return self.output(attn_output, hidden_states), attn_weights  # (B, T, H)


class ShopperBertIntermediate(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))  # (B, T, 4H)


class ShopperBertOutput(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        hidden_states = self.dropout(self.dense(hidden_states))  # (B, T, H)
        return self.LayerNorm(hidden_states + input_tensor)  # (B, T, H)


class ShopperBertLayer(GradientCheckpointingLayer):
    """One post-LayerNorm BERT block: self-attention, then the GELU feed-forward network."""

    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.attention = ShopperBertAttention(config)
        self.intermediate = ShopperBertIntermediate(config)
        self.output = ShopperBertOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)  # (B, T, H)
        return layer_output, attn_weights


class ShopperBertEncoder(nn.Module):
    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([ShopperBertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            hidden_states, attn_weights = layer_module(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            if output_attentions:
                all_attentions = all_attentions + (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


class ShopperBertPredictionHead(nn.Module):
    """One MPP head: a two-layer MLP with GELU (BERT's transform: dense, GELU, LayerNorm; then the decoder)."""

    def __init__(self, config: ShopperBertConfig, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, hidden_states):
        hidden_states = self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))  # (N, H)
        return self.decoder(hidden_states)  # (N, V)


class ShopperBertMPPHeads(nn.Module):
    """The nine masked-purchase-prediction heads: four category levels and five date fields."""

    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.heads = nn.ModuleDict(
            {name: ShopperBertPredictionHead(config, size) for name, size in zip(MPP_HEADS, config.head_vocab_sizes)}
        )

    def forward(self, hidden_states):
        return tuple(self.heads[name](hidden_states) for name in MPP_HEADS)  # 9 x (N, V_k)


class ShopperBertContrastiveHead(nn.Module):
    """Projection of the user embedding for the user-level InfoNCE loss (SimCLR's head: dense, GELU, dense)."""

    def __init__(self, config: ShopperBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, user_embedding):
        return F.normalize(self.out(self.act(self.dense(user_embedding))).float(), dim=-1)  # (B, H), unit norm


def info_nce_loss(projected: torch.Tensor, view_index: torch.LongTensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch of views: each row's positive is the other row with the same `view_index` (the other
    view of the same user), every other row is a negative. Rows without a partner are left out of the mean.

    projected: `(B, H)` unit vectors; view_index: `(B,)`. No host-device synchronisation.
    """
    same = view_index[:, None] == view_index[None, :]  # (B, B)
    eye = torch.eye(len(view_index), dtype=torch.bool, device=projected.device)  # (B, B)
    partner = same & ~eye  # (B, B)
    logits = (projected @ projected.T) / temperature  # (B, B) cosine similarities / tau
    logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
    target = partner.float().argmax(dim=-1)  # (B,) the partner's row
    has_partner = partner.any(dim=-1).to(logits.dtype)  # (B,)
    losses = F.cross_entropy(logits, target, reduction="none")  # (B,)
    return (losses * has_partner).sum() / has_partner.sum().clamp(min=1.0)


#: The category level the profile loss predicts (`config.profile_weight`): `category_2`, the SVD baseline's.
PROFILE_FIELD = "category_2"


def profile_loss(logits: torch.Tensor, category_ids: torch.LongTensor, labels: torch.LongTensor | None) -> torch.Tensor:
    """Multi-label binary cross-entropy of the profile head: which `PROFILE_FIELD` categories each row's purchases
    hold (the original ids at masked positions, from `labels`; special ids and missing categories left out), over
    the real categories of the vocabulary, averaged over categories and rows. No host-device synchronisation.

    logits: `(B, V)` over the level's whole vocabulary; category_ids: `(B, T, 4)`; labels: `(B, T, 9)` or None.
    """
    ids = category_ids[..., CATEGORY_FIELDS.index(PROFILE_FIELD)]  # (B, T), [MASK] where masked
    if labels is not None:
        original = labels[..., MPP_HEADS.index(PROFILE_FIELD)]  # (B, T), -100 where not masked
        ids = torch.where(original.ne(-100), original, ids)
    real = ids >= NUM_SPECIAL_IDS  # (B, T)
    bought = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)  # (B, V)
    bought.scatter_reduce_(1, torch.where(real, ids, 0), real.float(), reduce="amax")
    return F.binary_cross_entropy_with_logits(logits[:, NUM_SPECIAL_IDS:].float(), bought[:, NUM_SPECIAL_IDS:])


def attention_key_mask(attention_mask: torch.Tensor) -> torch.BoolTensor | None:
    """Boolean `(B, 1, 1, T)` key mask (True = attend) for both attention paths; None when nothing is padded, so that
    SDPA can pick its fastest (flash) kernels."""
    if not torch.compiler.is_compiling() and bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()
