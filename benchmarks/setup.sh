#!/usr/bin/env bash
# Build (once per machine) the virtualenvs the benchmark's peers run in. Idempotent: each venv
# is rebuilt only when its pins change (a marker file holds their hash).
#
#   peers venv:  langchain-community, langchain-openai, litellm, llama-index openai-like, and
#                infinity-rag itself (editable, [all]) so that every client shares one httpx.
#   infclient venv: infinity_client 0.0.78, which needs httpx < 0.28, with langchain-community
#                (its InfinityRerank is built on infinity_client).
#
# The project's dev venv (.venv) is never touched. The Infinity server's venv is built by
# scripts/setup_server.sh (run.py calls it through scripts/local_infinity.py).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${INFINITY_RAG_HOME:-$HOME/.cache/infinity-rag}"
VENVS="$HOME_DIR/bench-venvs"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
mkdir -p "$VENVS"

# litellm: 1.106.12 installs here (newer ones pull pins the registry lacks); never 1.107.0.
PEER_PINS=(
  "langchain-community==0.4.2"
  "langchain-openai==1.7.4"
  "litellm==1.106.12"
  "llama-index-embeddings-openai-like==0.4.0"
  "py-spy==0.4.3"
)
INFCLIENT_PINS=("infinity_client==0.0.78" "httpx<0.28" "langchain-community==0.4.2" "py-spy==0.4.3")

build() {  # build NAME PIP-ARGS...
  local name="$1"
  shift
  local venv="$VENVS/$name"
  local marker
  marker="$venv/.ready-$(echo "$*" | sha256sum | cut -c1-12)"
  if [ -f "$marker" ]; then
    echo "[bench-setup] $name venv ready: $venv"
    return
  fi
  echo "[bench-setup] building the $name venv in $venv"
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
  fi
  "$venv/bin/pip" install --quiet "$@"
  rm -f "$venv"/.ready-*
  touch "$marker"
}

build peers "${PEER_PINS[@]}" -e "$ROOT[all]"
build infclient "${INFCLIENT_PINS[@]}"

# The Infinity server and its local models (MiniLM, seeded reranker).
bash "$ROOT/scripts/setup_server.sh"
