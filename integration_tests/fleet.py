"""Real servers for the fleet tests: several Infinity replicas on loopback, one of them SIGKILLed
and restarted on the same port, and a real nginx round-robin in front of some of them.

* :class:`Replica`: one ``LocalInfinityServer`` (MiniLM only) with a thread of its own that
  starts and restarts it. ``LocalInfinityServer`` asks Linux to SIGKILL the server when the
  *thread* that started it ends (``PR_SET_PDEATHSIG``: no orphan server if a test run is
  killed), so every start comes from that long-lived thread; it also lets several replicas
  start at once. :meth:`Replica.requests_served` counts, on the server's side (Infinity's
  Prometheus ``/metrics``), the requests a route answered.
* :class:`Fleet`: N replicas sharing one API key; :meth:`Fleet.heal` restarts the dead ones.
* :class:`KillSwitch`: a thread that SIGKILLs a replica once a condition holds (polled), in the
  middle of a call running in the test's thread, and records what it saw.
* :class:`Nginx`: Debian's nginx (installed by ``scripts/setup_nginx.sh``) with a config, a
  prefix, logs and a pid file of its own in a temp dir, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from infinity_rag.testing import LocalInfinityServer, free_port

REPO = Path(__file__).resolve().parents[1]
NGINX_SETUP = REPO / "scripts" / "setup_nginx.sh"

#: Patience for one (re)start: about 8 s on a quiet 2-core machine, 12-30 s when busy, more
#: when other test suites share the CPU.
START_TIMEOUT = 300.0


class Keeper:
    """One long-lived thread that runs jobs (server starts) in turn.

    A server started by a short-lived thread would die with it (``PR_SET_PDEATHSIG``).
    """

    def __init__(self, name: str = "server-keeper") -> None:
        self._jobs: queue.Queue[tuple[Callable[[], None], threading.Event] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, done = job
            try:
                work()
            finally:
                done.set()

    def submit(self, work: Callable[[], None]) -> threading.Event:
        done = threading.Event()
        self._jobs.put((work, done))
        return done

    def run(self, work: Callable[[], None], timeout: float = START_TIMEOUT) -> None:
        assert self.submit(work).wait(timeout), "the server keeper did not finish in time"

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(30)


class Replica:
    """One Infinity server (MiniLM only) started and restarted by its own keeper thread."""

    def __init__(self, name: str, api_key: str | None) -> None:
        self.name = name
        self.server = LocalInfinityServer(["minilm"], api_key=api_key)
        self.keeper = Keeper(f"keeper-{name}")
        self.error: BaseException | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        assert self.server.port is not None, "the replica was never started"
        return self.server.port

    def _start(self) -> None:
        self.error = None
        try:
            self.server.start()
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def start_soon(self) -> threading.Event:
        """Start (on the same port after the first time) on the keeper; ``wait()`` for it."""
        return self.keeper.submit(self._start)

    def wait(self, started: threading.Event, timeout: float = START_TIMEOUT) -> None:
        assert started.wait(timeout), f"replica {self.name} did not start in {timeout:.0f} s"
        if self.error is not None:
            raise self.error

    def start(self) -> None:
        self.wait(self.start_soon())

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash); the port is kept for a restart."""
        self.kills += 1
        self.server.kill()

    def healthy(self) -> bool:
        return self.server.healthy()

    def requests_served(self, route: str = "/embeddings") -> int:
        """Requests to ``route`` that this server process answered (any status), from its
        Prometheus ``/metrics``; 0 right after a (re)start."""
        with urllib.request.urlopen(self.server.root_url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("http_requests_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
                if labels.get("handler") == route and labels.get("method") == "POST":
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def stop(self) -> None:
        self.server.stop()
        self.keeper.close()

    def __repr__(self) -> str:
        return f"Replica({self.name}, {self.server!r})"


class Fleet:
    """``count`` replicas on loopback, one API key, started at once (each by its own thread)."""

    def __init__(self, count: int, api_key: str | None) -> None:
        self.replicas = [Replica(f"r{i}", api_key) for i in range(count)]
        self.api_key = api_key

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def start(self) -> Self:
        self._start_all(self.replicas)
        return self

    def heal(self) -> list[Replica]:
        """Restart (at once, on their ports) the replicas that are not healthy; returns them."""
        dead = [replica for replica in self.replicas if not replica.healthy()]
        self._start_all(dead)
        return dead

    def _start_all(self, replicas: Sequence[Replica]) -> None:
        for replica, started in [(r, r.start_soon()) for r in replicas]:
            replica.wait(started)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class KillSwitch:
    """SIGKILLs ``victim`` from a thread of its own as soon as ``when()`` holds (polled every
    ``interval`` s), while the test's thread is in the middle of a call; then keeps calling
    ``watch()`` (if given) until ``stop()``, so the test can see what happened after the kill.

    Use it as a context manager around the call; ``fired_at`` is ``time.monotonic()`` of the
    kill (``None``: the condition never held).
    """

    def __init__(
        self,
        victim: Replica,
        when: Callable[[], bool],
        *,
        watch: Callable[[], Any] | None = None,
        interval: float = 0.01,
        timeout: float = 600.0,
    ) -> None:
        self.victim = victim
        self.when = when
        self.watch = watch
        self.interval = interval
        self.timeout = timeout
        self.fired_at: float | None = None
        self.seen: list[Any] = []  # what watch() returned after the kill
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kill-switch", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.fired_at is None and self.when():
                    self.victim.kill()
                    self.fired_at = time.monotonic()
                if self.fired_at is not None and self.watch is not None:
                    self.seen.append(self.watch())
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- nginx --------------------------------------------------------------------------------------


class NginxUnavailable(RuntimeError):
    """nginx is not installed and ``scripts/setup_nginx.sh`` could not install it."""


def ensure_nginx(timeout: float = 600.0) -> Path:
    """The nginx executable, installed by ``scripts/setup_nginx.sh`` when it is missing."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    try:
        proc = subprocess.run(
            ["bash", str(NGINX_SETUP)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NginxUnavailable(f"{NGINX_SETUP} took more than {timeout:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).exists():
        raise NginxUnavailable(
            f"nginx is missing and {NGINX_SETUP} could not install it "
            f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return Path(lines[-1])


#: One line per request: what the client got, and each upstream nginx tried ("a, b": a failed,
#: then b) with the status each gave ("502, 200"; "-" where none came back).
ACCESS_LOG_FORMAT = "$status|$upstream_addr|$upstream_status|$request_uri"

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format fleet '{log_format}';
    access_log {prefix}/access.log fleet;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
}}
"""

#: The ``http {}`` block's site: ``{servers}`` and ``{port}`` filled in by :class:`Nginx`.
DEFAULT_SITE = """\
    upstream infinity {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        client_body_buffer_size 16m;
        location / {{
            proxy_pass http://infinity;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Connect errors and timeouts go to the next upstream; a POST that was already sent
            # is not retried by nginx (non_idempotent is not listed): the client gets a 502 and
            # our client's retries do it.
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 2s;
            proxy_send_timeout 120s;
            proxy_read_timeout 120s;
            proxy_buffering off;
        }}
    }}"""


class Nginx:
    """nginx round-robin over ``upstreams`` (``host:port``), in the foreground, on loopback.

    ``site`` replaces the upstream and server blocks (a format string like ``DEFAULT_SITE``,
    ``{servers}`` and ``{port}`` filled in; ``{{``/``}}`` for braces) inside the ``http {}`` block
    that keeps the logs, pid and temp files in nginx's own temp dir.
    """

    def __init__(
        self, executable: Path, upstreams: Sequence[str], site: str = DEFAULT_SITE
    ) -> None:
        self.executable = executable
        self.upstreams = list(upstreams)
        self.site = site
        self.prefix: Path | None = None
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "nginx is not started"
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        assert self.prefix is not None
        assert self.port is not None
        servers = "\n".join(
            f"        server {upstream} max_fails=1 fail_timeout=5s;" for upstream in self.upstreams
        )
        site = self.site.format(servers=servers, port=self.port)
        return NGINX_CONF.format(prefix=self.prefix, site=site, log_format=ACCESS_LOG_FORMAT)

    def start(self, timeout: float = 30.0) -> Self:
        self.prefix = Path(tempfile.mkdtemp(prefix="infinity-rag-nginx-"))
        # Run as root, nginx's workers run as "nobody": they must reach the temp paths.
        self.prefix.chmod(0o755)
        self.port = free_port()
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config())
        command = [str(self.executable), "-p", str(self.prefix), "-c", str(conf)]
        command += ["-e", str(self.prefix / "error.log")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejects its config:\n{check.stderr}\n{self.config()}")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.errors()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx not answering after {timeout:.0f} s:\n{self.errors()}")
            time.sleep(0.1)

    def errors(self) -> str:
        assert self.prefix is not None
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "<no error log>"

    def access_log(self) -> list[tuple[int, list[str], list[str], str]]:
        """(status, upstreams tried, their statuses, request URI) per request, in order."""
        assert self.prefix is not None
        path = self.prefix / "access.log"
        entries = []
        for line in path.read_text().splitlines() if path.exists() else []:
            status, addrs, statuses, uri = line.split("|", 3)
            entries.append(
                (
                    int(status),
                    [a.strip() for a in re.split(r"[,:]\s+", addrs) if a.strip() != "-"],
                    [s.strip() for s in re.split(r"[,:]\s+", statuses)],
                    uri,
                )
            )
        return entries

    def access_log_of(
        self, uri: str, count: int, timeout: float = 5.0
    ) -> list[tuple[int, list[str], list[str], str]]:
        """The entries for ``uri``, once there are ``count`` of them (or ``timeout`` passed):
        nginx writes a request's line after sending its answer, so the client may be done
        before the last line is."""
        deadline = time.monotonic() + timeout
        while True:
            entries = [e for e in self.access_log() if e[3] == uri]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)

    def clear_log(self) -> None:
        """Start the access log afresh (nginx reopens it on SIGUSR1)."""
        assert self.prefix is not None
        assert self.process is not None
        (self.prefix / "access.log").unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not (self.prefix / "access.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        proc = self.process
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGQUIT)  # graceful: the workers finish and exit
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.process = None
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
