"""Re-runnable ingestion into PostgreSQL/pgvector with LlamaIndex's ``IngestionPipeline``.

The pipeline (a ``SentenceSplitter``, then ``InfinityEmbedding``) has three PostgreSQL stores:

* a ``PostgresDocumentStore``: the hash of every document ingested, by document id. A run skips
  unchanged documents before any transformation, and for a changed one deletes its old nodes
  from the vector store first (``DocstoreStrategy.UPSERTS``);
* the pgvector ``PGVectorStore`` the nodes and their vectors go into;
* an ``IngestionCache`` on a ``PostgresKVStore``: each transformation's output, keyed by the
  hash of its input. The same batch of documents through the same transformations again (into
  a new vector store, after the docstore was lost) is read back instead of embedded.

A run writes nothing until all its documents are embedded, and records them in the docstore
only after the vector store has them: feed a large corpus in parts (``run`` once per part), so
that a crash costs one part. Never ``run(num_workers=N)``: on LlamaIndex 0.14 it can hang in
``Pool.starmap``. To use more cores or machines, run one pipeline per process, each over its own
share of the documents (``--shard i/N``; ``--create-tables`` first, once), or embed on an engine
such as Ray Data.

    python examples/ingest_llama_index.py --postgres-url postgresql://user:pw@host/db \\
        --infinity-url http://localhost:7997 --name docs --docs 5000 [--revise 3,17] \\
        [--shard 0/2] [--async]

One JSON line is printed: the nodes the run wrote and the seconds it took.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Collection

from ingest_common import base_parser, document_text, parse_numbers, sqlalchemy_url
from llama_index.core import Document
from llama_index.core.ingestion import DocstoreStrategy, IngestionCache, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import BaseDocumentStore
from llama_index.storage.docstore.postgres import PostgresDocumentStore
from llama_index.storage.kvstore.postgres import PostgresKVStore
from llama_index.vector_stores.postgres import PGVectorStore

from infinity_rag.llama_index import InfinityEmbedding


def table_names(name: str) -> dict[str, str]:
    """The table names a pipeline called ``name`` gives its three stores."""
    return {"docstore": f"{name}_docstore", "cache": f"{name}_cache", "vectors": f"{name}_vectors"}


def postgres_tables(name: str) -> dict[str, str]:
    """The tables in PostgreSQL: each of the three stores prefixes its name with ``data_``."""
    return {store: f"data_{table}" for store, table in table_names(name).items()}


def corpus(count: int, revised: Collection[int] = ()) -> list[Document]:
    """``count`` documents with stable ids; those numbered in ``revised`` changed."""
    return [
        Document(text=document_text(number, revised=number in revised), id_=f"doc-{number}")
        for number in range(count)
    ]


def shard(documents: list[Document], index: int, count: int) -> list[Document]:
    """The documents of share ``index`` of ``count``, by a stable hash of their ids."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    return [d for d in documents if zlib.crc32(d.id_.encode()) % count == index]


def build_pipeline(
    postgres_url: str, name: str, embed_model: InfinityEmbedding, dim: int
) -> IngestionPipeline:
    """An ``IngestionPipeline`` whose docstore, vector store and cache live in PostgreSQL."""
    url = sqlalchemy_url(postgres_url)
    tables = table_names(name)

    def kvstore(table: str) -> PostgresKVStore:
        return PostgresKVStore(table_name=table, connection_string=url, async_connection_string=url)

    return IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=512, chunk_overlap=0), embed_model],
        docstore=PostgresDocumentStore(kvstore(tables["docstore"])),
        docstore_strategy=DocstoreStrategy.UPSERTS,
        vector_store=PGVectorStore.from_params(
            connection_string=url,
            async_connection_string=url,
            table_name=tables["vectors"],
            embed_dim=dim,
        ),
        cache=IngestionCache(cache=kvstore(tables["cache"]), collection=name),
    )


def _stores(
    pipeline: IngestionPipeline,
) -> tuple[BaseDocumentStore, PGVectorStore, IngestionCache]:
    docstore, vector_store, cache = pipeline.docstore, pipeline.vector_store, pipeline.cache
    if docstore is None or not isinstance(vector_store, PGVectorStore):
        raise ValueError("the pipeline needs a docstore and a PGVectorStore (build_pipeline)")
    return docstore, vector_store, cache


def create_tables(pipeline: IngestionPipeline) -> None:
    """Have each store create its table now (they do on first use): run this once before
    starting several processes on new tables, which could otherwise collide creating them."""
    docstore, vector_store, cache = _stores(pipeline)
    docstore.get_all_document_hashes()
    cache.get("no such key")
    vector_store.get_nodes(node_ids=["no such node"])


def forget_unrecorded(pipeline: IngestionPipeline, documents: list[Document]) -> int:
    """Delete from the vector store the nodes of the documents the docstore has not recorded.

    A run adds its nodes to the vector store, then records its documents in the docstore. If
    it was killed in between, the next run takes those documents for new and adds their nodes
    again: pgvector's table would hold them twice. Call this before each run that may follow
    a crash. Returns how many documents were unrecorded (each one ``DELETE`` in PostgreSQL).
    """
    docstore, vector_store, _ = _stores(pipeline)
    # One look-up per document, as the pipeline does: get_all_document_hashes() is keyed by
    # hash, and would take one of two documents with the same text for unrecorded.
    unrecorded = [d.id_ for d in documents if docstore.get_document_hash(d.id_) is None]
    for doc_id in unrecorded:
        vector_store.delete(doc_id)
    return len(unrecorded)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, use_async_help="use arun")
    parser.add_argument("--name", default="docs", help="prefix of the pipeline's tables")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--shard", default="0/1", help="i/N: this process's share")
    parser.add_argument("--create-tables", action="store_true", help="only create the tables")
    args = parser.parse_args(argv)

    index, _, count = args.shard.partition("/")
    documents = shard(corpus(args.docs, parse_numbers(args.revise)), int(index), int(count))
    embed_model = InfinityEmbedding(
        model_name=args.model, base_url=args.infinity_url, api_key=args.api_key
    )
    pipeline = build_pipeline(args.postgres_url, args.name, embed_model, args.dim)
    if args.create_tables:
        create_tables(pipeline)
        return 0
    started = time.perf_counter()
    forget_unrecorded(pipeline, documents)
    if args.use_async:
        nodes = asyncio.run(pipeline.arun(documents=documents))
    else:
        nodes = pipeline.run(documents=documents)
    seconds = round(time.perf_counter() - started, 2)
    print(json.dumps({"documents": len(documents), "nodes": len(nodes), "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
