"""train.py, issue 13: nothing lost, nothing silently wrong.

One run folder per run (refusal, --overwrite only of a train.py folder, a lock), resume without pickle and past a
damaged checkpoint, non-finite guards, the vocabulary fingerprint, an empty validation split, `error:` instead of
tracebacks, metrics without repeated steps and weights with the umask's mode. Runs are tiny and in-process
(`train.main`), so each test takes a few seconds.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_data import write_tiny_prepared_data

import train  # noqa: E402  (tests/ is on sys.path; the repository root is the working directory)
from modeling_shopperbert import ShopperBertConfig
from modeling_shopperbert.contract import vocabulary_fingerprint

COMMON = ["--preset", "tiny", "--batch-size", "8", "--learning-rate", "3e-3", "--report-to", "none",
          "--log-every", "2"]
STEPS = ["--max-steps", "8", "--save-every", "2"]  # checkpoints step_4 and step_6 are kept, final at step 8


def run_main(argv) -> int:
    """train.py's exit status, run in this process."""
    try:
        train.main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code
    return 0


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_prepared_data(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_main(["--data", tiny_data, "--output", out, *STEPS, *COMMON]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the finished run, to damage or resume."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def logged_steps(out, key="train/loss"):
    records = [json.loads(line) for line in (Path(out) / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if key in r]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(out, pid):
    (Path(out) / train.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))


def snapshot(folder):
    """Every file under `folder` with its content: to show that a refused run changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# -- 1. one run per folder, a lock --------------------------------------------------------------------------------
def test_non_empty_output_is_refused_and_overwrite_spares_foreign_folders(tiny_data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert run_main(["--data", tiny_data, "--output", out, *STEPS, *COMMON]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert run_main(["--data", tiny_data, "--output", out, "--overwrite", *STEPS, *COMMON]) == 2
    assert "not a train.py run folder" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"


def test_overwrite_replaces_an_earlier_train_run(run_copy, tiny_data, capsys):
    assert run_main(["--data", tiny_data, "--output", run_copy, "--max-steps", "2", *COMMON]) == 2
    assert "--resume latest" in capsys.readouterr().err  # the earlier run is left alone
    assert run_main(["--data", tiny_data, "--output", run_copy, "--overwrite", "--max-steps", "2", *COMMON]) == 0
    assert not (run_copy / "checkpoints").exists()  # the earlier run's checkpoints cannot be resumed into this one
    assert json.loads((run_copy / "final" / "training_info.json").read_text())["step"] == 2
    assert logged_steps(run_copy) == [2]


def test_locked_folder_is_refused_naming_the_pid(run_copy, tiny_data, capsys):
    live = os.getppid()
    write_lock(run_copy, live)
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 2
    assert f"in use by process {live}" in capsys.readouterr().err
    assert json.loads((run_copy / train.LOCK_FILE).read_text())["pid"] == live  # not taken


def test_stale_lock_is_taken_over_and_released(run_copy, tiny_data, capsys):
    write_lock(run_copy, dead_pid())
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 0
    assert "taking over the lock" in capsys.readouterr().err
    assert not (run_copy / train.LOCK_FILE).exists()


def test_resume_of_another_run_is_refused_unless_forced_and_the_lock_released(run_copy, tiny_data, capsys):
    argv = ["--data", tiny_data, "--output", run_copy, "--resume", "latest", "--seed", "7", *STEPS, *COMMON]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "seed 42 -> 7" in err
    assert not (run_copy / train.LOCK_FILE).exists()
    assert run_main(argv + ["--resume-force"]) == 0
    assert "--resume-force" in capsys.readouterr().err


def test_resume_of_another_folders_checkpoint_into_a_run_folder_is_refused(run_copy, finished, tmp_path, tiny_data,
                                                                          capsys):
    other = tmp_path / "B"
    shutil.copytree(finished, other)
    before = snapshot(other)
    checkpoint = run_copy / "checkpoints" / "step_0000006"
    assert run_main(["--data", tiny_data, "--output", other, "--resume", checkpoint, *STEPS, *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "is not a checkpoint of --output" in err and str(other) in err
    assert snapshot(other) == before  # B's best/, final/, metrics.jsonl and checkpoints untouched


def test_resume_of_another_folders_checkpoint_starts_a_new_run_folder(run_copy, tmp_path, tiny_data):
    before = snapshot(run_copy)
    fresh = tmp_path / "fresh"
    argv = ["--data", tiny_data, "--output", fresh, "--resume", run_copy / "checkpoints" / "step_0000004"]
    assert run_main([*argv, *STEPS, *COMMON]) == 0
    assert (fresh / train.RUN_MARKER).is_file() and (fresh / "run_config.json").is_file()  # a run folder of its own
    expected, resumed = weights(run_copy / "final"), weights(fresh / "final")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)  # the same continuation
    assert snapshot(run_copy) == before
    assert [p.name for p in train.checkpoint_dirs(fresh)] == ["step_0000006"]  # its own, resumable with `latest`
    assert run_main(["--data", tiny_data, "--output", fresh, "--resume", "latest", *STEPS, *COMMON]) == 0


def test_resume_into_a_folder_train_py_did_not_write_is_refused(run_copy, tiny_data, capsys):
    (run_copy / train.RUN_MARKER).unlink()
    (run_copy / "run_config.json").unlink()
    before = snapshot(run_copy)
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 2
    assert "is not a train.py run folder" in capsys.readouterr().err
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("refused", [["--batch-size", "10", "--per-device-batch-size", "4"],
                                     ["--report-to", "no-such-tracker"]])
def test_overwrite_deletes_nothing_when_another_option_is_refused(run_copy, tiny_data, capsys, refused):
    before = snapshot(run_copy)
    assert run_main(["--data", tiny_data, "--output", run_copy, "--overwrite", *STEPS, *COMMON, *refused]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert snapshot(run_copy) == before


def test_sigterm_ends_the_run_and_releases_the_lock(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    lock = out / train.LOCK_FILE

    def terminate_when_training():
        for _ in range(1200):
            if lock.exists() and (out / "logs" / "metrics.jsonl").exists():  # locked, and a few steps done
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate_when_training, daemon=True)
    killer.start()
    code = run_main(["--data", tiny_data, "--output", out, "--max-steps", "100000", *COMMON])
    killer.join()
    assert code == 143 and "stopped by SIGTERM" in capsys.readouterr().err
    assert not lock.exists() and not (out / "final").exists()


# -- 2. resume without pickle, past damaged checkpoints ------------------------------------------------------------
def test_checkpoints_hold_no_pickle(finished):
    for checkpoint in (finished / "checkpoints").iterdir():
        assert not list(checkpoint.glob("*.pkl")), checkpoint
        state = json.loads((checkpoint / train.TRAIN_STATE).read_text())
        assert state["scheduler"]["last_epoch"] == state["step"]
        assert (checkpoint / train.RNG_STATE.format(0)).is_file()


def test_damaged_latest_checkpoint_falls_back_and_stays_exact(run_copy, tiny_data, capsys):
    expected = weights(run_copy / "final")
    model_file = run_copy / "checkpoints" / "step_0000006" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # truncated
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 0
    captured = capsys.readouterr()
    assert "falling back to the previous one" in captured.err and "step_0000004 at optimizer step 4" in captured.out
    assert (run_copy / "checkpoints" / "step_0000006.damaged").is_dir()  # set aside, not deleted
    resumed = weights(run_copy / "final")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)  # bit-identical continuation from step 4
    assert logged_steps(run_copy) == [2, 4, 6, 8]  # 7. no step logged twice
    assert logged_steps(run_copy, "eval/loss") == [6, 8]


def test_damaged_random_state_is_an_error_not_ignored(run_copy, tiny_data, capsys):
    checkpoint = run_copy / "checkpoints" / "step_0000006"
    rng = checkpoint / train.RNG_STATE.format(0)
    rng.write_bytes(rng.read_bytes()[:-100])
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", checkpoint, *STEPS, *COMMON]) == 2
    assert "damaged or incomplete" in capsys.readouterr().err
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 0
    assert "falling back" in capsys.readouterr().err


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_resume_never_unpickles_a_planted_file(run_copy, tiny_data, capsys):
    marker = run_copy.parent / "pwned"
    checkpoint = run_copy / "checkpoints" / "step_0000006"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        torch.save(_Payload(str(marker)), checkpoint / name)
    before = snapshot(run_copy)
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 2
    assert not marker.exists()
    assert "pickle files that train.py never writes" in capsys.readouterr().err
    assert snapshot(run_copy) == before  # intact files are refused, not set aside as damaged


def _old_format(checkpoint):
    """What the train.py before issue 13 saved: accelerate's pickled scheduler and random states, step.json."""
    state = json.loads((checkpoint / train.TRAIN_STATE).read_text())
    (checkpoint / train.TRAIN_STATE).unlink()
    (checkpoint / train.RNG_STATE.format(0)).unlink()
    (checkpoint / "step.json").write_text(json.dumps({"step": state["step"]}))
    torch.save(state["scheduler"], checkpoint / "custom_checkpoint_0.pkl")
    torch.save({"step": state["accelerator_step"], "torch_manual_seed": torch.get_rng_state()},
               checkpoint / "random_states_0.pkl")


def test_checkpoints_of_an_older_train_py_are_refused_untouched(run_copy, tiny_data, capsys):
    for checkpoint in (run_copy / "checkpoints").iterdir():
        _old_format(checkpoint)
    before = snapshot(run_copy)
    for resume in ("latest", run_copy / "checkpoints" / "step_0000006"):
        assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", resume, *STEPS, *COMMON]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "older version of train.py" in err and "start a new run" in err
        assert snapshot(run_copy) == before  # no `*.damaged`


def test_checkpoint_of_another_process_count_is_refused_untouched(run_copy, tiny_data, capsys):
    for checkpoint in (run_copy / "checkpoints").iterdir():  # as two processes save them
        shutil.copy(checkpoint / train.RNG_STATE.format(0), checkpoint / train.RNG_STATE.format(1))
    before = snapshot(run_copy)
    assert run_main(["--data", tiny_data, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 2
    err = capsys.readouterr().err
    assert "saved by 2 process(es)" in err and "this run has 1" in err
    assert snapshot(run_copy) == before


def test_cpu_checkpoint_on_a_gpu_is_refused(finished, monkeypatch):
    from types import SimpleNamespace

    checkpoint = finished / "checkpoints" / "step_0000006"
    one_process = SimpleNamespace(num_processes=1, process_index=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train.check_resumable_here(checkpoint, one_process)  # CPU -> CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(train.CheckpointRefused, match="saved on the CPU but this process has 1 GPU"):
        train.check_resumable_here(checkpoint, one_process)


# -- 3. non-finite guard -------------------------------------------------------------------------------------------
def _grad_norms(monkeypatch, bad_calls):
    from accelerate import Accelerator

    original, calls = Accelerator.clip_grad_norm_, []

    def clip(self, parameters, max_norm, norm_type=2):
        norm = original(self, parameters, max_norm, norm_type)
        calls.append(norm)
        return torch.tensor(float("nan")) if bad_calls(len(calls)) else norm

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", clip)


def test_non_finite_gradients_stop_without_any_model(tiny_data, tmp_path, monkeypatch, capsys):
    _grad_norms(monkeypatch, lambda call: call >= 3)  # finite losses, NaN gradient norms from step 3
    out = tmp_path / "run"
    assert run_main(["--data", tiny_data, "--output", out, "--max-steps", "12", "--eval-every", "1",
                     "--max-nonfinite-steps", "2", *COMMON]) == 1
    err = capsys.readouterr().err
    assert "error: the training loss is" in err and "gradient norm is nan at optimizer step 5" in err
    assert "3 non-finite step(s) in a row" in err
    assert not (out / "final").exists()
    best = weights(out / "best")  # written at step 2, before the bad steps
    assert all(bool(torch.isfinite(t).all()) for t in best.values())


def test_skipped_non_finite_step_keeps_finite_weights(tiny_data, tmp_path, monkeypatch, capsys):
    _grad_norms(monkeypatch, lambda call: call == 2)
    out = tmp_path / "run"
    assert run_main(["--data", tiny_data, "--output", out, "--max-steps", "4", "--max-nonfinite-steps", "1",
                     *COMMON]) == 0
    assert "update skipped" in capsys.readouterr().out
    assert all(bool(torch.isfinite(t).all()) for t in weights(out / "final").values())


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-0.001"])
def test_bad_learning_rate_is_refused_up_front(tiny_data, tmp_path, value):
    args = train.parse_args(["--data", str(tiny_data), "--output", str(tmp_path / "o"), "--learning-rate", value])
    with pytest.raises(train.RunError, match="--learning-rate") as raised:
        train.check_args(args)
    assert raised.value.exit_code == 2


# -- 4. vocabulary fingerprint -------------------------------------------------------------------------------------
def test_config_vocab_fingerprint_is_optional_and_round_trips(tmp_path):
    small = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    assert ShopperBertConfig(**small).vocab_fingerprint is None
    old = ShopperBertConfig(**small).to_dict()
    old.pop("vocab_fingerprint")
    assert ShopperBertConfig.from_dict(old).vocab_fingerprint is None  # configs from before load fine
    ShopperBertConfig(vocab_fingerprint="sha256:0123", **small).save_pretrained(tmp_path)
    assert ShopperBertConfig.from_pretrained(tmp_path).vocab_fingerprint == "sha256:0123"
    with pytest.raises(ValueError, match="vocab_fingerprint"):
        ShopperBertConfig(vocab_fingerprint=5, **small)


def test_trained_model_records_the_corpus_fingerprint(finished, tiny_data):
    expected = vocabulary_fingerprint(json.loads((tiny_data / "vocab.json").read_text()))
    for folder in ("final", "best"):
        assert json.loads((finished / folder / "config.json").read_text())["vocab_fingerprint"] == expected


def test_metadata_fingerprint_is_used_when_recorded(tiny_data, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    expected = vocabulary_fingerprint(json.loads((data / "vocab.json").read_text()))
    metadata = json.loads((data / "metadata.json").read_text())
    (data / "metadata.json").write_text(json.dumps({**metadata, "vocab_fingerprint": expected}))
    monkeypatch.setattr(train, "vocabulary_fingerprint", None)  # recorded: not computed again
    _, fingerprint = train.load_data(train.parse_args(["--data", str(data)]))
    assert fingerprint == expected


def test_resume_on_a_corpus_with_other_ids_of_the_same_sizes_is_refused(run_copy, tiny_data, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    vocab = json.loads((other / "vocab.json").read_text())
    vocab["category_1"][4:6] = vocab["category_1"][5:3:-1]  # two categories swap ids; every size stays
    (other / "vocab.json").write_text(json.dumps(vocab))
    assert run_main(["--data", other, "--output", run_copy, "--resume", "latest", *STEPS, *COMMON]) == 2
    assert "another vocabulary" in capsys.readouterr().err


def test_forced_resume_on_another_vocabulary_saves_the_datas_fingerprint(run_copy, tiny_data, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    vocab = json.loads((other / "vocab.json").read_text())
    vocab["category_1"][4:6] = vocab["category_1"][5:3:-1]
    (other / "vocab.json").write_text(json.dumps(vocab))
    _, fingerprint = train.load_data(train.parse_args(["--data", str(other)]))
    argv = ["--data", other, "--output", run_copy, "--resume", "latest", "--resume-force", *STEPS, *COMMON]
    assert run_main(argv) == 0
    assert "vocab_fingerprint becomes" in capsys.readouterr().err
    assert json.loads((run_copy / "final" / "config.json").read_text())["vocab_fingerprint"] == fingerprint
    for folder in ("final", "best"):  # config and the vocab.json beside it agree: encode/publish accept them
        recorded = json.loads((run_copy / folder / "config.json").read_text())["vocab_fingerprint"]
        assert vocabulary_fingerprint(json.loads((run_copy / folder / "vocab.json").read_text())) == recorded


# -- 5. empty validation split -------------------------------------------------------------------------------------
def test_empty_validation_split_is_refused_before_training(tiny_data, tmp_path, capsys):
    from datasets import DatasetDict, load_from_disk

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("dataset"))
    dataset = load_from_disk(str(tiny_data / "dataset"))
    DatasetDict({"train": dataset["train"], "validation": dataset["validation"].select([])}).save_to_disk(
        str(data / "dataset"), num_shards={"train": 1, "validation": 1})  # as data_prep writes an empty split
    out = tmp_path / "run"
    assert run_main(["--data", data, "--output", out, "--max-steps", "2", *COMMON]) == 2
    assert "the `validation` split has no users" in capsys.readouterr().err
    assert not out.exists()


# -- 6. error: and exit 2 instead of tracebacks --------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [("data: [unclosed\n", "not valid YAML"),
                                          ("just a scalar\n", "must hold a mapping"),
                                          ("- a\n- list\n", "must hold a mapping"),
                                          ("max_steps: [1, 2]\n", "must be a single value")])
def test_bad_config_file_is_an_error(tmp_path, capsys, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert run_main(["--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_config_file_values_are_type_checked_and_the_command_line_wins(tiny_data, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {tiny_data}\nlearning_rate: 1e-3\naugmentation: no\nmax_steps: 3\n")
    args = train.parse_args(["--config", str(config), "--max-steps", "5"])
    assert (args.learning_rate, args.augmentation, args.max_steps) == (1e-3, False, 5)
    config.write_text("num_epochs: many\n")
    assert run_main(["--config", config]) == 2
    assert "num_epochs" in capsys.readouterr().err


@pytest.mark.parametrize("option,value", [("--num-epochs", "nan"), ("--num-epochs", "-1"), ("--dropout", "5"),
                                          ("--dropout", "1"), ("--warmup-ratio", "2"), ("--adam-beta2", "1"),
                                          ("--max-grad-norm", "inf"), ("--weight-decay", "nan"), ("--seed", "-1"),
                                          ("--warmup-steps", "-1"), ("--max-nonfinite-steps", "-1"),
                                          ("--max-train-users", "0")])
def test_numeric_option_out_of_range_exits_2(tiny_data, tmp_path, capsys, option, value):
    assert run_main(["--data", tiny_data, "--output", tmp_path / "o", option, value]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option} must be")
    assert not (tmp_path / "o").exists()


# -- 7. metrics after a resume (see the fallback test), file modes -------------------------------------------------
def test_weights_get_the_umask_mode(finished):
    expected = 0o666 & ~train.UMASK
    files = [finished / "final" / "model.safetensors", finished / "best" / "model.safetensors",
             *(finished / "checkpoints").glob("*/model.safetensors")]
    assert len(files) == 4
    for path in files:
        assert path.stat().st_mode & 0o777 == expected, path


def test_unexpected_fault_is_one_error_line_unless_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(train, "training_function", boom)
    assert run_main(["--report-to", "none"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: RuntimeError: disk on fire (rerun with --debug for the traceback)"
    with pytest.raises(RuntimeError, match="disk on fire"):
        train.main(["--report-to", "none", "--debug"])


def test_mixed_precision_comes_from_the_launcher_unless_given(monkeypatch):
    """`accelerate launch --mixed_precision bf16` (ACCELERATE_MIXED_PRECISION) is what `auto` trains in; the script's
    own option wins when given; the launcher's default `no` leaves the choice to the device."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert train.resolve_mixed_precision("auto") == "bf16"
    assert train.resolve_mixed_precision("no") == "no"
    for launcher in ("no", None):  # the launcher's default, or no launcher: the device decides
        if launcher:
            monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
        else:
            monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert train.resolve_mixed_precision("auto") == "no"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        assert train.resolve_mixed_precision("auto") == "bf16"
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        assert train.resolve_mixed_precision("auto") == "fp16"
        assert train.resolve_mixed_precision("no") == "no"
