"""A LiteLLM proxy (``litellm --config``) on loopback in front of a test Infinity server.

The proxy runs from its own virtualenv, built by ``scripts/setup_litellm.sh`` under
``$INFINITY_RAG_HOME/litellm-venv`` (``litellm[proxy]==1.106.12``; never 1.107.0), with no
database: only the master key authenticates. Its config maps each served Infinity model to
``infinity/NAME`` under the same name::

    with LiteLLMProxy(infinity_url, infinity_key, ["minilm", "reranker"]) as proxy:
        client = InfinityClient(base_url=proxy.url, api_key=proxy.master_key)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parents[1]
SETUP_SCRIPT = REPO / "scripts" / "setup_litellm.sh"
MASTER_KEY = "sk-infinity-rag-litellm-master"

#: LiteLLM must neither phone home nor fetch its model price list at start.
OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
    "DISABLE_SCHEMA_UPDATE": "True",
    "PYTHONUNBUFFERED": "1",
}


class LiteLLMUnavailable(RuntimeError):
    """The LiteLLM venv could not be built (no registry, or the pinned release is gone)."""


def ensure_litellm(timeout: float = 600.0) -> Path:
    """Build (once) the LiteLLM venv; return its ``litellm`` executable."""
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LiteLLMUnavailable(f"{SETUP_SCRIPT} took more than {timeout:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).exists():
        raise LiteLLMUnavailable(
            f"{SETUP_SCRIPT} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return Path(lines[-1])


def config_yaml(
    infinity_url: str,
    infinity_key: str | None,
    models: Iterable[str],
    unreachable: Iterable[str] = (),
) -> str:
    """The proxy's config: each model as ``infinity/NAME`` at ``infinity_url``; each name in
    ``unreachable`` as a model whose server is down (a loopback port nothing listens on)."""
    lines = ["model_list:"]
    entries = [(name, infinity_url) for name in models]
    entries += [(name, f"http://127.0.0.1:{_free_port()}") for name in unreachable]
    for name, api_base in entries:
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: infinity/{name}",
            f"      api_base: {api_base}",
        ]
        if infinity_key:
            lines.append(f"      api_key: {infinity_key}")
    lines += [
        "general_settings:",
        f"  master_key: {MASTER_KEY}",
        "litellm_settings:",
        "  num_retries: 0",
        "  request_timeout: 60",
    ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiteLLMProxy:
    """``litellm --config FILE --host 127.0.0.1 --port P`` in its own process group."""

    def __init__(
        self,
        infinity_url: str,
        infinity_key: str | None,
        models: Iterable[str] = ("minilm", "reranker"),
        *,
        unreachable: Iterable[str] = (),
        startup_timeout: float = 120.0,
    ) -> None:
        self.infinity_url = infinity_url
        self.infinity_key = infinity_key
        self.models = list(models)
        self.unreachable = list(unreachable)
        self.master_key = MASTER_KEY
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "litellm.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> Self:
        executable = ensure_litellm()
        self.workdir = Path(tempfile.mkdtemp(prefix="infinity-rag-litellm-"))
        config = self.workdir / "config.yaml"
        config.write_text(
            config_yaml(self.infinity_url, self.infinity_key, self.models, self.unreachable)
        )
        self.port = _free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INFINITY_", "LITELLM_", "OPENAI_", "DATABASE_URL"))
        }
        env.update(OFFLINE_ENV)
        env["HOME"] = str(self.workdir)  # LiteLLM writes caches under ~
        cmd = [
            str(executable),
            "--config", str(config),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--num_workers", "1",
        ]  # fmt: skip
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.workdir),
                start_new_session=True,
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"litellm exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health/liveliness", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - started > self.startup_timeout:
                raise RuntimeError(
                    f"litellm not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        proc = self.process
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the leader left behind
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
