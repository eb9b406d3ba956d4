"""infinity-rag: the Infinity embedding server (``infinity-emb``) for RAG pipelines.

``InfinityClient`` talks to the server (sync and async); the framework classes live in
``infinity_rag.langchain`` and ``infinity_rag.llama_index`` (extras ``[langchain]`` and
``[llama-index]``). Importing this package imports neither framework.
"""

from infinity_rag._version import __version__
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
