"""`pipeline("feature-extraction", model=folder, trust_remote_code=True)` on raw logs: the processor + model
embeddings, keyed by user id in input order; also with our package blocked; bad input named."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data_prep import HashingTextEncoder, load_descriptions, load_prepared
from modeling_shopperbert import ShopperBertConfig, ShopperBertForMaskedPurchasePrediction
from modeling_shopperbert.pipeline_shopperbert import save_pipeline_files
from modeling_shopperbert.processing_shopperbert import ShopperBertProcessor
from tiny_data import write_tiny_prepared_data

ROOT = Path(__file__).resolve().parents[1]


def raw_logs():
    """Users 2, 10, 1 (in that order of first rows), known descriptions and category names of the tiny corpus."""
    rows = []
    for user, n in (("2", 3), ("10", 2), ("1", 4), ("2", 2)):
        for i in range(n):
            rows.append({"user_id": user, "timestamp": f"2017-03-{i + 1:02d} 1{i}:00:00",
                         "category_1": f"category_1-{i}", "category_2": f"category_2-{i + int(user)}",
                         "category_3": "category_3-2", "category_4": "category_4-1",
                         "description": f"tiny product description {int(user) + i}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny pre-training checkpoint saved as train.py saves it, plus its processor (with the corpus' text table)
    and the pipeline files."""
    base = tmp_path_factory.mktemp("pipe")
    data = write_tiny_prepared_data(base / "data", num_train=8, num_validation=4)
    prepared = load_prepared(data)
    config = ShopperBertConfig.from_data_metadata(prepared.metadata, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, max_position_embeddings=65)
    model = ShopperBertForMaskedPurchasePrediction(config)
    folder = base / "model"
    model.save_pretrained(folder)
    for name in ("metadata.json", "vocab.json"):
        (folder / name).write_text((data / name).read_text())
    processor = ShopperBertProcessor.from_corpus(prepared.vocab, prepared.metadata, max_length=config.max_purchases,
                                                 descriptions=load_descriptions(data)["description"].tolist(),
                                                 text_embeddings=prepared.embeddings)
    save_pipeline_files(folder, processor)
    return folder


def reference_embeddings(folder, logs):
    """Processor + model, by hand."""
    from transformers import AutoModel

    processor = ShopperBertProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    inputs = processor(logs)
    user_ids = inputs.pop("user_ids")
    with torch.no_grad():
        return user_ids, model(**inputs).user_embedding.numpy()


def test_pipeline_gives_the_processor_and_model_embeddings_in_input_order(folder):
    from transformers import pipeline

    logs = raw_logs()
    user_ids, expected = reference_embeddings(folder, logs)
    extractor = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device="cpu")
    assert type(extractor).__name__ == "ShopperBertFeatureExtractionPipeline"
    out = extractor(logs)
    assert list(out) == user_ids == ["2", "10", "1"]
    np.testing.assert_allclose(np.array([out[u] for u in user_ids]), expected, rtol=0, atol=1e-5)
    # records, a datasets.Dataset and one user per forward pass give the same
    import datasets

    for other in (logs.to_dict("records"), datasets.Dataset.from_pandas(logs)):
        again = extractor(other, user_batch_size=1, return_tensors=True)
        assert list(again) == user_ids
        np.testing.assert_allclose(torch.stack(list(again.values())).numpy(), expected, rtol=0, atol=1e-5)
    unit = extractor(logs, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(np.array(list(unit.values())), axis=1), 1.0, atol=1e-5)
    two = extractor([logs, logs[logs["user_id"] == "10"]])
    assert [list(d) for d in two] == [user_ids, ["10"]]
    np.testing.assert_allclose(two[1]["10"], out["10"], atol=1e-5)


BLOCKED_PIPELINE = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_shopperbert", "data_prep", "eval_suite"):
        sys.modules[name] = None  # any import of our package fails
    import pandas as pd
    from transformers import pipeline
    extractor = pipeline("feature-extraction", model=sys.argv[1], trust_remote_code=True, device="cpu")
    out = extractor(pd.read_json(sys.argv[2]))
    print(json.dumps({"modules": [type(extractor).__module__, type(extractor.processor).__module__,
                                  type(extractor.model).__module__], "embeddings": out}))
    """
)


def test_pipeline_works_with_transformers_alone(folder, tmp_path):
    logs = raw_logs()
    logs.to_json(tmp_path / "logs.json")
    user_ids, expected = reference_embeddings(folder, logs)
    script = tmp_path / "run.py"
    script.write_text(BLOCKED_PIPELINE)
    env = dict(os.environ, PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "logs.json")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(m.startswith("transformers_modules") for m in report["modules"]), report["modules"]
    assert list(report["embeddings"]) == user_ids
    np.testing.assert_allclose(np.array(list(report["embeddings"].values())), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (lambda logs: logs.drop(columns="description"), "lacks the required column 'description'"),
    (lambda logs: logs.iloc[:0], r"empty \(0 rows\)"),
    (lambda logs: logs.assign(timestamp="03/01/2017 at noon"), "cannot parse '03/01/2017 at noon'"),
])
def test_pipeline_names_bad_input(folder, change, message):
    from transformers import pipeline

    extractor = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device="cpu")
    with pytest.raises(ValueError, match=message):
        extractor(change(raw_logs()))
    with pytest.raises(ValueError, match="empty"):
        extractor([])
    with pytest.raises(TypeError, match="unexpected arguments"):
        extractor(raw_logs(), batchsize=3)


def test_unknown_categories_become_unk_not_errors(folder):
    from transformers import pipeline

    extractor = pipeline("feature-extraction", model=str(folder), trust_remote_code=True, device="cpu")
    out = extractor(raw_logs().assign(category_1="a department nobody has seen"))
    assert list(out) == ["2", "10", "1"] and all(np.isfinite(v).all() for v in out.values())


def test_save_pipeline_files_builds_the_processor_from_the_folder(folder, tmp_path):
    import shutil

    from transformers import pipeline

    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("processor_*", "pipeline_shopperbert.py"))
    config = json.loads((bare / "config.json").read_text())
    del config["custom_pipelines"]
    (bare / "config.json").write_text(json.dumps(config))
    written = {Path(f).name for f in save_pipeline_files(bare)}
    assert {"processor_config.json", "pipeline_shopperbert.py", "processing_shopperbert.py", "config.json"} <= written
    assert "processor_text_embeddings.npz" not in written  # no text table: only the text model's name
    assert json.loads((bare / "config.json").read_text())["custom_pipelines"]["feature-extraction"]["impl"] == \
        "pipeline_shopperbert.ShopperBertFeatureExtractionPipeline"
    extractor = pipeline("feature-extraction", model=str(bare), trust_remote_code=True, device="cpu")
    extractor.processor.text_encoder = HashingTextEncoder(16)  # "random" is no text model: embed new texts
    assert list(extractor(raw_logs())) == ["2", "10", "1"]
    with pytest.raises(ValueError, match="no config.json"):
        save_pipeline_files(tmp_path / "nowhere")
