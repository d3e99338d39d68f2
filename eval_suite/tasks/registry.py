"""The registry of tasks, collected from the task files: every module of this package that defines a ``SPEC``
(a ``TaskSpec``) is a task, in the order of its ``number``. Adding a task is adding one file."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Iterable

from .tables import load_raw_tables
from .task import Task, TaskSpec


def _discover() -> dict[str, TaskSpec]:
    """name -> spec of every task file, ordered by number; a file whose spec is named otherwise than the file, or
    two tasks with one number, raise at import."""
    specs = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__package__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, TaskSpec):
            if spec.name != info.name:
                raise ImportError(f"{module.__file__}: SPEC.name {spec.name!r} must be the file's name {info.name!r}")
            specs.append(spec)
    numbers = [s.number for s in specs]
    if len(set(numbers)) != len(numbers):
        raise ImportError(f"task numbers repeat: {sorted(numbers)}")
    return {s.name: s for s in sorted(specs, key=lambda s: s.number)}


#: name -> TaskSpec, in the paper's order.
SPECS = _discover()
TASK_NAMES = tuple(SPECS)
#: The paper's task each one stands in for.
PAPER_ANALOGUES = {name: spec.paper_analogue for name, spec in SPECS.items()}
TASK_KINDS = {name: spec.kind for name, spec in SPECS.items()}
DEFINITIONS = {name: spec.definition for name, spec in SPECS.items()}
#: Which raw tables each builder reads.
TASK_TABLES = {name: spec.tables for name, spec in SPECS.items()}
BUILDERS = {name: spec.build for name, spec in SPECS.items()}


def check_name(name: str) -> str:
    if name not in SPECS:
        raise ValueError(f"unknown task {name!r}; choose one of {TASK_NAMES}")
    return name


def task_spec(name: str) -> TaskSpec:
    """The spec of a task (ValueError naming the choices for an unknown name)."""
    return SPECS[check_name(name)]


def tables_for(names: Iterable[str]) -> tuple[str, ...]:
    """The raw tables needed to build the given tasks."""
    need: list[str] = []
    for n in names:
        for t in TASK_TABLES[check_name(n)]:
            if t not in need:
                need.append(t)
    return tuple(need)


def build_task(name: str, tables: dict | None = None) -> Task:
    """Build one task from raw tables (``load_raw_tables()`` output or hand-made tables with the same columns).
    With ``tables=None`` the needed Complete Journey tables are loaded."""
    spec = task_spec(name)
    if tables is None:
        tables = load_raw_tables(tables=spec.tables)
    missing = [t for t in spec.tables if t not in tables]
    if missing:
        raise KeyError(f"task {name!r} needs tables {missing}")
    return spec.build(tables)


def build_all(tables: dict | None = None, names: Iterable[str] = TASK_NAMES) -> dict[str, Task]:
    names = [check_name(n) for n in names]
    if tables is None:
        tables = load_raw_tables(tables=tables_for(names))
    return {n: build_task(n, tables) for n in names}
