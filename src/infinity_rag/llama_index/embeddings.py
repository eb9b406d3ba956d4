"""``InfinityEmbedding``: LlamaIndex text and image embeddings served by Infinity."""

from __future__ import annotations

import io
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageType

from infinity_rag._config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_CONCURRENCY
from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import MediaInput, check_texts
from infinity_rag._integration import EmbedOptions, embed_options
from infinity_rag._vectors import one_float_vector_per_input
from infinity_rag.llama_index._connection import InfinityConnection
from infinity_rag.types import EmbeddingResult

__all__ = ["DEFAULT_EMBED_BATCH_SIZE", "DEFAULT_NUM_WORKERS", "InfinityEmbedding"]

#: LlamaIndex hands ``_get_text_embeddings`` one ``embed_batch_size`` slice at a time, and the
#: sync path waits for each slice before the next. A slice of 1024 texts is 4 requests of 256
#: (the client's batch size) sent 4 at once, so the server's dynamic batching stays busy.
DEFAULT_EMBED_BATCH_SIZE = DEFAULT_BATCH_SIZE * DEFAULT_MAX_CONCURRENCY

#: LlamaIndex's async path starts every slice at once unless ``num_workers`` is set: 100,000
#: texts would be ~400 requests queued at the server, the last ones waiting past the read
#: timeout. Two slices at a time keep the server as busy (8 requests of 256) and the queue short.
DEFAULT_NUM_WORKERS = 2


class InfinityEmbedding(InfinityConnection, MultiModalEmbedding):
    """Embeddings from an Infinity server (``infinity_emb v2``), natively sync and async.

    Setup:
        ```bash
        pip install "infinity-rag[llama-index]"
        export INFINITY_API_BASE=http://localhost:7997   # the server's URL (with its prefix)
        export INFINITY_API_KEY=...                      # if the server runs with --api-key
        ```

    Key init args:
        model_name: the served model (``--served-model-name`` or its Hugging Face id).
        base_url / api_key / timeout / max_retries / default_headers / http_client /
            async_http_client: the connection (URL and key from the environment by default),
            or ``client``: a shared :class:`~infinity_rag.InfinityClient` instead.
        query_instruction / text_instruction: prefixes for queries / documents, for models
            trained with them (``"query: "`` / ``"passage: "`` for E5).
        dimensions: truncate vectors (matryoshka models).
        encoding_format: ``"base64"`` (default, compact float32) or ``"float"`` on the wire.
        embed_batch_size: texts per LlamaIndex batch (default 1024); the client splits each
            batch into requests of its ``batch_size`` (256), ``max_concurrency`` at a time.
        num_workers: async batches in flight at once in ``aget_text_embedding_batch``
            (default 2; ``None`` is LlamaIndex's own behaviour: all at once).
        extra_body: extra JSON fields for every request.

    Use:
        ```python
        from llama_index.core import VectorStoreIndex
        from infinity_rag.llama_index import InfinityEmbedding

        embed_model = InfinityEmbedding(model_name="BAAI/bge-small-en-v1.5")
        index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
        vector = await embed_model.aget_query_embedding("what is infinity?")
        ```

    Images (a CLIP-style model): paths, URLs, data URIs or ``BytesIO``:
        ```python
        clip = InfinityEmbedding(model_name="openai/clip-vit-base-patch32")
        vectors = clip.get_image_embedding_batch(["cat.png", "https://.../dog.jpg"])
        ```
    """

    model_name: str = Field(min_length=1, description="The name of the served model.")
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE,
        gt=0,
        le=2048,
        description="Texts per batch handed to the embedder; the client splits it further.",
    )
    num_workers: int | None = Field(
        default=DEFAULT_NUM_WORKERS,
        gt=0,
        description="Async batches in flight at once (None: every batch at once).",
    )
    query_instruction: str | None = Field(
        default=None, description="Prefix added to every query before embedding it."
    )
    text_instruction: str | None = Field(
        default=None, description="Prefix added to every document text before embedding it."
    )
    dimensions: int | None = Field(
        default=None, gt=0, description="Truncate vectors to this size (matryoshka models)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="base64", description="How vectors travel: base64 float32 or JSON floats."
    )

    @classmethod
    def class_name(cls) -> str:
        return "InfinityEmbedding"

    def to_payload(self) -> dict[str, Any]:
        """What instrumentation events carry: the model and its shape, never the key."""
        return {
            **super().to_payload(),
            "dimensions": self.dimensions,
            "encoding_format": self.encoding_format,
        }

    # --- text --------------------------------------------------------------------------------

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        # Core's loop would embed a lone string character by character: refuse it first.
        check_texts(texts)
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        check_texts(texts)
        return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], self.query_instruction)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aembed([query], self.query_instruction))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], self.text_instruction)[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aembed([text], self.text_instruction))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts, self.text_instruction)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._aembed(texts, self.text_instruction)

    def _embed(self, texts: Sequence[str], instruction: str | None) -> list[Embedding]:
        return drive(self._embed_flow(texts, instruction))

    async def _aembed(self, texts: Sequence[str], instruction: str | None) -> list[Embedding]:
        return await adrive(self._embed_flow(texts, instruction))

    def _embed_flow(
        self, texts: Sequence[str], instruction: str | None
    ) -> Flow[EmbeddingResult, list[Embedding]]:
        embed = call(self._client.embed, self._client.aembed)
        with self._single():
            result = yield embed(_instructed(texts, instruction), **self._options())
        return result.embeddings

    # --- images ------------------------------------------------------------------------------

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return (await self._aget_image_embeddings([img_file_path]))[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return drive(self._image_flow(img_file_paths))

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await adrive(self._image_flow(img_file_paths))

    def _image_flow(self, images: list[ImageType]) -> Flow[EmbeddingResult, list[Embedding]]:
        embed = call(self._client.embed_images, self._client.aembed_images)
        with self._single():
            result = yield embed(_images(images), **self._options())
        return result.embeddings

    # --- shared ------------------------------------------------------------------------------

    def _single(self) -> AbstractContextManager[None]:
        # A multi-vector or bit-packed model fails with what to use instead.
        return one_float_vector_per_input(type(self).__name__)

    def _options(self) -> EmbedOptions:
        """The request options common to every call, sync or async, text or image."""
        return embed_options(self.model_name, self)


def _instructed(texts: Sequence[str], instruction: str | None) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not instruction:
        return list(texts)
    return [instruction + text if isinstance(text, str) else text for text in texts]


def _images(images: Sequence[ImageType]) -> list[MediaInput]:
    """LlamaIndex's images (paths, URLs, ``BytesIO``) as the client takes them.

    A ``BytesIO`` is read whole with ``getvalue()``: the caller's stream (an ``ImageNode``'s,
    for instance) is neither consumed nor moved, so it can be embedded again.
    """
    if isinstance(images, str | bytes) or not isinstance(images, Sequence):
        raise TypeError(f"images must be a list, got {type(images).__name__}")
    return [image.getvalue() if isinstance(image, io.BytesIO) else image for image in images]
