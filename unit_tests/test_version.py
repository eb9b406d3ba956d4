"""The version is written once (``src/infinity_rag/_version.py``) and the metadata agrees."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import infinity_rag


def test_version_is_the_installed_distributions() -> None:
    # The metadata of whatever is installed: the editable install in the dev venv, the wheel
    # in the venvs scripts/check_dist.py builds (it runs this test there too).
    assert infinity_rag.__version__ == version("infinity-rag")


def test_version_is_a_release_number() -> None:
    # PEP 440 public version: N(.N)*[{a|b|rc}N][.postN][.devN]
    pattern = r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?"
    assert re.fullmatch(pattern, infinity_rag.__version__), infinity_rag.__version__


def test_changelog_has_a_section_for_this_version() -> None:
    changelog = Path(__file__).resolve().parents[1] / "CHANGELOG.md"
    lines = changelog.read_text(encoding="utf-8").splitlines()
    headings = [line for line in lines if line.startswith("## [")]
    assert headings[0] == "## [Unreleased]"
    assert any(line.startswith(f"## [{infinity_rag.__version__}] - ") for line in headings)
