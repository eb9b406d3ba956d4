"""infinity-rag: the Infinity embedding server (``infinity-emb``) for RAG pipelines.

``InfinityClient`` talks to the server (sync and async); the framework classes live in
``infinity_rag.langchain`` and ``infinity_rag.llama_index`` (extras ``[langchain]`` and
``[llama-index]``). Importing this package imports neither framework.
"""

from importlib.metadata import PackageNotFoundError, version

from infinity_rag.client import InfinityClient
from infinity_rag.errors import (
    AuthenticationError,
    InfinityAPIError,
    InfinityConnectionError,
    InfinityError,
    InfinityTimeoutError,
    InvalidRequestError,
    InvalidResponseError,
    ModelCapabilityError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    ServerError,
)
from infinity_rag.types import (
    ClassifyResult,
    ClassLabel,
    EmbeddingArrayResult,
    EmbeddingResult,
    ModelInfo,
    ReplicaState,
    RerankItem,
    RerankResult,
    Usage,
)

try:
    __version__ = version("infinity-rag")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "AuthenticationError",
    "ClassLabel",
    "ClassifyResult",
    "EmbeddingArrayResult",
    "EmbeddingResult",
    "InfinityAPIError",
    "InfinityClient",
    "InfinityConnectionError",
    "InfinityError",
    "InfinityTimeoutError",
    "InvalidRequestError",
    "InvalidResponseError",
    "ModelCapabilityError",
    "ModelInfo",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "ReplicaState",
    "RerankItem",
    "RerankResult",
    "ServerError",
    "Usage",
    "__version__",
]
