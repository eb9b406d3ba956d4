"""The demo reranker's shipped weights (models/reranker-distilled) are the ones the committed
recipe makes: the file's sha256 is the manifest's, and the manifest's recipe is the script's
(its training code and parameters). The MiniLM part of the recipe hash needs the server venv:
``scripts/distill_reranker.py`` checks it at set-up, and trains again when anything differs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "reranker-distilled"


@pytest.fixture(scope="module")
def manifest() -> dict:  # type: ignore[type-arg]
    return json.loads((SHIPPED / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    environ = dict(os.environ)  # the script sets HF_HUB_OFFLINE & co. when imported
    spec = importlib.util.spec_from_file_location(
        "distill_reranker", ROOT / "scripts" / "distill_reranker.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while the tests run: inspect.getsource finds a class through sys.modules.
    sys.modules["distill_reranker"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        os.environ.clear()
        os.environ.update(environ)
        sys.modules.pop("distill_reranker", None)


def test_shipped_delta_matches_its_manifest(manifest: dict) -> None:  # type: ignore[type-arg]
    digest = hashlib.sha256((SHIPPED / "delta.safetensors").read_bytes()).hexdigest()
    assert digest == manifest["files"]["delta.safetensors"]


def test_manifest_recipe_is_the_scripts(manifest: dict, script: ModuleType) -> None:  # type: ignore[type-arg]
    assert manifest["recipe"]["recipe"] == script.RECIPE
    code = hashlib.sha256(script.training_code().encode()).hexdigest()
    assert manifest["recipe"]["code_sha256"] == code, (
        "scripts/distill_reranker.py's training code changed since the shipped weights were "
        "made: run `<server-venv>/bin/python scripts/distill_reranker.py --rebuild`"
    )
    assert manifest["recipe_hash"] == script.recipe_hash(manifest["recipe"])
