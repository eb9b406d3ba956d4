"""Run a real Infinity server (infinity-emb 0.0.78) offline on loopback: tests, demos, notebooks.

Stdlib only, and it imports nothing of ``infinity_rag`` (``scripts/local_infinity.py`` loads this
file by path, so that it also runs under the server venv's Python). The server runs from its own
venv under ``$INFINITY_RAG_HOME`` (default ``~/.cache/infinity-rag``), built in a source checkout
by ``scripts/setup_server.sh``.

Library use::

    from infinity_rag.testing import LocalInfinityServer

    with LocalInfinityServer() as server:          # minilm, reranker, classifier (+ clip)
        print(server.url, server.api_key, server.models)

CLI::

    python scripts/local_infinity.py serve [--port P] [--api-key K] [--models minilm,reranker]
    python scripts/local_infinity.py setup        # build the venv and the models, print paths
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

#: Names a set-up script to run instead of the source checkout's ``scripts/setup_server.sh``.
SETUP_SCRIPT_ENV = "INFINITY_RAG_SETUP_SCRIPT"
#: Names the ``infinity_emb`` executable to run instead of the one in the server venv.
INFINITY_BIN_ENV = "INFINITY_RAG_INFINITY_BIN"

#: Served name -> folder under the models dir (as built by scripts/build_models.py): what a
#: ``LocalInfinityServer`` serves by default.
DEFAULT_MODELS: dict[str, str] = {
    "minilm": "minilm",
    "reranker": "reranker-random",
    "classifier": "classifier-random",
    "clip": "clip-tiny",
}
#: The bearer token a ``LocalInfinityServer`` requires unless told otherwise.
DEFAULT_API_KEY = "infinity-rag-local-key"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "COLUMNS": "200",  # rich formats the log: keep tracebacks on one line each
}


class LocalInfinityError(RuntimeError):
    """The server could not be set up, did not become healthy, or died."""


@dataclass(frozen=True)
class ServerEnv:
    """Where the Infinity server venv and the models are (see ``server_env_paths``).

    Attributes:
        home: the root folder (``$INFINITY_RAG_HOME``, default ``~/.cache/infinity-rag``).
        venv: the server's own virtualenv, ``home/server-venv``.
        models_dir: the model folders, ``home/models`` (one sub-folder per model).
        infinity_bin: the ``infinity_emb`` executable that is run.
    """

    home: Path
    venv: Path
    models_dir: Path
    infinity_bin: Path

    def model_dir(self, folder: str) -> Path:
        """The path of the model folder ``folder`` under ``models_dir``."""
        return self.models_dir / folder


def rag_home() -> Path:
    """``$INFINITY_RAG_HOME`` if set, else ``~/.cache/infinity-rag``."""
    env = os.environ.get("INFINITY_RAG_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "infinity-rag"


def server_env_paths(home: Path | None = None) -> ServerEnv:
    """The paths of the server venv and models, without building anything.

    Args:
        home: the root folder; default ``rag_home``. ``$INFINITY_RAG_INFINITY_BIN``, if
            set, names the ``infinity_emb`` executable (a path, or a name on ``PATH``) to run
            instead of the venv's: your own installation of infinity-emb.
    """
    home = (home or rag_home()).expanduser().resolve()
    venv = home / "server-venv"
    named = os.environ.get(INFINITY_BIN_ENV)
    return ServerEnv(
        home=home,
        venv=venv,
        models_dir=home / "models",
        infinity_bin=(
            Path(shutil.which(named) or named).expanduser()
            if named
            else venv / "bin" / "infinity_emb"
        ),
    )


def setup_script() -> Path | None:
    """The script that builds the server venv and the models, or ``None`` if there is none.

    ``$INFINITY_RAG_SETUP_SCRIPT`` if set; else ``scripts/setup_server.sh`` of the source
    checkout this module is imported from (an editable install); an installed wheel has none.
    """
    named = os.environ.get(SETUP_SCRIPT_ENV)
    if named:
        return Path(named).expanduser()
    checkout = Path(__file__).resolve().parents[3] / "scripts" / "setup_server.sh"
    return checkout if checkout.is_file() else None


def ensure_server_env(home: Path | None = None, *, quiet: bool = False) -> ServerEnv:
    """Build the server venv and the models (idempotent: about 1 s when everything is built).

    Runs ``setup_script`` (in a source checkout, ``scripts/setup_server.sh``: a venv with
    infinity-emb 0.0.78 and the models built offline, about 70 s and 1.5 GB the first time).

    Args:
        home: the root folder; default ``rag_home``.
        quiet: capture the script's output (shown only if it fails).

    Raises:
        LocalInfinityError: no set-up script, or it failed.
    """
    paths = server_env_paths(home)
    script = setup_script()
    if script is None:
        raise LocalInfinityError(
            f"no Infinity server under {paths.home} and no set-up script: run "
            "scripts/setup_server.sh from an infinity-rag source checkout, set "
            f"{SETUP_SCRIPT_ENV} to a script that builds {paths.venv}, or set "
            f"{INFINITY_BIN_ENV} to your own infinity_emb and pass model folders as paths"
        )
    env = dict(os.environ, INFINITY_RAG_HOME=str(paths.home))
    proc = subprocess.run(
        ["bash", str(script)],
        env=env,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:]
        raise LocalInfinityError(f"{script} failed with exit code {proc.returncode}\n{tail}")
    if not paths.infinity_bin.exists():
        raise LocalInfinityError(f"setup finished but {paths.infinity_bin} is missing")
    return paths


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: get SIGKILL when the parent dies (Linux prctl), so a killed
    test run or notebook kernel leaves no orphan server. No-op where prctl is unavailable."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class StartStop:
    """A server process as a context manager: ``with`` calls ``start()`` (whose result it
    gives) and, on the way out, ``stop()``. Shared with ``LocalPostgres``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalInfinityServer(StartStop):
    """An ``infinity_emb v2`` process on loopback, in its own process group.

    A context manager: ``with`` starts it (and waits until ``GET /health`` answers) and stops
    it, with nothing left running. In pytest, a session fixture::

        @pytest.fixture(scope="session")
        def infinity():
            with LocalInfinityServer(["minilm", "reranker"]) as server:
                yield server  # server.url, server.api_key

    It is also stopped when the interpreter exits (``atexit``), and killed by the kernel when
    the thread that started it dies (``die_with_parent``).

    Args:
        models: which models to serve. ``None``: every default model that is built
            (minilm, reranker, classifier, clip). A sequence of default served names
            (``["minilm", "reranker"]``), or a mapping served name -> folder (an absolute path,
            or a folder name under the models dir).
        port: TCP port; ``None`` picks a free loopback port (kept across ``restart()``).
        api_key: bearer token the server requires; ``None`` disables auth.
        url_prefix: e.g. ``"/v1"``. ``url`` includes it; ``/health`` is never prefixed.
        warmup: run Infinity's model warm-up (startup ~18 s instead of ~7 s).
        extra_env: added to the server's environment (e.g. ``{"INFINITY_QUEUE_SIZE": "4"}``).
        extra_args: appended to the command line (e.g. ``["--batch-size", "8"]``).
        embedding_dtypes: served name -> ``--embedding-dtype`` (``ubinary``, ``binary``, ...);
            the other models get ``float32``. The same folder may be served under several
            names with different dtypes.
        workdir: writable folder for HF_HOME / INFINITY_HOME and the log; default: a temp dir
            that ``stop()`` deletes (unless ``keep_workdir``).
        setup: run ``ensure_server_env()`` on ``start()`` when the venv or models are missing.
        startup_timeout: seconds to wait for ``GET /health``.
        stop_timeout: seconds between SIGTERM and SIGKILL in ``stop()``.
        die_with_parent: the server gets SIGKILL when the process (precisely: the thread) that
            started it dies (Linux ``PR_SET_PDEATHSIG``). Turn off when starting it from a
            short-lived thread.
    """

    def __init__(
        self,
        models: Mapping[str, str | os.PathLike[str]] | Iterable[str] | None = None,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = DEFAULT_API_KEY,
        url_prefix: str = "",
        warmup: bool = False,
        extra_env: Mapping[str, str] | None = None,
        extra_args: Iterable[str] = (),
        embedding_dtypes: Mapping[str, str] | None = None,
        home: Path | None = None,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool = False,
        setup: bool = True,
        startup_timeout: float = 180.0,
        stop_timeout: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        if url_prefix and (not url_prefix.startswith("/") or url_prefix.endswith("/")):
            raise ValueError("url_prefix must start with '/' and not end with '/'")
        self.env_paths = server_env_paths(home)
        self._models_spec = models
        self.host = host
        self.port = port
        self.api_key = api_key
        self.url_prefix = url_prefix
        self.warmup = warmup
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args)
        self.embedding_dtypes = dict(embedding_dtypes or {})
        self.setup = setup
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.die_with_parent = die_with_parent
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._keep_workdir = keep_workdir or workdir is not None
        self.workdir: Path | None = self._workdir_arg
        self.models: dict[str, Path] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log_offset = 0
        self._atexit_registered = False

    # ------------------------------------------------------------------ properties
    @property
    def root_url(self) -> str:
        """``http://host:port`` (where ``/health`` lives)."""
        if self.port is None:
            raise LocalInfinityError("server not started: no port yet")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """API base URL, including the url prefix (``/embeddings`` etc. hang below it)."""
        return self.root_url + self.url_prefix

    @property
    def health_url(self) -> str:
        """``root_url + "/health"`` (never under the url prefix)."""
        return self.root_url + "/health"

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr), in the workdir."""
        if self.workdir is None:
            raise LocalInfinityError("server not started: no workdir yet")
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        """The server's process id (its process group id too), ``None`` when not started."""
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        """The process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def _resolve_models(self) -> dict[str, Path]:
        spec = self._models_spec
        models_dir = self.env_paths.models_dir
        if spec is None:
            pairs = {
                name: models_dir / folder
                for name, folder in DEFAULT_MODELS.items()
                if (models_dir / folder / "config.json").exists() or name == "minilm"
            }
        elif isinstance(spec, Mapping):
            pairs = {name: models_dir / Path(folder) for name, folder in spec.items()}
        else:
            pairs = {}
            for name in spec:
                if name not in DEFAULT_MODELS:
                    raise ValueError(f"unknown model {name!r}; known: {sorted(DEFAULT_MODELS)}")
                pairs[name] = models_dir / DEFAULT_MODELS[name]
        if not pairs:
            raise ValueError("no models to serve")
        return pairs  # models_dir / absolute path == the absolute path

    def _needs_setup(self, models: Mapping[str, Path]) -> bool:
        return not self.env_paths.infinity_bin.exists() or any(
            not (d / "config.json").exists() for d in models.values()
        )

    def command(self) -> list[str]:
        """The command line that starts the server (with the resolved models and port)."""
        cmd = [str(self.env_paths.infinity_bin), "v2"]
        for name, folder in self.models.items():
            cmd += ["--model-id", str(folder), "--served-model-name", name]
        unknown = set(self.embedding_dtypes) - set(self.models)
        if unknown:
            raise ValueError(f"embedding_dtypes for models not served: {sorted(unknown)}")
        if self.embedding_dtypes:  # Infinity takes one value for all models, or one per model
            for name in self.models:
                cmd += ["--embedding-dtype", self.embedding_dtypes.get(name, "float32")]
        cmd += [
            "--engine", "torch",
            "--device", "cpu",
            "--no-bettertransformer",
            "--no-compile",
            "--host", self.host,
            "--port", str(self.port),
        ]  # fmt: skip
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.url_prefix:
            cmd += ["--url-prefix", self.url_prefix]
        if not self.warmup:
            cmd.append("--no-model-warmup")
        return cmd + self.extra_args

    def _environment(self) -> dict[str, str]:
        assert self.workdir is not None
        # Inherited INFINITY_* variables would silently change the server (queue size, key ...).
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFINITY_")}
        env.update(OFFLINE_ENV)
        env["HF_HOME"] = str(self.workdir / "hf-home")
        env["INFINITY_HOME"] = str(self.workdir / "infinity-home")
        env.update(self.extra_env)
        return env

    def start(self) -> LocalInfinityServer:
        """Start the server and wait until it is healthy; returns ``self``.

        Builds the server venv and models first if they are missing (``setup``). Raises
        ``LocalInfinityError`` if the server exits or is not healthy in time (its log's
        tail in the message).
        """
        if self.is_running():
            raise LocalInfinityError(f"server already running (pid {self.pid})")
        models = self._resolve_models()
        if self._needs_setup(models):
            if not self.setup:
                raise LocalInfinityError(
                    f"server venv or models missing under {self.env_paths.home}; "
                    "run ensure_server_env() (scripts/setup_server.sh)"
                )
            ensure_server_env(self.env_paths.home)
            models = self._resolve_models()
        missing = [str(d) for d in models.values() if not (d / "config.json").exists()]
        if missing:
            raise LocalInfinityError(f"model folders without config.json: {missing}")
        self.models = models
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="infinity-rag-server-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        auto_port = self.port is None
        for attempt in range(3):
            if auto_port and (self.port is None or attempt > 0):
                self.port = free_port(self.host)
            try:
                self._launch()
                return self
            except LocalInfinityError as exc:
                # Another process grabbed the free port between our probe and the server's bind.
                if not (auto_port and "address already in use" in str(exc).lower()):
                    raise
        raise LocalInfinityError("no free port after 3 attempts")

    def _launch(self) -> None:
        log = self.log_path.open("ab")
        self._log_offset = log.tell()
        log.write(f"\n=== start: {' '.join(self.command())}\n".encode())
        log.flush()
        t0 = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=str(self.workdir),
                start_new_session=True,  # own process group: stop() kills all of it
                preexec_fn=(
                    functools.partial(_die_with_parent, os.getpid())
                    if self.die_with_parent
                    else None
                ),
            )
        finally:
            log.close()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._wait_healthy(t0)
        except BaseException:
            self._terminate_group(force=True)
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_healthy(self, t0: float) -> None:
        assert self.process is not None
        deadline = t0 + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise LocalInfinityError(
                    f"Infinity server exited with code {code} during startup "
                    f"(log: {self.log_path})\n{self.log_tail()}"
                )
            if self._probe_health():
                return
            if time.monotonic() > deadline:
                raise LocalInfinityError(
                    f"Infinity server not healthy after {self.startup_timeout:.0f} s "
                    f"(log: {self.log_path})\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def _probe_health(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=timeout) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def healthy(self) -> bool:
        """Running, and ``GET /health`` answers 200."""
        return self.is_running() and self._probe_health()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the server logged since its last start."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace")
        except (OSError, LocalInfinityError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def _terminate_group(self, *, force: bool) -> None:
        proc = self.process
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        if not force:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout)
        # SIGKILL whatever is left of the group (the leader, or children it left behind).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.process = None

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after ``stop_timeout``; remove the temp workdir."""
        self._terminate_group(force=False)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self.workdir is not None and not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL the process group (a crash); the port and workdir are kept for ``restart()``."""
        self._terminate_group(force=True)

    def restart(self) -> LocalInfinityServer:
        """Stop (if running) and start again on the same port, same models, same key."""
        self._terminate_group(force=False)
        return self.start()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        port = self.port if self.port is not None else "?"
        return f"LocalInfinityServer({self.host}:{port}, models={list(self.models)}, {state})"


# ---------------------------------------------------------------------- CLI
def _cmd_setup(_args: argparse.Namespace) -> int:
    paths = ensure_server_env()
    print(f"home:      {paths.home}")
    print(f"venv:      {paths.venv}")
    print(f"models:    {paths.models_dir}")
    print(f"infinity:  {paths.infinity_bin}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    ensure_server_env()
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    server = LocalInfinityServer(
        models,
        port=args.port,
        host=args.host,
        api_key=args.api_key or None,
        url_prefix=args.url_prefix,
        warmup=args.warmup,
        startup_timeout=args.timeout,
    )

    def _interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a process started in the background by a shell inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    print("starting Infinity ...", flush=True)
    try:
        server.start()
        print(f"Infinity ready in {server.startup_seconds:.1f} s", flush=True)
        print(f"  url:     {server.url}", flush=True)
        print(f"  health:  {server.health_url}", flush=True)
        print(f"  api key: {server.api_key or '(none)'}", flush=True)
        for name, folder in server.models.items():
            print(f"  model:   {name} -> {folder}", flush=True)
        print(f"  log:     {server.log_path}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while server.is_running():
            time.sleep(0.5)
        print(f"Infinity exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """The command line: ``setup`` or ``serve`` (``python scripts/local_infinity.py --help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="build the server venv and models (idempotent), print paths")
    serve = sub.add_parser("serve", help="run Infinity in the foreground until Ctrl-C")
    serve.add_argument("--port", type=int, default=7997)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--api-key", default=DEFAULT_API_KEY, help="'' disables auth")
    serve.add_argument("--url-prefix", default="")
    serve.add_argument(
        "--models", default="", help=f"comma-separated subset of {','.join(DEFAULT_MODELS)}"
    )
    serve.add_argument("--warmup", action="store_true", help="run Infinity's model warm-up")
    serve.add_argument("--timeout", type=float, default=180.0, help="startup timeout (s)")
    args = parser.parse_args(argv)
    return _cmd_setup(args) if args.command == "setup" else _cmd_serve(args)


if __name__ == "__main__":
    sys.exit(main())
