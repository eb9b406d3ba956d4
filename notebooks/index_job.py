"""One run of LangChain's indexing API into pgvector, as ``04_scaling_out.ipynb`` runs it.

The notebook starts this file in a subprocess, so that it can SIGKILL a run midway as a crash
would, and runs it again::

    INFINITY_API_KEY=... python index_job.py --corpus docs.jsonl --table docs \\
        --postgres-url postgresql+psycopg://... --infinity-url http://a:7997 --infinity-url ...

``--corpus`` is a JSON-lines file of ``{"source": ..., "text": ...}``; the table exists (the
notebook creates it with ``PGEngine.init_vectorstore_table``). One JSON line is printed at the
end: what ``index`` returned (``num_added``, ``num_skipped``, ``num_deleted``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from langchain_classic.indexes import SQLRecordManager
from langchain_core.documents import Document
from langchain_core.indexing import index
from langchain_postgres import PGEngine, PGVectorStore

from infinity_rag.langchain import InfinityEmbeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--postgres-url", required=True, help="a SQLAlchemy URL")
    parser.add_argument("--infinity-url", action="append", required=True, help="each replica")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    lines = args.corpus.read_text(encoding="utf-8").splitlines()
    docs = [
        Document(page_content=row["text"], metadata={"source": row["source"]})
        for row in map(json.loads, lines)
    ]
    # The API key comes from INFINITY_API_KEY (not the command line, which `ps` shows).
    embeddings = InfinityEmbeddings(model=args.model, base_url=args.infinity_url)
    engine = PGEngine.from_connection_string(args.postgres_url)
    record_manager = SQLRecordManager(f"pgvector/{args.table}", db_url=args.postgres_url)
    try:
        store = PGVectorStore.create_sync(
            engine, table_name=args.table, embedding_service=embeddings
        )
        record_manager.create_schema()
        result = index(
            docs,
            record_manager,
            store,
            batch_size=args.batch_size,  # embedded, written, then recorded, batch by batch
            cleanup="incremental",
            source_id_key="source",
            key_encoder="sha256",
        )
    finally:
        asyncio.run(engine.close())
        record_manager.engine.dispose()
    sys.stdout.write(json.dumps(dict(result)) + "\n")


if __name__ == "__main__":
    main()
