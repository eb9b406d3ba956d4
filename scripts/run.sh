#!/usr/bin/env bash
# The project's two entry points, for a fresh machine:
#   bash scripts/run.sh demo   set up what the demo needs (the dev venv's demo extra, the Infinity
#                              server's venv and models), start a local Infinity server, run it
#   bash scripts/run.sh test   set everything up, run lint, types, the docs build, unit tests, the
#                              built wheel from fresh venvs, integration and notebook tests
# Set-up is idempotent and cached: the dev venv in .venv (rebuilt when pyproject.toml changes),
# the Infinity server's own venv and models under ${INFINITY_RAG_HOME:-~/.cache/infinity-rag}.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=.venv

setup_dev_venv() {
  # $1: the extra to install, "dev" (everything the tests need) or "demo" (what the demo needs,
  # a part of dev: a venv ready for dev is ready for the demo).
  local extra="$1" hash stamp started=$SECONDS
  # The version file too: an editable install's metadata carries the version it was made with.
  hash="$(cat pyproject.toml src/infinity_rag/_version.py | sha256sum | cut -c1-12)"
  stamp="$VENV/.ready-$extra-$hash"
  if [ -f "$stamp" ] || [ -f "$VENV/.ready-dev-$hash" ]; then
    echo "[setup] dev venv ready: $VENV"
    return
  fi
  echo "[setup] installing infinity-rag with its $extra extras into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
  fi
  # On top of an existing venv pip only adds what the new pyproject.toml asks for.
  "$VENV/bin/pip" install --quiet -e ".[$extra]"
  rm -f "$VENV"/.ready-*
  touch "$stamp"
  echo "[setup] dev venv ($extra) in $((SECONDS - started)) s"
}

timed() {  # timed LABEL COMMAND...: run it, then say how long it took
  local label="$1" started=$SECONDS
  shift
  "$@"
  echo "[setup] $label: $((SECONDS - started)) s"
}

setup_demo() {
  timed "dev venv" setup_dev_venv demo
  timed "Infinity server venv and models" bash scripts/setup_server.sh
}

setup_all() {
  timed "dev venv" setup_dev_venv dev
  timed "Infinity server venv and models" bash scripts/setup_server.sh
  timed "LiteLLM proxy venv" bash scripts/setup_litellm.sh   # for the proxy tests only
  # Debian's nginx, for the load-balancer test. Where it cannot be installed the script says so
  # loudly and that test fails with the reason; the rest of the set-up and the tests go on.
  bash scripts/setup_nginx.sh >/dev/null || echo "[setup] WARNING: no nginx: its test will fail" >&2
}

run_tests() {
  local bin="$VENV/bin"
  echo "== ruff"
  "$bin/ruff" check .
  "$bin/ruff" format --check .
  echo "== mypy (strict, src/)"
  "$bin/mypy"
  echo "== API reference (mkdocs build --strict)"
  local site
  site="$(mktemp -d)"
  # (not --quiet: it silences the warnings, and --strict then passes whatever they say)
  NO_MKDOCS_2_WARNING=1 "$bin/mkdocs" build --strict --site-dir "$site" || { rm -rf "$site"; exit 1; }
  rm -rf "$site"
  echo "== unit tests"
  "$bin/pytest" unit_tests -q -p no:cacheprovider
  echo "== sdist and wheel: contents, and the wheel installed per extra in fresh venvs"
  "$bin/python" scripts/check_dist.py
  echo "== integration tests (real Infinity server, LiteLLM proxy, Qdrant)"
  "$bin/pytest" integration_tests -q -p no:cacheprovider -rs
  echo "== notebooks (their sources executed with nbclient; the committed .ipynb checked)"
  "$bin/python" scripts/build_notebooks.py --check --timeout 1800
}

case "${1:-}" in
  demo) setup_demo; shift; exec "$VENV/bin/python" examples/rag_demo.py "$@" ;;
  test) setup_all; run_tests ;;
  setup) setup_all ;;
  *) echo "usage: bash scripts/run.sh demo|test|setup" >&2; exit 2 ;;
esac
