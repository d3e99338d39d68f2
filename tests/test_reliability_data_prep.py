"""Reliability of `python -m data_prep build` (issue 13): nothing lost, nothing silently wrong.

Every test runs the command line in-process (`main([...])`) on a tiny hand-made log with the hashing text embedder;
each numbered section is one item of the issue's data_prep part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from modeling_shopperbert.configuration_shopperbert import NUM_SPECIAL_IDS, UNK_ID  # noqa: E402
from modeling_shopperbert.contract import FINGERPRINT_KEY, vocabulary_fingerprint  # noqa: E402

from data_prep import DataPrepError, SyntheticConfig, embed_texts, load_prepared, write_synthetic_logs  # noqa: E402
from data_prep.build import MARKER_FILE  # noqa: E402
from data_prep.cli import main  # noqa: E402

QUICK = ["--text-model", "hashing-8", "--quiet", "--min-monthly-rate", "0", "--top-fraction", "0",
         "--validation-fraction", "0"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPPERBERT_CACHE", str(tmp_path / "shopperbert-cache"))


def tiny_log(n_users=4, **columns) -> pd.DataFrame:
    """Two purchases per user on different days; extra `columns` replace the defaults."""
    users = [f"u{i}" for i in range(n_users) for _ in range(2)]
    data = {"user_id": users, "timestamp": [f"2021-01-{1 + i % 20:02d} 10:00" for i in range(len(users))],
            "category_1": ["food", "home"] * n_users, "description": ["milk", "soap"] * n_users}
    return pd.DataFrame({**data, **columns})


def write_csv(path, df=None, sep=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    (tiny_log() if df is None else df).to_csv(path, index=False, sep=sep)
    return path


def build(capsys, *args):
    """Run `build`; returns (exit status, stderr)."""
    code = main(["build", *args])
    return code, capsys.readouterr().err


def files_build(capsys, inputs, out, *extra):
    return build(capsys, "--source", "files", "--input", *map(str, inputs), "--out", str(out), *QUICK, *extra)


def user_rows(out) -> dict:
    dataset = load_prepared(out).dataset
    return {r["user_id"]: r for split in dataset for r in dataset[split].to_list()}


def assert_refused(code, err, *words):
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------------------------------------------------
# 1. --overwrite replaces only a folder the command wrote; never the input; synthetic dirs alike
# ------------------------------------------------------------------------------------------------------------------

def test_overwrite_refuses_a_folder_the_build_did_not_write(tmp_path, capsys):
    csv = write_csv(tmp_path / "logs" / "tx.csv")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    assert_refused(*files_build(capsys, [csv], mine, "--overwrite"), "not written by `data_prep build`",
                   "nothing was deleted")
    assert (mine / "thesis.txt").read_text() == "precious"


def test_overwrite_replaces_its_own_corpus_but_not_files_added_to_it(tmp_path, capsys):
    csv = write_csv(tmp_path / "tx.csv")
    out = tmp_path / "corpus"
    assert files_build(capsys, [csv], out)[0] == 0
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["written_by"] == "python -m data_prep build"
    assert files_build(capsys, [csv], out, "--overwrite")[0] == 0  # its own corpus: replaced
    (out / "notes.md").write_text("mine")
    assert_refused(*files_build(capsys, [csv], out, "--overwrite"), "notes.md")
    assert (out / "notes.md").exists() and (out / "metadata.json").exists()


def test_out_must_not_be_contain_or_lie_inside_the_input(tmp_path, capsys):
    logs = tmp_path / "logs"
    csv = write_csv(logs / "tx.csv")
    for out in (logs, logs / "corpus", tmp_path):
        assert_refused(*files_build(capsys, [logs], out, "--overwrite"), "input")
    assert sorted(p.name for p in logs.iterdir()) == ["tx.csv"] and csv.stat().st_size > 0


def test_synthetic_dir_with_other_files_is_never_emptied_nor_mixed_in(tmp_path, capsys):
    folder = tmp_path / "synth"
    folder.mkdir()
    write_csv(folder / "customers.csv")
    pq.write_table(pa.table({"x": [1]}), folder / "part-00000.parquet")  # the user's file with the generator's name
    code, err = build(capsys, "--source", "synthetic", "--users", "6", "--mean-purchases", "4", "--synthetic-dir",
                      str(folder), "--out", str(tmp_path / "out"), "--overwrite", *QUICK)
    assert_refused(code, err, "did not write", "customers.csv")
    assert sorted(p.name for p in folder.iterdir()) == ["customers.csv", "part-00000.parquet"]
    assert not (tmp_path / "out").exists()


def test_synthetic_dir_written_by_the_generator_is_replaced(tmp_path, capsys):
    folder = tmp_path / "synth"
    write_synthetic_logs(folder, SyntheticConfig(num_users=9, users_per_shard=3, mean_purchases=4), progress=False)
    args = ["--source", "synthetic", "--users", "4", "--users-per-shard", "2", "--mean-purchases", "4",
            "--synthetic-dir", str(folder), "--out", str(tmp_path / "out"), *QUICK]
    assert_refused(*build(capsys, *args), "--overwrite")
    assert build(capsys, *args, "--overwrite")[0] == 0
    parts = sorted(p.name for p in folder.glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet"]  # the third old shard went too
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert meta["source"] == "synthetic" and meta["counts"]["users_after_dedup"] == 4


def test_stale_temporary_synthetic_folders_of_killed_builds_are_removed(tmp_path, capsys):
    out = tmp_path / "out"
    stale = tmp_path / f".out.synthetic-{dead_pid()}-0badf00d"
    write_synthetic_logs(stale, SyntheticConfig(num_users=3, mean_purchases=4), progress=False)
    foreign = tmp_path / ".out.synthetic-notours"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    code, err = build(capsys, "--source", "synthetic", "--users", "5", "--mean-purchases", "4", "--out", str(out),
                      *QUICK)
    assert code == 0, err
    assert not stale.exists() and (foreign / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == [foreign.name]


# ------------------------------------------------------------------------------------------------------------------
# 2. ids stay text: leading zeros, and integer ids with missing values in parquet
# ------------------------------------------------------------------------------------------------------------------

def test_csv_user_and_product_ids_keep_leading_zeros(tmp_path, capsys):
    ids = [f"{i:0{1 + i % 4}d}" for i in range(40)]  # '0', '01', '002', '0003', '4', '05', ...
    ids[1:4] = ["5", "0005", "00005"]  # and '05' (i = 5): four users whose ids are the number 5
    assert len(set(ids)) == 40
    df = tiny_log(40, user_id=[u for u in ids for _ in range(2)], product_id=["007", "7"] * 40,
                  timestamp=["2021-01-05 10:00", "2021-01-05 11:00"] * 40)
    out = tmp_path / "out"
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.csv", df)], out)
    assert code == 0, err
    rows = user_rows(out)
    assert sorted(rows) == sorted(ids) and {"5", "05", "0005", "00005"} <= set(rows)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["counts"]["users_kept"] == 40
    assert meta["counts"]["duplicates_removed"] == 0  # products '007' and '7' on one day are two products


def test_parquet_integer_ids_with_missing_values_stay_exact(tmp_path, capsys):
    big = 2**60  # 2**60 and 2**60 + 1 are the same float64
    table = pa.table({"user_id": ["a", "a", "a"], "product_id": pa.array([big, big + 1, None], pa.int64()),
                      "timestamp": pa.array(np.array(["2021-01-05T10:00"] * 3, dtype="datetime64[s]")),
                      "description": ["milk", "soap", "tea"]})
    pq.write_table(table, tmp_path / "tx.parquet")
    out = tmp_path / "out"
    assert files_build(capsys, [tmp_path / "tx.parquet"], out)[0] == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["counts"]["duplicates_removed"] == 0 and meta["counts"]["purchases_kept"] == 3
    assert load_prepared(out).dataset["train"][0]["num_purchases"] == 3


# ------------------------------------------------------------------------------------------------------------------
# 3. the vocabulary fingerprint is recorded and checked on load
# ------------------------------------------------------------------------------------------------------------------

def test_vocabulary_fingerprint_is_recorded_and_checked(tmp_path, capsys):
    out = tmp_path / "out"
    assert files_build(capsys, [write_csv(tmp_path / "tx.csv")], out)[0] == 0
    vocab = json.loads((out / "vocab.json").read_text())
    metadata = load_prepared(out).metadata
    assert metadata[FINGERPRINT_KEY] == vocabulary_fingerprint(vocab)

    from eval_suite.inputs import Corpus

    assert Corpus.load(out).metadata[FINGERPRINT_KEY] == metadata[FINGERPRINT_KEY]
    level = vocab["category_1"]
    level[NUM_SPECIAL_IDS], level[NUM_SPECIAL_IDS + 1] = level[NUM_SPECIAL_IDS + 1], level[NUM_SPECIAL_IDS]
    (out / "vocab.json").write_text(json.dumps(vocab))  # same sizes, other ids
    for load in (load_prepared, Corpus.load):
        with pytest.raises(ValueError, match=r"vocab\.json does not match the vocab_fingerprint"):
            load(out)
    old = json.loads((out / "metadata.json").read_text())
    del old[FINGERPRINT_KEY]
    (out / "metadata.json").write_text(json.dumps(old))  # a corpus from before the fingerprint
    assert load_prepared(out).vocab == vocab


# ------------------------------------------------------------------------------------------------------------------
# 4. numeric options are checked before any work; no corpus with an empty embedding matrix
# ------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", [["--text-batch-size", "0"], ["--text-batch-size", "-1"],
                                    ["--min-monthly-rate", "1e308"], ["--min-monthly-rate", "nan"],
                                    ["--top-fraction", "nan"], ["--seed", "-1"], ["--users-per-shard", "0"],
                                    ["--mean-purchases", "nan"], ["--text-processes", "0"]])
def test_bad_numbers_are_refused_before_any_work(tmp_path, capsys, option):
    out = tmp_path / "out"
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.csv")], out, *option)
    assert_refused(code, err, option[0], "must be")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.csv"]  # not even a temporary folder or cache


@pytest.mark.parametrize("device, message", [("tpu", "is not a torch device"),
                                             ("cuda:99", "not available on this machine")])
def test_a_text_device_torch_cannot_use_is_refused_before_any_work(tmp_path, capsys, device, message):
    out = tmp_path / "out"
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.csv")], out, "--text-device", device)
    assert code == 2 and f"error: --text-device {device!r}" in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.csv"]


def test_an_empty_embedding_matrix_is_never_written(tmp_path, capsys, monkeypatch):
    from data_prep import build as build_module

    with pytest.raises(DataPrepError, match="text batch size"):
        embed_texts(["milk"], "hashing-8", batch_size=-1)
    monkeypatch.setattr(build_module, "embed_texts", lambda texts, *a, **k: (np.zeros((0, 8), np.float32),
                                                                             {"texts": 0, "cached": 0, "encoded": 0}))
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.csv")], tmp_path / "out")
    assert code == 1 and "error: the text embeddings have shape (0, 8)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# ------------------------------------------------------------------------------------------------------------------
# 5. error: and an exit status instead of tracebacks
# ------------------------------------------------------------------------------------------------------------------

def test_daylight_saving_offsets_parse_to_wall_clock_time(tmp_path, capsys):
    stamps = ["2021-03-27 10:00:00+01:00", "2021-03-29 10:00:00+02:00"] * 2  # CET, then CEST
    csv = write_csv(tmp_path / "tx.csv", tiny_log(2, timestamp=stamps))
    code, err = files_build(capsys, [csv], tmp_path / "local")
    assert code == 0, err
    assert user_rows(tmp_path / "local")["u0"]["hour"] == [NUM_SPECIAL_IDS + 10] * 2
    code, err = files_build(capsys, [csv], tmp_path / "utc", "--timezone", "UTC")
    assert code == 0, err
    assert user_rows(tmp_path / "utc")["u0"]["hour"] == [NUM_SPECIAL_IDS + 9, NUM_SPECIAL_IDS + 8]


def test_empty_parquet_and_bad_time_zone_are_errors(tmp_path, capsys):
    empty = tmp_path / "logs" / "empty.parquet"
    write_csv(tmp_path / "logs" / "tx.csv")
    empty.write_bytes(b"")
    assert_refused(*files_build(capsys, [tmp_path / "logs"], tmp_path / "out"), "empty.parquet", "cannot read")
    assert_refused(*files_build(capsys, [tmp_path / "logs" / "tx.csv"], tmp_path / "out", "--timezone", "Mars/Base"),
                   "unknown time zone 'Mars/Base'")


@pytest.mark.parametrize("yaml_text, words", [
    ("columns: [user_id]\n", ["'columns' must be a dictionary"]),
    ("columns: {user_id: 5}\n", ["columns.user_id must be a column name"]),
    ("category_levels: department\n", ["'category_levels' must be a dictionary"]),
    ("timezone: 3\n", ["'timezone' must be text"]),
    ("products: {path: 7, 'on': sku}\n", ["'products' needs"]),
])
def test_mapping_type_errors_are_refused_before_the_build(tmp_path, capsys, yaml_text, words):
    (tmp_path / "mapping.yaml").write_text(yaml_text)
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.csv")], tmp_path / "out", "--mapping",
                            str(tmp_path / "mapping.yaml"))
    assert_refused(code, err, "mapping.yaml", *words)
    assert not (tmp_path / "out").exists()


def test_unusable_parent_of_out_is_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    csv = write_csv(tmp_path / "tx.csv")
    assert_refused(*files_build(capsys, [csv], tmp_path / "afile" / "out"), "is not a folder")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_refused(*files_build(capsys, [csv], locked / "out"), "no permission")


def test_faults_exit_1_without_traceback_unless_debug(tmp_path, capsys, monkeypatch):
    from data_prep import build as build_module

    def crash(*args, **kwargs):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(build_module, "embed_texts", crash)
    csv = write_csv(tmp_path / "tx.csv")
    code, err = files_build(capsys, [csv], tmp_path / "out")
    assert code == 1 and err.startswith("error: simulated fault") and "Traceback" not in err and "--debug" in err
    code, err = files_build(capsys, [csv], tmp_path / "out", "--debug")
    assert code == 1 and "Traceback" in err and "error: simulated fault" in err


# ------------------------------------------------------------------------------------------------------------------
# 6. epoch milliseconds, literal NA categories, .tsv files
# ------------------------------------------------------------------------------------------------------------------

def test_epoch_milliseconds_need_timestamp_unit(tmp_path, capsys):
    millis = [1_610_000_000_000 + i * 86_400_000 for i in range(8)]  # January 2021
    csv = write_csv(tmp_path / "tx.csv", tiny_log(timestamp=millis))
    assert_refused(*files_build(capsys, [csv], tmp_path / "out"), "look like ms", "timestamp_unit")
    code, err = files_build(capsys, [csv], tmp_path / "out", "--timestamp-unit", "ms")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["years"] == [2021, 2021]


def test_literal_na_category_strings_are_values_not_missing(tmp_path, capsys):
    df = tiny_log(category_1=["NA", "None", "nan", ""] * 2, description=["NA", "milk"] * 4)
    out = tmp_path / "out"
    assert files_build(capsys, [write_csv(tmp_path / "tx.csv", df)], out)[0] == 0
    vocab = json.loads((out / "vocab.json").read_text())["category_1"]
    assert sorted(vocab[NUM_SPECIAL_IDS:]) == ["NA", "None", "nan"]
    assert user_rows(out)["u1"]["category_1"] == [vocab.index("nan"), UNK_ID]  # only the empty cell is missing
    assert "NA" in set(pd.read_parquet(out / "descriptions.parquet")["description"])


def test_tsv_files_are_tab_separated(tmp_path, capsys):
    df = tiny_log(description=["milk, 1 l", "soap; lemon"] * 4)
    out = tmp_path / "out"
    code, err = files_build(capsys, [write_csv(tmp_path / "tx.tsv", df, sep="\t")], out)
    assert code == 0, err
    assert sorted(pd.read_parquet(out / "descriptions.parquet")["description"]) == ["milk, 1 l", "soap; lemon"]


def test_commit_checks_the_output_again_before_replacing_it(tmp_path):
    """A file the user puts into --out while a long build runs is never deleted by the final swap."""
    from data_prep.build import _commit
    from data_prep.schema import DataPrepError

    out, tmp = tmp_path / "corpus", tmp_path / ".corpus.tmp"
    out.mkdir()
    tmp.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataPrepError, match="nothing was deleted"):
        _commit(tmp, out)
    assert (out / "notes.txt").read_text() == "mine"
