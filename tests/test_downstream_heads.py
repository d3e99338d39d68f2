"""The downstream heads as transformers models: `ShopperBertUserMLPForClassification` (U-MLP) and
`ShopperBertTwoTowerModel` (two-tower recommender). Shapes and losses, config checks, save / Auto* load (also in a
fresh process with our package blocked, through `trust_remote_code`), learning, and the same numbers as eval_suite's
downstream models had before they moved onto these classes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from eval_suite.models import (
    ItemTower,
    SharedLayerTransformer,
    TwoTowerScorer,
    UserInputs,
    UserTower,
    fit_classifier,
    fit_recommender,
    small_transformer_config,
    user_scores,
)
from modeling_shopperbert import (
    ShopperBertMLP,
    ShopperBertTwoTowerConfig,
    ShopperBertTwoTowerModel,
    ShopperBertUserMLPConfig,
    ShopperBertUserMLPForClassification,
)
from helpers import METADATA, sequence_inputs as _sequence_inputs


class HeadsTester:
    """Tiny configs and inputs (user vectors of 12, items of 7 features)."""

    batch_size, user_size, item_size, num_items = 5, 12, 7, 3

    def user_mlp_config(self, **kwargs):
        return ShopperBertUserMLPConfig(user_embedding_size=self.user_size, hidden_sizes=[16, 8], **kwargs)

    def two_tower_config(self, **kwargs):
        return ShopperBertTwoTowerConfig(user_embedding_size=self.user_size, item_feature_size=self.item_size,
                                         embedding_size=6, user_hidden_sizes=[16, 8], item_hidden_sizes=[10], **kwargs)

    def users(self, seed=0):
        return torch.randn(self.batch_size, self.user_size, generator=torch.Generator().manual_seed(seed))

    def items(self, seed=1, num_items=None):
        shape = (self.batch_size, num_items, self.item_size) if num_items else (self.batch_size, self.item_size)
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tester():
    return HeadsTester()


# -- shapes and losses -------------------------------------------------------------------------------------------
def test_user_mlp_is_the_papers_mlp_with_one_logit_and_bce(tester):
    model = ShopperBertUserMLPForClassification(ShopperBertUserMLPConfig(user_embedding_size=tester.user_size))
    assert model.config.num_labels == 1
    assert [m.out_features for m in model.mlp if isinstance(m, nn.Linear)] == [512, 256, 128, 64, 1]
    users, labels = tester.users(), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    out = model(user_embedding=users, labels=labels)
    assert out.logits.shape == (tester.batch_size, 1)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits.squeeze(-1), labels))
    loss, logits = model(user_embedding=users, labels=labels, return_dict=False)
    torch.testing.assert_close(logits, out.logits, atol=0, rtol=0)


def test_user_mlp_with_classes_uses_cross_entropy(tester):
    model = ShopperBertUserMLPForClassification(tester.user_mlp_config(num_labels=3))
    labels = torch.tensor([0, 2, 1, -100, 2])
    out = model(user_embedding=tester.users(), labels=labels)
    assert out.logits.shape == (tester.batch_size, 3)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels, ignore_index=-100))


def test_two_tower_scores_pairs_and_candidate_lists(tester):
    model = ShopperBertTwoTowerModel(tester.two_tower_config()).eval()
    users, items, labels = tester.users(), tester.items(), torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    out = model(user_embedding=users, item_features=items, labels=labels)
    assert out.logits.shape == (tester.batch_size,) and out.user_embeds.shape == out.item_embeds.shape == (5, 6)
    torch.testing.assert_close(out.logits, (model.user_tower(users) * model.item_tower(items)).sum(-1))
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))
    candidates = tester.items(num_items=tester.num_items)  # (B, N, F)
    ranked = model(user_embedding=users, item_features=candidates)
    assert ranked.logits.shape == (tester.batch_size, tester.num_items) and ranked.loss is None
    for n in range(tester.num_items):
        torch.testing.assert_close(ranked.logits[:, n], model(user_embedding=users,
                                                               item_features=candidates[:, n]).logits)


@pytest.mark.parametrize("make, field, value", [
    ("user_mlp", "user_embedding_size", 0),
    ("user_mlp", "hidden_sizes", [16, -1]),
    ("user_mlp", "hidden_act", "softmax"),
    ("user_mlp", "mlp_dropout", 1.0),
    ("user_mlp", "num_labels", 0),
    ("two_tower", "item_feature_size", 2.5),
    ("two_tower", "embedding_size", 0),
    ("two_tower", "item_hidden_sizes", ["wide"]),
    ("two_tower", "hidden_act", "swish2"),
])
def test_bad_config_values_raise(make, field, value):
    config_class = ShopperBertUserMLPConfig if make == "user_mlp" else ShopperBertTwoTowerConfig
    with pytest.raises(ValueError, match=field):
        config_class(**{field: value})


def test_inputs_of_the_wrong_size_are_named(tester):
    mlp = ShopperBertUserMLPForClassification(tester.user_mlp_config())
    with pytest.raises(ValueError, match="user_embedding_size"):
        mlp(user_embedding=torch.randn(2, tester.user_size + 1))
    two_tower = ShopperBertTwoTowerModel(tester.two_tower_config())
    with pytest.raises(ValueError, match="item_feature_size"):
        two_tower(user_embedding=tester.users(), item_features=torch.randn(tester.batch_size, 3))
    with pytest.raises(ValueError, match="batch"):
        two_tower(user_embedding=tester.users(), item_features=torch.randn(2, tester.item_size))
    with pytest.raises(TypeError):
        mlp(user_embeddings=tester.users())  # a misspelt argument is not silently dropped


# -- save and load -----------------------------------------------------------------------------------------------
def test_heads_round_trip_through_the_auto_classes(tester, tmp_path):
    mlp = ShopperBertUserMLPForClassification(tester.user_mlp_config(num_labels=2)).eval()
    two_tower = ShopperBertTwoTowerModel(tester.two_tower_config()).eval()
    mlp.save_pretrained(tmp_path / "mlp")
    two_tower.save_pretrained(tmp_path / "two_tower")
    for name, files in (("mlp", "configuration_shopperbert_heads.py"), ("two_tower", "modeling_shopperbert_heads.py")):
        assert (tmp_path / name / files).is_file(), "remote code travels with the weights"
    saved = json.loads((tmp_path / "mlp" / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForSequenceClassification"].endswith("ShopperBertUserMLPForClassification")
    assert json.loads((tmp_path / "two_tower" / "config.json").read_text())["auto_map"]["AutoModel"].endswith(
        "ShopperBertTwoTowerModel")

    assert type(AutoConfig.from_pretrained(tmp_path / "mlp")) is ShopperBertUserMLPConfig
    mlp2 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mlp").eval()
    assert type(mlp2) is ShopperBertUserMLPForClassification and mlp2.config.num_labels == 2
    users, items = tester.users(), tester.items()
    torch.testing.assert_close(mlp2(user_embedding=users).logits, mlp(user_embedding=users).logits, atol=0, rtol=0)
    two_tower2 = AutoModel.from_pretrained(tmp_path / "two_tower").eval()
    assert type(two_tower2) is ShopperBertTwoTowerModel
    torch.testing.assert_close(two_tower2(user_embedding=users, item_features=items).logits,
                               two_tower(user_embedding=users, item_features=items).logits, atol=0, rtol=0)


def test_a_new_output_layer_gets_pytorchs_default_init_on_load(tester, tmp_path):
    """Weights missing from a checkpoint (here a resized output layer) are initialised by `_init_weights`, the
    others are the saved ones."""
    model = ShopperBertUserMLPForClassification(tester.user_mlp_config())
    model.save_pretrained(tmp_path)
    resized = ShopperBertUserMLPForClassification.from_pretrained(tmp_path, num_labels=4,
                                                                  ignore_mismatched_sizes=True)
    torch.testing.assert_close(resized.mlp[0].weight, model.mlp[0].weight, atol=0, rtol=0)
    last = resized.mlp[-1]
    bound = 1 / last.in_features ** 0.5  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert last.weight.shape == (4, 8) and last.weight.abs().max() <= bound and last.bias.abs().max() <= bound
    assert last.weight.std() > bound / 4, "initialised, not left empty"


BLOCKED_LOAD = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_shopperbert", "data_prep", "eval_suite"):
        sys.modules[name] = None  # any import of our package fails
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    root, inputs = sys.argv[1], torch.load(sys.argv[2])
    mlp = AutoModelForSequenceClassification.from_pretrained(root + "/mlp", trust_remote_code=True).eval()
    two_tower = AutoModel.from_pretrained(root + "/two_tower", trust_remote_code=True).eval()
    with torch.no_grad():
        report = {"mlp": mlp(user_embedding=inputs["users"]).logits.tolist(),
                  "two_tower": two_tower(user_embedding=inputs["users"], item_features=inputs["items"]).logits.tolist(),
                  "classes": [type(mlp).__name__, type(two_tower).__name__],
                  "modules": [type(mlp).__module__, type(two_tower).__module__]}
    print(json.dumps(report))
    """
)


def test_heads_load_with_trust_remote_code_and_our_package_blocked(tester, tmp_path):
    mlp = ShopperBertUserMLPForClassification(tester.user_mlp_config()).eval()
    two_tower = ShopperBertTwoTowerModel(tester.two_tower_config()).eval()
    mlp.save_pretrained(tmp_path / "mlp")
    two_tower.save_pretrained(tmp_path / "two_tower")
    users, items = tester.users(), tester.items()
    torch.save({"users": users, "items": items}, tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_LOAD)
    env = dict(os.environ, PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "inputs.pt")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] == ["ShopperBertUserMLPForClassification", "ShopperBertTwoTowerModel"]
    assert all(module.startswith("transformers_modules") for module in report["modules"])
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(report["mlp"]), mlp(user_embedding=users).logits)
        torch.testing.assert_close(torch.tensor(report["two_tower"]),
                                   two_tower(user_embedding=users, item_features=items).logits)


# -- learning ----------------------------------------------------------------------------------------------------
def test_user_mlp_loss_falls_on_a_separable_label(tester):
    users = torch.randn(64, tester.user_size, generator=torch.Generator().manual_seed(0))
    labels = (users[:, 0] > 0).float()
    model = ShopperBertUserMLPForClassification(tester.user_mlp_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = model(user_embedding=users, labels=labels).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first, (first, loss.item())


def test_two_tower_loss_falls_on_learnable_pairs(tester):
    generator = torch.Generator().manual_seed(0)
    users = torch.randn(64, tester.user_size, generator=generator)
    items = torch.randn(64, tester.item_size, generator=generator)
    labels = ((users[:, 0] > 0) == (items[:, 0] > 0)).float()  # a user likes items on its own side
    model = ShopperBertTwoTowerModel(tester.two_tower_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(40):
        loss = model(user_embedding=users, item_features=items, labels=labels).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


# -- the same numbers as eval_suite's models before these classes ------------------------------------------------
class OldDownstreamMLP(nn.Sequential):
    """eval_suite/models.py's DownstreamMLP before the heads (verbatim)."""

    def __init__(self, in_features, out_features, widths=(512, 256, 128, 64), dropout=0.0):
        layers = []
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, out_features))
        super().__init__(*layers)


class OldUserTower(nn.Module):
    """eval_suite/models.py's UserTower before the heads (verbatim)."""

    def __init__(self, kind, out_features, user_embedding_size=None, transformer_config=None):
        super().__init__()
        self.kind = kind
        if kind == "mlp":
            self.encoder = None
            self.head = OldDownstreamMLP(user_embedding_size, out_features)
        else:
            self.encoder = SharedLayerTransformer(transformer_config,
                                                  user_embedding_size if kind == "uptrans" else None)
            self.head = OldDownstreamMLP(transformer_config.hidden_size, out_features)

    def forward(self, batch):
        if self.kind == "mlp":
            return self.head(batch["user_embedding"])
        pooled = self.encoder(batch["category_ids"], batch["date_ids"], batch["text_embeds"],
                              batch["attention_mask"], batch.get("user_embedding"))
        return self.head(pooled)


class OldItemTower(nn.Module):
    def __init__(self, in_features, out_features=64):
        super().__init__()
        self.mlp = OldDownstreamMLP(in_features, out_features, widths=(256, 128))

    def forward(self, features):
        return self.mlp(features)


def _same_parameters(old: nn.Module, new: nn.Module) -> None:
    old_values, new_values = list(old.state_dict().values()), list(new.state_dict().values())
    assert [v.shape for v in old_values] == [v.shape for v in new_values]
    for a, b in zip(old_values, new_values):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_heads_draw_the_same_weights_as_the_old_modules():
    torch.manual_seed(11)
    old = OldDownstreamMLP(12, 1)
    old_next = torch.rand(4)  # the generator must end where it ended before, too
    torch.manual_seed(11)
    new = ShopperBertUserMLPForClassification(ShopperBertUserMLPConfig(user_embedding_size=12))
    _same_parameters(old, new.mlp)
    torch.testing.assert_close(torch.rand(4), old_next, atol=0, rtol=0)
    users = torch.randn(3, 12)
    torch.testing.assert_close(new(user_embedding=users).logits, old(users), atol=0, rtol=0)

    torch.manual_seed(12)
    old_user, old_item = OldDownstreamMLP(12, 64), OldItemTower(7)
    torch.manual_seed(12)
    two_tower = ShopperBertTwoTowerModel(ShopperBertTwoTowerConfig(user_embedding_size=12, item_feature_size=7))
    _same_parameters(old_user, two_tower.user_tower)
    _same_parameters(old_item, two_tower.item_tower)
    items = torch.randn(3, 7)
    torch.testing.assert_close(two_tower(user_embedding=users, item_features=items).logits,
                               (old_user(users) * old_item(items)).sum(-1), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["mlp", "trans", "uptrans"])
def test_eval_suite_classifiers_train_to_the_same_numbers(kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(12, 7)).astype(np.float32)
    inputs = _sequence_inputs(num_users=12, vectors=vectors) if kind != "mlp" else UserInputs(
        np.array([str(u) for u in range(12)], dtype=object), vectors=vectors)
    ids, labels = inputs.user_ids, (vectors[:, 0] > 0).astype(int)
    config = small_transformer_config(METADATA, max_length=6, hidden_size=16, num_layers=2, num_heads=2)
    runs = []
    for tower_class in (OldUserTower, UserTower):
        torch.manual_seed(5)
        tower = tower_class(kind, 1, user_embedding_size=7, transformer_config=config)
        fit = fit_classifier(tower, inputs, ids[:8], labels[:8], ids[8:], labels[8:], lr=1e-3, seed=5,
                             validation_metric=lambda s, y: float(np.mean(s)), max_epochs=2, patience=2,
                             batch_size=4)
        runs.append((fit.history, user_scores(tower, inputs, list(ids)), tower))
    (old_history, old_scores, old_tower), (new_history, new_scores, new_tower) = runs
    assert new_history == old_history
    np.testing.assert_array_equal(new_scores, old_scores)
    _same_parameters(old_tower, new_tower)


def test_eval_suite_recommender_trains_to_the_same_numbers_and_exports():
    rng = np.random.default_rng(0)
    ids = np.array([str(u) for u in range(12)], dtype=object)
    inputs = UserInputs(ids, vectors=rng.normal(size=(12, 7)).astype(np.float32))
    items = rng.normal(size=(6, 5)).astype(np.float32)
    item_ids = [f"i{j}" for j in range(6)]
    pairs = pd.DataFrame({"user_id": np.repeat(ids[:8], 3), "item_id": np.tile(item_ids[:3], 8),
                          "label": np.tile([1.0, 0.0, 0.0], 8)})
    all_users, all_items = np.repeat(ids, 6), np.tile(item_ids, 12)
    runs = []
    for user_class, item_class in ((OldUserTower, OldItemTower), (UserTower, ItemTower)):
        torch.manual_seed(7)
        scorer = TwoTowerScorer(user_class("mlp", 64, user_embedding_size=7), item_class(5, 64), items, item_ids)
        fit = fit_recommender(scorer, inputs, lambda epoch: pairs,
                              lambda m: float(m.score_pairs(inputs, ids[8:], ["i1"] * 4).mean()), lr=1e-3, seed=7,
                              max_epochs=2, patience=2, positives_per_batch=3)
        runs.append((fit.history, scorer.score_pairs(inputs, all_users, all_items), scorer))
    (old_history, old_scores, _), (new_history, new_scores, scorer) = runs
    assert new_history == old_history
    np.testing.assert_array_equal(new_scores, old_scores)

    # the trained recommender as a transformers model: the same scores
    model = scorer.to_pretrained()
    assert type(model) is ShopperBertTwoTowerModel and model.config.item_feature_size == 5
    with torch.no_grad():
        logits = model(user_embedding=torch.from_numpy(inputs.vectors[inputs.index(all_users)]),
                       item_features=torch.from_numpy(items[[item_ids.index(i) for i in all_items]])).logits
    np.testing.assert_allclose(logits.numpy(), new_scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="U-MLP"):
        config = small_transformer_config(METADATA, max_length=6, hidden_size=16, num_layers=1, num_heads=2)
        TwoTowerScorer(UserTower("trans", 64, transformer_config=config), ItemTower(5), items, item_ids).to_pretrained()


def test_eval_suite_item_tower_is_the_heads_mlp():
    assert isinstance(ItemTower(5), ShopperBertMLP)
    assert [m.out_features for m in ItemTower(5) if isinstance(m, nn.Linear)] == [256, 128, 64]
