"""Notebook hygiene: thin notebooks (no definitions) stored with their outputs."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
DEFINITION = re.compile(r"^\s*(async\s+def|def|class)\s", re.MULTILINE)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_function_or_class_definitions(path):
    offenders = [
        i for i, cell in enumerate(_code_cells(path)) if DEFINITION.search("".join(cell["source"]))
    ]
    assert not offenders, f"{path.name}: code cells {offenders} define a function or class"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed(path):
    cells = _code_cells(path)
    unexecuted = [i for i, cell in enumerate(cells) if cell.get("execution_count") is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were never executed"
    assert any(cell.get("outputs") for cell in cells), f"{path.name} has no outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_error_is_stored(path):
    errors = [
        i
        for i, cell in enumerate(_code_cells(path))
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: code cells {errors} stored an error"
