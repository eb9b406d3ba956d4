"""Bit-packed embeddings from Infinity in pgvector's ``bit`` type, searched by Hamming distance.

A model served with ``--embedding-dtype ubinary`` returns one bit per dimension (32 times
smaller than float32); ``InfinityClient.embed_packed`` gives the bytes, written here as bit
strings into a ``bit(d)`` column and searched with pgvector's Hamming operator ``<~>``. With
``--float-model`` (the same model served as float32) the float vectors go into a
``vector(d)`` column too, and the script measures how often the Hamming top ``k`` finds the
float cosine top ``k`` (recall@k), alone and with the usual rescoring: the Hamming top
``candidates`` reordered by cosine.

    python examples/binary_pgvector.py --postgres-url postgresql://user:pw@host/db \\
        --infinity-url http://localhost:7997 --packed-model mxbai-ubinary \\
        [--float-model mxbai] [--table bits] [--docs 564] [--k 10] [--candidates 40] [--hnsw]

The corpus is the standard library's docstrings (``infinity_rag.testing.load_corpus``), the queries
``QUERIES``. One JSON line is printed: rows stored and, with ``--float-model``, the recalls.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from infinity_rag import InfinityClient
from infinity_rag.testing import load_corpus

QUERIES = (
    "parse a JSON string into Python objects",
    "copy a directory tree",
    "wrap a paragraph of text to a given width",
    "the current date and time",
    "iterate over combinations of items",
    "cache the results of a function call",
    "count how many times each element occurs",
    "join path components",
    "pick a random element from a list",
    "match a regular expression at the start of a string",
    "read rows from a CSV file",
    "compute the square root of a number",
    "the median of a list of numbers",
    "remove common leading whitespace from every line",
    "a dictionary that remembers insertion order",
    "delete a file or directory",
    "the difference between two dates",
    "apply a function cumulatively to the items of a sequence",
    "escape special characters in a regular expression",
    "write an object to a file as JSON",
)

#: The standard library modules the corpus is made of (564 passages of at most 400 characters).
MODULES = (
    "json",
    "os.path",
    "shutil",
    "textwrap",
    "itertools",
    "functools",
    "collections",
    "pathlib",
    "datetime",
    "random",
    "re",
    "csv",
    "math",
    "statistics",
)


def bit_string(packed: Sequence[int], packing: str = "ubinary") -> str:
    """A packed vector as a PostgreSQL bit string: dimension 0 first (the high bit of byte 0,
    Infinity's and ``numpy.packbits``' order); ``binary`` bytes are ``ubinary`` - 128."""
    offset = 128 if packing == "binary" else 0
    return "".join(f"{byte + offset:08b}" for byte in packed)


def create_table(conn: psycopg.Connection[Any], table: str, bits: int, floats: int | None) -> None:
    columns = [
        sql.SQL("id integer PRIMARY KEY, text text NOT NULL, bits bit({}) NOT NULL").format(
            sql.Literal(bits)
        )
    ]
    if floats:
        columns.append(sql.SQL("embedding vector({}) NOT NULL").format(sql.Literal(floats)))
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(columns))
    )


def ingest(
    conn: psycopg.Connection[Any],
    client: InfinityClient,
    table: str,
    texts: Sequence[str],
    *,
    packed_model: str,
    float_model: str | None = None,
    hnsw: bool = False,
) -> int:
    """Store ``texts`` (ids = positions) with their bits (and float vectors); creates the
    table, and an HNSW index on the bits with ``hnsw``."""
    packed = client.embed_packed(texts, model=packed_model)
    floats = client.embed(texts, model=float_model).embeddings if float_model else None
    create_table(conn, table, packed.dimensions, len(floats[0]) if floats else None)
    name = sql.Identifier(table)
    with conn.cursor() as cursor:
        if floats:
            cursor.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s::bit varying, %s::vector)").format(name),
                [
                    (i, t, bit_string(p, packed.packing), str(f))
                    for i, (t, p, f) in enumerate(zip(texts, packed, floats, strict=True))
                ],
            )
        else:
            cursor.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s::bit varying)").format(name),
                [
                    (i, t, bit_string(p, packed.packing))
                    for i, (t, p) in enumerate(zip(texts, packed, strict=True))
                ],
            )
    if hnsw:
        conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (bits bit_hamming_ops)").format(name))
    conn.commit()
    return len(texts)


def query_bits(client: InfinityClient, queries: Sequence[str], *, packed_model: str) -> list[str]:
    """The queries' packed vectors as bit strings (one request)."""
    packed = client.embed_packed(queries, model=packed_model)
    return [bit_string(row, packed.packing) for row in packed]


def search_hamming(
    conn: psycopg.Connection[Any], table: str, bits: str, *, limit: int
) -> list[tuple[int, int]]:
    """``(id, Hamming distance)`` of the ``limit`` rows nearest to ``bits`` (ties by id).

    Exact (a scan); with an HNSW index, ``ORDER BY bits <~> %s LIMIT k`` is approximate and
    uses it."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id, (bits <~> %s::bit varying)::int AS d FROM {} ORDER BY d, id LIMIT %s"
        ).format(sql.Identifier(table)),
        (bits, limit),
    ).fetchall()
    return [(int(i), int(d)) for i, d in rows]


def search_rescored(
    conn: psycopg.Connection[Any],
    table: str,
    bits: str,
    vector: Sequence[float],
    *,
    limit: int,
    candidates: int,
) -> list[int]:
    """The ``candidates`` rows nearest to ``bits`` by Hamming distance, reordered by cosine
    distance to the float ``vector``: the best ``limit``."""
    rows = conn.execute(
        sql.SQL(
            "SELECT id FROM (SELECT id, embedding FROM {} ORDER BY bits <~> %s::bit varying, "
            "id LIMIT %s) c ORDER BY embedding <=> %s::vector, id LIMIT %s"
        ).format(sql.Identifier(table)),
        (bits, candidates, str(list(vector)), limit),
    ).fetchall()
    return [int(i) for (i,) in rows]


def search_cosine(
    conn: psycopg.Connection[Any], table: str, vector: Sequence[float], *, limit: int
) -> list[int]:
    """The ``limit`` rows nearest to ``vector`` by float cosine distance (the reference)."""
    rows = conn.execute(
        sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s::vector, id LIMIT %s").format(
            sql.Identifier(table)
        ),
        (str(list(vector)), limit),
    ).fetchall()
    return [int(i) for (i,) in rows]


def agreement(
    conn: psycopg.Connection[Any],
    client: InfinityClient,
    table: str,
    queries: Sequence[str],
    *,
    packed_model: str,
    float_model: str,
    k: int,
    candidates: int,
) -> dict[str, float]:
    """Mean recall@k against the float cosine top k: Hamming alone, and rescored."""
    bits = query_bits(client, queries, packed_model=packed_model)
    vectors = client.embed(queries, model=float_model).embeddings
    hamming = rescored = 0.0
    for q_bits, vector in zip(bits, vectors, strict=True):
        truth = set(search_cosine(conn, table, vector, limit=k))
        found = {i for i, _ in search_hamming(conn, table, q_bits, limit=k)}
        again = set(search_rescored(conn, table, q_bits, vector, limit=k, candidates=candidates))
        hamming += len(truth & found) / k
        rescored += len(truth & again) / k
    return {
        f"hamming_recall@{k}": round(hamming / len(queries), 4),
        f"rescored_recall@{k}": round(rescored / len(queries), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", required=True, help="a libpq URI")
    parser.add_argument("--infinity-url", required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--packed-model", default="minilm-ubinary")
    parser.add_argument("--float-model", default=None)
    parser.add_argument("--table", default="binary_docs")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--hnsw", action="store_true", help="index the bits (approximate)")
    args = parser.parse_args(argv)
    texts = [p.text for p in load_corpus(MODULES, max_chars=400)][: args.docs]
    with (
        InfinityClient(base_url=args.infinity_url, api_key=args.api_key) as client,
        psycopg.connect(args.postgres_url) as conn,
    ):
        out: dict[str, Any] = {
            "rows": ingest(
                conn,
                client,
                args.table,
                texts,
                packed_model=args.packed_model,
                float_model=args.float_model,
                hnsw=args.hnsw,
            )
        }
        if args.float_model:
            out |= agreement(
                conn,
                client,
                args.table,
                QUERIES,
                packed_model=args.packed_model,
                float_model=args.float_model,
                k=args.k,
                candidates=args.candidates,
            )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
