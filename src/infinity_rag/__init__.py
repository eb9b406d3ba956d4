"""infinity-rag: the Infinity embedding server (``infinity-emb``) for RAG pipelines.

``InfinityClient`` talks to the server (sync and async); the framework classes live in
``infinity_rag.langchain`` and ``infinity_rag.llama_index`` (extras ``[langchain]`` and
``[llama-index]``). Importing this package imports neither framework.
"""

from infinity_rag._version import __version__
from infinity_rag.client import InfinityClient
from infinity_rag.errors import (
    AuthenticationError,
    EncodingRefusedError,
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
    VectorKindError,
)
from infinity_rag.types import (
    ClassifyResult,
    ClassLabel,
    EmbeddingArrayResult,
    EmbeddingResult,
    ModelInfo,
    MultiVectorArrayResult,
    MultiVectorResult,
    PackedEmbeddingArrayResult,
    PackedEmbeddingResult,
    Packing,
    ReplicaState,
    RerankItem,
    RerankResult,
    Usage,
    VectorShape,
)

__all__ = [
    "AuthenticationError",
    "ClassLabel",
    "ClassifyResult",
    "EmbeddingArrayResult",
    "EmbeddingResult",
    "EncodingRefusedError",
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
    "MultiVectorArrayResult",
    "MultiVectorResult",
    "NotFoundError",
    "OverloadedError",
    "PackedEmbeddingArrayResult",
    "PackedEmbeddingResult",
    "Packing",
    "ReplicaState",
    "RerankItem",
    "RerankResult",
    "ServerError",
    "Usage",
    "VectorKindError",
    "VectorShape",
    "__version__",
]
