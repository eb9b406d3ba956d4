"""The README's Python examples run as written against a real server.

Only the model names (and the URL and key) are swapped for the test server's: the README
names real Hugging Face models, the test server serves offline stand-ins under other names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from integration_tests.conftest import ServerInfo

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(server: ServerInfo) -> list[str]:
    text = README.read_text(encoding="utf-8")
    swaps = {
        '"BAAI/bge-small-en-v1.5"': repr(server.embed_model),
        '"mixedbread-ai/mxbai-rerank-xsmall-v1"': repr(server.rerank_model),
        '"SamLowe/roberta-base-go_emotions"': repr(server.classify_model),
        'base_url="http://localhost:7997", api_key="..."': (
            f"base_url={server.url!r}, api_key={server.api_key!r}"
        ),
    }
    for old, new in swaps.items():
        assert old in text, f"the README's examples no longer contain {old}"
        text = text.replace(old, new)
    # The first example of each of the three sections (the others are run by their own tests).
    blocks = []
    for heading in ("\n## The client\n", "\n## LangChain\n", "\n## LlamaIndex\n"):
        section = text.split(heading, 1)[1]
        blocks.append(re.findall(r"```python\n(.*?)```", section, re.S)[0])
    return blocks


def test_readme_examples_run(infinity_server: ServerInfo) -> None:
    client_block, langchain_block, llama_index_block = readme_blocks(infinity_server)
    namespace: dict[str, Any] = {}
    exec(compile(client_block, f"{README}: the client", "exec"), namespace)
    try:
        assert len(namespace["vectors"]) == 2
        assert len(namespace["vectors"][0]) == infinity_server.dim
        assert len(namespace["ranked"]) == 2
        assert len(namespace["labels"]) == 1

        exec(compile(langchain_block, f"{README}: LangChain", "exec"), namespace)
        best = namespace["best"]
        assert sorted(d.page_content for d in best) == ["first passage", "second passage"]
        assert best[0].metadata["relevance_score"] >= best[1].metadata["relevance_score"]

        exec(compile(llama_index_block, f"{README}: LlamaIndex", "exec"), namespace)
        best = namespace["best"]
        assert sorted(n.node.get_content() for n in best) == ["first passage", "second passage"]
        assert best[0].score >= best[1].score
    finally:
        if "client" in namespace:
            namespace["client"].close()
