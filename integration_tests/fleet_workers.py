"""What the fleet tests run in other processes (``spawn`` workers import it by name, so it stays
a module of its own, at module level, importing nothing from the tests' fixtures)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from infinity_rag import InfinityClient


@dataclass(frozen=True)
class ChunkAnswer:
    """What a worker sends back for one chunk of texts."""

    start: int
    vectors: list[list[float]]
    pid: int
    kind: str
    base_urls: tuple[str, ...]
    shown: tuple[str, ...]  # every repr / str / dump of the object and its client, made here
    key_hidden: bool  # the worker's own check that its key is in none of them


def client_of(embedder: Any) -> InfinityClient:
    """The InfinityClient an embedder sends with (it may be one)."""
    if isinstance(embedder, InfinityClient):
        return embedder
    client = embedder._client  # both frameworks keep theirs there
    assert isinstance(client, InfinityClient)
    return client


def shown_forms(embedder: Any) -> tuple[str, ...]:
    """How the object and its client show: reprs, strs, pydantic dumps, replica states."""
    client = client_of(embedder)
    forms = [repr(embedder), str(embedder), repr(client), str(client), repr(client.replicas())]
    if hasattr(embedder, "model_dump_json"):
        forms += [embedder.model_dump_json(), repr(embedder.model_dump())]
    return tuple(forms)


def embed_chunk(embedder: Any, start: int, texts: list[str]) -> ChunkAnswer:
    """Embed ``texts`` with an embedder that was pickled to get here (and check its key)."""
    client = client_of(embedder)
    if isinstance(embedder, InfinityClient):
        kind = "InfinityClient"
        vectors = embedder.embed(texts, model="minilm").embeddings
    elif hasattr(embedder, "embed_documents"):
        kind = "langchain.InfinityEmbeddings"
        vectors = embedder.embed_documents(texts)
    else:
        kind = "llama_index.InfinityEmbedding"
        vectors = embedder.get_text_embedding_batch(texts)
    shown = shown_forms(embedder)
    key = client.api_key.get_secret_value() if client.api_key is not None else None
    return ChunkAnswer(
        start=start,
        vectors=vectors,
        pid=os.getpid(),
        kind=kind,
        base_urls=client.base_urls,
        shown=shown,
        key_hidden=key is not None and all(key not in text for text in shown),
    )
