"""The helpers the API reference build uses (docs/griffe_docstrings.py, docs/hooks.py).

``mkdocs build --strict`` in the test command builds the real site; these pin the conversions
on small inputs, so that a regression says which convention broke.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docstrings() -> ModuleType:
    return load("griffe_docstrings")


def test_sphinx_roles_become_cross_references(docstrings: ModuleType) -> None:
    text = "Async :meth:`embed`; see :class:`~infinity_rag.InfinityClient` and :mod:`a.b`."
    assert docstrings.convert(text) == (
        "Async [`embed`][embed]; see [`InfinityClient`][infinity_rag.InfinityClient] and "
        "[`a.b`][a.b]."
    )


def test_roles_naming_private_objects_become_code(docstrings: ModuleType) -> None:
    text = "Planned in :mod:`infinity_rag._protocol`, sent by :meth:`_call`."
    assert docstrings.convert(text) == "Planned in `infinity_rag._protocol`, sent by `_call`."


def test_langchain_key_init_args_become_a_list(docstrings: ModuleType) -> None:
    text = (
        "Summary.\n\n"
        "Key init args — client params:\n"
        "    base_url: str\n"
        "        The server's URL.\n"
        "    client: InfinityClient | None\n"
        "        A client to share\n"
        "        with other classes.\n\n"
        "Setup:\n"
        "    ```bash\n"
        "    pip install x\n"
        "    ```\n"
    )
    assert docstrings.convert(text).split("\n") == [
        "Summary.",
        "",
        '!!! note "Key init args — client params"',
        "    - `base_url`: `str` — The server's URL.",
        "    - `client`: `InfinityClient | None` — A client to share with other classes.",
        "",
        "Setup:",  # Griffe renders this one as an admonition itself
        "    ```bash",
        "    pip install x",
        "    ```",
        "",
    ]


def test_one_line_key_init_args_and_titles_griffe_would_not_read(
    docstrings: ModuleType,
) -> None:
    text = (
        "Key init args:\n"
        "    model: the served model.\n"
        "    base_url / api_key: the connection,\n"
        "        from the environment by default.\n"
        "Embed images (CLIP-style models):\n"
        "    ```python\n"
        "    clip.embed_image([...])\n"
        "    ```"
    )
    assert docstrings.convert(text).split("\n") == [
        '!!! note "Key init args"',
        "    - `model`: the served model.",
        "    - `base_url` / `api_key`: the connection, from the environment by default.",
        "",
        '!!! note "Embed images (CLIP-style models)"',
        "    ```python",
        "    clip.embed_image([...])",
        "    ```",
        "",
    ]


def test_google_sections_are_left_alone(docstrings: ModuleType) -> None:
    text = "Summary.\n\nArgs:\n    texts: what to embed.\n\nReturns:\n    The vectors."
    assert docstrings.convert(text) == text


def test_public_names_are_read_from_the_source() -> None:
    hooks = load("hooks")
    import infinity_rag
    import infinity_rag.errors
    import infinity_rag.types

    assert hooks.public_names("infinity_rag") == [
        n for n in infinity_rag.__all__ if n != "__version__"
    ]
    assert hooks.public_names("infinity_rag.types") == infinity_rag.types.__all__
    assert hooks.public_names("infinity_rag.errors") == infinity_rag.errors.__all__
