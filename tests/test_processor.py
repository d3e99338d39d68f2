"""ShopperBertProcessor: raw logs -> rows exactly as data_prep encodes them, padded inputs, save/load, bad input; and
the encoding steps data_prep shares with it (one implementation, corpus bytes unchanged)."""

import datetime
import json

import numpy as np
import pandas as pd
import pytest
import torch

from data_prep import HashingTextEncoder, encode_logs, load_descriptions, load_prepared, validate_log
from data_prep import processing as P
from data_prep.schema import MISSING_DESCRIPTION as DATA_PREP_MISSING_DESCRIPTION
from modeling_shopperbert.configuration_shopperbert import (
    CATEGORY_FIELDS,
    DATE_FIELDS,
    NUM_SPECIAL_IDS,
    TEXT_INDEX_FIELD,
    UNK_ID,
    ShopperBertConfig,
)
from modeling_shopperbert.processing_shopperbert import (
    MISSING_DESCRIPTION,
    DroppedUsersWarning,
    ShopperBertProcessor,
)
from tiny_data import write_tiny_prepared_data

ID_COLUMNS = CATEGORY_FIELDS + DATE_FIELDS


# ------------------------------------------------------------------------------------------------------------------
# The pre-move implementation of the shared steps (data_prep/processing.py before the processor), kept verbatim
# ------------------------------------------------------------------------------------------------------------------
def old_category_lookup(categories, vocab_list):
    index = pd.Index(vocab_list[NUM_SPECIAL_IDS:], dtype=object)
    pos = index.get_indexer(pd.Index(np.asarray(categories, dtype=object), dtype=object)) if len(categories) \
        else np.zeros(0, dtype=np.int64)
    ids = np.where(pos >= 0, pos + NUM_SPECIAL_IDS, UNK_ID).astype(np.int32)
    return np.r_[ids, np.int32(UNK_ID)].astype(np.int32)


def old_date_parts(ts):
    t = ts.astype("datetime64[s]")
    months = t.astype("datetime64[M]")
    days = t.astype("datetime64[D]")
    day_number = days.astype(np.int64)
    return {"year": t.astype("datetime64[Y]").astype(np.int64) + 1970, "month": months.astype(np.int64) % 12 + 1,
            "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1, "weekday": (day_number + 3) % 7,
            "hour": (ts - day_number * 86_400) // 3600}


def old_date_ids(ts, date_base_year, year_vocab_size):
    parts = old_date_parts(ts)
    year_offset = parts["year"] - date_base_year
    n_years = year_vocab_size - NUM_SPECIAL_IDS
    year = np.where((year_offset >= 0) & (year_offset < n_years), year_offset + NUM_SPECIAL_IDS, UNK_ID)
    return {"year": year.astype(np.int32), "month": (parts["month"] - 1 + NUM_SPECIAL_IDS).astype(np.int32),
            "day": (parts["day"] - 1 + NUM_SPECIAL_IDS).astype(np.int32),
            "weekday": (parts["weekday"] + NUM_SPECIAL_IDS).astype(np.int32),
            "hour": (parts["hour"] + NUM_SPECIAL_IDS).astype(np.int32)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data = write_tiny_prepared_data(tmp_path_factory.mktemp("proc") / "data", num_train=8, num_validation=4)
    prepared = load_prepared(data)
    descriptions = load_descriptions(data)["description"].tolist()
    return prepared.vocab, prepared.metadata, prepared.embeddings, descriptions


def processor_for(corpus, max_length=350, text_encoder=True):
    """The corpus' processor; new descriptions (the log's "unknown product") are embedded by data_prep's tiny
    hashing encoder unless `text_encoder=False`."""
    vocab, metadata, embeddings, descriptions = corpus
    processor = ShopperBertProcessor.from_corpus(vocab, metadata, max_length=max_length, descriptions=descriptions,
                                                 text_embeddings=embeddings)
    processor.text_encoder = HashingTextEncoder(16) if text_encoder else None
    return processor


def messy_log():
    """Integer ids, whitespace, missing and unknown categories, a missing description, same-day repeats (with and
    without product_id), a year outside the corpus, equal timestamps, rows out of time order."""
    rows = [
        (10, "2017-03-02 10:00:00", "category_1-1", "category_2- 3", "tiny product description 1", "p1"),
        (10, "2017-03-02 18:00:00", "category_1-1", "category_2- 3", "tiny product description 1", "p1"),  # dup
        (10, "2017-03-01 09:00:00", " category_1-2 ", None, "tiny  product description 2", None),
        (10, "2017-03-01 12:00:00", " category_1-2 ", None, "tiny  product description 2", None),  # dup, no pid
        (2, "2017-05-01 08:30:00", "nowhere", "", None, "p9"),
        (2, "2019-01-01 00:00:00", "category_1-0", "category_2-1", "tiny product description 3", "p3"),
        (2, "2017-05-01 08:30:00", "category_1-3", "category_2-1", "tiny product description 4", "p4"),
        (7, "2017-02-28 23:59:59", None, None, "tiny product description 0", "p0"),
    ]
    return pd.DataFrame(rows, columns=["user_id", "timestamp", "category_1", "category_2", "description",
                                       "product_id"])


def rows_by_user(rows):
    return {str(r["user_id"]): r for r in rows}


def test_shared_steps_equal_the_pre_move_implementation():
    rng = np.random.default_rng(0)
    vocab = ["[PAD]", "[MASK]", "[CLS]", "[UNK]"] + [f"v{i}" for i in range(50)]
    categories = pd.Index([f"v{i}" for i in rng.permutation(80)] + ["[UNK]", "[PAD]", ""], dtype=object)
    np.testing.assert_array_equal(P.category_lookup(categories, vocab), old_category_lookup(categories, vocab))
    np.testing.assert_array_equal(P.category_lookup(pd.Index([], dtype=object), vocab),
                                  old_category_lookup(pd.Index([], dtype=object), vocab))
    ts = rng.integers(-10**9, 3 * 10**9, size=5000).astype(np.int64)
    for new, old in ((P.date_parts(ts), old_date_parts(ts)), (P.date_ids(ts, 2017, 7), old_date_ids(ts, 2017, 7))):
        assert new.keys() == old.keys()
        for key in new:
            np.testing.assert_array_equal(new[key], old[key])
            assert new[key].dtype == old[key].dtype


def test_corpus_rows_are_byte_identical_to_the_pre_move_code(monkeypatch):
    """`encode_rows` (what `python -m data_prep build` writes) gives the same Arrow table with the moved functions
    as with the old ones."""
    log = validate_log(messy_log().assign(category_3="category_3-1", category_4=None))
    compact, _ = P.compact_log(log)
    vocab = {level: ["[PAD]", "[MASK]", "[CLS]", "[UNK]"] + [f"{level}-{i}" for i in range(4)]
             for level in CATEGORY_FIELDS}
    index = pd.Index(sorted(set(compact["description"].astype(str))), dtype=object)
    new = P.encode_rows(compact, vocab, index, 2017, 6)
    monkeypatch.setattr(P, "category_lookup", old_category_lookup)
    monkeypatch.setattr(P, "date_ids", old_date_ids)
    old = P.encode_rows(compact, vocab, index, 2017, 6)
    assert new.equals(old) and new.schema.equals(old.schema) and new.num_rows == 3


def test_rows_are_those_of_data_prep_encode_logs(corpus):
    """The processor encodes a messy log exactly as `data_prep.encode_logs` does: same users, purchases, ids and
    text vectors (the corpus' rows for known descriptions)."""
    vocab, metadata, embeddings, descriptions = corpus
    log = messy_log()
    processor = processor_for(corpus)
    rows, matrix = processor.logs_to_rows(log)
    expected, expected_matrix = encode_logs(log, vocab, metadata, embeddings, descriptions,
                                            text_encoder=HashingTextEncoder(16))
    got, want = rows_by_user(rows), rows_by_user(expected.to_list())
    assert [r["user_id"] for r in rows] == ["10", "2", "7"]  # order of each user's first row
    assert got.keys() == want.keys()
    for user in want:
        assert got[user]["num_purchases"] == want[user]["num_purchases"]
        np.testing.assert_array_equal(got[user]["timestamp"], want[user]["timestamp"])
        for column in ID_COLUMNS:
            np.testing.assert_array_equal(got[user][column], want[user][column], err_msg=f"{user} {column}")
        np.testing.assert_array_equal(matrix[got[user][TEXT_INDEX_FIELD]],
                                      expected_matrix[want[user][TEXT_INDEX_FIELD]])
    assert got["2"]["category_1"][0] == UNK_ID and got["2"]["year"][-1] == UNK_ID  # unknown name, year 2019
    assert got["10"]["num_purchases"] == 2  # same-day repeats counted once
    assert MISSING_DESCRIPTION == DATA_PREP_MISSING_DESCRIPTION


def test_every_input_kind_gives_the_same_padded_inputs(corpus):
    import datasets

    log = messy_log()
    processor = processor_for(corpus, max_length=2)
    reference = processor(log)
    assert reference["user_ids"] == ["10", "2", "7"]
    assert reference["category_ids"].shape == (3, 3, 4) and reference["date_ids"].shape == (3, 3, 5)
    assert reference["text_embeds"].shape == (3, 3, 16) and reference["attention_mask"].tolist()[2] == [1, 1, 0]
    # truncation keeps the most recent purchases: user 2's last purchase is the 2019 one (year -> UNK)
    assert reference["date_ids"][1, -1, 0].item() == UNK_ID
    records = log.to_dict("records")
    for other in (records, {c: log[c].tolist() for c in log.columns},
                  datasets.Dataset.from_pandas(log.astype({"user_id": str}))):
        batch = processor(other)
        assert batch["user_ids"] == reference["user_ids"]
        for key in ("category_ids", "date_ids", "text_embeds", "attention_mask"):
            torch.testing.assert_close(batch[key], reference[key], atol=0, rtol=0)
    as_datetimes = log.assign(timestamp=pd.to_datetime(log["timestamp"]))
    torch.testing.assert_close(processor(as_datetimes)["date_ids"], reference["date_ids"], atol=0, rtol=0)
    python_datetimes = [dict(r, timestamp=datetime.datetime.fromisoformat(r["timestamp"])) for r in records]
    torch.testing.assert_close(processor(python_datetimes)["date_ids"], reference["date_ids"], atol=0, rtol=0)


def test_new_descriptions_use_the_text_encoder_and_are_cached(corpus):
    class Counting:
        calls = []

        def encode(self, texts):
            self.calls.append(list(texts))
            return np.ones((len(texts), 16), dtype=np.float32)

    processor = processor_for(corpus)
    processor.text_encoder = Counting()
    log = messy_log().assign(description="a brand new product")
    batch = processor(log)
    assert Counting.calls == [["a brand new product"]]
    purchases = batch["category_ids"][..., 0] > 2  # (B, T): not [CLS], not padding
    assert torch.allclose(batch["text_embeds"][purchases], torch.tensor(0.25))  # L2-normalised, as data_prep
    processor(log)
    assert len(Counting.calls) == 1, "the second call finds the description in the table"


def test_unknown_descriptions_without_a_text_model_get_a_zero_vector_and_a_warning(corpus):
    processor = processor_for(corpus, text_encoder=False)
    log = messy_log().assign(description=["new 1", "new 1", "new 2", "new 2", "x", "tiny product description 3",
                                          "y", "tiny product description 0"])
    with pytest.warns(UserWarning, match="4 descriptions are not in the processor's text table"):
        rows, matrix = processor.logs_to_rows(log)
    by_user = rows_by_user(rows)
    assert not matrix[by_user["10"][TEXT_INDEX_FIELD]].any()
    assert matrix[by_user["7"][TEXT_INDEX_FIELD]].any()


def test_time_window_and_dropped_users(corpus):
    processor = processor_for(corpus)
    with pytest.warns(DroppedUsersWarning, match="2 of 3 users have no purchase before the end date 2017-03-01"):
        rows, _ = processor.logs_to_rows(messy_log(), end_date="2017-03-01")
    assert [r["user_id"] for r in rows] == ["7"]
    with pytest.warns(DroppedUsersWarning, match=r"1 of 3 users have no purchase in \[2017-03-01, 2018-01-01\)"):
        rows, _ = processor.logs_to_rows(messy_log(), start_date="2017-03-01", end_date="2018-01-01")
    assert [(r["user_id"], r["num_purchases"]) for r in rows] == [("10", 2), ("2", 2)]
    with pytest.raises(ValueError, match="no purchase in the time window"):
        processor.logs_to_rows(messy_log(), end_date="2000-01-01")


def test_save_load_and_auto_processor(corpus, tmp_path):
    from transformers import AutoProcessor

    processor = processor_for(corpus, max_length=7)
    processor(messy_log())  # embeds the new "unknown product" into the table, which is saved too
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_shopperbert.ShopperBertProcessor"}
    assert {"processing_shopperbert.py", "collator.py", "configuration_shopperbert.py", "contract.py",
            "processor_text_embeddings.npz"} <= {p.name for p in tmp_path.iterdir()}
    for loaded in (ShopperBertProcessor.from_pretrained(tmp_path),
                   AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)):
        assert loaded.max_length == 7 and loaded.vocab == processor.vocab
        assert loaded.descriptions == processor.descriptions
        np.testing.assert_array_equal(loaded.text_embeddings, processor.text_embeddings)
        torch.testing.assert_close(loaded(messy_log())["text_embeds"], processor(messy_log())["text_embeds"])


def test_check_config_refuses_another_vocabulary(corpus):
    processor = processor_for(corpus)
    config = ShopperBertConfig.from_data_metadata(corpus[1], hidden_size=8, num_hidden_layers=1,
                                                  num_attention_heads=2)
    processor.check_config(config)
    config.category_vocab_sizes = [s + 1 for s in config.category_vocab_sizes]
    with pytest.raises(ValueError, match="category_vocab_sizes"):
        processor.check_config(config)


@pytest.mark.parametrize("change, message", [
    (lambda log: log.drop(columns="timestamp"), "lacks the required column 'timestamp'"),
    (lambda log: log.iloc[:0], r"empty \(0 rows\)"),
    (lambda log: log.assign(timestamp=["2017-03-02 10:00:00"] * 7 + ["yesterday"]),
     "column 'timestamp' at row 8: cannot parse 'yesterday'"),
    (lambda log: log.assign(timestamp=[None] + ["2017-03-02"] * 7), "column 'timestamp' is empty at row 1"),
    (lambda log: log.assign(timestamp=[1_488_362_400_000] * 8), "milliseconds"),
    (lambda log: log.assign(user_id=[None] + ["1"] * 7), "column 'user_id' is empty at row 1"),
])
def test_bad_logs_are_named(corpus, change, message):
    with pytest.raises(ValueError, match=message):
        processor_for(corpus)(change(messy_log()))


def test_bad_arguments(corpus):
    processor = processor_for(corpus)
    with pytest.raises(TypeError, match="list of dicts"):
        processor("not a log")
    with pytest.raises(TypeError, match="item 1 is a str"):
        processor([{"user_id": 1}, "x"])
    with pytest.raises(TypeError, match="unexpected arguments"):
        processor(messy_log(), truncation=True)
    with pytest.raises(ValueError, match="end_date: cannot parse"):
        processor(messy_log(), end_date="soon")
    vocab, metadata, _, _ = corpus
    with pytest.raises(ValueError, match="vocab lacks 'category_2'"):
        ShopperBertProcessor({"category_1": vocab["category_1"]}, 2017, 5, 16)
    with pytest.raises(ValueError, match="3 descriptions for a text-embedding matrix of 2 rows"):
        processor.set_text_table(["a", "b", "c"], np.zeros((2, 16)))
