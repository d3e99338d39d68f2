"""The one-way layout: no module imports from a floor above its own, and the light imports stay light.

Floors, bottom to top (a module may import its own floor and the ones below):

    0 core         the model package's remote code and data contract (torch/transformers/stdlib only)
    1 data         data_prep
    2 encoding     the collator, `UserEncoder`, the encode CLI
    3 train/eval   train.py, pretraining, eval_suite
    4 publishing   the `publishing` package (the one card generator, the Hub folder, the push), its entry modules
                   modeling_shopperbert.publish and eval_suite.model_card, eval_suite's release record, and eval_suite's
                   command line (it dispatches to both, by `importlib`, which no `ast` walk sees)

Every `import` counts, at module level or inside a function: an import of `a.b.c` imports the packages `a` and
`a.b` (their `__init__`s) too. The lazy package `__init__`s (`modeling_shopperbert`, `data_prep`) import nothing
when they load; their PEP 562 table (`_WHERE`: name -> submodule) decides what a `from package import name` really
imports, so that import counts as one of the submodule the name comes from. The `__init__`s themselves therefore sit
at the floor of what they import eagerly: core for `modeling_shopperbert` (its `register_auto_classes`, reached
through the table, lives in `modeling_shopperbert.auto` on the encoding floor), data for `data_prep`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE, DATA, ENCODING, TRAIN_EVAL, PUBLISHING = range(5)
FLOOR_NAMES = ("core", "data", "encoding", "train/eval", "publishing")
# Exact module names first, then package prefixes ("pkg.*" = every submodule).
FLOORS = {
    "modeling_shopperbert": CORE,
    **{f"modeling_shopperbert.{name}": CORE for name in (
        "contract", "configuration_shopperbert", "configuration_shopperbert_heads", "modeling_shopperbert",
        "modeling_shopperbert_layers", "modeling_shopperbert_heads", "mpp_rules", "row_encoding")},
    "data_prep": DATA,
    "data_prep.*": DATA,
    **{f"modeling_shopperbert.{name}": ENCODING for name in ("collator", "encoder", "encode", "encode_shards",
                                                             "processing_shopperbert",
                                                             "pipeline_shopperbert", "auto")},
    "train": TRAIN_EVAL,
    "pretraining": TRAIN_EVAL,
    "pretraining.*": TRAIN_EVAL,
    "eval_suite": TRAIN_EVAL,
    "eval_suite.*": TRAIN_EVAL,
    "modeling_shopperbert.publish": PUBLISHING,
    "eval_suite.model_card": PUBLISHING,
    "eval_suite.release": PUBLISHING,
    "eval_suite.__main__": PUBLISHING,
    "publishing": PUBLISHING,
    "publishing.*": PUBLISHING,
}
SOURCES = ("modeling_shopperbert", "data_prep", "pretraining", "eval_suite", "publishing", "train.py")
ROOTS = ("modeling_shopperbert", "data_prep", "pretraining", "eval_suite", "publishing", "train")


def floor_of(module: str, floors: dict) -> int | None:
    if module in floors:
        return floors[module]
    parts = module.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n]) + ".*"
        if prefix in floors:
            return floors[prefix]
    return None


def module_files(root: Path, sources) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the given folders/files of `root`."""
    files = {}
    for source in sources:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            parts = list(file.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = file
    return files


def imported_modules(module: str, file: Path, known: set, lazy: dict, roots) -> set[str]:
    """The modules of ours that `file` imports anywhere (module or function level), packages above them included.
    `lazy` maps a lazy package to its table name -> submodule."""
    is_package = file.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()

    def add(name: str) -> None:
        parts = name.split(".")
        if parts[0] not in roots:
            return
        found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))

    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            add(target)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:  # `from package import submodule`
                    add(f"{target}.{alias.name}")
                elif alias.name in lazy.get(target, {}):  # a name a lazy __init__ imports on first use
                    add(f"{target}.{lazy[target][alias.name]}")
    found.discard(module)
    return found


def upward_imports(root: Path, sources, floors: dict, lazy: dict, roots) -> tuple[list[str], list[str]]:
    """(upward imports as 'a (floor) imports b (floor)', modules missing from the floor map)."""
    files = module_files(root, sources)
    upward, unmapped = [], sorted(m for m in files if floor_of(m, floors) is None)
    for module, file in files.items():
        own = floor_of(module, floors)
        for target in sorted(imported_modules(module, file, set(files), lazy, roots)):
            floor = floor_of(target, floors)
            if floor is None:
                unmapped.append(f"{target} (imported by {module})")
            elif own is not None and floor > own:
                upward.append(f"{module} ({FLOOR_NAMES[own]}) imports {target} ({FLOOR_NAMES[floor]})")
    return upward, unmapped


def lazy_tables() -> dict:
    import data_prep
    import modeling_shopperbert

    return {"modeling_shopperbert": modeling_shopperbert._WHERE, "data_prep": data_prep._WHERE}


# ---------------------------------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------------------------------
def test_no_module_imports_from_a_floor_above_it():
    upward, unmapped = upward_imports(ROOT, SOURCES, FLOORS, lazy_tables(), ROOTS)
    assert not unmapped, f"modules without a floor (add them to FLOORS): {unmapped}"
    assert not upward, "upward imports:\n  " + "\n  ".join(upward)


def test_every_lazy_name_resolves_to_a_module_that_defines_it():
    for package, table in lazy_tables().items():
        for name, module in table.items():
            path = ROOT / package / f"{module}.py"
            assert path.is_file(), f"{package}._WHERE[{name!r}] names {module}, which is not a module"
            assert name in path.read_text(), f"{package}/{module}.py does not define {name}"


def test_importing_the_packages_and_the_contract_loads_neither_torch_nor_transformers():
    code = ("import sys, data_prep, modeling_shopperbert, modeling_shopperbert.contract, data_prep.cli, "
            "modeling_shopperbert.publish, modeling_shopperbert.encode, eval_suite.__main__\n"
            "heavy = sorted({'torch', 'transformers', 'datasets', 'pandas'} & set(sys.modules))\n"
            "print(heavy)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_model_names_import_the_model_and_register_the_auto_classes_once():
    code = textwrap.dedent("""
        import sys
        import modeling_shopperbert as M
        assert M.MPP_HEADS[0] == "category_1" and "transformers" not in sys.modules  # the contract is light
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        assert "shopperbert" not in CONFIG_MAPPING
        from modeling_shopperbert import ShopperBertConfig
        assert "shopperbert" in CONFIG_MAPPING and "shopperbert-user-mlp" in CONFIG_MAPPING
        M.register_auto_classes()  # idempotent
        from transformers import AutoConfig
        assert type(AutoConfig.for_model("shopperbert", hidden_size=32, num_attention_heads=4)) is ShopperBertConfig
        try:
            M.NoSuchName
        except AttributeError as err:
            assert "NoSuchName" in str(err)
        else:
            raise SystemExit("no AttributeError")
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# The checker catches what it should (so that the test above can fail)
# ---------------------------------------------------------------------------------------------------------------
FAKE_FLOORS = {"core": CORE, "core.*": CORE, "core.encoder": ENCODING, "data": DATA, "data.*": DATA}


def fake_tree(tmp_path: Path, files: dict) -> Path:
    for name, text in {"core/__init__.py": "", "core/contract.py": "X = 1\n", "core/encoder.py": "E = 1\n",
                       "data/__init__.py": "", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def check_fake(tmp_path, files, lazy=None):
    root = fake_tree(tmp_path, files)
    return upward_imports(root, ("core", "data"), FAKE_FLOORS, lazy or {}, ("core", "data"))


def test_checker_allows_downward_imports(tmp_path):
    files = {"data/build.py": "from core.contract import X\nimport core\n", "core/encoder.py": "from data import build\n"}
    assert check_fake(tmp_path, files) == ([], [])


@pytest.mark.parametrize("text", [
    "import data.build\n",
    "from data import build\n",
    "from data.build import B\n",
    "def later():\n    from data.build import B\n",  # function-level
    "import data\n",  # the package's __init__
])
def test_checker_catches_an_upward_import(tmp_path, text):
    upward, unmapped = check_fake(tmp_path, {"data/build.py": "B = 1\n", "core/model.py": text})
    assert upward and all(line.startswith("core.model (core) imports data") for line in upward), upward
    assert unmapped == []


def test_checker_resolves_relative_imports(tmp_path):
    upward, _ = check_fake(tmp_path, {"core/model.py": "from .encoder import E\n"})
    assert upward == ["core.model (core) imports core.encoder (encoding)"]
    upward, _ = check_fake(tmp_path, {"core/model.py": "from . import encoder\n"})
    assert upward == ["core.model (core) imports core.encoder (encoding)"]


def test_checker_follows_a_lazy_table(tmp_path):
    upward, _ = check_fake(tmp_path, {"data/build.py": "from core import E\n"}, lazy={"core": {"E": "encoder"}})
    assert upward == ["data.build (data) imports core.encoder (encoding)"]


def test_checker_reports_modules_without_a_floor(tmp_path):
    root = fake_tree(tmp_path, {"data/build.py": "import extra.thing\n", "extra/__init__.py": "",
                                "extra/thing.py": ""})
    upward, unmapped = upward_imports(root, ("core", "data", "extra"), FAKE_FLOORS, {}, ("core", "data", "extra"))
    assert "extra" in unmapped and "extra.thing" in unmapped and upward == []
