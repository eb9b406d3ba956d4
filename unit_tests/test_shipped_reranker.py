"""The demo reranker's manifest (models/reranker-hybrid/manifest.json) is the committed recipe's:
its recipe is ``scripts/build_reranker.py``'s and its modeling file is the one in the repository.
The MiniLM part needs the server venv: the script checks every built file against the manifest
at set-up, and fails when one differs."""

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
SHIPPED = ROOT / "models" / "reranker-hybrid"


@pytest.fixture(scope="module")
def manifest() -> dict:  # type: ignore[type-arg]
    return json.loads((SHIPPED / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    environ = dict(os.environ)  # the script sets HF_HUB_OFFLINE & co. when imported
    spec = importlib.util.spec_from_file_location(
        "build_reranker", ROOT / "scripts" / "build_reranker.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_reranker"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        os.environ.clear()
        os.environ.update(environ)
        sys.modules.pop("build_reranker", None)


def test_manifest_recipe_is_the_scripts(manifest: dict, script: ModuleType) -> None:  # type: ignore[type-arg]
    assert manifest["recipe"] == script.RECIPE, (
        "scripts/build_reranker.py's RECIPE changed: run "
        "`<server-venv>/bin/python scripts/build_reranker.py --write-manifest`"
    )


def test_manifest_holds_the_modeling_code(manifest: dict) -> None:  # type: ignore[type-arg]
    code = SHIPPED / "modeling_hybrid_reranker.py"
    assert manifest["files"][code.name] == hashlib.sha256(code.read_bytes()).hexdigest()
    assert set(manifest["files"]) == {
        "config.json",
        "model.safetensors",
        code.name,
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    }
