"""Haystack integration: ``InfinityTextEmbedder``, ``InfinityDocumentEmbedder``,
``InfinityDocumentImageEmbedder`` and ``InfinityRanker`` (extra ``[haystack]``, haystack-ai 3.x).

```python
from infinity_rag.haystack import InfinityDocumentEmbedder, InfinityRanker, InfinityTextEmbedder

doc_embedder = InfinityDocumentEmbedder(model="BAAI/bge-small-en-v1.5")
text_embedder = InfinityTextEmbedder(model="BAAI/bge-small-en-v1.5")
ranker = InfinityRanker(model="mixedbread-ai/mxbai-rerank-xsmall-v1", top_k=5)
```
"""

try:
    import haystack  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "infinity_rag.haystack needs haystack-ai; install it with "
        '`pip install "infinity-rag[haystack]"`.'
    ) from exc

from infinity_rag.haystack.embedders import (
    InfinityDocumentEmbedder,
    InfinityDocumentImageEmbedder,
    InfinityTextEmbedder,
)
from infinity_rag.haystack.ranker import InfinityRanker

__all__ = [
    "InfinityDocumentEmbedder",
    "InfinityDocumentImageEmbedder",
    "InfinityRanker",
    "InfinityTextEmbedder",
]
