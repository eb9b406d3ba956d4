"""The notebooks' sources and their committed runs (scripts/build_notebooks.py), without a
kernel: each ``.ipynb`` holds the cells of its ``.py``, its outputs are clean, and the output
check catches what must never be committed. (Running them: ``build_notebooks.py --check``.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def tools() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "_build_notebooks", ROOT / "scripts" / "build_notebooks.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_there_are_notebooks() -> None:
    assert len(SOURCES) >= 3, SOURCES


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_committed_notebook_is_its_source_run(tools: ModuleType, source: Path) -> None:
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert tools.inputs(committed) == tools.inputs(tools.read_source(source))
    assert tools.output_problems(committed) == []
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "not executed"
    assert committed.metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_a_notebook_imports_no_repository_plumbing(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    assert "sys.path" not in text
    assert not re.search(r"^\s*(from|import) (local_infinity|local_postgres|rag_demo)", text, re.M)
    first = text.split("# %%")[1]
    assert first.startswith(" [markdown]\n# # "), "the first cell is the notebook's title"


def test_the_output_check_catches_errors_keys_and_paths(
    tools: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFINITY_API_KEY", "sk-very-secret")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x",
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="key sk-very-secret\n"),
                nbformat.v4.new_output(
                    "display_data", data={"text/html": f"<p>{tools.DEFAULT_API_KEY}</p>"}
                ),
            ],
        ),
        nbformat.v4.new_markdown_cell("sk-very-secret in prose is the author's business"),
        nbformat.v4.new_code_cell(
            "y",
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text=f"{ROOT}/notebooks/x\n"),
                nbformat.v4.new_output("error", ename="KeyError", evalue="k", traceback=[]),
            ],
        ),
    ]
    assert tools.output_problems(nb) == [
        "cell 0: output contains INFINITY_API_KEY",
        "cell 0: output contains the local server's API key",
        "cell 2: error KeyError",
        f"cell 2: output contains a local path ({ROOT})",
    ]


def test_progress_bars_keep_their_final_state(tools: ModuleType) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x",
            outputs=[
                nbformat.v4.new_output("stream", name="stderr", text="  0%|\r 50%|"),
                nbformat.v4.new_output("stream", name="stderr", text="\r100%|\n"),
                nbformat.v4.new_output("stream", name="stdout", text="done\n"),
            ],
        )
    ]
    tools.tidy_outputs(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [
        ("stderr", "100%|\n"),
        ("stdout", "done\n"),
    ]
