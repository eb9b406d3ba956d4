"""The command line of ``infinity_rag.testing.LocalInfinityServer`` (a real Infinity server):

    python scripts/local_infinity.py serve [--port P] [--api-key K] [--models minilm,reranker]
    python scripts/local_infinity.py setup        # build the venv and the models, print paths

The module lives in the package (``src/infinity_rag/testing/_infinity.py``). It is stdlib
only, and loaded here by its path, so that this also runs under a Python without
``infinity_rag``'s dependencies (the server venv's, for ``build_reranker.py --check-server``):
``from local_infinity import LocalInfinityServer`` with ``scripts/`` on ``sys.path`` works there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "src" / "infinity_rag" / "testing" / "_infinity.py"
_spec = importlib.util.spec_from_file_location("_local_infinity", _PATH)
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module  # dataclasses look their module up there
_spec.loader.exec_module(_module)

DEFAULT_API_KEY = _module.DEFAULT_API_KEY
DEFAULT_MODELS = _module.DEFAULT_MODELS
LocalInfinityError = _module.LocalInfinityError
LocalInfinityServer = _module.LocalInfinityServer
ensure_server_env = _module.ensure_server_env
free_port = _module.free_port
rag_home = _module.rag_home
server_env_paths = _module.server_env_paths
main = _module.main

if __name__ == "__main__":
    sys.exit(main())
