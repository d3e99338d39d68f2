"""modeling_shopperbert.publish (the `publishing` package): a Hub-ready folder that loads with trust_remote_code
alone, a model card whose numbers are the result files', and the push path up to the network boundary (a fake Hub
on 127.0.0.1)."""

import base64
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_shopperbert import UserEncoder
from modeling_shopperbert.collator import ShopperBertCollator
from modeling_shopperbert.configuration_shopperbert import MPP_HEADS
from modeling_shopperbert.modeling_shopperbert import AUTO_MAP
from modeling_shopperbert.publish import check_card, check_published_folder, main
from tiny_data import write_tiny_prepared_data

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "org/shopperbert-tiny"
TOKEN = "hf_fake_test_token"


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: a real (4-step) train.py run and a results.json in eval_suite's exact shape
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("publish")
    data = write_tiny_prepared_data(base / "data")
    out = base / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--output", str(out),
                             "--preset", "tiny", "--max-steps", "4", "--batch-size", "8", "--report-to", "none"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"base": base, "data": data, "run": out}


def fake_results(checkpoints: dict) -> dict:
    """What `python -m eval_suite run` writes: per-seed metrics per task and model, then `summarise` (means, stds,
    paired tests, headline). Values are random; the shape is the real one."""
    from eval_suite.report import summarise
    from eval_suite.run import RunOptions

    rng = np.random.default_rng(0)
    options = RunOptions.quick()

    def classification():
        auroc = float(rng.uniform(0.5, 0.8))
        return {"auroc": auroc, "f1": float(rng.uniform(0.2, 0.6)), "accuracy": float(rng.uniform(0.5, 0.8)),
                "threshold": 0.5, "seconds": 1.0}

    def ranking():
        metrics = {}
        for prefix in ("", "full_", "cold_", "heavy_"):
            metrics.update({f"{prefix}hr@10": float(rng.uniform(0.2, 0.9)),
                            f"{prefix}ndcg@10": float(rng.uniform(0.1, 0.5)),
                            f"{prefix}mrr": float(rng.uniform(0.1, 0.5))})
        metrics["seconds"] = 1.0
        return metrics

    tasks = {}
    umlps = [f"U-MLP {name}" for name in checkpoints]
    for task, kind, analogue, others in (
        ("kids", "classification", "Gender Classification (GC)", ["P-Trans", "LogReg TF-IDF+RFM"]),
        ("featured_products", "recommendation", "Product Collection Recommendation (PCR)",
         ["P-Trans", "T-Trans", "Popularity"]),
    ):
        make = classification if kind == "classification" else ranking
        models = {name: {"seeds": {str(s): make() for s in range(options.repeats)}} for name in umlps + others}
        tasks[task] = {"kind": kind, "paper_analogue": analogue, "models": models}
    results = {"config": {"checkpoints": {k: str(v) for k, v in checkpoints.items()}, "data": "data/tiny",
                          "tasks": list(tasks), "options": asdict(options)}, "tasks": tasks}
    summarise(results)
    results["seconds"] = 12.0
    return results


@pytest.fixture(scope="module")
def results_dir(run):
    """Two checkpoints evaluated; ours is the second, so picking `U-MLP` entries by position would be wrong."""
    folder = run["base"] / "results"
    folder.mkdir()
    results = fake_results({"CLS": run["base"] / "elsewhere" / "final", "MP+A": run["run"] / "final"})
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    return folder


@pytest.fixture(scope="module")
def published(run, results_dir):
    out = run["base"] / "hub" / "shopperbert-tiny"
    assert main(["--checkpoint", str(run["run"]), "--results", str(results_dir), "--out", str(out),
                 "--repo-id", REPO_ID]) == 0
    return out


# ---------------------------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------------------------
def test_folder_is_complete(published, run):
    names = {p.name for p in published.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_shopperbert.py", "modeling_shopperbert.py",
            "contract.py", "metadata.json", "vocab.json", "README.md", "training_info.json", "run_config.json",
            "downstream_results.json", "loss_curve.png", "processor_config.json", "processing_shopperbert.py",
            "row_encoding.py", "collator.py", "pipeline_shopperbert.py", "modeling_shopperbert_layers.py"} == names
    for name in ("configuration_shopperbert.py", "modeling_shopperbert.py", "modeling_shopperbert_layers.py",
                 "contract.py"):  # the package's own code
        assert (published / name).read_bytes() == (ROOT / "modeling_shopperbert" / name).read_bytes(), name
    config = json.loads((published / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert set(AUTO_MAP) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification"}
    metadata = json.loads((published / "metadata.json").read_text())
    assert metadata == json.loads((run["data"] / "metadata.json").read_text())
    assert {"text_model", "text_embedding_size", "date_base_year", "category_vocab_sizes"} <= set(metadata)
    assert (published / "vocab.json").read_text() == (run["data"] / "vocab.json").read_text()
    assert check_published_folder(published) == []


def test_folder_without_the_contract_is_incomplete(published, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(published, folder)
    (folder / "contract.py").unlink()
    problems = check_published_folder(folder)  # the configuration, and the processor files that import it too
    assert problems[0] == "configuration_shopperbert.py imports .contract but contract.py is missing"
    assert all(p.endswith(" imports .contract but contract.py is missing") for p in problems), problems
    assert not [p for p in published.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


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
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.inference_mode():
        embedding = model(**torch.load(inputs_path)).user_embedding
    pre = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
    clf = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)
    metadata = json.load(open(f"{folder}/metadata.json"))
    print(json.dumps({"embedding": embedding.tolist(), "module": type(model).__module__,
                      "classes": [type(m).__name__ for m in (model, pre, clf)], "text_model": metadata["text_model"]}))
    """
)


def test_folder_loads_with_trust_remote_code_in_fresh_process(published, run, tmp_path):
    encoder = UserEncoder.from_pretrained(run["run"] / "final", data=run["data"], device="cpu")
    users = encoder.data.dataset["validation"]
    expected = encoder.encode(users, batch_size=4, show_progress_bar=False)  # the original checkpoint, our package
    rows = users.with_format("numpy", columns=[c for c in users.column_names if c != "timestamp"])
    collator = ShopperBertCollator.from_config(encoder.config, encoder.text_embeddings)
    torch.save(collator([rows[i] for i in range(len(rows))]), tmp_path / "inputs.pt")
    script = tmp_path / "load.py"
    script.write_text(REMOTE_SCRIPT)
    env = dict(os.environ, PYTHONPATH="", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script), str(published), str(tmp_path / "inputs.pt")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules")
    assert report["classes"] == ["ShopperBertModel", "ShopperBertForMaskedPurchasePrediction",
                                 "ShopperBertForSequenceClassification"]
    assert report["text_model"] == "random"
    np.testing.assert_allclose(np.array(report["embedding"]), expected, atol=1e-5, rtol=1e-5)
    # and with the package, as docs/publishing.md shows (vocab.json/metadata.json come from the published folder)
    republished = UserEncoder.from_pretrained(published, data=run["data"], device="cpu")
    assert republished.vocab == encoder.vocab and republished.metadata == encoder.metadata
    np.testing.assert_allclose(republished.encode(users, batch_size=4, show_progress_bar=False), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------------
def test_card_metadata_and_every_metric_match_the_result_files(published, results_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(published / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "feature-extraction"
    assert "shopperbert" in data.tags and "custom_code" in data.tags
    assert data.datasets == ["tiny-test"]
    assert {"accuracy", "roc_auc", "f1", "ndcg", "mrr", "hit_rate"} <= set(data.metrics)
    assert data.model_name == "shopperbert-tiny"
    assert check_card(card.content) == []

    results = json.loads((results_dir / "results.json").read_text())
    info = json.loads((published / "training_info.json").read_text())
    seen = {"mpp": 0, "downstream": set()}
    for r in data.eval_results:
        if r.task_type == "masked-purchase-prediction":
            seen["mpp"] += 1
            key = "eval/loss" if r.metric_type == "loss" else f"eval/accuracy_{r.metric_name.split('(')[1][:-1]}"
            assert r.metric_value == info[key], r
        else:
            entry = results["tasks"][r.task_name]["models"]["U-MLP MP+A"]  # never the first U-MLP (CLS)
            key, model = r.metric_name.split(" (", 1)
            assert model == "U-MLP MP+A)"
            assert r.metric_value == entry["mean"][key], r
            assert re.fullmatch(r"[\w.-]+", r.metric_type) and re.fullmatch(r"[\w.-]+", r.dataset_type), r
            seen["downstream"].add((r.task_name, key))
    assert seen["mpp"] == 1 + len(MPP_HEADS)
    expected = {("kids", m) for m in ("auroc", "f1", "accuracy")} | {
        ("featured_products", m) for m in ("hr@10", "ndcg@10", "mrr", "full_ndcg@10")}
    assert seen["downstream"] == expected
    # the body's tables are the files' numbers too
    assert f"| category_1 | {info['eval/accuracy_category_1']:.4f} | {info['eval/prior_accuracy_category_1']:.4f} |" \
        in card.content
    auroc = results["tasks"]["kids"]["models"]["U-MLP MP+A"]["mean"]["auroc"]
    assert f"| kids | auroc | U-MLP MP+A: {auroc:.4f} ± " in card.content  # the headline is this checkpoint's
    assert "U-MLP CLS" not in card.content  # the other checkpoint's numbers are left out
    assert f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True)' in card.content


def test_results_for_another_checkpoint_are_refused(run, results_dir, tmp_path, capsys):
    out = tmp_path / "hub"
    assert main(["--checkpoint", str(run["run"]), "--which", "best", "--results", str(results_dir),
                 "--out", str(out)]) == 2
    assert "none is" in capsys.readouterr().err and not out.exists()
    # naming the checkpoint explicitly is allowed; --which best publishes best/
    assert main(["--checkpoint", str(run["run"]), "--which", "best", "--results", str(results_dir),
                 "--results-model", "MP+A", "--out", str(out)]) == 0
    assert (out / "training_info.json").read_text() == (run["run"] / "best" / "training_info.json").read_text()
    assert "the lowest validation MPP loss" in (out / "README.md").read_text()


def test_existing_out_is_refused_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "hub"
    model_dir = run["run"] / "final"  # a saved model folder directly (no results: no downstream section)
    assert main(["--checkpoint", str(model_dir), "--out", str(out)]) == 0
    assert "Not evaluated downstream yet" in (out / "README.md").read_text()
    stamp = (out / "README.md").stat().st_mtime_ns
    assert main(["--checkpoint", str(model_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "README.md").stat().st_mtime_ns == stamp
    assert main(["--checkpoint", str(model_dir), "--out", str(out), "--overwrite"]) == 0
    # a folder this command did not write is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["--checkpoint", str(model_dir), "--out", str(other), "--overwrite"]) == 2
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "mine"]  # no temporary folders left
    # the inputs are never replaced
    assert main(["--checkpoint", str(model_dir), "--out", str(run["run"]), "--overwrite"]) == 2
    assert "contains, the input folder" in capsys.readouterr().err


def test_checkpoint_without_data_files_needs_data(run, tmp_path, capsys):
    import shutil

    model_dir = tmp_path / "bare"
    shutil.copytree(run["run"] / "final", model_dir)
    (model_dir / "vocab.json").unlink()
    assert main(["--checkpoint", str(model_dir), "--out", str(tmp_path / "hub")]) == 2
    assert "vocab.json" in capsys.readouterr().err
    assert main(["--checkpoint", str(model_dir), "--data", str(run["data"]), "--out", str(tmp_path / "hub")]) == 0


# ---------------------------------------------------------------------------------------------------------------
# Pushing, against a fake Hub
# ---------------------------------------------------------------------------------------------------------------
class FakeHub(ThreadingHTTPServer):
    """The Hub endpoints `whoami` + `create_repo` + `upload_folder` use, recording every request. Preupload answers
    "regular" for every file, so files travel base64-encoded inside the commit (no LFS or Xet storage)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.requests = []
        self.committed = {}
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_HEAD(self):
        self._handle("HEAD")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: dict):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self, method: str):
        server: FakeHub = self.server
        path = self.path.split("?")[0]
        body = self._body()
        server.requests.append({"method": method, "path": path, "query": self.path.partition("?")[2],
                                "authorization": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        prefix = f"/api/models/{REPO_ID}/"
        if method == "GET" and path == "/api/whoami-v2":
            return self._reply(200, {"type": "user", "name": "tester", "orgs": [{"name": "org"}],
                                     "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if method == "POST" and path == "/api/repos/create":
            return self._reply(200, {"url": f"{server.url}/{REPO_ID}", "name": REPO_ID})
        if method == "POST" and path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if method == "POST" and path.startswith(prefix + "preupload/"):
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                "oid": None} for f in files]})
        if method == "POST" and path.startswith(prefix + "commit/"):
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    server.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    return self._reply(400, {"error": f"unexpected commit item {item['key']}"})
            return self._reply(200, {"commitUrl": f"{server.url}/{REPO_ID}/commit/{'a' * 40}",
                                     "commitOid": "a" * 40, "success": True})
        return self._reply(404, {"error": f"fake hub: no route for {method} {path}"})


@pytest.fixture
def fake_hub():
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_publish(args, tmp_path, endpoint, token=TOKEN, offline=False):
    """The CLI in a fresh process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1")
    if token:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "modeling_shopperbert.publish", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_push_uploads_every_file_to_the_repo(run, fake_hub, tmp_path):
    out = tmp_path / "hub" / "shopperbert-tiny"
    result = run_publish(["--checkpoint", str(run["run"]), "--out", str(out), "--repo-id", REPO_ID, "--push",
                          "--private"], tmp_path, fake_hub.url)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"pushed {out} to {fake_hub.url}/{REPO_ID}" in result.stdout
    calls = [(r["method"], r["path"]) for r in fake_hub.requests]
    assert calls == [("GET", "/api/whoami-v2"), ("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                     ("POST", f"/api/models/{REPO_ID}/preupload/main"), ("POST", f"/api/models/{REPO_ID}/commit/main")]
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fake_hub.requests)
    create = json.loads(fake_hub.requests[1]["body"])
    assert create["organization"] == "org" and create["name"] == "shopperbert-tiny"
    assert create["visibility"] == "private" and create.get("type", "model") == "model"
    local = {p.name: p.read_bytes() for p in out.iterdir()}
    assert fake_hub.committed == local
    assert {"config.json", "model.safetensors", "modeling_shopperbert.py", "configuration_shopperbert.py",
            "metadata.json", "vocab.json", "README.md"} <= set(fake_hub.committed)


@pytest.mark.parametrize("case", ["no-token", "offline", "bad-token"])
def test_push_preflight_fails_before_uploading(published, run, fake_hub, tmp_path, case):
    token = {"no-token": None, "offline": TOKEN, "bad-token": "hf_wrong"}[case]
    if case == "no-token":  # publish + push: fails before the weights are loaded or --out is written
        args = ["--checkpoint", str(run["run"]), "--out", str(tmp_path / "hub" / "x")]
    else:  # push an existing published folder
        args = ["--out", str(published)]
    result = run_publish(args + ["--repo-id", REPO_ID, "--push"], tmp_path, fake_hub.url, token=token,
                         offline=case == "offline")
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr
    assert "nothing was uploaded" in message and "Traceback" not in message
    if case == "no-token":
        assert "no Hugging Face token" in message and "HF_TOKEN" in message
        assert fake_hub.requests == []
        assert not (tmp_path / "hub").exists() and "loading" not in message
    elif case == "offline":
        assert "HF_HUB_OFFLINE" in message
        assert fake_hub.requests == []
    else:
        assert "rejected the token" in message
        assert [(r["method"], r["path"]) for r in fake_hub.requests] == [("GET", "/api/whoami-v2")]


def test_push_without_network_fails_with_a_clear_message(published, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_publish(["--out", str(published), "--repo-id", REPO_ID, "--push"], tmp_path,
                         f"http://127.0.0.1:{port}")
    assert result.returncode == 2
    assert "cannot reach the Hub" in result.stderr and "nothing was uploaded" in result.stderr


def test_push_needs_a_repo_id(published, capsys):
    assert main(["--out", str(published), "--push"]) == 2
    assert "--repo-id" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# One card generator (`publishing`): what both cards say comes from one function each
# ---------------------------------------------------------------------------------------------------------------
def test_both_cards_take_their_model_index_from_one_function():
    from eval_suite import model_card
    from publishing.model_index import REPO_CARD_LABELS, downstream_eval_results, hub_card_labels

    results = fake_results({"CLS": "a", "MP+A": "b"})
    umlps = {task: "U-MLP MP+A" for task in results["tasks"]}
    hub = downstream_eval_results(results, umlps, hub_card_labels({"source": "complete journey"}))
    repo = downstream_eval_results(results, umlps, REPO_CARD_LABELS)
    assert [(r.task_name, r.metric_name) for r in hub] == [(r.task_name, r.metric_name) for r in repo]
    for h, r in zip(hub, repo):
        assert r.metric_value == round(h.metric_value, 4)
        assert re.fullmatch(r"[\w.-]+", h.metric_type) and re.fullmatch(r"[\w.-]+", h.dataset_type), h
    assert hub[0].dataset_type == "complete_journey" and repo[0].dataset_config == repo[0].task_name
    # the repository card's entries are those of its primary U-MLP (the run's first checkpoint)
    assert {r.metric_name.split(" (")[1] for r in model_card.eval_results(results)} == {"U-MLP CLS)"}


def test_model_index_leaves_out_non_finite_means():
    from publishing.model_index import REPO_CARD_LABELS, downstream_eval_results

    results = fake_results({"MP": "a"})
    results["tasks"]["kids"]["models"]["U-MLP MP"]["mean"]["auroc"] = float("nan")
    entries = downstream_eval_results(results, {"kids": "U-MLP MP", "featured_products": None}, REPO_CARD_LABELS)
    assert {r.metric_name for r in entries} == {"f1 (U-MLP MP)", "accuracy (U-MLP MP)"}


def test_both_cards_introduce_the_mpp_table_with_the_same_rules():
    from publishing.pretraining import BASKET, PRIOR_RULE, USER_MODE_RULE, mpp_rules_paragraph

    hub, repo = mpp_rules_paragraph(1.23456), mpp_rules_paragraph(1.23456, step=40, count=12345)
    for text in (hub, repo):
        assert text.startswith("Validation MPP loss 1.2346") and text.endswith(f"{BASKET}:")
        assert PRIOR_RULE in text and USER_MODE_RULE in text
    assert "at step 40" in repo and "12,345 masked purchases" in repo and "step" not in hub


def test_the_entry_modules_are_the_publishing_package():
    import publishing.cli
    import publishing.repo_card
    from eval_suite import model_card
    from modeling_shopperbert import publish

    assert publish.main is publishing.cli.main and publish.build_parser is publishing.cli.build_parser
    assert model_card.main is publishing.repo_card.main
    assert model_card.update_model_card is publishing.repo_card.update_model_card


def test_publishing_functions_and_files_stay_short():
    import ast

    files = [*sorted((ROOT / "publishing").glob("*.py")), ROOT / "modeling_shopperbert" / "publish.py",
             ROOT / "eval_suite" / "model_card.py"]
    for path in files:
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{path.name}: {node.name}"


def test_several_results_are_merged_into_one_card(run, results_dir, tmp_path, capsys):
    """`--results` twice (e.g. the Transformers run apart, on other seeds): one downstream_results.json holding every
    seed, the card's means over all of them; the same run twice is refused and nothing is written."""
    first = json.loads((results_dir / "results.json").read_text())
    second = json.loads(json.dumps(first))
    second["config"]["options"]["first_seed"] = 100
    for entry in second["tasks"].values():
        entry.pop("comparisons", None)
        entry.pop("headline", None)
        for model in entry["models"].values():
            model["seeds"] = {str(int(s) + 100): m for s, m in model["seeds"].items()}
            model.pop("mean", None)
            model.pop("std", None)
    more = tmp_path / "more"
    more.mkdir()
    (more / "results.json").write_text(json.dumps(second))
    out = tmp_path / "hub"
    assert main(["--checkpoint", str(run["run"]), "--results", str(results_dir), "--results", str(more),
                 "--out", str(out), "--repo-id", REPO_ID]) == 0
    merged = json.loads((out / "downstream_results.json").read_text())
    kids = merged["tasks"]["kids"]["models"]["U-MLP MP+A"]
    seeds = sorted(first["tasks"]["kids"]["models"]["U-MLP MP+A"]["seeds"], key=int)
    assert sorted(kids["seeds"], key=int) == seeds + [str(int(s) + 100) for s in seeds]
    values = [m["auroc"] for m in kids["seeds"].values()]
    assert kids["mean"]["auroc"] == pytest.approx(float(np.mean(values)))
    text = (out / "README.md").read_text()
    assert f"| kids | auroc | U-MLP MP+A: {np.mean(values):.4f} ± " in text
    # named without the machine's paths (these folders are outside the working directory: their names)
    assert "It merges 2 runs of the same protocol (other seeds, tasks or models): `results`, `more`." in text
    assert str(tmp_path) not in text
    again = tmp_path / "again"
    assert main(["--checkpoint", str(run["run"]), "--results", str(results_dir), "--results", str(results_dir),
                 "--out", str(again)]) == 2
    assert "cannot be merged" in capsys.readouterr().err and not again.exists()
    assert main(["--checkpoint", str(run["run"]), "--results", str(tmp_path / "nowhere"), "--out", str(again)]) == 2
    assert "no results.json" in capsys.readouterr().err and not again.exists()
    # a seed range of a results.json file: those seeds only, summarised over them; a range the run lacks is refused
    assert main(["--checkpoint", str(run["run"]), "--results", f"{more / 'results.json'}:100", "--out",
                 str(again)]) == 0
    one = json.loads((again / "downstream_results.json").read_text())["tasks"]["kids"]["models"]["U-MLP MP+A"]
    assert list(one["seeds"]) == ["100"] and one["n"] == 1 and one["mean"]["auroc"] == one["seeds"]["100"]["auroc"]
    assert main(["--checkpoint", str(run["run"]), "--results", f"{more}:50-60", "--out", str(tmp_path / "x")]) == 2
    assert "keeps no seed of that range" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert main(["--checkpoint", str(run["run"]), "--results", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "results.json is not valid JSON" in capsys.readouterr().err
