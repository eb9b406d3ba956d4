"""Re-runnable ingestion with LangChain's indexing API: killed midway, run again, changed.

``examples/ingest_pgvector.py`` (``index`` or ``aindex`` + ``SQLRecordManager`` +
``cleanup="incremental"`` into ``PGVectorStore``, embedding with ``InfinityEmbeddings``) runs in
a subprocess against the real Infinity server and a real PostgreSQL. Between the two stands a
FaultProxy that passes every request through and keeps its body, so the texts counted are the
texts the server received.

1. The first run is SIGKILLed once a third of the rows are written.
2. The second run completes: exactly one row per document, every vector equal to the one
   ``InfinityClient.embed`` gives its text (computed beforehand), and the server received exactly
   the documents the record manager had not recorded: nothing recorded is embedded again.
3. A third run with nothing changed embeds nothing.
4. A fourth run with 10 documents changed embeds those 10 texts and nothing else, and their old
   versions are deleted: still one row per document.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infinity_rag import InfinityClient
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
from ingest_pgvector import namespace  # noqa: E402

BATCH = 100  # documents per index() batch: embedded, written, then recorded


def _revised(docs: int) -> list[int]:
    """Ten document numbers spread over the corpus (so over several batches)."""
    return [docs * k // 10 + 7 for k in range(10)]


@pytest.fixture
def proxy(infinity_server: ServerInfo) -> Iterator[FaultProxy]:
    with FaultProxy(infinity_server.url) as proxy:
        yield proxy


def _command(
    postgres: LocalPostgres, proxy: FaultProxy, server: ServerInfo, table: str, docs: int, mode: str
) -> list[str]:
    command = [
        sys.executable,
        str(EXAMPLES / "ingest_pgvector.py"),
        "--postgres-url", postgres.uri,
        "--infinity-url", proxy.url,
        "--model", server.embed_model,
        "--table", table,
        "--docs", str(docs),
        "--dim", str(server.dim),
        "--batch-size", str(BATCH),
    ]  # fmt: skip
    if server.api_key:
        command += ["--api-key", server.api_key]
    return [*command, "--async"] if mode == "aindex" else command


def _run(command: list[str], *extra: str) -> dict[str, int]:
    done = subprocess.run(
        [*command, *extra], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rows_or_zero(uri: str, table: str) -> int:
    try:
        return count_rows(uri, table)
    except psycopg.errors.UndefinedTable:  # the run has not created it yet
        return 0


def _kill_midway(command: list[str], uri: str, table: str, at_rows: int) -> int:
    """Start the ingestion, SIGKILL it once ``at_rows`` rows are in the table; the rows then."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while (rows := _rows_or_zero(uri, table)) < at_rows:
            assert process.poll() is None, f"finished before the kill: {process.communicate()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    return rows


def _recorded_sources(uri: str, table: str) -> set[str]:
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT group_id FROM upsertion_record WHERE namespace = %s", (namespace(table),)
        ).fetchall()
    return {source for (source,) in rows}


def _stored_sources(uri: str, table: str) -> set[str]:
    with psycopg.connect(uri) as conn:
        query = psycopg.sql.SQL("SELECT langchain_metadata->>'source' FROM {}").format(
            psycopg.sql.Identifier(table)
        )
        return {source for (source,) in conn.execute(query).fetchall()}


def _check_table(uri: str, table: str, reference: dict[str, list[float]], texts: list[str]) -> None:
    """One row per text, none else, each with its reference vector."""
    stored, copies = vectors_by_text(uri, table, text_column="content", vector_column="embedding")
    assert count_rows(uri, table) == len(texts)
    assert copies == Counter(texts)  # every document once, no duplicate, no old version
    worst = max(max_abs_diff(stored[text], reference[text]) for text in texts)
    assert worst < 1e-5


def _source(number: int) -> str:
    return f"doc-{number}"


@pytest.mark.parametrize(
    ("mode", "docs"),
    [
        pytest.param("index", 5000, marks=pytest.mark.slow, id="index-5000"),
        pytest.param("aindex", 1000, marks=pytest.mark.slow, id="aindex-1000"),
    ],
)
def test_killed_rerun_unchanged_and_changed(
    mode: str,
    docs: int,
    postgres: LocalPostgres,
    proxy: FaultProxy,
    infinity_server: ServerInfo,
    client: InfinityClient,
) -> None:
    numbers = range(docs)
    texts = [document_text(n) for n in numbers]
    revised = {n: document_text(n, revised=True) for n in _revised(docs)}
    vectors = client.embed([*texts, *revised.values()], model=infinity_server.embed_model)
    reference = dict(zip([*texts, *revised.values()], vectors, strict=True))
    table = unique_name(f"lc_{mode}")
    command = _command(postgres, proxy, infinity_server, table, docs, mode)
    try:
        # 1. Killed once a third of the rows are in.
        rows_at_kill = _kill_midway(command, postgres.uri, table, at_rows=docs // 3)
        recorded = _recorded_sources(postgres.uri, table)
        stored = _stored_sources(postgres.uri, table)
        first_run = embedded_texts(proxy)
        assert docs // 3 <= rows_at_kill < docs
        assert 0 < len(recorded) < docs
        assert recorded <= stored  # recorded only once written
        assert len(stored - recorded) <= BATCH  # at most the batch being recorded at the kill
        assert len(first_run) <= len(recorded) + BATCH  # and at most one batch in flight

        # 2. Run again: everything once, and only what was not recorded was embedded.
        proxy.reset()
        second = _run(command)
        missing = [
            text for n, text in zip(numbers, texts, strict=True) if _source(n) not in recorded
        ]
        assert Counter(embedded_texts(proxy)) == Counter(missing)
        assert second["num_added"] == len(missing)
        assert second["num_skipped"] == len(recorded)
        assert second["num_deleted"] == 0
        _check_table(postgres.uri, table, reference, texts)
        assert _recorded_sources(postgres.uri, table) == {_source(n) for n in numbers}

        # 3. Nothing changed: nothing embedded, nothing written.
        proxy.reset()
        third = _run(command)
        assert embedded_texts(proxy) == []
        assert third["num_added"] == third["num_deleted"] == 0
        assert third["num_skipped"] == docs
        _check_table(postgres.uri, table, reference, texts)

        # 4. Ten documents changed: exactly those embedded; their old versions deleted.
        proxy.reset()
        fourth = _run(command, "--revise", ",".join(map(str, revised)))
        assert sorted(embedded_texts(proxy)) == sorted(revised.values())
        assert fourth["num_added"] == fourth["num_deleted"] == len(revised)
        assert fourth["num_skipped"] == docs - len(revised)
        current = [revised.get(n, text) for n, text in zip(numbers, texts, strict=True)]
        _check_table(postgres.uri, table, reference, current)
    finally:
        drop_tables(postgres.uri, table)
        with psycopg.connect(postgres.uri, autocommit=True) as conn:
            conn.execute("DELETE FROM upsertion_record WHERE namespace = %s", (namespace(table),))
