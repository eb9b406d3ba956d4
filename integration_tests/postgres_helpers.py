"""What the PostgreSQL tests share: unique table names, reading rows back, and counting the
texts that reached the Infinity server through a FaultProxy (a real HTTP hop, not a mock)."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import psycopg
from psycopg import sql

from integration_tests.fault_proxy import FaultProxy


def unique_name(prefix: str) -> str:
    """A table name no other test (or an earlier run on an external server) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_tables(uri: str, *names: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def count_rows(uri: str, table: str) -> int:
    with psycopg.connect(uri) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])  # type: ignore[index]


def vectors_by_text(
    uri: str, table: str, *, text_column: str, vector_column: str
) -> tuple[dict[str, list[float]], Counter[str]]:
    """Every row's vector keyed by its text, and how often each text is stored."""
    query = sql.SQL("SELECT {}, {}::text FROM {}").format(
        sql.Identifier(text_column), sql.Identifier(vector_column), sql.Identifier(table)
    )
    with psycopg.connect(uri) as conn:
        rows = conn.execute(query).fetchall()
    # pgvector prints the shortest decimal that reads back as the same float32.
    return {text: json.loads(vector) for text, vector in rows}, Counter(t for t, _ in rows)


def embedded_texts(proxy: FaultProxy) -> list[str]:
    """The texts of every ``POST /embeddings`` the proxy passed to the server, in order."""
    texts: list[str] = []
    for seen in proxy.posts():
        if seen.path.rstrip("/").endswith("/embeddings"):
            texts.extend(json.loads(seen.body)["input"])
    return texts


def max_abs_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
