"""LangChain integration: ``InfinityEmbeddings`` and ``InfinityRerank``.

Needs the ``[langchain]`` extra (``pip install "infinity-rag[langchain]"``, langchain-core 1.x).

```python
from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

embeddings = InfinityEmbeddings(model="BAAI/bge-small-en-v1.5")
reranker = InfinityRerank(model="mixedbread-ai/mxbai-rerank-xsmall-v1", top_n=5)
```
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "infinity_rag.langchain needs langchain-core; install it with "
        '`pip install "infinity-rag[langchain]"`.'
    ) from exc

from infinity_rag.langchain.embeddings import InfinityEmbeddings
from infinity_rag.langchain.rerank import InfinityRerank

__all__ = ["InfinityEmbeddings", "InfinityRerank"]
