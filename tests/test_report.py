"""The headline's statistics (corrected resampled t-test, Holm), partner choice on validation, verdicts, Table 6's
small-group caveat and the model card's traceable sources."""

import json
import math
from dataclasses import asdict

import pytest
from scipy import stats

from eval_suite.report import (
    corrected_resampled_ttest,
    headline_table,
    holm,
    split_sizes,
    summarise,
    table4,
    table6,
    verdict,
)


# -- statistics ----------------------------------------------------------------------------------------------------
def test_corrected_resampled_ttest_by_hand():
    a = [0.52, 0.51, 0.53, 0.50, 0.52]
    b = [0.50] * 5
    # d = [0.02, 0.01, 0.03, 0.00, 0.02]; J = 5; mean m = 0.08 / 5 = 0.016
    # deviations 0.004, -0.006, 0.014, -0.016, 0.004 -> squares (1e-6) 16 + 36 + 196 + 256 + 16 = 520
    # s2 = 520e-6 / (J - 1) = 130e-6
    # corrected variance of the mean: (1/J + n_test/n_train) * s2 = (0.2 + 0.15/0.70) * 130e-6
    #                                 = 0.414285714... * 130e-6 = 53.857142857e-6
    # t = 0.016 / sqrt(53.857142857e-6) = 0.016 / 0.00733874... = 2.18019...
    t = 0.016 / math.sqrt((1 / 5 + 0.15 / 0.70) * 130e-6)
    assert t == pytest.approx(2.18019, abs=1e-4)
    p = 2 * stats.t.sf(t, 4)  # two-sided, J - 1 = 4 degrees of freedom: about 0.0947
    out = corrected_resampled_ttest(a, b, n_train=0.70, n_test=0.15)
    assert out["t"] == pytest.approx(t, rel=1e-9) and out["p"] == pytest.approx(p, rel=1e-9)
    assert out["n"] == 5 and out["mean_diff"] == pytest.approx(0.016) and (out["wins"], out["losses"]) == (4, 0)
    # only the ratio matters: counts give the same test; the default ratio is the 70/15/15 split's
    assert corrected_resampled_ttest(a, b, n_train=700, n_test=150)["p"] == pytest.approx(p, rel=1e-9)
    assert corrected_resampled_ttest(a, b)["p"] == pytest.approx(p, rel=1e-9)
    # the plain paired t-test (1/J alone) would call it significant: t = 0.016 / sqrt(0.2 * 130e-6) = 3.138
    assert stats.ttest_rel(a, b).pvalue < 0.05 < out["p"]
    # the sign follows a - b
    assert corrected_resampled_ttest(b, a)["t"] == pytest.approx(-t, rel=1e-9)


def test_corrected_resampled_ttest_degenerate_cases():
    one = corrected_resampled_ttest([0.6], [0.5])
    assert math.isnan(one["p"]) and math.isnan(one["t"]) and "at least 2" in one["reason"] and one["n"] == 1
    none = corrected_resampled_ttest([], [])
    assert math.isnan(none["p"]) and none["n"] == 0
    same = corrected_resampled_ttest([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["p"] == 1.0 and same["t"] == 0.0
    shifted = corrected_resampled_ttest([0.75, 0.5, 0.25], [0.5, 0.25, 0.0])  # d = 0.25 exactly on every seed
    assert shifted["p"] == 0.0 and shifted["t"] == math.inf and "zero variance" in shifted["reason"]
    with pytest.raises(ValueError, match="shapes"):
        corrected_resampled_ttest([0.5, 0.6], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        corrected_resampled_ttest([0.5, math.nan], [0.5, 0.4])


def test_split_sizes_use_recorded_counts_when_every_seed_has_them():
    assert split_sizes([{"auroc": 0.5}, {"auroc": 0.6}]) == (0.70, 0.15, "split fractions")
    recorded = [{"n_train": 700, "n_test": 140}, {"n_train": 710, "n_test": 150}]
    assert split_sizes(recorded) == (705.0, 145.0, "recorded")
    assert split_sizes(recorded + [{"n_train": 700}])[2] == "split fractions"


def test_holm_by_hand():
    # sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max(0.06, 0.04) = 0.06
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    # NaN (no test made) stays NaN and does not count toward m
    with_nan = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": math.nan, "f": None})
    assert math.isnan(with_nan.pop("e")) and math.isnan(with_nan.pop("f"))
    assert with_nan == pytest.approx(adjusted)
    # capped at 1, monotone in the raw p
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}
    assert holm({}) == {}


def test_verdict():
    assert verdict(0.1, 0.001, 4) == "n/a (<5 seeds)"
    assert verdict(0.1, 0.001, 5) == "ahead" and verdict(-0.1, 0.001, 5) == "behind"
    assert verdict(0.1, 0.05, 5) == "tie" and verdict(0.1, math.nan, 10) == "tie"


# -- the headline --------------------------------------------------------------------------------------------------
def _seeds(test, val=None, key="auroc", val_key="val_auroc", **extra):
    seeds = {}
    for i, value in enumerate(test):
        metrics = {key: value, **extra}
        if val is not None:
            metrics[val_key] = val
        seeds[str(i)] = metrics
    return {"seeds": seeds}


def _classification(models: dict) -> dict:
    return {"kind": "classification", "paper_analogue": "GC", "models": models}


def test_partner_is_chosen_on_validation_not_test():
    umlp = [0.70, 0.71, 0.72, 0.73, 0.74]
    results = {"config": {"checkpoints": {"MP+A": "runs/a"}}, "tasks": {"kids": _classification({
        "U-MLP MP+A": _seeds(umlp, val=0.7),
        "P-Trans": _seeds([0.80, 0.83, 0.81, 0.84, 0.82], val=0.60),  # best on test, worst on validation
        "T-Trans": _seeds([0.60, 0.62, 0.61, 0.60, 0.63], val=0.65),  # best on validation
        "LogReg RFM": _seeds([0.75, 0.70, 0.78, 0.71, 0.80], val=0.70),
        "LogReg TF-IDF+RFM": _seeds([0.77, 0.76, 0.79, 0.78, 0.81], val=0.69),
        "U-MLP SVD": _seeds([0.50, 0.52, 0.51, 0.50, 0.53], val=0.51),
        "U-MLP Random": _seeds([0.55, 0.56, 0.55, 0.54, 0.56], val=0.50),
    })}}
    summarise(results)
    h = results["tasks"]["kids"]["headline"]
    assert h["u_mlp"] == "U-MLP MP+A" and h["n"] == 5
    assert h["vs"]["from_scratch"]["name"] == "T-Trans" and h["vs"]["from_scratch"]["basis"] == "validation"
    assert h["vs"]["classical"]["name"] == "LogReg RFM"
    assert h["vs"]["trivial"]["name"] == "U-MLP SVD"
    # the activity representations are trivial ones too: partners, never the U-MLP under test
    models = results["tasks"]["kids"]["models"]
    models["U-MLP Activity"] = _seeds([0.40, 0.43, 0.41, 0.44, 0.42], val=0.52)
    models["U-MLP SVD+activity"] = _seeds([0.45, 0.41, 0.42, 0.40, 0.44], val=0.50)
    other = summarise(json.loads(json.dumps({"config": results["config"], "tasks": {"kids": {
        "kind": "classification", "paper_analogue": "GC",
        "models": {k: {"seeds": v["seeds"]} for k, v in models.items()}}}})))
    assert other["tasks"]["kids"]["headline"]["u_mlp"] == "U-MLP MP+A"
    assert other["tasks"]["kids"]["headline"]["vs"]["trivial"]["name"] == "U-MLP Activity"
    del models["U-MLP Activity"], models["U-MLP SVD+activity"]
    # one task: Holm leaves the p-value as it is
    assert h["vs"]["from_scratch"]["p_holm"] == pytest.approx(h["vs"]["from_scratch"]["p"])
    assert h["vs"]["from_scratch"]["verdict"] == "ahead"
    text = headline_table(results)
    assert "| kids | auroc | U-MLP MP+A: 0.7200 ± 0.0158 | best from scratch | T-Trans: 0.6120 ± 0.0130 | 5 |" in text
    assert "†" not in text and "- U-MLP against the best from scratch (the paper's claim): ahead on kids." in text

    # an older run without validation metrics on the Transformers: chosen on test among all, and said so
    for name in ("P-Trans", "T-Trans"):
        for metrics in results["tasks"]["kids"]["models"][name]["seeds"].values():
            del metrics["val_auroc"]
    summarise(results)
    scratch = results["tasks"]["kids"]["headline"]["vs"]["from_scratch"]
    assert scratch["name"] == "P-Trans" and scratch["basis"] == "test"
    assert scratch["no_validation"] == ["P-Trans", "T-Trans"] and scratch["verdict"] == "behind"
    text = headline_table(results)
    assert "P-Trans †:" in text and "† chosen on test (no validation metric recorded)" in text


def test_no_verdict_under_five_seeds_and_holm_across_tasks():
    def task(n, shift):
        return _classification({"U-MLP MP": _seeds([0.7 + shift + 0.01 * (i % 3) for i in range(n)], val=0.7),
                                "P-Trans": _seeds([0.6 + 0.005 * (i % 2) for i in range(n)], val=0.6)})

    results = {"config": {}, "tasks": {"kids": task(4, 0.0), "coupon_targeting": task(6, 0.0),
                                       "nutrition_targeting": task(6, -0.095)}}
    summarise(results)
    rows = {name: entry["headline"]["vs"]["from_scratch"] for name, entry in results["tasks"].items()}
    assert rows["kids"]["p"] < 0.05 and rows["kids"]["verdict"] == "n/a (<5 seeds)"  # never from 4 seeds
    assert rows["coupon_targeting"]["verdict"] == "ahead"
    expected = holm({name: row["p"] for name, row in rows.items()})  # the family: all three tasks with a p-value
    assert {name: row["p_holm"] for name, row in rows.items()} == pytest.approx(expected)
    assert rows["nutrition_targeting"]["p_holm"] >= rows["nutrition_targeting"]["p"]
    assert "n/a (<5 seeds) on kids" in headline_table(results)


def test_primary_umlp_is_the_first_checkpoint_not_a_trivial_row():
    results = {"config": {"checkpoints": {"MP+A": "a", "CLS": "b"}}, "tasks": {"kids": _classification({
        "U-MLP SVD": _seeds([0.9, 0.9]), "U-MLP CLS": _seeds([0.6, 0.6]), "U-MLP MP+A": _seeds([0.7, 0.7]),
        "P-Trans": _seeds([0.5, 0.5])})}}
    summarise(results)
    entry = results["tasks"]["kids"]
    assert entry["headline"]["u_mlp"] == "U-MLP MP+A" and entry["headline"]["vs"]["trivial"]["name"] == "U-MLP SVD"
    assert "U-MLP SVD vs P-Trans | auroc" not in entry["comparisons"]
    assert "U-MLP MP+A vs U-MLP SVD | auroc" in entry["comparisons"]


# -- tables --------------------------------------------------------------------------------------------------------
def test_table4_says_how_accuracy_is_thresholded_and_shows_references():
    results = {"tasks": {"kids": _classification({
        "U-MLP MP": _seeds([0.7, 0.72], **{"f1": 0.5, "accuracy": 0.49, "accuracy@0.5": 0.6,
                                           "majority_accuracy": 0.64})})}}
    summarise(results)
    text = table4(results)
    assert "maximises F1 on the validation users" in text and "not at 0.5" in text
    assert "| Accuracy at threshold 0.5 | 0.6000 ± 0.0000 |" in text
    assert "| Majority-class rate | 0.6400 ± 0.0000 |" in text


def test_table6_marks_groups_under_twenty_users():
    def rec(cold_size_key, cold_size, heavy_instances):
        metrics = {"mrr": 0.3, "cold_mrr": 0.2, "heavy_mrr": 0.4, "heavy_num_instances": heavy_instances,
                   cold_size_key: cold_size}
        return {"seeds": {"0": dict(metrics), "1": dict(metrics)}}

    results = {"tasks": {"campaign_coupons": {"kind": "recommendation", "paper_analogue": "MMR", "models": {
        "T-Trans": rec("cold_users", 4, 24), "U-MLP MP": rec("cold_users", 4, 24)}}}}
    summarise(results)
    text = table6(results)
    assert "| campaign_coupons | cold, 4 users ‡ | MRR |" in text
    assert "‡ Fewer than 20 users in the group (campaign_coupons cold (4 users))" in text
    # heavy: only instances recorded, 24 of them: the users are unknown, and the note says so
    assert "| campaign_coupons | heavy, 24 instances | MRR |" in text
    assert "Group sizes in users were not recorded for campaign_coupons heavy" in text
    # from n_test: the group is round(10%) of the test users
    results["tasks"]["campaign_coupons"]["models"] = {"T-Trans": rec("n_test", 300, 500), "U-MLP MP": rec("n_test",
                                                                                                         300, 500)}
    summarise(results)
    assert "| campaign_coupons | cold, 30 users | MRR |" in table6(results)


# -- the model card: traceable sources -----------------------------------------------------------------------------
def _write_results(folder, first_seed=0, values=(0.6, 0.7), command=None):
    from eval_suite.run import RunOptions

    seeds = {str(first_seed + i): {"auroc": v, "f1": 0.5, "accuracy": 0.5, "val_auroc": 0.6}
             for i, v in enumerate(values)}
    models = {"U-MLP MP": {"seeds": seeds},
              "P-Trans": {"seeds": {s: {"auroc": 0.5, "f1": 0.5, "accuracy": 0.5, "val_auroc": 0.5} for s in seeds}}}
    config = {"checkpoints": {"MP": "runs/mp/final"}, "data": "data/cj", "tasks": ["kids"],
              "options": asdict(RunOptions(repeats=len(values), first_seed=first_seed, trans_lrs=(1e-3,),
                                           mlp_patience=5))}
    if command:
        config["command"] = command
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "config": config, "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC", "models": models}},
        "seconds": 1.0}))


def test_card_names_each_source_file_and_its_command(tmp_path, monkeypatch):
    from eval_suite.model_card import main

    _write_results(tmp_path / "results" / "a", values=(0.6, 0.7, 0.9))
    literal = "python -m eval_suite run --model MP=runs/mp/final --tasks kids --repeats 1 --first-seed 3 --out x"
    _write_results(tmp_path / "results" / "b", first_seed=3, values=(0.8,), command=literal)
    card = tmp_path / "model_card.md"
    monkeypatch.chdir(tmp_path)
    assert main(["--card", "model_card.md", "--results", "results/a:0-1", "--results", "results/b"]) == 0
    text = card.read_text()
    assert "# results/a/results.json (seeds 0-1); command rebuilt from its config" in text
    rebuilt = ("python -m eval_suite run --model MP=runs/mp/final --data data/cj --tasks kids --repeats 3 "
               "--trans-lrs 0.001 --out results/a  # and mlp_patience=5 (no command-line flag)")
    assert rebuilt in text
    assert f"# results/b/results.json; command as recorded in it\n{literal}\n" in text
    assert "python -m eval_suite model-card --card model_card.md --results results/a:0-1 --results results/b" in text
    assert "corrected resampled t-test" in text


def test_card_generator_fails_on_a_missing_or_outside_source(tmp_path):
    from eval_suite.model_card import main, update_model_card

    repo = tmp_path / "repo"
    _write_results(repo / "results" / "a")
    card = repo / "model_card.md"
    card.write_text("# card\n")
    with pytest.raises(SystemExit, match=r"error: results/missing/results.json .* is missing"):
        main(["--card", str(card), "--results", str(repo / "results" / "a"), "--results",
              str(repo / "results" / "missing")])
    assert card.read_text() == "# card\n"  # nothing written
    _write_results(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match="error: .*outside the repository"):
        update_model_card(card, results_dir=[str(tmp_path / "elsewhere")])
    with pytest.raises(SystemExit, match="error: results without the results.json"):
        update_model_card(card, results={"config": {"options": {}}, "tasks": {}})
    with pytest.raises(SystemExit, match=r"error: runs/x/eval_results.json .* is missing"):
        update_model_card(card, pretraining_dir=repo / "runs" / "x")
    with pytest.raises(SystemExit, match=r"error: results/umap/umap.md .* is missing"):
        update_model_card(card, extras={"umap": repo / "results" / "umap"})
    assert card.read_text() == "# card\n"


def test_seeds_that_are_not_one_range_are_recorded_and_named():
    """A resumed or merged run over seeds 0, 1, 10, 11 records that list, and its rebuilt command says so instead of
    claiming `--repeats 4` covers them."""
    from dataclasses import asdict

    from eval_suite.model_card import run_command
    from eval_suite.merging import merge_results
    from eval_suite.run import RunOptions, record_seeds

    def run(seeds):
        return {"config": {"data": "data/cj", "tasks": ["kids"], "options": asdict(RunOptions(repeats=2))},
                "tasks": {"kids": {"kind": "classification", "paper_analogue": "GC",
                                   "models": {"U-MLP MP": {"seeds": {str(s): {"auroc": 0.6} for s in seeds}}}}}}

    merged = merge_results([run([0, 1]), run([10, 11])])
    assert merged["config"]["seeds"] == [0, 1, 10, 11]
    resumed = run([0, 1, 10, 11])
    record_seeds(resumed)
    assert resumed["config"]["seeds"] == [0, 1, 10, 11]
    assert "# seeds 0, 1, 10, 11: not one range" in run_command(merged["config"], "results/x")
    assert "not one range" not in run_command(run([0, 1])["config"], "results/x")
