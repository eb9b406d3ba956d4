"""``infinity_rag.testing``, the parts that need no server: paths, set-up, the command line,
model resolution, URIs and the corpus. (Starting real servers: integration_tests.)"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import infinity_rag.testing as testing
from infinity_rag.testing import (
    DEFAULT_API_KEY,
    QUESTIONS,
    LocalInfinityError,
    LocalInfinityServer,
    LocalPostgres,
    LocalPostgresError,
    ensure_server_env,
    load_corpus,
    server_env_paths,
    setup_script,
    sqlalchemy_url,
)
from infinity_rag.testing._infinity import INFINITY_BIN_ENV, SETUP_SCRIPT_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty INFINITY_RAG_HOME: no venv, no models."""
    monkeypatch.setenv("INFINITY_RAG_HOME", str(tmp_path))
    monkeypatch.delenv(INFINITY_BIN_ENV, raising=False)
    monkeypatch.delenv(SETUP_SCRIPT_ENV, raising=False)
    return tmp_path


def built(home: Path, *folders: str) -> None:
    for folder in folders:
        (home / "models" / folder).mkdir(parents=True)
        (home / "models" / folder / "config.json").write_text("{}")


def test_paths_follow_the_home_folder(home: Path) -> None:
    paths = server_env_paths()
    assert paths.home == home.resolve()
    assert paths.venv == home.resolve() / "server-venv"
    assert paths.models_dir == home.resolve() / "models"
    assert paths.infinity_bin == home.resolve() / "server-venv" / "bin" / "infinity_emb"
    assert paths.model_dir("minilm") == home.resolve() / "models" / "minilm"


def test_an_own_infinity_install_replaces_the_venv(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "bin" / "infinity_emb"
    own.parent.mkdir()
    own.write_text("#!/bin/sh\n")
    monkeypatch.setenv(INFINITY_BIN_ENV, str(own))
    assert server_env_paths().infinity_bin == own
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    server = LocalInfinityServer({"mine": model}, setup=False)
    # the binary and the model exist: nothing to build
    assert not server._needs_setup(server._resolve_models())


def test_the_checkout_setup_script_is_found(home: Path) -> None:
    assert setup_script() == ROOT / "scripts" / "setup_server.sh"


def test_a_named_setup_script_is_run_and_its_failure_reported(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "setup.sh"
    script.write_text('echo "building in $INFINITY_RAG_HOME"; echo "no disk space" >&2; exit 3\n')
    monkeypatch.setenv(SETUP_SCRIPT_ENV, str(script))
    assert setup_script() == script
    with pytest.raises(LocalInfinityError, match="exit code 3") as caught:
        ensure_server_env(quiet=True)
    assert f"building in {home.resolve()}" in str(caught.value)
    assert "no disk space" in str(caught.value)


def test_a_setup_that_builds_nothing_is_an_error(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("exit 0\n")
    monkeypatch.setenv(SETUP_SCRIPT_ENV, str(script))
    with pytest.raises(LocalInfinityError, match="infinity_emb is missing"):
        ensure_server_env(quiet=True)


def test_without_a_setup_script_the_error_says_what_to_do(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testing._infinity, "setup_script", lambda: None)
    with pytest.raises(LocalInfinityError) as caught:
        ensure_server_env()
    message = str(caught.value)
    assert "scripts/setup_server.sh" in message
    assert SETUP_SCRIPT_ENV in message
    assert INFINITY_BIN_ENV in message


def test_start_without_setup_refuses_before_running_anything(home: Path) -> None:
    server = LocalInfinityServer(["minilm"], setup=False)
    with pytest.raises(LocalInfinityError, match="missing under"):
        server.start()
    assert server.process is None
    assert not server.is_running()


def test_default_models_are_the_built_ones(home: Path) -> None:
    built(home, "minilm", "classifier-random")
    models = LocalInfinityServer()._resolve_models()
    assert models == {
        "minilm": home.resolve() / "models" / "minilm",
        "classifier": home.resolve() / "models" / "classifier-random",
    }


def test_models_by_name_by_folder_and_by_path(home: Path, tmp_path: Path) -> None:
    assert LocalInfinityServer(["reranker"])._resolve_models() == {
        "reranker": home.resolve() / "models" / "reranker-random"
    }
    elsewhere = tmp_path / "elsewhere"
    models = LocalInfinityServer({"a": "reranker-hybrid", "b": elsewhere})._resolve_models()
    assert models == {"a": home.resolve() / "models" / "reranker-hybrid", "b": elsewhere}


def test_bad_model_specs_are_refused(home: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model 'bge'; known: \['classifier', 'clip'"):
        LocalInfinityServer(["minilm", "bge"])._resolve_models()
    with pytest.raises(ValueError, match="no models to serve"):
        LocalInfinityServer([])._resolve_models()
    with pytest.raises(ValueError, match="url_prefix must start with '/'"):
        LocalInfinityServer(url_prefix="v1")
    with pytest.raises(ValueError, match="url_prefix must start with '/'"):
        LocalInfinityServer(url_prefix="/v1/")


def test_the_command_line(home: Path) -> None:
    server = LocalInfinityServer(port=8123, url_prefix="/v1", extra_args=["--batch-size", "8"])
    server.models = {"minilm": Path("/m/minilm"), "reranker": Path("/m/rr")}
    cmd = server.command()
    assert cmd[:2] == [str(home.resolve() / "server-venv" / "bin" / "infinity_emb"), "v2"]
    joined = " ".join(cmd)
    assert "--model-id /m/minilm --served-model-name minilm" in joined
    assert "--model-id /m/rr --served-model-name reranker" in joined
    assert "--host 127.0.0.1 --port 8123" in joined
    assert f"--api-key {DEFAULT_API_KEY}" in joined
    assert "--url-prefix /v1" in joined
    assert "--no-model-warmup" in cmd
    assert cmd[-2:] == ["--batch-size", "8"]
    assert server.url == "http://127.0.0.1:8123/v1"
    assert server.health_url == "http://127.0.0.1:8123/health"

    open_server = LocalInfinityServer(port=8123, api_key=None, warmup=True)
    open_server.models = {"minilm": Path("/m/minilm")}
    assert "--api-key" not in open_server.command()
    assert "--no-model-warmup" not in open_server.command()


def test_the_server_environment_is_offline_and_ignores_inherited_settings(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFINITY_QUEUE_SIZE", "1")
    server = LocalInfinityServer(workdir=tmp_path, extra_env={"INFINITY_BATCH_SIZE": "4"})
    env = server._environment()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_HOME"] == str(tmp_path / "hf-home")
    assert "INFINITY_QUEUE_SIZE" not in env
    assert env["INFINITY_BATCH_SIZE"] == "4"


def test_before_start_there_is_no_url_and_no_key_in_the_repr(home: Path) -> None:
    server = LocalInfinityServer(api_key="s3cret-key")
    with pytest.raises(LocalInfinityError, match="no port yet"):
        _ = server.url
    with pytest.raises(LocalInfinityError, match="no workdir yet"):
        _ = server.log_path
    assert server.pid is None
    assert server.log_tail() == "<no log>"
    assert "s3cret-key" not in repr(server)
    assert repr(server) == "LocalInfinityServer(127.0.0.1:?, models=[], stopped)"


def test_the_server_module_is_stdlib_only() -> None:
    """scripts/local_infinity.py loads it by path under the server venv's Python (no httpx):
    it must import nothing of infinity_rag and nothing outside the standard library."""
    path = ROOT / "src" / "infinity_rag" / "testing" / "_infinity.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_sqlalchemy_urls() -> None:
    assert sqlalchemy_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert (
        sqlalchemy_url("postgres://u@/db?host=/tmp/x") == "postgresql+psycopg://u@/db?host=/tmp/x"
    )
    assert sqlalchemy_url("postgresql://u@h/db", "asyncpg") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ValueError, match="not a postgresql:// URI: 'mysql://h/db'"):
        sqlalchemy_url("mysql://h/db")


def test_an_external_postgres_is_named_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_TEST_POSTGRES_URL", "postgresql://u:p@db.example:5432/rag")
    pg = LocalPostgres.from_env(extensions=())
    assert pg.external
    assert pg.uri == "postgresql://u:p@db.example:5432/rag"
    assert pg.sqlalchemy_url() == "postgresql+psycopg://u:p@db.example:5432/rag"
    pg.stop()  # leaves it alone: nothing to stop, the URI stays
    assert pg.uri == "postgresql://u:p@db.example:5432/rag"


def test_a_local_postgres_has_no_uri_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFINITY_TEST_POSTGRES_URL", raising=False)
    pg = LocalPostgres.from_env()
    assert not pg.external
    with pytest.raises(LocalPostgresError, match="server not started"):
        _ = pg.uri


def test_the_corpus_is_fixed_and_names_its_sources() -> None:
    corpus = load_corpus(("json", "shlex"), max_chars=300)
    assert corpus == load_corpus(("json", "shlex"), max_chars=300)
    assert {p.module for p in corpus} == {"json", "shlex"}
    assert all(p.text.startswith(p.source + ": ") for p in corpus)
    assert all(len(p.text) <= len(p.source) + 2 + 300 for p in corpus)
    assert "json.loads" in {p.source for p in corpus}


def test_the_corpus_leaves_out_members_other_packages_patch_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shlex

    before = load_corpus(("shlex", "logging"))

    def warning_once(self: object) -> None:
        """Log a warning once (as transformers adds to logging.Logger)."""

    warning_once.__module__ = "transformers.utils.logging"
    monkeypatch.setattr(shlex.shlex, "warning_once", warning_once, raising=False)
    assert load_corpus(("shlex", "logging")) == before
    # A stdlib member set from another stdlib module stays (Formatter.converter = time.localtime).
    assert "logging.Formatter.converter" in {p.source for p in before}


def test_every_question_is_answered_by_the_default_corpus() -> None:
    sources = {p.source for p in load_corpus()}
    assert len(QUESTIONS) == 9
    for question in QUESTIONS:
        assert question.answers, question
        assert question.answers & sources, question
