"""LlamaIndex integration: ``InfinityEmbedding`` and ``InfinityRerank`` (extra ``[llama-index]``).

```python
from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank
```
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "infinity_rag.llama_index needs llama-index-core: pip install 'infinity-rag[llama-index]'"
    ) from exc

from infinity_rag.llama_index.embeddings import InfinityEmbedding
from infinity_rag.llama_index.rerank import InfinityRerank

__all__ = ["InfinityEmbedding", "InfinityRerank"]
