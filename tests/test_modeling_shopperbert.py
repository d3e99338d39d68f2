"""Model tests in transformers' ModelTester style: a tiny config, shape checks, and one-line tests."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_shopperbert import (
    CLS_ID,
    MASK_ID,
    MPP_HEADS,
    PAD_ID,
    ShopperBertConfig,
    ShopperBertForMaskedPurchasePrediction,
    ShopperBertForSequenceClassification,
    ShopperBertModel,
)
from modeling_shopperbert.configuration_shopperbert import NUM_SPECIAL_IDS
from modeling_shopperbert.modeling_shopperbert import AUTO_MAP


class ShopperBertModelTester:
    def __init__(self, batch_size=3, seq_length=9, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 text_embedding_size=8, user_representation="mean"):
        self.batch_size = batch_size
        self.seq_length = seq_length  # [CLS] + purchases
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.text_embedding_size = text_embedding_size
        self.user_representation = user_representation

    def get_config(self, **kwargs):
        values = dict(
            category_vocab_sizes=[9, 10, 11, 12], text_embedding_size=self.text_embedding_size, year_vocab_size=6,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=37, max_position_embeddings=16,
            user_representation=self.user_representation, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        values.update(kwargs)
        return ShopperBertConfig(**values)

    def prepare_inputs(self, config, lengths=None, generator=None):
        """Random purchases; user i has lengths[i] purchases after [CLS], the rest is padding."""
        g = generator or torch.Generator().manual_seed(0)
        B, T = self.batch_size, self.seq_length
        lengths = lengths or [T - 1, T - 3, 2][:B]
        sizes = config.head_vocab_sizes
        ids = torch.stack([torch.randint(NUM_SPECIAL_IDS, s, (B, T), generator=g) for s in sizes], dim=-1)
        ids[:, 0] = CLS_ID
        attention_mask = torch.zeros(B, T, dtype=torch.long)
        for b, n in enumerate(lengths):
            ids[b, 1 + n:] = PAD_ID
            attention_mask[b, :1 + n] = 1
        text = torch.randn(B, T, config.text_embedding_size, generator=g)
        return {"category_ids": ids[..., :4], "date_ids": ids[..., 4:], "text_embeds": text,
                "attention_mask": attention_mask}

    def prepare_mpp_inputs(self, config, generator=None):
        inputs = self.prepare_inputs(config, generator=generator)
        ids = torch.cat([inputs["category_ids"], inputs["date_ids"]], dim=-1)
        masked = torch.zeros(ids.shape[:2], dtype=torch.bool)
        masked[:, 1] = True
        masked[0, 3] = True
        labels = torch.full_like(ids, -100)
        labels[masked] = ids[masked]
        ids[masked] = MASK_ID
        inputs.update(category_ids=ids[..., :4].clone(), date_ids=ids[..., 4:].clone(), labels=labels,
                      masked_positions=masked)
        return inputs

    # -- checks -------------------------------------------------------------------------------------------------------
    def create_and_check_model(self, config, inputs):
        model = ShopperBertModel(config).eval()
        out = model(**inputs, output_hidden_states=True)
        B, T, H = self.batch_size, self.seq_length, self.hidden_size
        assert out.last_hidden_state.shape == (B, T, H)
        assert out.user_embedding.shape == (B, H)
        assert len(out.hidden_states) == config.num_hidden_layers + 1
        assert torch.isfinite(out.last_hidden_state).all()

    def create_and_check_mpp(self, config, inputs):
        model = ShopperBertForMaskedPurchasePrediction(config).eval()
        out = model(**inputs)
        n_masked = int(inputs["masked_positions"].sum())
        assert len(out.logits) == len(MPP_HEADS) == 9
        for logits, size in zip(out.logits, config.head_vocab_sizes):
            assert logits.shape == (n_masked, size)
        assert out.head_losses.shape == (9,)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        torch.testing.assert_close(out.loss, out.head_losses.mean())
        assert out.user_embedding.shape == (self.batch_size, self.hidden_size)

    def create_and_check_sequence_classification(self, config, inputs):
        config.num_labels = 3
        model = ShopperBertForSequenceClassification(config).eval()
        labels = torch.tensor([0, 2, 1])
        out = model(**inputs, labels=labels)
        assert out.logits.shape == (self.batch_size, 3)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)


@pytest.fixture(params=["mean", "cls"])
def tester(request):
    return ShopperBertModelTester(user_representation=request.param)


def test_model_shapes(tester):
    config = tester.get_config()
    tester.create_and_check_model(config, tester.prepare_inputs(config))


def test_mpp_shapes_and_loss(tester):
    config = tester.get_config()
    tester.create_and_check_mpp(config, tester.prepare_mpp_inputs(config))


def test_sequence_classification(tester):
    config = tester.get_config()
    tester.create_and_check_sequence_classification(config, tester.prepare_inputs(config))


def test_user_embedding_definitions():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    model = ShopperBertModel(config).eval()
    out = model(**inputs)
    mask = inputs["attention_mask"].clone()
    mask[:, 0] = 0  # purchases only: no [CLS], no padding
    expected = (out.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(out.user_embedding, expected)
    config_cls = tester.get_config(user_representation="cls")
    model_cls = ShopperBertModel(config_cls).eval()
    out_cls = model_cls(**inputs)
    torch.testing.assert_close(out_cls.user_embedding, out_cls.last_hidden_state[:, 0])


def test_padding_does_not_change_real_tokens(tester):
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    model = ShopperBertModel(config).eval()
    out = model(**inputs)
    extra = 4
    padded = {
        "category_ids": torch.cat([inputs["category_ids"], torch.zeros(3, extra, 4, dtype=torch.long)], 1),
        "date_ids": torch.cat([inputs["date_ids"], torch.zeros(3, extra, 5, dtype=torch.long)], 1),
        "text_embeds": torch.cat([inputs["text_embeds"], torch.randn(3, extra, config.text_embedding_size)], 1),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.zeros(3, extra, dtype=torch.long)], 1),
    }
    out_padded = model(**padded)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(out_padded.last_hidden_state[:, :tester.seq_length][real],
                               out.last_hidden_state[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_padded.user_embedding, out.user_embedding, atol=1e-5, rtol=1e-5)


def test_attention_mask_is_derived_from_padding():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    model = ShopperBertModel(config).eval()
    with_mask = model(**inputs).last_hidden_state
    inputs.pop("attention_mask")
    torch.testing.assert_close(model(**inputs).last_hidden_state, with_mask)


def test_text_of_special_tokens_is_ignored():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    out = model(**inputs)
    special = inputs["category_ids"][..., 0] <= CLS_ID  # [CLS], [MASK] and padding
    inputs["text_embeds"] = inputs["text_embeds"].clone()
    inputs["text_embeds"][special] = 100.0
    out2 = model(**inputs)
    torch.testing.assert_close(out2.loss, out.loss)


def test_eager_matches_sdpa(tester):
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    torch.manual_seed(0)
    eager = ShopperBertForMaskedPurchasePrediction(tester.get_config(attn_implementation="eager")).eval()
    sdpa = ShopperBertForMaskedPurchasePrediction(tester.get_config(attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    out_e, out_s = eager(**inputs), sdpa(**inputs)
    torch.testing.assert_close(out_e.loss, out_s.loss, atol=1e-5, rtol=1e-5)
    for a, b in zip(out_e.logits, out_s.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_e.user_embedding, out_s.user_embedding, atol=1e-5, rtol=1e-5)


def test_output_attentions_uses_eager():
    tester = ShopperBertModelTester()
    config = tester.get_config(attn_implementation="eager")
    model = ShopperBertModel(config).eval()
    out = model(**tester.prepare_inputs(config), output_attentions=True)
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 4, tester.seq_length, tester.seq_length)
    # padded keys receive no attention
    assert out.attentions[0][2, :, :, 3:].abs().max() == 0


def test_save_load_round_trip(tmp_path, tester):
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    expected = model(**inputs)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"configuration_shopperbert.py", "modeling_shopperbert.py", "modeling_shopperbert_layers.py",
            "config.json"} <= files
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP
    assert saved["model_type"] == "shopperbert"

    assert AutoConfig.from_pretrained(tmp_path).to_dict()["category_vocab_sizes"] == config.category_vocab_sizes
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ShopperBertForMaskedPurchasePrediction
    got = reloaded(**inputs)
    torch.testing.assert_close(got.loss, expected.loss, atol=0, rtol=0)
    for a, b in zip(got.logits, expected.logits):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is ShopperBertModel
    base_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "masked_positions")}
    torch.testing.assert_close(base(**base_inputs).user_embedding, expected.user_embedding, atol=0, rtol=0)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_shopperbert"] = None  # our package must not be importable here
    try:
        import modeling_shopperbert  # noqa: F401
        raise SystemExit("package unexpectedly importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification
    folder, inputs_path = sys.argv[1], sys.argv[2]
    inputs = torch.load(inputs_path)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    emb = model(**inputs).user_embedding
    pre = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
    clf = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    print(json.dumps({"embedding": emb.tolist(), "classes": [type(model).__name__, type(pre).__name__,
                      type(clf).__name__], "module": type(model).__module__}))
    """
)


def test_trust_remote_code_in_fresh_process(tmp_path):
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    expected = model.shopperbert(**inputs).user_embedding
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["classes"] == ["ShopperBertModel", "ShopperBertForMaskedPurchasePrediction",
                                 "ShopperBertForSequenceClassification"]
    assert report["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(report["embedding"]), expected, atol=1e-6, rtol=1e-6)


def test_tiny_model_overfits_one_batch(tester):
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(**inputs).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_every_parameter_gets_a_gradient(tester):
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    model(**inputs).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_missing_category_labels_are_ignored():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    inputs["labels"][..., 3] = -100  # no token has a fourth-level category
    out = ShopperBertForMaskedPurchasePrediction(config).eval()(**inputs)
    assert out.head_losses[3] == 0
    torch.testing.assert_close(out.loss, out.head_losses[[0, 1, 2, 4, 5, 6, 7, 8]].mean())


def test_masked_positions_default_to_labels_then_mask_ids():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).eval()
    explicit = model(**inputs)
    masked = inputs.pop("masked_positions")
    from_labels = model(**inputs)
    torch.testing.assert_close(from_labels.loss, explicit.loss)
    inputs.pop("labels")
    from_ids = model(**inputs)
    assert from_ids.loss is None
    assert from_ids.logits[0].shape[0] == int(masked.sum())


def test_gradient_checkpointing_matches():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    model = ShopperBertForMaskedPurchasePrediction(config).train()
    loss = model(**inputs).loss
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.shopperbert.encoder.layer)
    torch.testing.assert_close(model(**inputs).loss, loss)


def test_paper_configuration_parameter_count():
    """The defaults are the paper's encoder: H=550, L=20, A=10, 350 purchases, vocabularies 12/234/2092/3379."""
    config = ShopperBertConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (550, 20, 10)
    assert config.intermediate_size == 4 * 550 and config.max_position_embeddings == 351
    with torch.device("meta"):
        model = ShopperBertForMaskedPurchasePrediction(config)
    encoder = sum(p.numel() for p in model.shopperbert.parameters())
    total = sum(p.numel() for p in model.parameters())
    # The paper reports 79.2M; our encoder (what serves users) is 78.1M and the nine MPP heads add 6.0M.
    assert 77.5e6 < encoder < 79.5e6, encoder
    assert 83.0e6 < total < 85.0e6, total


# -- bad inputs ----------------------------------------------------------------------------------------------------
def test_category_id_beyond_vocabulary_raises():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    inputs["category_ids"][0, 1, 2] = config.category_vocab_sizes[2]
    with pytest.raises(ValueError, match=r"category_3 id 11 is outside its vocabulary \[0, 11\)"):
        ShopperBertModel(config)(**inputs)


def test_date_id_beyond_vocabulary_raises():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    inputs["date_ids"][0, 1, 4] = 99
    with pytest.raises(ValueError, match="hour id 99"):
        ShopperBertModel(config)(**inputs)


def test_negative_id_raises():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    inputs["date_ids"][1, 1, 0] = -1
    with pytest.raises(ValueError, match="year id -1"):
        ShopperBertModel(config)(**inputs)


def test_sequence_longer_than_position_table_raises():
    tester = ShopperBertModelTester(seq_length=17)
    config = tester.get_config()  # max_position_embeddings=16
    inputs = tester.prepare_inputs(config, lengths=[16, 10, 2])
    with pytest.raises(ValueError, match="longer than the position table"):
        ShopperBertModel(config)(**inputs)


def test_wrong_text_dimension_raises():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    inputs["text_embeds"] = torch.randn(3, tester.seq_length, 5)
    with pytest.raises(ValueError, match="text_embedding_size"):
        ShopperBertModel(config)(**inputs)


def test_wrong_labels_shape_raises():
    tester = ShopperBertModelTester()
    config = tester.get_config()
    inputs = tester.prepare_mpp_inputs(config)
    inputs["labels"] = inputs["labels"][..., :4]
    with pytest.raises(ValueError, match="labels must have shape"):
        ShopperBertForMaskedPurchasePrediction(config)(**inputs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible by num_attention_heads"),
        (dict(user_representation="max"), "user_representation"),
        (dict(category_vocab_sizes=[10, 10, 10]), "category_vocab_sizes"),
        (dict(category_vocab_sizes=[10, 10, 3, 10]), "category_vocab_sizes"),
        (dict(month_vocab_size=12), "month_vocab_size"),
        (dict(year_vocab_size=4), "year_vocab_size"),
        (dict(mlm_probability=1.5), "mlm_probability"),
        (dict(mask_replace_prob=0.9, random_replace_prob=0.2), "must not exceed 1"),
        (dict(hidden_act="tanhh"), "hidden_act"),
        (dict(max_position_embeddings=1), "max_position_embeddings"),
        (dict(pad_token_id=5), "pad_token_id"),
    ],
)
def test_bad_config_values_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShopperBertConfig(**kwargs)


def test_config_from_data_metadata():
    metadata = {"category_vocab_sizes": [20, 30, 40, 50], "text_embedding_size": 384, "year_vocab_size": 5,
                "month_vocab_size": 16, "day_vocab_size": 35, "weekday_vocab_size": 11, "hour_vocab_size": 28,
                "date_base_year": 2017, "source": "completejourney"}
    config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=64, num_attention_heads=4)
    assert config.category_vocab_sizes == [20, 30, 40, 50] and config.text_embedding_size == 384
    assert config.hidden_size == 64 and config.date_base_year == 2017
    with pytest.raises(ValueError, match="lacks"):
        ShopperBertConfig.from_data_metadata({"text_embedding_size": 384})
