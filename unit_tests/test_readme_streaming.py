"""The README's streaming and numpy snippets run as written (against the fake server)."""

from __future__ import annotations

import contextlib
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infinity_rag import EmbeddingArrayResult, EmbeddingResult
from unit_tests.conftest import make_client
from unit_tests.fake_infinity import FakeInfinity, vector_for

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets(heading: str) -> list[str]:
    """The python code blocks of the README section that starts with ``heading``."""
    text = README.read_text()
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


class Store:
    def __init__(self) -> None:
        self.batches: list[Any] = []

    def add(self, embeddings: Any) -> None:
        self.batches.append(embeddings)


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines = [f"line {i}" for i in range(600)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    return lines


async def test_streaming_snippets(fake: FakeInfinity, corpus: list[str]) -> None:
    sync_code, async_code = snippets("### Streaming a corpus larger than memory")
    with make_client(fake) as client:
        namespace: dict[str, Any] = {"client": client, "store": Store()}
        exec(sync_code, namespace)
        batches = namespace["store"].batches
        assert [len(b) for b in batches] == [256, 256, 88]
        assert [v for b in batches for v in b] == [vector_for(t) for t in corpus]

        namespace["store"] = Store()
        namespace["contextlib"] = contextlib
        exec("async def _main():\n" + textwrap.indent(async_code, "    "), namespace)
        await namespace["_main"]()
        arrays = namespace["store"].batches
        assert all(isinstance(a, np.ndarray) for a in arrays)
        np.testing.assert_array_equal(
            np.vstack(arrays), np.array([vector_for(t) for t in corpus], np.float32)
        )


def test_numpy_snippet(fake: FakeInfinity) -> None:
    (code,) = snippets("### numpy results")
    with make_client(fake) as client:
        namespace: dict[str, Any] = {"client": client}
        exec(code, namespace)
    assert isinstance(namespace["result"], EmbeddingArrayResult)
    assert not isinstance(namespace["result"], EmbeddingResult)
    assert namespace["matrix"].shape == (2, fake.dim)
    assert namespace["matrix"].dtype == np.float32
