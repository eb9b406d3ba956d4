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
    # Wherever the clone lies (under the home or the temporary folder, or neither), the
    # printed path is one problem, named by the most specific forbidden folder holding it.
    printed = f"{ROOT}/notebooks/x"
    holder = max((f for f in tools.local_folders() if printed.startswith(f)), key=len)
    assert tools.output_problems(nb) == [
        "cell 0: output contains INFINITY_API_KEY",
        "cell 0: output contains the local server's API key",
        "cell 2: error KeyError",
        f"cell 2: output contains a local path ({holder[:-1]})",
    ]


def _tools_in_a_copy(root: Path) -> ModuleType:
    """build_notebooks.py loaded from a copy of it in ``root/scripts`` (its REPO is ``root``)."""
    (root / "scripts").mkdir(parents=True)
    copy = root / "scripts" / "build_notebooks.py"
    copy.write_text((ROOT / "scripts" / "build_notebooks.py").read_text(encoding="utf-8"))
    spec = importlib.util.spec_from_file_location("_build_notebooks_copy", copy)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["under home", "under tmp", "home under tmp", "apart"])
def test_the_path_check_holds_wherever_the_clone_lies(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = tmp_path.resolve()
    tmp = tmp_path / "tmp"
    home = {"home under tmp": tmp / "home"}.get(layout, tmp_path / "home")
    repo = {
        "under home": home / "infinity-rag",
        "under tmp": tmp / "infinity-rag",
        "home under tmp": home / "src" / "infinity-rag",
        "apart": tmp_path / "elsewhere" / "infinity-rag",
    }[layout]
    for folder in (tmp, home):
        folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.delenv("INFINITY_API_KEY", raising=False)
    tools = _tools_in_a_copy(repo)
    assert tools.local_folders()[0] == f"{repo}/"  # the most specific of the three

    def problems(text: str) -> list[str]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [
            nbformat.v4.new_code_cell(
                "x", outputs=[nbformat.v4.new_output("stream", name="stdout", text=text)]
            )
        ]
        return tools.output_problems(nb)

    def one(folder: Path) -> list[str]:
        return [f"cell 0: output contains a local path ({folder})"]

    assert problems(f"{repo}/notebooks/data.csv\n") == one(repo)
    assert problems(f"wrote {home}/.cache/x and read it\n") == one(home)
    assert problems(f"{tmp}/tmpabc/file\n") == one(tmp)
    # A folder's name inside another path is not a second place.
    assert problems(f"{home}/work/tmp/x\n") == one(home)
    # Two paths, two places: each named by its own folder.
    both = problems(f"{repo}/a {tmp}/b\n")
    assert both == sorted({*one(repo), *one(tmp)})
    assert problems("/usr/lib/python3/x and nothing local\n") == []


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
