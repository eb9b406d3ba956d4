#!/usr/bin/env bash
# The project's two entry points, for a fresh machine:
#   bash scripts/run.sh demo   set everything up, start a local Infinity server, run the RAG demo
#   bash scripts/run.sh test   set everything up, run lint, types, the docs build, unit tests, the
#                              built wheel from fresh venvs, integration and notebook tests
# Set-up is idempotent and cached: the dev venv in .venv (rebuilt when pyproject.toml changes),
# the Infinity server's own venv and models under ${INFINITY_RAG_HOME:-~/.cache/infinity-rag}.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=.venv

setup_dev_venv() {
  local stamp
  # The version file too: an editable install's metadata carries the version it was made with.
  stamp="$VENV/.ready-$(cat pyproject.toml src/infinity_rag/_version.py | sha256sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "[setup] installing infinity-rag with its dev extras into $VENV"
    if [ ! -x "$VENV/bin/python" ]; then
      "$PY" -m venv "$VENV"
      "$VENV/bin/pip" install --quiet --upgrade pip
    fi
    # On top of an existing venv pip only adds what the new pyproject.toml asks for.
    "$VENV/bin/pip" install --quiet -e ".[dev]"
    rm -f "$VENV"/.ready-*
    touch "$stamp"
  fi
}

setup_all() {
  setup_dev_venv
  bash scripts/setup_server.sh
  bash scripts/setup_litellm.sh   # a LiteLLM proxy in its own venv, for the proxy tests
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
  demo) setup_all; shift; exec "$VENV/bin/python" examples/rag_demo.py "$@" ;;
  test) setup_all; run_tests ;;
  setup) setup_all ;;
  *) echo "usage: bash scripts/run.sh demo|test|setup" >&2; exit 2 ;;
esac
