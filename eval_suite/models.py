"""Downstream models of the paper's Table 2 and their training loops.

- U-MLP: the paper's MLP (input-512-256-128-64-output, ReLU) on a frozen pre-trained user embedding.
- T-Trans / P-Trans: a small Transformer (L=4, H=128, A=4, ALBERT-style shared layer, the same purchase
  embedding as ShopperBERT) with a [CLS] token and the same MLP, on task-specific history (T) or raw purchase
  logs (P).
- UP-Trans: P-Trans with the pre-trained user embedding (projected) in place of the [CLS] token.
- Fine-tuned ShopperBERT: `ShopperBertForSequenceClassification` initialised from the checkpoint.

Classification towers output one logit; recommendation towers output a 64-d vector scored against an item tower
(an MLP on the item's text vector and features) by a dot product and a sigmoid, trained with binary cross-entropy
on positive and sampled negative pairs (section 4.2.2). Optimisation follows the paper: Adam (no weight decay),
exponential learning-rate decay 0.995 (per epoch here), batches of 256, early stopping on validation.

The MLPs are the package's transformers heads: every user tower ends in a `ShopperBertUserMLPForClassification`
(on the frozen user vector for U-MLP, on the Transformer's output vector otherwise), the item tower is the
`ShopperBertMLP` of `ShopperBertTwoTowerModel`, and a trained U-MLP recommender becomes a `ShopperBertTwoTowerModel`
with `TwoTowerScorer.to_pretrained()`: each saves, loads and pushes like any transformers model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from modeling_shopperbert import (
    ShopperBertConfig,
    ShopperBertMLP,
    ShopperBertTwoTowerConfig,
    ShopperBertTwoTowerModel,
    ShopperBertUserMLPConfig,
    ShopperBertUserMLPForClassification,
)
from modeling_shopperbert.collator import ShopperBertCollator
from modeling_shopperbert.configuration_shopperbert_heads import ITEM_TOWER_HIDDEN_SIZES
from modeling_shopperbert.modeling_shopperbert_layers import (
    ShopperBertEmbeddings,
    ShopperBertLayer,
    attention_key_mask,
)

REC_DIM = 64
#: The paper's downstream MLP (input-512-256-128-64-output, ReLU); the name eval_suite used before it moved into the
#: package.
DownstreamMLP = ShopperBertMLP


def small_transformer_config(metadata: dict, max_length: int, hidden_size: int = 128, num_layers: int = 4,
                             num_heads: int = 4) -> ShopperBertConfig:
    """The downstream Transformer of section 4.2.1 (L=4, H=128, A=4, FFN 4H) over the corpus' vocabularies."""
    config = ShopperBertConfig.from_data_metadata(
        metadata, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        max_position_embeddings=max_length + 1)
    config._attn_implementation = "sdpa"
    return config


class SharedLayerTransformer(nn.Module):
    """ALBERT-style encoder: ShopperBERT's purchase embedding, one Transformer layer applied L times; returns the
    final vector of position 0: the [CLS] token, or (UP-Trans) the projected pre-trained user embedding."""

    def __init__(self, config: ShopperBertConfig, user_embedding_size: int | None = None):
        super().__init__()
        self.config = config
        self.embeddings = ShopperBertEmbeddings(config)
        self.layer = ShopperBertLayer(config)
        self.user_projection = nn.Linear(user_embedding_size, config.hidden_size) if user_embedding_size else None
        self.apply(self._init)

    def _init(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def forward(self, category_ids, date_ids, text_embeds, attention_mask, user_embedding=None):
        hidden = self.embeddings(category_ids, date_ids, text_embeds)  # (B, T, H)
        if self.user_projection is not None:
            # the projected pre-trained vector, normalised like every other token embedding
            first = self.embeddings.LayerNorm(self.user_projection(user_embedding)).unsqueeze(1)  # (B, 1, H)
            hidden = torch.cat([first, hidden[:, 1:]], dim=1)  # (B, T, H)
        mask = attention_key_mask(attention_mask)  # (B, 1, 1, T) bool or None
        for _ in range(self.config.num_hidden_layers):
            hidden, _ = self.layer(hidden, mask)  # (B, T, H)
        return hidden[:, 0]  # (B, H)


# ---------------------------------------------------------------------------------------------------------------
# User inputs
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class UserInputs:
    """What a user tower reads for each user: a pre-trained vector and/or a purchase (or history) sequence.

    Users without a sequence (no history) get a sequence of only [CLS].
    """

    user_ids: np.ndarray  # (U,) str
    vectors: np.ndarray | None = None  # (U, D) pre-trained user embeddings
    rows: object | None = None  # datasets.Dataset / list of prepared rows aligned with user_ids (None = no sequence)
    text_embeddings: np.ndarray | None = None
    max_length: int = 128
    device: str = "cpu"  # where batches go, and where the models trained on these inputs run

    def __post_init__(self):
        self.position = {u: i for i, u in enumerate(self.user_ids)}
        self._collator = None
        if self.rows is not None:
            self._collator = ShopperBertCollator(self.text_embeddings, max_length=self.max_length, allow_empty=True)
            self._cache = {}

    def index(self, user_ids: Sequence[str]) -> np.ndarray:
        missing = [u for u in user_ids if u not in self.position]
        if missing:
            raise KeyError(f"{len(missing)} users have no inputs, e.g. {missing[:3]}")
        return np.array([self.position[u] for u in user_ids], dtype=np.int64)

    def batch(self, user_ids: Sequence[str]) -> dict[str, torch.Tensor]:
        idx = self.index(user_ids)
        out: dict[str, torch.Tensor] = {}
        if self.vectors is not None:
            out["user_embedding"] = torch.from_numpy(self.vectors[idx]).float()
        if self._collator is not None:
            out.update(self._collator([self._row(int(i)) for i in idx]))
        return {k: v.to(self.device) for k, v in out.items()}

    def _row(self, i: int):
        row = self._cache.get(i)
        if row is None:
            row = self._cache[i] = self.rows[i]
        return row


class UserTower(nn.Module):
    """A user representation for one downstream model kind: `mlp` (U-MLP), `trans` (T-/P-Trans), `uptrans`.

    Every kind ends in the paper's MLP as a `ShopperBertUserMLPForClassification` (`head`, `out_features` outputs):
    on the pre-trained user vector (`mlp`) or on the Transformer's output vector (`encoder`).
    """

    def __init__(self, kind: str, out_features: int, user_embedding_size: int | None = None,
                 transformer_config: ShopperBertConfig | None = None):
        super().__init__()
        if kind not in ("mlp", "trans", "uptrans"):
            raise ValueError(f"unknown user tower {kind!r}")
        self.kind = kind
        if kind == "mlp":
            self.encoder = None
            in_features = user_embedding_size
        else:
            self.encoder = SharedLayerTransformer(transformer_config,
                                                  user_embedding_size if kind == "uptrans" else None)
            in_features = transformer_config.hidden_size
        self.head = ShopperBertUserMLPForClassification(
            ShopperBertUserMLPConfig(user_embedding_size=in_features, num_labels=out_features))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "mlp":
            vector = batch["user_embedding"]  # (B, D)
        else:
            vector = self.encoder(batch["category_ids"], batch["date_ids"], batch["text_embeds"],
                                  batch["attention_mask"], batch.get("user_embedding"))  # (B, H)
        return self.head(user_embedding=vector).logits  # (B, out_features)


# ---------------------------------------------------------------------------------------------------------------
# Training loops
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Early stopping on a validation metric (higher is better): keeps the best epoch's weights."""

    state: dict
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list

    @classmethod
    def start(cls, model: nn.Module) -> "FitResult":
        return cls(copy.deepcopy(model.state_dict()), -math.inf, -1, 0, [])

    def update(self, model: nn.Module, epoch: int, metric: float, patience: int) -> bool:
        """Record an epoch's validation metric; returns True when training should stop."""
        self.history.append(metric)
        self.epochs_run = epoch + 1
        if metric > self.best_metric:
            self.best_metric, self.best_epoch, self.state = metric, epoch, copy.deepcopy(model.state_dict())
            return False
        return epoch - self.best_epoch >= patience


def check_device(device: str) -> str:
    """`device` (e.g. "cpu", "cuda", "cuda:1", "mps") if torch can use it here, else ValueError saying why."""
    from data_prep.text import device_problem

    problem = device_problem(device)
    if problem:
        raise ValueError(f"error: --device {device!r}{problem}")
    return device


def _batches(items: np.ndarray, size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(items)) if rng is not None else np.arange(len(items))
    for start in range(0, len(items), size):
        yield items[order[start:start + size]]


def _make_optimizer(model: nn.Module, lr: float):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0, foreach=True)
    return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.995)


@torch.no_grad()
def user_scores(tower: UserTower, inputs: UserInputs, user_ids: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Classification scores (logits) for users, in order."""
    tower.eval()
    out = []
    for start in range(0, len(user_ids), batch_size):
        out.append(tower(inputs.batch(user_ids[start:start + batch_size])).squeeze(-1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def fit_classifier(tower: UserTower, inputs: UserInputs, train_ids, train_labels, val_ids, val_labels,
                   lr: float, seed: int, validation_metric, max_epochs: int = 50, patience: int = 5,
                   batch_size: int = 256) -> FitResult:
    """Binary cross-entropy on users; keeps the epoch with the best validation metric (e.g. AUROC)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower.to(inputs.device)
    optimizer, scheduler = _make_optimizer(tower, lr)
    train_ids = np.asarray(train_ids, dtype=object)
    labels = dict(zip(train_ids, np.asarray(train_labels, dtype=np.float32)))
    best = FitResult.start(tower)
    for epoch in range(max_epochs):
        tower.train()
        for users in _batches(train_ids, batch_size, rng):
            logits = tower(inputs.batch(list(users))).squeeze(-1)
            target = torch.tensor([labels[u] for u in users], device=inputs.device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        if best.update(tower, epoch, validation_metric(user_scores(tower, inputs, list(val_ids)), val_labels),
                       patience):
            break
    tower.load_state_dict(best.state)
    return best


class ItemTower(ShopperBertMLP):
    """Item representation for recommendation: an MLP (input-256-128-output) on the item's text vector and numeric
    features, as `ShopperBertTwoTowerModel`'s item tower."""

    def __init__(self, in_features: int, out_features: int = REC_DIM):
        super().__init__(in_features, out_features, ITEM_TOWER_HIDDEN_SIZES)


class TwoTowerScorer(nn.Module):
    """score(u, i) = sigmoid(user_tower(u) . item_tower(i)) (section 4.2.2)."""

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, item_features: np.ndarray,
                 item_ids: Sequence[str]):
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.register_buffer("item_features", torch.from_numpy(np.asarray(item_features, dtype=np.float32)))
        self.item_position = pd.Index([str(i) for i in item_ids], dtype=object)

    def item_index(self, item_ids) -> torch.Tensor:
        positions = self.item_position.get_indexer(np.asarray(item_ids, dtype=object))
        if (positions < 0).any():
            raise KeyError("unknown item ids")
        return torch.from_numpy(positions.astype(np.int64))

    @torch.no_grad()
    def score_pairs(self, inputs: UserInputs, user_ids: np.ndarray, item_ids: np.ndarray,
                    user_batch: int = 256) -> np.ndarray:
        """Logits of aligned (user, item) pairs: each user and item vector computed once."""
        self.eval()
        user_inverse, unique_users = pd.factorize(np.asarray(user_ids, dtype=object))
        vectors = []
        for start in range(0, len(unique_users), user_batch):
            vectors.append(self.user_tower(inputs.batch(list(unique_users[start:start + user_batch]))))
        users = torch.cat(vectors)  # (U, d)
        items = self.item_tower(self.item_features)  # (I, d)
        item_idx = self.item_index(item_ids).to(items.device)
        scores = (users[torch.from_numpy(user_inverse.astype(np.int64)).to(users.device)] * items[item_idx]).sum(-1)
        return scores.float().cpu().numpy()

    def to_pretrained(self) -> ShopperBertTwoTowerModel:
        """This recommender as a `ShopperBertTwoTowerModel` with the same weights (`save_pretrained`, `push_to_hub`);
        for a U-MLP user tower (the Transformer towers are not part of that model)."""
        if self.user_tower.kind != "mlp":
            raise ValueError("only a U-MLP recommender becomes a ShopperBertTwoTowerModel, not "
                             f"{self.user_tower.kind!r}")
        user_mlp = self.user_tower.head.mlp
        linears = [m for m in self.item_tower.modules() if isinstance(m, nn.Linear)]
        config = ShopperBertTwoTowerConfig(
            user_embedding_size=self.user_tower.head.config.user_embedding_size,
            item_feature_size=linears[0].in_features, embedding_size=linears[-1].out_features,
            user_hidden_sizes=self.user_tower.head.config.hidden_sizes,
            item_hidden_sizes=[m.out_features for m in linears[:-1]])
        with torch.random.fork_rng(devices=[]):  # the fresh weights are overwritten: leave the generator alone
            model = ShopperBertTwoTowerModel(config)
        model.user_tower.load_state_dict(user_mlp.state_dict())
        model.item_tower.load_state_dict(self.item_tower.state_dict())
        return model.eval()


def fit_recommender(scorer: TwoTowerScorer, inputs: UserInputs, pairs_for_epoch, validation_metric, lr: float,
                    seed: int, max_epochs: int = 30, patience: int = 3, positives_per_batch: int = 256) -> FitResult:
    """BCE on (user, item, label) pairs; `pairs_for_epoch(epoch)` gives a DataFrame of fresh negatives each epoch.

    A batch holds about `positives_per_batch` positive pairs (the paper's batch of 256) with their sampled
    negatives, grouped by user so that each user's tower runs once per batch.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = torch.device(inputs.device)
    scorer.to(device)
    optimizer, scheduler = _make_optimizer(scorer, lr)
    best = FitResult.start(scorer)
    for epoch in range(max_epochs):
        scorer.train()
        pairs = pairs_for_epoch(epoch)
        inverse, users = pd.factorize(pairs["user_id"].to_numpy(dtype=object))
        users = np.asarray(users, dtype=object)
        counts = np.bincount(inverse, minlength=len(users))
        labels = pairs["label"].to_numpy()
        positives = np.bincount(inverse, weights=labels, minlength=len(users))
        by_user = np.argsort(inverse, kind="stable")  # pair positions grouped by user
        offsets = np.r_[0, np.cumsum(counts)]
        all_items = scorer.item_index(pairs["item_id"].to_numpy()).to(device)
        all_labels = torch.from_numpy(labels.astype(np.float32)).to(device)
        order = rng.permutation(len(users))
        start = 0
        while start < len(order):
            chosen, count = [], 0
            while start < len(order) and (not chosen or count < positives_per_batch):
                chosen.append(order[start])
                count += positives[order[start]]
                start += 1
            rows = torch.from_numpy(np.concatenate([by_user[offsets[u]:offsets[u + 1]] for u in chosen])).to(device)
            user_vectors = scorer.user_tower(inputs.batch(list(users[chosen])))  # (U, d)
            owner = torch.from_numpy(np.repeat(np.arange(len(chosen)), counts[chosen])).to(device)
            item_vectors = scorer.item_tower(scorer.item_features[all_items[rows]])  # (P, d)
            logits = (user_vectors[owner] * item_vectors).sum(-1)  # (P,)
            loss = F.binary_cross_entropy_with_logits(logits.float(), all_labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        if best.update(scorer, epoch, validation_metric(scorer), patience):
            break
    scorer.load_state_dict(best.state)
    return best


__all__ = [
    "DownstreamMLP",
    "FitResult",
    "ItemTower",
    "SharedLayerTransformer",
    "TwoTowerScorer",
    "UserInputs",
    "UserTower",
    "check_device",
    "fit_classifier",
    "fit_recommender",
    "small_transformer_config",
    "user_scores",
]
