"""Ray Data embedding a corpus through two real Infinity replicas, on a local Ray cluster.

The module starts its own two replicas (MiniLM only, ``--batch-size 128``: on a loaded
2-core machine Infinity's default of 32 is several times slower) and one local Ray cluster
(``ray.init(num_cpus=2)``), and stops them at the end. Every run is checked row by row: each
id once, each vector equal (1e-5) to the one ``InfinityClient.embed`` returned beforehand.
Both ways Ray Data documents are covered: a callable class on an actor pool (the client built
in ``__init__`` from settings, or given as a constructor argument) and a plain function that
closes over a client; and a worker SIGKILLed mid-run, which Ray replaces and retries. The
result is written on into Parquet and into PostgreSQL/pgvector (``write_sql`` with an upsert by
id, a write task SIGKILLed right after it committed) and read back.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
import ray
from pgvector.psycopg import register_vector
from psycopg import sql

from infinity_rag import InfinityClient
from infinity_rag.ray import EmbedBatches
from infinity_rag.testing import LocalInfinityServer, LocalPostgres
from integration_tests.postgres_helpers import drop_tables, unique_name

ROWS = 20_000  # the whole corpus (one run)
SUBSET = 3_000  # the other runs: ids 0..2999
BLOCKS = 40  # input blocks: Ray Data runs one task per block, so both workers get work
MODEL = "minilm"


@dataclass(frozen=True)
class Replicas:
    urls: list[str]
    roots: list[str]
    api_key: str | None

    def client(self, **kwargs: Any) -> InfinityClient:
        return InfinityClient(base_url=self.urls, api_key=self.api_key, **kwargs)

    def embed_requests(self) -> list[int]:
        """Answered ``/embeddings`` requests per replica (Infinity's Prometheus counter)."""
        counts = []
        for root in self.roots:
            with urllib.request.urlopen(f"{root}/metrics", timeout=10) as response:
                text = response.read().decode()
            found = re.search(
                r'^http_requests_total\{handler="/embeddings",method="POST",status="2xx"\} (\S+)$',
                text,
                re.MULTILINE,
            )
            counts.append(int(float(found.group(1))) if found else 0)
        return counts


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    servers = [LocalInfinityServer([MODEL], extra_args=["--batch-size", "128"]) for _ in "ab"]
    # Started side by side. The pool's threads live until the servers are stopped: a server
    # dies with the thread that started it (PR_SET_PDEATHSIG), which must outlive it.
    pool = ThreadPoolExecutor(max_workers=len(servers))
    try:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()
        yield Replicas(
            urls=[s.url for s in servers],
            roots=[s.root_url for s in servers],
            api_key=servers[0].api_key,
        )
    finally:
        for server in servers:
            server.stop()
        pool.shutdown()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [f"passage {i} on topic {i % 101}" for i in range(ROWS)]


@pytest.fixture(scope="module")
def reference(replicas: Replicas, corpus: list[str]) -> np.ndarray:
    """What InfinityClient.embed returns for the corpus, computed before any Ray run (as
    lists of floats: the runs decode with as_numpy=True, the reference does not)."""
    with replicas.client() as client:
        vectors = np.asarray(client.embed(corpus, model=MODEL).embeddings, dtype=np.float32)
    assert vectors.shape == (ROWS, 384)
    # Neighbouring ids must be told apart, or a swapped row would pass the comparison.
    assert np.abs(np.diff(vectors, axis=0)).max(axis=1).min() > 1e-3
    return vectors


def dataset(corpus: list[str], rows: int) -> ray.data.Dataset:
    items = [{"id": i, "text": corpus[i]} for i in range(rows)]
    return ray.data.from_items(items, override_num_blocks=BLOCKS)


def on_actors(
    ds: ray.data.Dataset, replicas: Replicas, embedder: type[EmbedBatches]
) -> ray.data.Dataset:
    """``ds`` through ``embedder`` (EmbedBatches or a subclass) on two actors, each building
    its client from the replicas' settings."""
    return ds.map_batches(
        embedder,
        fn_constructor_kwargs={
            "model": MODEL,
            "base_url": replicas.urls,
            "api_key": replicas.api_key,
        },
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=250,
        num_cpus=0.5,
    )


def collect(ds: ray.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of every row of ``ds``, in whatever order Ray produced them."""
    ids, vectors = [], []
    for batch in ds.select_columns(["id", "embedding"]).iter_batches(batch_size=None):
        ids.append(batch["id"])
        vectors.append(batch["embedding"])
    return np.concatenate(ids), np.concatenate(vectors)


def check_rows(ids: np.ndarray, vectors: np.ndarray, reference: np.ndarray, rows: int) -> None:
    """Ids 0..rows-1 each exactly once (none lost, none doubled), each with its vector."""
    assert len(ids) == len(vectors) == rows
    order = np.argsort(ids, kind="stable")
    np.testing.assert_array_equal(ids[order], np.arange(rows))
    assert vectors.dtype == np.float32
    assert vectors.shape == (rows, reference.shape[1])
    np.testing.assert_allclose(vectors[order], reference[:rows], atol=1e-5, rtol=0)


def served_by_both(replicas: Replicas, before: list[int]) -> list[int]:
    sent = [after - first for after, first in zip(replicas.embed_requests(), before, strict=True)]
    assert all(count > 0 for count in sent), f"requests per replica: {sent}"
    return sent


@pytest.mark.slow
def test_callable_class_from_settings_embeds_20000_rows_into_parquet(
    ray_cluster: None,
    replicas: Replicas,
    corpus: list[str],
    reference: np.ndarray,
    tmp_path: Path,
) -> None:
    before = replicas.embed_requests()
    ds = dataset(corpus, ROWS).map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": MODEL,
            "base_url": replicas.urls,
            "api_key": replicas.api_key,
            "batch_size": 128,
        },
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=500,
        num_cpus=0.5,
    )
    out = tmp_path / "embedded"
    ds.write_parquet(str(out))

    back = ray.data.read_parquet(str(out))
    assert back.count() == ROWS
    assert set(back.schema().names) == {"id", "text", "embedding"}
    check_rows(*collect(back), reference, ROWS)
    # Plain pyarrow reads the same files: one 384-float vector per row.
    table = pq.read_table(out)
    assert table.num_rows == ROWS
    assert len(table.column("embedding")[0].as_py()) == 384
    served_by_both(replicas, before)


def test_callable_class_given_a_client(
    ray_cluster: None, replicas: Replicas, corpus: list[str], reference: np.ndarray
) -> None:
    client = replicas.client(batch_size=128)
    client.embed(["used before it travels"], model=MODEL)
    before = replicas.embed_requests()
    ds = dataset(corpus, SUBSET).map_batches(
        EmbedBatches,
        fn_constructor_kwargs={"client": client, "model": MODEL},  # pickled to each actor
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=250,
        num_cpus=0.5,
    )
    check_rows(*collect(ds), reference, SUBSET)
    served_by_both(replicas, before)
    client.close()


def test_plain_function_closing_over_a_client(
    ray_cluster: None, replicas: Replicas, corpus: list[str], reference: np.ndarray
) -> None:
    client = replicas.client(batch_size=128)

    def embed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = client.embed(batch["text"].tolist(), model=MODEL, as_numpy=True)  # travels
        return {"id": batch["id"], "embedding": result.embeddings}

    before = replicas.embed_requests()
    ds = dataset(corpus, SUBSET).map_batches(embed, batch_size=250, num_cpus=0.5)
    check_rows(*collect(ds), reference, SUBSET)
    served_by_both(replicas, before)


def kill_once(marker: Path, at_id: int) -> Callable[[dict[str, np.ndarray]], None]:
    """SIGKILL the calling worker process the first time a batch reaching ``at_id`` comes in
    (exactly once across processes: the marker is created with O_EXCL and holds the pid)."""

    def maybe_die(batch: dict[str, np.ndarray]) -> None:
        if int(batch["id"][-1]) < at_id:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    return maybe_die


def assert_killed(marker: Path) -> None:
    """A worker was killed: the marker holds its pid (first), and that process is gone."""
    assert marker.exists(), "no worker was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text().split()[0]), 0)


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(
    ray_cluster: None,
    replicas: Replicas,
    corpus: list[str],
    reference: np.ndarray,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "killed"
    maybe_die = kill_once(marker, SUBSET // 2)

    class DiesOnce(EmbedBatches):
        def __call__(self, batch: Any) -> Any:
            out = super().__call__(batch)  # killed after its requests were answered
            maybe_die(batch)
            return out

    # Ray Data gives map_batches actors max_restarts=-1 and max_task_retries=-1: a dead
    # actor is restarted and its batch sent again.
    ds = on_actors(dataset(corpus, SUBSET), replicas, DiesOnce)
    check_rows(*collect(ds), reference, SUBSET)
    assert_killed(marker)


@pytest.mark.slow
def test_a_task_killed_mid_run_is_retried_and_nothing_is_lost_or_doubled(
    ray_cluster: None,
    replicas: Replicas,
    corpus: list[str],
    reference: np.ndarray,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "killed"
    maybe_die = kill_once(marker, SUBSET // 2)
    client = replicas.client()

    def embed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        maybe_die(batch)  # killed before its requests: the retry sends them
        result = client.embed(batch["text"].tolist(), model=MODEL, as_numpy=True)
        return {"id": batch["id"], "embedding": result.embeddings}

    # Ray retries a task whose worker died (max_retries, 3 by default).
    ds = dataset(corpus, SUBSET).map_batches(embed, batch_size=250, num_cpus=0.5)
    check_rows(*collect(ds), reference, SUBSET)
    assert_killed(marker)


def test_a_null_row_fails_the_job_naming_the_column_and_the_row(
    ray_cluster: None, replicas: Replicas
) -> None:
    before = replicas.embed_requests()
    items = [{"id": i, "text": None if i == 7 else f"text {i}"} for i in range(20)]
    ds = ray.data.from_items(items).map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": MODEL,
            "base_url": replicas.urls,
            "api_key": replicas.api_key,
            "id_column": "id",
        },
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=20,
        num_cpus=0.5,
    )
    # Ray reports the UDF's TypeError (not retried: a user error) with its message.
    with pytest.raises(
        ray.exceptions.UserCodeException, match=r"column 'text', row 7 of this batch \(id=.*7\)"
    ):
        ds.materialize()
    assert replicas.embed_requests() == before  # refused before any request


# --- into PostgreSQL/pgvector ---------------------------------------------------------------

#: Ray's write_sql runs this per row (executemany, one transaction per write task). The upsert
#: by id makes a retried write task harmless; ``writes`` counts how often a row was written.
UPSERT = (
    "INSERT INTO {table} (id, text, embedding) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, embedding = EXCLUDED.embedding, "
    "writes = {table}.writes + 1"
)


def create_table(uri: str, table: str, dim: int) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, text text NOT NULL, "
                "embedding vector({}) NOT NULL, writes int NOT NULL DEFAULT 1)"
            ).format(sql.Identifier(table), sql.Literal(dim))
        )


@pytest.mark.slow
def test_written_into_pgvector_by_id_with_a_write_task_killed_after_its_commit(
    ray_cluster: None,
    replicas: Replicas,
    corpus: list[str],
    reference: np.ndarray,
    postgres: LocalPostgres,
    tmp_path: Path,
) -> None:
    table = unique_name("ray_pgvector")
    create_table(postgres.uri, table, reference.shape[1])
    marker = tmp_path / "killed"
    uri = postgres.uri

    class DiesAfterItsFirstCommit(psycopg.Connection[Any]):
        """A real connection whose first commit (across all workers) is followed by a SIGKILL
        of the write task's worker: the rows are in, and Ray does not know it."""

        def commit(self) -> None:
            super().commit()
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            rows = self.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            os.write(fd, f"{os.getpid()} {rows.fetchone()[0]}".encode())  # type: ignore[index]
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    def connect() -> psycopg.Connection[Any]:
        conn = DiesAfterItsFirstCommit.connect(uri)
        register_vector(conn)  # numpy arrays <-> vector
        return conn

    try:
        ds = on_actors(dataset(corpus, SUBSET), replicas, EmbedBatches)
        # write_sql binds each row's values in column order: name them.
        ds.select_columns(["id", "text", "embedding"]).write_sql(
            UPSERT.format(table=table), connect, ray_remote_args={"num_cpus": 0.5}
        )

        assert_killed(marker)
        rows_at_kill = int(marker.read_text().split()[1])
        assert 0 < rows_at_kill < SUBSET  # killed midway, after some rows were committed

        # Read back through Ray: every id once, each with its vector.
        def plain_connect() -> psycopg.Connection[Any]:
            conn = psycopg.connect(uri)
            register_vector(conn)
            return conn

        back = ray.data.read_sql(f"SELECT id, embedding FROM {table}", plain_connect)
        rows = back.take_all()
        ids = np.array([row["id"] for row in rows])
        vectors = np.stack([np.asarray(row["embedding"], dtype=np.float32) for row in rows])
        check_rows(ids, vectors, reference, SUBSET)

        with psycopg.connect(uri) as conn:
            register_vector(conn)
            count, distinct, writes, rewritten = conn.execute(
                sql.SQL(
                    "SELECT count(*), count(DISTINCT id), sum(writes), "
                    "count(*) FILTER (WHERE writes > 1) FROM {}"
                ).format(sql.Identifier(table))
            ).fetchone()  # type: ignore[misc]
            # The nearest stored vector to the reference of id 1234 is that row's.
            (nearest,) = conn.execute(
                sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s LIMIT 1").format(
                    sql.Identifier(table)
                ),
                (reference[1234],),
            ).fetchone()  # type: ignore[misc]
        assert count == distinct == SUBSET
        # The killed task's committed rows were written again by its retry, as updates.
        assert 1 <= rewritten <= rows_at_kill
        assert writes == SUBSET + rewritten  # each of them twice, the others once
        assert nearest == 1234
    finally:
        drop_tables(uri, table)
