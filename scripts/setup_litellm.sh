#!/usr/bin/env bash
# Build (once per machine) a virtualenv with the LiteLLM proxy, for the tests that run the client
# through `litellm --config` in front of a local Infinity server.
# LiteLLM's pins must never constrain the package (nor the Infinity server), hence its own venv.
#   litellm[proxy]==1.106.12 installs (about 60 s); 1.108 to 1.110 do not (their proxy extra pins
#   packages the registry lacks). Never use 1.107.0: a compromised release.
# Re-running is cheap: the install is skipped when its marker is present.
# Prints nothing but the venv's litellm executable on stdout's last line.
set -euo pipefail

HOME_DIR="${INFINITY_RAG_HOME:-$HOME/.cache/infinity-rag}"
VENV="$HOME_DIR/litellm-venv"
PY="${PYTHON:-python3}"
PINS=("litellm[proxy]==1.106.12")
MARKER="$VENV/.infinity-rag-ready-$(echo "${PINS[*]}" | sha256sum | cut -c1-12)"
mkdir -p "$HOME_DIR"

if [ ! -f "$MARKER" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating the LiteLLM proxy venv in $VENV (about 60 s)" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip >&2
  else
    echo "[setup] updating the LiteLLM proxy venv in $VENV" >&2
  fi
  "$VENV/bin/pip" install --quiet "${PINS[@]}" >&2
  # Refuse a venv that ended up with the compromised release (e.g. through a later manual pip).
  if "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("litellm") == "1.107.0")'; then
    :
  else
    echo "[setup] litellm 1.107.0 is a compromised release; refusing it" >&2
    exit 1
  fi
  rm -f "$VENV"/.infinity-rag-ready-*
  touch "$MARKER"
else
  echo "[setup] LiteLLM proxy venv ready: $VENV" >&2
fi
echo "$VENV/bin/litellm"
