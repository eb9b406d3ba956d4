"""infinity-rag: the Infinity embedding server (``infinity-emb``) for RAG pipelines.

``InfinityClient`` talks to the server (sync and async); the framework classes live in
``infinity_rag.langchain`` and ``infinity_rag.llama_index`` (extras ``[langchain]`` and
``[llama-index]``). Importing this package imports neither framework.
"""

from infinity_rag import errors, types
from infinity_rag._version import __version__
from infinity_rag.client import InfinityClient
from infinity_rag.errors import *  # noqa: F403  (the names of errors.__all__)
from infinity_rag.types import *  # noqa: F403  (the names of types.__all__)

# Every exception and every result type is public here too (the typing spec's re-export form:
# type checkers read it).
__all__ = ["InfinityClient", "__version__"]
__all__ += errors.__all__
__all__ += types.__all__
