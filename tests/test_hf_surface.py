"""ShopperBERT as a plain transformers model (issue 14): `Trainer` fine-tunes it on a `datasets` split, `forward`
honours `return_dict` and refuses arguments it does not know, MP pooling follows `attention_mask`, and the
collator passes user-level labels through."""

import json

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from safetensors.numpy import load_file

from modeling_shopperbert import ShopperBertConfig, ShopperBertForSequenceClassification, ShopperBertModel
from modeling_shopperbert.collator import ShopperBertCollator, user_labels
from tests.test_modeling_shopperbert import ShopperBertModelTester
from tests.tiny_data import write_tiny_prepared_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_prepared_data(tmp_path_factory.mktemp("tiny"), num_train=64, num_validation=16)
    metadata = json.loads((path / "metadata.json").read_text())
    text = load_file(str(path / "text_embeddings.safetensors"))["embeddings"]
    return path, metadata, text


def _labelled(dataset):
    """A learnable user label: is the user's most frequent top-level category an even id?"""
    def label(row):
        values, counts = np.unique(row["category_1"], return_counts=True)
        return {"label": int(values[counts.argmax()] % 2 == 0)}
    return dataset.map(label)


def test_trainer_fine_tunes_a_tiny_model_and_its_loss_falls(tiny, tmp_path):
    from transformers import Trainer, TrainingArguments

    path, metadata, text = tiny
    splits = load_from_disk(str(path / "dataset"))
    train = _labelled(splits["train"])
    config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=64, num_labels=2,
                                                  max_position_embeddings=61)
    torch.manual_seed(0)
    model = ShopperBertForSequenceClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), remove_unused_columns=False, max_steps=40,
                             per_device_train_batch_size=16, per_device_eval_batch_size=64, learning_rate=3e-3,
                             report_to=[], save_strategy="no", use_cpu=True, seed=0, logging_steps=10,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=train,
                      data_collator=ShopperBertCollator(text, max_length=60))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert np.isfinite(after) and after < 0.8 * before, (before, after)
    assert model.config.problem_type == "single_label_classification"


def test_trainer_default_column_removal_gets_a_clear_hint(tiny):
    _, _, text = tiny
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        ShopperBertCollator(text)([{"label": 1, "attention_mask": [1, 1]}])


def test_collator_passes_user_labels_through(tiny):
    path, _, text = tiny
    rows = [dict(r) for r in load_from_disk(str(path / "dataset"))["train"].select(range(3))]
    collate = ShopperBertCollator(text)
    assert "labels" not in collate(rows)
    batch = collate([{**r, "label": i % 2} for i, r in enumerate(rows)])
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 0]
    batch = collate([{**r, "labels": [0.5, 1.0]} for r in rows])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"features \[1\] lack the `label`"):
        user_labels([{"label": 1}, {}, {"label": 0}])
    with pytest.raises(ValueError, match="feature 0 has none"):
        user_labels([{}, {"label": 1}])
    with pytest.raises(ValueError, match="must be numbers"):
        user_labels([{"label": "yes"}])


@pytest.fixture
def tester():
    return ShopperBertModelTester()


def test_return_dict_false_gives_a_tuple(tester):
    config = tester.get_config()
    model = ShopperBertModel(config).eval()
    inputs = tester.prepare_inputs(config)
    as_dict = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.last_hidden_state)
    torch.testing.assert_close(as_tuple[1], as_dict.user_embedding)
    config_off = tester.get_config(return_dict=False)
    assert isinstance(ShopperBertModel(config_off).eval()(**inputs), tuple)
    # the wrappers read their encoder's output by name whatever the config says
    from modeling_shopperbert import ShopperBertForMaskedPurchasePrediction

    for wrapper in (ShopperBertForMaskedPurchasePrediction, ShopperBertForSequenceClassification):
        assert isinstance(wrapper(config_off).eval()(**inputs), tuple)
    classifier = ShopperBertForSequenceClassification(tester.get_config(num_labels=2)).eval()
    loss, logits = classifier(**inputs, labels=torch.tensor([0, 1, 1]), return_dict=False)[:2]
    assert loss.dim() == 0 and logits.shape == (3, 2)


def test_unknown_argument_is_refused(tester):
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    inputs["attention_masks"] = inputs.pop("attention_mask")  # a typo must not silently drop the mask
    for model in (ShopperBertModel(config), ShopperBertForSequenceClassification(config)):
        with pytest.raises(TypeError, match="attention_masks"):
            model(**inputs)


def test_mean_pooling_follows_attention_mask(tester):
    """A purchase that attention_mask hides is neither attended to nor pooled: the user vector equals that of the
    same user without the purchase."""
    config = tester.get_config()
    model = ShopperBertModel(config).eval()
    inputs = tester.prepare_inputs(config, lengths=[8, 8, 8])
    hidden = {k: v.clone() for k, v in inputs.items()}
    hidden["attention_mask"][:, 7:] = 0  # purchases 7 and 8 hidden but still present in the ids
    shorter = tester.prepare_inputs(config, lengths=[8, 8, 8])
    for key in ("category_ids", "date_ids", "text_embeds", "attention_mask"):
        shorter[key] = shorter[key][:, :7]
    torch.testing.assert_close(model(**hidden).user_embedding, model(**shorter).user_embedding)


def test_problem_types_follow_bert():
    tester = ShopperBertModelTester()
    inputs = tester.prepare_inputs(tester.get_config())
    regression = ShopperBertForSequenceClassification(tester.get_config(num_labels=1))
    assert regression(**inputs, labels=torch.tensor([0.1, 0.5, 2.0])).loss.dim() == 0
    assert regression.config.problem_type == "regression"
    multi = ShopperBertForSequenceClassification(tester.get_config(num_labels=3))
    assert multi(**inputs, labels=torch.tensor([[0.0, 1.0, 1.0]] * 3)).loss.dim() == 0
    assert multi.config.problem_type == "multi_label_classification"


def test_shipped_checkpoint_loads_for_fine_tuning():
    """README's fine-tuning snippet: the released folder loads as a sequence classifier whose encoder is the
    released one (only the classifier is new)."""
    from pathlib import Path

    from transformers import AutoModel, AutoModelForSequenceClassification

    folder = Path(__file__).resolve().parents[1] / "shopperbert"
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, trust_remote_code=True)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert classifier.config.num_labels == 2
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(classifier.shopperbert.state_dict()[name], tensor)


def test_encoder_reads_labelled_rows(tiny):
    """A fine-tuning split (rows + `label`) encodes like unlabelled rows: the label is not a model input."""
    from modeling_shopperbert import UserEncoder

    path, metadata, text = tiny
    rows = load_from_disk(str(path / "dataset"))["validation"]
    config = ShopperBertConfig.from_data_metadata(metadata, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=64,
                                                  max_position_embeddings=61)
    encoder = UserEncoder(ShopperBertModel(config), text_embeddings=text, device="cpu")
    plain = encoder.encode(rows)
    labelled = encoder.encode(_labelled(rows))
    np.testing.assert_allclose(labelled, plain, atol=1e-6)
