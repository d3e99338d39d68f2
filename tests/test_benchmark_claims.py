"""README's benchmark figures are the committed results: the scale table and the projection to the paper's 12.7M users
are what `benchmarks/scale_table.py` makes of benchmarks/results/*.json."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _scale_table_module():
    spec = importlib.util.spec_from_file_location("scale_table", ROOT / "benchmarks" / "scale_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_scale_table_is_made_from_the_committed_results():
    table = _scale_table_module().scale_table()
    assert table.count("\n") >= 6  # header, rule, at least five steps
    readme = "\n".join(line.strip() for line in (ROOT / "README.md").read_text().splitlines())  # (in a list item)
    assert table in readme


def test_readme_projection_is_computed_from_the_committed_results():
    projection = _scale_table_module().projection()
    assert "12.7M users" in projection and "GiB" in projection
    readme = " ".join((ROOT / "README.md").read_text().split())  # a wrapped paragraph in a list item
    assert " ".join(projection.split()) in readme
