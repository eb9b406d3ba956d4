"""Re-runnable ingestion into PostgreSQL/pgvector with LangChain's indexing API and Infinity.

``langchain_core.indexing.index`` (or ``aindex``) with a ``SQLRecordManager`` on the same
PostgreSQL, ``cleanup="incremental"``, into langchain-postgres' ``PGVectorStore``, embedding
with ``InfinityEmbeddings``. Run it again after a crash, a kill or a change: what is recorded
is skipped without being embedded, changed documents are embedded again and their old versions
deleted, and nothing is stored twice.

    python examples/ingest_pgvector.py --postgres-url postgresql://user:pw@host/db \\
        --infinity-url http://localhost:7997 --table docs --docs 5000 [--revise 3,17] [--async]

The corpus is synthetic (``--docs`` short documents, each with ``metadata["source"]``);
``--revise`` changes the text of the documents with those numbers. One JSON line is printed:
what ``index`` returned (``num_added``, ``num_skipped``, ``num_deleted``, ...) and the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Collection, Iterable
from typing import Any

import psycopg
from ingest_common import base_parser, document_text, parse_numbers, sqlalchemy_url
from langchain_classic.indexes import SQLRecordManager
from langchain_core.documents import Document
from langchain_core.indexing import aindex, index
from langchain_postgres import Column, PGEngine, PGVectorStore
from sqlalchemy.exc import ProgrammingError

from infinity_rag.langchain import InfinityEmbeddings


def corpus(count: int, revised: Collection[int] = ()) -> list[Document]:
    """``count`` documents; those numbered in ``revised`` have their changed text."""
    return [
        Document(
            page_content=document_text(number, revised=number in revised),
            metadata={"source": f"doc-{number}"},
        )
        for number in range(count)
    ]


INDEX_OPTIONS: dict[str, Any] = {
    "cleanup": "incremental",  # a changed document's old version goes; unchanged ones stay
    "source_id_key": "source",  # which metadata names the document a chunk comes from
    "key_encoder": "sha256",
}


def namespace(table: str) -> str:
    """The record manager's namespace: one per vector table."""
    return f"pgvector/{table}"


# The indexing API's ids are sha256 hex digests (key_encoder="sha256"), not UUIDs: a text key.
ID_COLUMN = Column("langchain_id", "TEXT", nullable=False)


def _created(exc: ProgrammingError) -> bool:
    return isinstance(exc.orig, psycopg.errors.DuplicateTable)


def open_store(
    engine: PGEngine, table: str, embeddings: InfinityEmbeddings, dim: int | None = None
) -> PGVectorStore:
    """The table's ``PGVectorStore``; the table is created on the first run."""
    try:
        size = dim or len(embeddings.embed_query("dimension"))
        engine.init_vectorstore_table(table, size, id_column=ID_COLUMN)
    except ProgrammingError as exc:
        if not _created(exc):
            raise
    return PGVectorStore.create_sync(engine, table_name=table, embedding_service=embeddings)


async def aopen_store(
    engine: PGEngine, table: str, embeddings: InfinityEmbeddings, dim: int | None = None
) -> PGVectorStore:
    """``open_store`` for async code."""
    try:
        size = dim or len(await embeddings.aembed_query("dimension"))
        await engine.ainit_vectorstore_table(table, size, id_column=ID_COLUMN)
    except ProgrammingError as exc:
        if not _created(exc):
            raise
    return await PGVectorStore.create(engine, table_name=table, embedding_service=embeddings)


def ingest(
    docs: Iterable[Document],
    store: PGVectorStore,
    record_manager: SQLRecordManager,
    *,
    batch_size: int = 100,
) -> dict[str, int]:
    """Index ``docs`` into ``store``, in batches of ``batch_size`` (each one embedded, written,
    then recorded: a kill loses at most the batch in flight, which the next run redoes)."""
    record_manager.create_schema()
    result = index(docs, record_manager, store, batch_size=batch_size, **INDEX_OPTIONS)
    return dict(result)


async def aingest(
    docs: Iterable[Document],
    store: PGVectorStore,
    record_manager: SQLRecordManager,
    *,
    batch_size: int = 100,
) -> dict[str, int]:
    """``ingest`` with ``aindex`` (the record manager made with ``async_mode=True``)."""
    await record_manager.acreate_schema()
    result = await aindex(docs, record_manager, store, batch_size=batch_size, **INDEX_OPTIONS)
    return dict(result)


async def _arun(args: argparse.Namespace, docs: list[Document]) -> dict[str, int]:
    url = sqlalchemy_url(args.postgres_url)
    engine = PGEngine.from_connection_string(url)
    record_manager = SQLRecordManager(namespace(args.table), db_url=url, async_mode=True)
    try:
        store = await aopen_store(engine, args.table, _embeddings(args), args.dim)
        return await aingest(docs, store, record_manager, batch_size=args.batch_size)
    finally:
        await engine.close()
        await record_manager.engine.dispose()  # type: ignore[misc]


def _run(args: argparse.Namespace, docs: list[Document]) -> dict[str, int]:
    url = sqlalchemy_url(args.postgres_url)
    engine = PGEngine.from_connection_string(url)
    record_manager = SQLRecordManager(namespace(args.table), db_url=url)
    try:
        store = open_store(engine, args.table, _embeddings(args), args.dim)
        return ingest(docs, store, record_manager, batch_size=args.batch_size)
    finally:
        asyncio.run(engine.close())
        record_manager.engine.dispose()


def _embeddings(args: argparse.Namespace) -> InfinityEmbeddings:
    return InfinityEmbeddings(model=args.model, base_url=args.infinity_url, api_key=args.api_key)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, use_async_help="use aindex")
    parser.add_argument("--table", default="docs")
    parser.add_argument("--dim", type=int, default=None, help="else asked of the model")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)

    docs = corpus(args.docs, parse_numbers(args.revise))
    started = time.perf_counter()
    result = asyncio.run(_arun(args, docs)) if args.use_async else _run(args, docs)
    print(json.dumps({**result, "seconds": round(time.perf_counter() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
