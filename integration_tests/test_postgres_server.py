"""The PostgreSQL the integration tests use (``infinity_rag.testing.LocalPostgres``): real,
with pgvector, and gone without a trace when stopped, or when the process that started it is
killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from infinity_rag.testing import LocalPostgres, sqlalchemy_url
from infinity_rag.testing._postgres import ENV_VAR, _process_alive


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the postmaster's backends and workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _process_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_the_session_server_is_postgres_with_pgvector(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.uri) as conn:
        (version,) = conn.execute("SHOW server_version_num").fetchone()
        (vector,) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        (distance,) = conn.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()

    assert int(version) >= 150000
    assert tuple(int(x) for x in vector.split(".")) >= (0, 7, 0)
    assert distance == pytest.approx(1.0)


@pytest.mark.skipif(bool(os.environ.get(ENV_VAR)), reason=f"{ENV_VAR} names an external server")
def test_stop_leaves_no_process_and_no_folder() -> None:
    with LocalPostgres() as pg:
        with psycopg.connect(pg.uri) as conn:
            conn.execute("SELECT 1")
            assert pg.pid is not None
            processes = [pg.pid, *_children(pg.pid)]
            folder = pg.workdir
        assert pg.startup_seconds is not None
        assert len(processes) >= 3  # postmaster, checkpointer, writer, ... and our backend

    assert _wait_gone(processes) == []
    assert folder is not None
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="not started"):
        _ = pg.uri


@pytest.mark.skipif(bool(os.environ.get(ENV_VAR)), reason=f"{ENV_VAR} names an external server")
def test_a_killed_owner_leaves_no_server_behind() -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
                import time
                from infinity_rag.testing import LocalPostgres
                pg = LocalPostgres().start()
                print(pg.pid, pg.workdir, pg.uri, flush=True)
                time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pid_text, folder, uri = owner.stdout.readline().split()
        pid = int(pid_text)
        with psycopg.connect(uri) as conn:
            conn.execute("SELECT 1")
        processes = [pid, *_children(pid)]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()

    assert _wait_gone(processes) == []
    deadline = time.monotonic() + 5
    while Path(folder).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(folder).exists()


def test_an_external_server_is_used_and_left_running(postgres: LocalPostgres) -> None:
    with LocalPostgres(postgres.uri) as external:
        assert external.external
        with psycopg.connect(external.uri) as conn:
            conn.execute("SELECT 1")
    with psycopg.connect(postgres.uri) as conn:  # still up
        conn.execute("SELECT 1")
    assert external.uri == postgres.uri


def test_sqlalchemy_urls() -> None:
    uri = "postgresql://postgres:@/postgres?host=/tmp/x/data"
    assert sqlalchemy_url(uri) == "postgresql+psycopg://postgres:@/postgres?host=/tmp/x/data"
    assert sqlalchemy_url("postgres://u:p@h:5/d", "asyncpg") == "postgresql+asyncpg://u:p@h:5/d"
    with pytest.raises(ValueError, match=r"not a postgresql:// URI"):
        sqlalchemy_url("mysql://u@h/d")
