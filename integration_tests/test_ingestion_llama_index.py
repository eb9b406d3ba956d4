"""Re-runnable ingestion with LlamaIndex's ``IngestionPipeline`` on a real PostgreSQL.

``examples/ingest_llama_index.py``'s pipeline (docstore, pgvector store and ``IngestionCache``,
all three in PostgreSQL) embeds with ``InfinityEmbedding`` through a FaultProxy that passes
every request to the real Infinity server and keeps its body: the texts counted are the texts
the server received. Each run builds a new pipeline on the same tables, as a new process would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.ingestion import IngestionPipeline, run_transformations

from infinity_rag import InfinityClient
from infinity_rag.llama_index import InfinityEmbedding
from infinity_rag.testing import LocalPostgres
from integration_tests.conftest import ServerInfo
from integration_tests.fault_proxy import FaultProxy
from integration_tests.postgres_helpers import (
    count_rows,
    drop_tables,
    embedded_texts,
    max_abs_diff,
    unique_name,
    vectors_by_text,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from ingest_common import document_text  # noqa: E402
from ingest_llama_index import (  # noqa: E402
    build_pipeline,
    corpus,
    forget_unrecorded,
    postgres_tables,
)

DOCS = 500
FIRST_CHANGES = [n * DOCS // 10 + 3 for n in range(10)]
SECOND_CHANGES = [n * DOCS // 10 + 31 for n in range(10)]


@pytest.fixture
def proxy(infinity_server: ServerInfo) -> Iterator[FaultProxy]:
    with FaultProxy(infinity_server.url) as proxy:
        yield proxy


@pytest.fixture
def names(postgres: LocalPostgres) -> Iterator[list[str]]:
    """Pipeline names; their tables are dropped at the end."""
    used: list[str] = []
    yield used
    for name in used:
        drop_tables(postgres.uri, *postgres_tables(name).values())


def _reference(
    client: InfinityClient, server: ServerInfo, texts: list[str]
) -> dict[str, list[float]]:
    """Each text's vector from the server, asked directly (not through the proxy)."""
    return dict(zip(texts, client.embed(texts, model=server.embed_model), strict=True))


def _check_table(uri: str, name: str, reference: dict[str, list[float]], texts: list[str]) -> None:
    """One row per text, none else, each with its reference vector."""
    table = postgres_tables(name)["vectors"]
    stored, copies = vectors_by_text(uri, table, text_column="text", vector_column="embedding")
    assert count_rows(uri, table) == len(texts)
    assert copies == Counter(texts)
    assert max(max_abs_diff(stored[text], reference[text]) for text in texts) < 1e-5


async def test_reruns_embed_only_new_and_changed_documents(
    postgres: LocalPostgres,
    proxy: FaultProxy,
    infinity_server: ServerInfo,
    client: InfinityClient,
    names: list[str],
) -> None:
    first_changes = set(FIRST_CHANGES)
    both_changes = first_changes | set(SECOND_CHANGES)
    texts = [document_text(n) for n in range(DOCS)]
    changed = {n: document_text(n, revised=True) for n in sorted(both_changes)}
    reference = _reference(client, infinity_server, [*texts, *changed.values()])
    embed_model = InfinityEmbedding(
        model_name=infinity_server.embed_model, base_url=proxy.url, api_key=infinity_server.api_key
    )
    name = unique_name("li_ingest")
    names.append(name)

    def pipeline(pipeline_name: str = name) -> IngestionPipeline:
        return build_pipeline(postgres.uri, pipeline_name, embed_model, infinity_server.dim)

    # 1. The first run embeds every document once.
    nodes = pipeline().run(documents=corpus(DOCS))
    assert len(nodes) == DOCS
    assert Counter(embedded_texts(proxy)) == Counter(texts)
    _check_table(postgres.uri, name, reference, texts)

    # 2. The same documents again (async this time): nothing embedded, nothing written.
    proxy.reset()
    assert await pipeline().arun(documents=corpus(DOCS)) == []
    assert embedded_texts(proxy) == []
    _check_table(postgres.uri, name, reference, texts)

    # 3. Ten documents changed: those ten embedded, their old nodes replaced.
    proxy.reset()
    nodes = pipeline().run(documents=corpus(DOCS, first_changes))
    assert sorted(n.get_content() for n in nodes) == sorted(changed[n] for n in first_changes)
    assert sorted(embedded_texts(proxy)) == sorted(changed[n] for n in first_changes)
    current = [changed[n] if n in first_changes else t for n, t in enumerate(texts)]
    _check_table(postgres.uri, name, reference, current)

    # 4. Ten more changed, with arun: the same.
    proxy.reset()
    nodes = await pipeline().arun(documents=corpus(DOCS, both_changes))
    assert sorted(embedded_texts(proxy)) == sorted(changed[n] for n in SECOND_CHANGES)
    assert len(nodes) == len(SECOND_CHANGES)
    current = [changed.get(n, t) for n, t in enumerate(texts)]
    _check_table(postgres.uri, name, reference, current)

    # 5. The cache: the first run's documents through a pipeline with a new docstore and a new
    # vector store, but the same cache, come out of the cache: nothing embedded.
    proxy.reset()
    rebuilt = unique_name("li_rebuilt")
    names.append(rebuilt)
    fresh = pipeline(rebuilt)
    fresh.cache = pipeline().cache
    nodes = fresh.run(documents=corpus(DOCS))
    assert len(nodes) == DOCS
    assert embedded_texts(proxy) == []
    _check_table(postgres.uri, rebuilt, reference, texts)


def test_a_run_killed_between_writing_and_recording(
    postgres: LocalPostgres, infinity_server: ServerInfo, client: InfinityClient, names: list[str]
) -> None:
    """A run adds its nodes to the vector store, then records the documents in the docstore.
    Killed in between, it leaves nodes that the next run adds again, unless
    ``forget_unrecorded`` deletes them first."""
    docs = corpus(60)
    texts = [d.text for d in docs]
    reference = _reference(client, infinity_server, texts)
    embed_model = InfinityEmbedding(model_name=infinity_server.embed_model, client=client)
    rows = {}
    for guarded in (False, True):
        name = unique_name("li_crash")
        names.append(name)
        crashed = build_pipeline(postgres.uri, name, embed_model, infinity_server.dim)
        # What the killed run left: its nodes written, its documents not recorded.
        assert crashed.vector_store is not None
        crashed.vector_store.add(run_transformations(docs, crashed.transformations))
        rerun = build_pipeline(postgres.uri, name, embed_model, infinity_server.dim)
        if guarded:
            assert forget_unrecorded(rerun, docs) == len(docs)
        rerun.run(documents=docs)
        rows[guarded] = count_rows(postgres.uri, postgres_tables(name)["vectors"])
        if guarded:
            _check_table(postgres.uri, name, reference, texts)
            assert forget_unrecorded(rerun, docs) == 0  # all recorded now: nothing deleted
            _check_table(postgres.uri, name, reference, texts)

    assert rows == {False: 2 * len(docs), True: len(docs)}


@pytest.mark.slow
def test_one_pipeline_per_process_over_shards(
    postgres: LocalPostgres,
    proxy: FaultProxy,
    infinity_server: ServerInfo,
    client: InfinityClient,
    names: list[str],
) -> None:
    """The way around ``run(num_workers=N)``: N processes, each with its own pipeline over its
    share of the documents, on the same tables, at the same time."""
    docs = 400
    texts = [document_text(n) for n in range(docs)]
    reference = _reference(client, infinity_server, texts)
    name = unique_name("li_shards")
    names.append(name)
    command = [
        sys.executable, str(EXAMPLES / "ingest_llama_index.py"),
        "--postgres-url", postgres.uri,
        "--infinity-url", proxy.url,
        "--model", infinity_server.embed_model,
        "--name", name,
        "--docs", str(docs),
        "--dim", str(infinity_server.dim),
    ]  # fmt: skip
    if infinity_server.api_key:
        command += ["--api-key", infinity_server.api_key]

    def run_shards() -> list[dict[str, int]]:
        processes = [
            subprocess.Popen(
                [*command, "--shard", f"{i}/2"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = []
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results

    subprocess.run([*command, "--create-tables"], check=True, capture_output=True, timeout=120)
    first = run_shards()
    assert sum(r["documents"] for r in first) == docs
    assert all(r["documents"] > 0 for r in first)
    assert Counter(embedded_texts(proxy)) == Counter(texts)
    _check_table(postgres.uri, name, reference, texts)

    proxy.reset()
    again = run_shards()
    assert [r["nodes"] for r in again] == [0, 0]
    assert embedded_texts(proxy) == []
    _check_table(postgres.uri, name, reference, texts)
