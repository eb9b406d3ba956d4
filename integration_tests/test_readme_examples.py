"""The README's Python examples run as written against real servers.

Only the model names, the URLs (and the key) are swapped for the test servers': the README
names real Hugging Face models and hosts, the test servers serve offline stand-ins on loopback.

"## Scaling out" runs every snippet of its section, in order, in one namespace, against three
Infinity replicas (the ``fleet``), nginx in front of two of them, a local Ray cluster and a real
PostgreSQL with pgvector. One swap changes more than an address: the Qdrant snippet's
``url="http://qdrant:6333"`` becomes ``location=":memory:"``, Qdrant's local mode (no Qdrant
server installs from a package registry here), so that line's HTTP transport is not what runs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from infinity_rag.testing import LocalPostgres
from integration_tests.conftest import FLEET_API_KEY, ServerInfo
from integration_tests.fleet import Fleet, Nginx
from integration_tests.postgres_helpers import (
    count_rows,
    drop_tables,
    max_abs_diff,
    unique_name,
    vectors_by_text,
)

README = Path(__file__).resolve().parents[1] / "README.md"
SCALING_OUT_PAGE = README.parent / "docs" / "scaling_out.md"
GPUS = '["http://gpu-0:7997", "http://gpu-1:7997", "http://gpu-2:7997"]'


def python_blocks(text: str, language: str = "python") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def swapped(text: str, swaps: dict[str, str]) -> str:
    for old, new in swaps.items():
        assert old in text, f"the README's examples no longer contain {old}"
        text = text.replace(old, new)
    return text


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
    text = swapped(text, swaps)
    # The first example of each of these sections (the others are run by their own tests).
    return [python_blocks(section(text, heading))[0] for heading in SECTIONS]


SECTIONS = ("The client", "LangChain", "LlamaIndex", "Haystack")


def test_readme_examples_run(infinity_server: ServerInfo) -> None:
    client_block, langchain_block, llama_index_block, haystack_block = readme_blocks(
        infinity_server
    )
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

        exec(compile(haystack_block, f"{README}: Haystack", "exec"), namespace)
        best = namespace["best"]
        assert sorted(d.content for d in best) == ["first passage", "second passage"]
        assert best[0].score >= best[1].score
        assert namespace["store"].count_documents() == 2
    finally:
        if "client" in namespace:
            namespace["client"].close()


# --- "Scaling out": every snippet, against real servers ------------------------------------------

CHUNKS = 300  # rows of the Ray Data snippet's Parquet input
DOCS = 60  # documents of the indexing and Qdrant snippets


@pytest.fixture(scope="module")
def nginx(fleet: Fleet, nginx_executable: Path) -> Iterator[Nginx]:
    with Nginx(nginx_executable, [f"127.0.0.1:{r.port}" for r in fleet.replicas[:2]]) as proxy:
        yield proxy


def scaling_out_blocks(
    fleet: Fleet, nginx: Nginx, uri: str, tables: dict[str, str], chunks: Path
) -> list[str]:
    text = section(README.read_text(encoding="utf-8"), "Scaling out")
    swaps = {
        '"BAAI/bge-small-en-v1.5"': repr("minilm"),
        GPUS: repr(fleet.urls),
        '"http://infinity-lb:7997"': repr(nginx.url),
        '"postgresql://user:password@db/rag"': repr(uri),
        '"postgresql+psycopg://user:password@db/rag"': repr(
            "postgresql+psycopg://" + uri.split("://", 1)[1]
        ),
        '"s3://bucket/chunks/"': repr(str(chunks)),
        "EXISTS chunks (": f"EXISTS {tables['chunks']} (",
        "INSERT INTO chunks ": f"INSERT INTO {tables['chunks']} ",
        'init_vectorstore_table("docs"': f"init_vectorstore_table({tables['docs']!r}",
        'table_name="docs"': f"table_name={tables['docs']!r}",
        '"pgvector/docs"': repr(f"pgvector/{tables['docs']}"),
        'url="http://qdrant:6333"': 'location=":memory:"',
    }
    return python_blocks(swapped(text, swaps))


def served(fleet: Fleet) -> int:
    return sum(replica.requests_served() for replica in fleet)


@pytest.mark.slow
def test_readme_scaling_out_examples_run(
    fleet: Fleet,
    nginx: Nginx,
    postgres: LocalPostgres,
    ray_cluster: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from langchain_core.documents import Document

    from infinity_rag import InfinityClient
    from infinity_rag.langchain import InfinityEmbeddings

    tables = {"chunks": unique_name("readme_chunks"), "docs": unique_name("readme_docs")}
    chunks = tmp_path / "chunks"
    replicas, ray_block, index_block, qdrant_block = scaling_out_blocks(
        fleet, nginx, postgres.uri, tables, chunks
    )
    monkeypatch.setenv("INFINITY_API_KEY", FLEET_API_KEY)  # the snippets pass no key
    texts = [f"chunk {i} about subject {i % 37}" for i in range(CHUNKS)]
    chunks.mkdir()
    for part in range(3):  # three files: work for both actors
        ids = np.arange(part, CHUNKS, 3)
        table = pa.table({"id": ids, "text": [texts[i] for i in ids]})
        pq.write_table(table, chunks / f"part-{part}.parquet")
    docs = [
        Document(page_content=f"document {i} on subject {i % 7}", metadata={"source": f"doc-{i}"})
        for i in range(DOCS)
    ]
    corpus = [f"corpus passage {i}" for i in range(520)]  # three chunks of up to 256
    namespace: dict[str, Any] = {
        "InfinityClient": InfinityClient,
        "InfinityEmbeddings": InfinityEmbeddings,
        "corpus": corpus,
        "docs": docs,
    }
    try:
        # Several replicas: 520 texts in three chunks, one per replica (least busy first).
        before = [replica.requests_served() for replica in fleet]
        exec(compile(replicas, f"{README}: several replicas", "exec"), namespace)
        client, balanced = namespace["client"], namespace["balanced"]
        assert len(namespace["vectors"]) == len(corpus)
        states = client.replicas()
        assert [state.url for state in states] == fleet.urls
        assert [state.requests for state in states] == [1, 1, 1]
        after = [replica.requests_served() for replica in fleet]
        assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
        # The load balancer's one URL: the same vectors, through nginx.
        through_nginx = balanced.embed(corpus[:20]).embeddings
        assert max(map(max_abs_diff, through_nginx, namespace["vectors"][:20])) < 1e-5

        # Ray Data into pgvector: every chunk once, with the vector the client gives its text.
        reference = dict(zip(texts, client.embed(texts).embeddings, strict=True))
        exec(compile(ray_block, f"{README}: Ray Data into pgvector", "exec"), namespace)
        stored, copies = vectors_by_text(
            postgres.uri, tables["chunks"], text_column="text", vector_column="embedding"
        )
        assert count_rows(postgres.uri, tables["chunks"]) == CHUNKS
        assert set(copies.values()) == {1}
        assert max(max_abs_diff(stored[t], reference[t]) for t in texts) < 1e-5
        with psycopg.connect(postgres.uri) as conn:
            ids = conn.execute(
                sql.SQL("SELECT id, text FROM {}").format(sql.Identifier(tables["chunks"]))
            ).fetchall()
        assert sorted(ids) == [(i, texts[i]) for i in range(CHUNKS)]

        # Re-runnable ingestion: everything added once; run again: nothing embedded.
        exec(compile(index_block, f"{README}: re-runnable ingestion", "exec"), namespace)
        assert namespace["result"]["num_added"] == DOCS
        assert count_rows(postgres.uri, tables["docs"]) == DOCS
        requests_before = served(fleet)
        again = namespace["index"](
            docs,
            namespace["record_manager"],
            namespace["store"],
            cleanup="incremental",
            source_id_key="source",
            key_encoder="sha256",
        )
        assert again["num_skipped"] == DOCS
        assert again["num_added"] == again["num_deleted"] == 0
        assert served(fleet) == requests_before  # not one embedding request
        assert count_rows(postgres.uri, tables["docs"]) == DOCS

        # Qdrant (local mode standing in for the server, see the module's docstring).
        exec(compile(qdrant_block, f"{README}: a Qdrant server", "exec"), namespace)
        found = namespace["qdrant"].similarity_search(docs[5].page_content, k=1)
        assert [d.metadata["source"] for d in found] == ["doc-5"]
    finally:
        if "engine" in namespace:
            asyncio.run(namespace["engine"].close())
        if "record_manager" in namespace:
            namespace["record_manager"].engine.dispose()
        for name in ("client", "balanced"):
            if name in namespace:
                namespace[name].close()
        drop_tables(postgres.uri, *tables.values())
        with psycopg.connect(postgres.uri, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('upsertion_record')").fetchone() != (None,):
                conn.execute(
                    "DELETE FROM upsertion_record WHERE namespace = %s",
                    (f"pgvector/{tables['docs']}",),
                )


def test_scaling_out_page_examples_run(
    fleet: Fleet, nginx_executable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/scaling_out.md: the client over three replicas, and its nginx block in front of
    two of them (only the addresses swapped for loopback ones)."""
    from infinity_rag import InfinityClient

    text = SCALING_OUT_PAGE.read_text(encoding="utf-8")
    (client_block,) = python_blocks(text)
    (nginx_block,) = python_blocks(text, "nginx")
    monkeypatch.setenv("INFINITY_API_KEY", FLEET_API_KEY)
    corpus = [f"page passage {i}" for i in range(520)]  # three chunks of up to 256
    namespace: dict[str, Any] = {"InfinityClient": InfinityClient, "corpus": corpus}
    exec(
        compile(swapped(client_block, {GPUS: repr(fleet.urls)}), str(SCALING_OUT_PAGE), "exec"),
        namespace,
    )
    client = namespace["client"]
    try:
        assert [state.requests for state in client.replicas()] == [1, 1, 1]
        reference = client.embed(corpus[:96]).embeddings

        # The nginx block as a format string: braces escaped, the addresses made placeholders.
        site = nginx_block.replace("{", "{{").replace("}", "}}")
        site = re.sub(r"(?m)^ *server gpu-1:7997 .*\n", "", site)
        site = swapped(
            site,
            {
                "    server gpu-0:7997 max_fails=1 fail_timeout=5s;": "{servers}",
                "listen 7997;": "listen 127.0.0.1:{port};",
            },
        )
        upstreams = [f"127.0.0.1:{r.port}" for r in fleet.replicas[:2]]
        with Nginx(nginx_executable, upstreams, site=site) as nginx:
            with InfinityClient(base_url=nginx.url, batch_size=32) as balanced:
                vectors = balanced.embed(corpus[:96]).embeddings
            answered = nginx.access_log_of("/embeddings", 3)
        assert max(map(max_abs_diff, vectors, reference)) < 1e-5
        assert [e[0] for e in answered] == [200] * 3  # 96 texts in chunks of 32
        assert {e[1][-1] for e in answered} == set(upstreams)  # round-robin over both
    finally:
        client.close()
