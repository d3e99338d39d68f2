"""The console scripts of pyproject.toml: each answers `--help` at once (arguments are parsed before torch,
transformers or pandas are imported), exits 2 on a usage error, and keeps the old spelling of renamed flags.

The scripts are tested through the `main` callables `[project.scripts]` names (the editable install of the
checkout is not re-run here), called the way pip's wrapper calls them: `sys.exit(main())`."""

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("torch", "transformers", "pandas", "datasets", "sentence_transformers")

# What pip's console-script wrapper does, plus a report of what was imported by the time `main` returned.
WRAPPER = """
import json, sys
sys.argv[0] = {script!r}
from {module} import {function} as main
try:
    code = main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": sorted(set({heavy!r}) & set(sys.modules))}}))
"""


def run_script(name: str, *args: str) -> tuple[dict, str, float]:
    module, function = SCRIPTS[name].split(":")
    code = WRAPPER.format(script=name, module=module, function=function, heavy=HEAVY)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    *output, report = result.stdout.strip().splitlines()
    return json.loads(report), "\n".join(output) + result.stderr, seconds


def interpreter_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import argparse, json"], check=True, timeout=60)
    return time.perf_counter() - start


def test_every_command_has_a_console_script():
    assert SCRIPTS == {"shopperbert-prep": "data_prep.cli:main",
                       "shopperbert-encode": "modeling_shopperbert.encode:main",
                       "shopperbert-publish": "modeling_shopperbert.publish:main",
                       "shopperbert-eval": "eval_suite.__main__:main"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_answers_before_any_heavy_import(name):
    report, output, seconds = run_script(name, "--help")
    assert report == {"code": 0, "heavy": []}
    assert output.startswith(f"usage: {name} ")  # the usage line names the script the user typed
    # Well under a second above a bare interpreter (measured on a quiet 2-core machine: README's CLI section).
    assert seconds - interpreter_start() < 1.0, seconds


def test_eval_help_lists_every_command():
    from eval_suite.__main__ import COMMANDS

    _, output, _ = run_script("shopperbert-eval", "--help")
    for command in ["run", *COMMANDS]:
        assert f"\n    {command} " in output or f"\n    {command}\n" in output, command


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_an_unknown_option_is_a_usage_error(name):
    args = {"shopperbert-prep": ["info", "x"], "shopperbert-eval": ["run", "--model", "x"],
            "shopperbert-encode": ["--model", "x", "--out", "o"], "shopperbert-publish": ["--out", "o"]}[name]
    report, output, _ = run_script(name, *args, "--no-such-option")
    assert report == {"code": 2, "heavy": []}
    assert "unrecognized arguments: --no-such-option" in output


# ---------------------------------------------------------------------------------------------------------------
# Usage errors found after parsing (the commands' own checks) exit 2 too; checked in-process
# ---------------------------------------------------------------------------------------------------------------
def test_prep_checks_exit_2(tmp_path, capsys):
    from data_prep.cli import main

    assert main(["build", "--source", "files", "--out", str(tmp_path / "out")]) == 2
    assert "--source files needs --input" in capsys.readouterr().err
    assert main(["build", "--source", "synthetic", "--users", "0", "--out", str(tmp_path / "out")]) == 2
    assert "--users must be at least 1" in capsys.readouterr().err


def test_encode_checks_exit_2(tmp_path, capsys):
    from modeling_shopperbert.encode import main

    assert main(["--model", str(tmp_path / "none"), "--data", str(tmp_path), "--out", str(tmp_path / "u.parquet")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--out", str(tmp_path / "u.parquet")]) == 2
    assert "exactly one of --data" in capsys.readouterr().err


def test_publish_checks_exit_2(tmp_path, capsys):
    from modeling_shopperbert.publish import main

    assert main(["--out", str(tmp_path / "hub")]) == 2
    assert "give --model" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "none"), "--out", str(tmp_path / "hub")]) == 2
    assert f"--model {tmp_path / 'none'}: no such folder" in capsys.readouterr().err


def test_eval_checks_exit_2(tmp_path, capsys):
    from eval_suite.__main__ import main

    assert main(["run", "--model", str(tmp_path), "--tasks", "bogus"]) == 2
    assert "unknown tasks ['bogus']" in capsys.readouterr().err
    assert main(["recipe", "--run", "no-name", "--out", str(tmp_path / "o")]) == 2  # the module's own SystemExit
    assert "expected NAME=RUN_FOLDER" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["describe", "--tasks", "bogus"])
    assert exc.value.code == 2 and "unknown tasks ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# One flag vocabulary: `--model` for what a command reads, `--out` for what it writes; old spellings still work
# ---------------------------------------------------------------------------------------------------------------
def test_publish_takes_model_and_still_accepts_checkpoint():
    from modeling_shopperbert.publish import build_parser

    parser = build_parser()
    assert parser.parse_args(["--model", "runs/a", "--out", "o"]).model == "runs/a"
    assert parser.parse_args(["--checkpoint", "runs/a", "--out", "o"]).model == "runs/a"  # the old spelling
    assert parser.parse_args(["--out", "o"]).model is None
    assert "--checkpoint" not in parser.format_help().split("options:")[1]  # a hidden alias


@pytest.mark.parametrize("module", ["data_prep.cli", "modeling_shopperbert.encode", "modeling_shopperbert.publish",
                                   "eval_suite.__main__"])
def test_every_command_names_its_output_out(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    subparsers = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    parsers = [p for s in subparsers for p in s.choices.values() if p.add_help] if subparsers else [parser]
    for each in parsers:
        options = {s for a in each._actions for s in a.option_strings}
        assert "--output" not in options
        if each.prog.split()[-1] != "info":  # `info PATH` writes nothing
            assert "--out" in options, each.prog
