"""The released checkpoint shipped in the repository (`shopperbert/`): it loads offline with transformers alone
(our package blocked), gives the same outputs as our package, and is the checkpoint behind the card's numbers."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "shopperbert"
RELEASE_RESULTS = ROOT / "results" / "release"

BLOCKED_LOAD = r"""
import sys, json
import numpy as np
import torch
for name in ("modeling_shopperbert", "data_prep", "eval_suite"):
    sys.modules[name] = None  # any import of our package fails
from transformers import AutoModel
model = AutoModel.from_pretrained("shopperbert", trust_remote_code=True).eval()
assert type(model).__name__ == "ShopperBertModel", type(model)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
with torch.no_grad():
    out = model(**inputs).user_embedding
np.save(sys.argv[2], out.numpy())
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def example_inputs(config, num_users=3, length=40, seed=0):
    rng = np.random.default_rng(seed)
    category = np.stack([rng.integers(4, n, (num_users, length)) for n in config.category_vocab_sizes], -1)
    dates = np.stack([rng.integers(4, n, (num_users, length)) for n in
                      (config.year_vocab_size, config.month_vocab_size, config.day_vocab_size,
                       config.weekday_vocab_size, config.hour_vocab_size)], -1)
    category[:, 0] = dates[:, 0] = 2  # [CLS]
    category[1, 30:] = dates[1, 30:] = 0  # padding
    text = rng.normal(size=(num_users, length, config.text_embedding_size)).astype(np.float32)
    mask = (category[..., 0] != 0).astype(np.int64)
    return {"category_ids": category, "date_ids": dates, "text_embeds": text, "attention_mask": mask}


def test_release_folder_is_complete_and_small():
    files = {p.name for p in RELEASE.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_shopperbert.py", "modeling_shopperbert.py",
            "metadata.json", "vocab.json", "README.md"} <= files
    assert sum(p.stat().st_size for p in RELEASE.iterdir()) < 25 * 2**20
    config = json.loads((RELEASE / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_shopperbert.ShopperBertModel"
    metadata = json.loads((RELEASE / "metadata.json").read_text())
    assert metadata["end_date"].startswith("2017-10-02"), "pre-trained on purchases before the evaluation cutoff"


def test_release_code_is_the_package_code():
    """The release's remote code is a verbatim copy of the package's (copy the files again after changing them)."""
    from modeling_shopperbert.publish import REMOTE_CODE_FILES

    shipped = sorted(p.name for p in RELEASE.glob("*.py"))
    assert shipped == sorted(REMOTE_CODE_FILES)
    for name in shipped:
        assert (RELEASE / name).read_bytes() == (ROOT / "modeling_shopperbert" / name).read_bytes(), (
            f"shopperbert/{name} differs from modeling_shopperbert/{name}: copy it again")


def test_release_loads_with_transformers_alone_and_matches_our_package(tmp_path):
    from transformers import AutoModel

    from modeling_shopperbert import register_auto_classes

    register_auto_classes()

    model = AutoModel.from_pretrained(RELEASE).eval()
    inputs = example_inputs(model.config)
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", BLOCKED_LOAD, str(tmp_path / "inputs.npz"),
                             str(tmp_path / "out.npy")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        ours = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).user_embedding.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ours, rtol=0, atol=1e-6)


def test_card_numbers_come_from_the_shipped_weights():
    """The evaluation behind the card recorded the sha256 of the weights it encoded users with, and of the user
    embeddings it wrote; both must be the shipped ones, and the card must print them."""
    record = json.loads((RELEASE_RESULTS / "release.json").read_text())
    assert record["model_sha256"] == sha256(RELEASE / "model.safetensors")
    card = (ROOT / "model_card.md").read_text()
    assert record["model_sha256"] in card and record["embeddings_sha256"] in card


def test_shipped_embeddings_are_what_the_release_gives(tmp_path):
    """Re-encode a sample of households from the committed inputs and compare with the committed embeddings whose
    checksum the card prints."""
    from modeling_shopperbert import UserEncoder, read_user_embeddings

    record = json.loads((RELEASE_RESULTS / "release.json").read_text())
    embeddings_file = RELEASE_RESULTS / record["embeddings_file"]
    assert sha256(embeddings_file) == record["embeddings_sha256"]
    user_ids, vectors = read_user_embeddings(embeddings_file)
    sample = np.load(RELEASE_RESULTS / record["sample_inputs_file"], allow_pickle=False)
    rows = json.loads(str(sample["rows"]))
    encoder = UserEncoder.from_pretrained(RELEASE, device="cpu")
    encoder.text_embeddings = sample["text_embeddings"]
    got = encoder.encode(rows, batch_size=4, show_progress_bar=False)
    index = {u: i for i, u in enumerate(user_ids)}
    expected = vectors[[index[str(r["user_id"])] for r in rows]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


BLOCKED_PIPELINE = r"""
import json, sys
for name in ("modeling_shopperbert", "data_prep", "eval_suite"):
    sys.modules[name] = None  # any import of our package fails
import pandas as pd
from transformers import pipeline
extractor = pipeline("feature-extraction", model="shopperbert", trust_remote_code=True, device="cpu")
print(json.dumps(extractor(pd.read_json(sys.argv[1], dtype={"user_id": str}))))
"""


def test_release_pipeline_embeds_raw_logs_with_transformers_alone(tmp_path):
    """README's promise: `pipeline("feature-extraction", model="shopperbert", trust_remote_code=True)(logs)` works
    from a clone with our package blocked and gives what `UserEncoder` gives, keyed by user id in input order."""
    import pandas as pd

    from modeling_shopperbert import UserEncoder

    vocab = json.loads((RELEASE / "vocab.json").read_text())
    rows = [{"user_id": user, "timestamp": f"2017-0{month}-1{i} 1{i}:00:00",
             **{level: vocab[level][4 + 7 * i + month] for level in ("category_1", "category_2", "category_3",
                                                                      "category_4")},
             "description": f"{vocab['category_2'][4 + i]} {vocab['category_3'][4 + month]}"}
            for user, month in (("9", 3), ("12", 5), ("4", 4)) for i in range(4)]
    logs = pd.DataFrame(rows)
    logs.to_json(tmp_path / "logs.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", BLOCKED_PIPELINE, str(tmp_path / "logs.json")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(out) == ["9", "12", "4"]
    user_ids, expected = UserEncoder.from_pretrained(RELEASE, device="cpu").encode(logs, return_user_ids=True)
    assert user_ids == ["9", "12", "4"]
    np.testing.assert_allclose(np.array([out[u] for u in user_ids]), expected, rtol=0, atol=1e-5)
