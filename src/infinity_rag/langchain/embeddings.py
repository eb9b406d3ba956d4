"""``InfinityEmbeddings``: LangChain ``Embeddings`` served by Infinity (text and images)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal, Self

from langchain_core.embeddings import Embeddings
from pydantic import Field, model_validator

from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import MAX_ITEMS_PER_REQUEST, MediaInput, check_query, check_texts
from infinity_rag._integration import EmbedOptions, embed_options
from infinity_rag._vectors import one_float_vector_per_input
from infinity_rag.langchain._base import InfinityBase
from infinity_rag.types import EmbeddingResult

__all__ = ["InfinityEmbeddings"]


class InfinityEmbeddings(InfinityBase, Embeddings):
    """Infinity embedding model integration: any model an Infinity server serves.

    Setup:
        Install ``infinity-rag`` with the LangChain extra, run an Infinity server
        (``infinity_emb v2 --model-id BAAI/bge-small-en-v1.5``) and point to it.

        ```bash
        pip install -U "infinity-rag[langchain]"
        export INFINITY_API_BASE="http://localhost:7997"
        export INFINITY_API_KEY="your-api-key"  # if the server runs with --api-key
        ```

    Key init args — embedding params:
        model: str
            Name of the served model (``--served-model-name``, else the model id).
        dimensions: int | None
            Truncate each vector to this many dimensions (matryoshka models).
        query_prefix: str
            Prepended to queries (``embed_query``), e.g. ``"query: "`` for e5 models.
        document_prefix: str
            Prepended to documents (``embed_documents``), e.g. ``"passage: "``.
        encoding_format: Literal["base64", "float"]
            Wire format; vectors are always returned as Python floats.
        batch_size: int | None
            Texts per request (the client's default, 256, if ``None``).
        max_concurrency: int | None
            Requests of one call in flight at once (the client's default, 4, if ``None``).
        show_progress_bar: bool
            Show a tqdm progress bar over the chunks of ``embed_documents``.
        extra_body: dict | None
            Provider parameters added to each request body as they are.

    Key init args — client params:
        base_url: str
            The server's URL; ``INFINITY_API_BASE`` / ``INFINITY_API_URL`` if not passed.
        api_key: SecretStr | None
            The server's ``--api-key``; ``INFINITY_API_KEY`` if not passed.
        timeout: float | None
            Seconds per request.
        max_retries: int
            Retries of connection errors, 429 and 5xx answers.
        client: InfinityClient | None
            An ``InfinityClient`` to share with other classes instead of building one.

    See full list of supported init args and their descriptions in the params section.

    Instantiate:
        ```python
        from infinity_rag.langchain import InfinityEmbeddings

        embed = InfinityEmbeddings(
            model="BAAI/bge-small-en-v1.5",
            # base_url="http://localhost:7997",
            # api_key="...",
            # query_prefix="query: ", document_prefix="passage: ",  # e5-style models
            # other params...
        )
        ```

    Embed single text:
        ```python
        input_text = "The meaning of life is 42"
        vector = embed.embed_query(input_text)
        print(vector[:3])
        ```

        ```python
        [-0.0463, 0.0318, 0.0135]
        ```

    Embed multiple texts:
        ```python
        input_texts = ["Document 1...", "Document 2..."]
        vectors = embed.embed_documents(input_texts)
        print(len(vectors), len(vectors[0]))
        ```

        ```python
        2 384
        ```

    Embed images (CLIP-style models):
        ```python
        clip = InfinityEmbeddings(model="wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M")
        image_vectors = clip.embed_image(["photo.jpg", "https://example.com/cat.png"])
        text_vector = clip.embed_query("a photo of a cat")
        ```

    Async:
        ```python
        vector = await embed.aembed_query(input_text)

        # multiple:
        vectors = await embed.aembed_documents(input_texts)

        # images:
        image_vectors = await clip.aembed_image(["photo.jpg"])
        ```

    Share one client:
        ```python
        from infinity_rag import InfinityClient
        from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

        client = InfinityClient(base_url="http://localhost:7997", api_key="...")
        embed = InfinityEmbeddings(model="BAAI/bge-small-en-v1.5", client=client)
        rerank = InfinityRerank(model="mixedbread-ai/mxbai-rerank-xsmall-v1", client=client)
        ```
    """

    model: str = Field(min_length=1)
    """Name of the served model (``--served-model-name``, else the model id)."""

    dimensions: int | None = Field(default=None, gt=0)
    """Truncate each vector to this many dimensions (matryoshka models); ``None``: all."""

    encoding_format: Literal["float", "base64"] = "base64"
    """How vectors travel: ``"base64"`` (float32, smaller and faster) or ``"float"`` (JSON
    numbers). Either way the methods return lists of Python floats."""

    user: str | None = None
    """OpenAI-compatible ``user`` field, sent as is (Infinity ignores it; proxies may log it)."""

    query_prefix: str = ""
    """Prepended to every query (``embed_query``): the instruction some models expect, such
    as ``"query: "`` for e5 or ``"Represent this sentence for searching relevant passages: "``
    for bge-en-v1.5."""

    document_prefix: str = ""
    """Prepended to every document (``embed_documents``), such as ``"passage: "`` for e5."""

    batch_size: int | None = Field(default=None, ge=1, le=MAX_ITEMS_PER_REQUEST)
    """Texts per request (at most 2048). ``None``: the client's ``batch_size`` (256)."""

    max_concurrency: int | None = Field(default=None, ge=1)
    """Requests of one call in flight at once. ``None``: the client's (4)."""

    show_progress_bar: bool = False
    """Show a tqdm progress bar (``pip install tqdm``) advancing as chunks of
    ``embed_documents`` / ``aembed_documents`` finish."""

    @model_validator(mode="after")
    def _check_progress_bar(self) -> Self:
        if self.show_progress_bar:
            _import_tqdm()  # fail at construction, not in the middle of an ingestion
        return self

    # --- text ---------------------------------------------------------------------------------

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with ``document_prefix``); one vector per text, in order."""
        return drive(self._documents_flow(texts))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents` (native async HTTP, no thread pool)."""
        return await adrive(self._documents_flow(texts))

    def embed_query(self, text: str) -> list[float]:
        """Embed a query (with ``query_prefix``)."""
        return drive(self._query_flow(text))

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query` (native async HTTP, no thread pool)."""
        return await adrive(self._query_flow(text))

    # --- images -------------------------------------------------------------------------------

    def embed_image(self, uris: Sequence[MediaInput]) -> list[list[float]]:
        """Embed images with a CLIP-style model; one vector per image, in order.

        Each image is a local path, an http(s) URL, a ``data:`` URI, bytes or a binary file.
        Texts embedded by the same model (``embed_query``) share the vectors' space.
        """
        return drive(self._image_flow(uris))

    async def aembed_image(self, uris: Sequence[MediaInput]) -> list[list[float]]:
        """Async :meth:`embed_image`."""
        return await adrive(self._image_flow(uris))

    # --- shared by the sync and async paths (see infinity_rag._flows) -------------------------

    def _documents_flow(self, texts: list[str]) -> Flow[EmbeddingResult, list[list[float]]]:
        inputs = self._document_inputs(texts)
        embed = call(self._client.embed, self._client.aembed)
        with self._progress(len(inputs)) as on_progress, self._single():
            result = yield embed(
                inputs, batch_size=self.batch_size, on_progress=on_progress, **self._embed_args()
            )
        return result.embeddings

    def _query_flow(self, text: str) -> Flow[EmbeddingResult, list[float]]:
        embed = call(self._client.embed, self._client.aembed)
        with self._single():
            result = yield embed(self._query_input(text), **self._embed_args())
        return result.embeddings[0]

    def _image_flow(self, uris: Sequence[MediaInput]) -> Flow[EmbeddingResult, list[list[float]]]:
        embed = call(self._client.embed_images, self._client.aembed_images)
        with self._single():
            result = yield embed(uris, **self._embed_args())
        return result.embeddings

    def _single(self) -> AbstractContextManager[None]:
        # A multi-vector or bit-packed model fails with what to use instead.
        return one_float_vector_per_input(type(self).__name__)

    def _embed_args(self) -> EmbedOptions:
        extra_body = {"user": self.user} if self.user is not None else {}
        extra_body.update(self.extra_body or {})
        return {**embed_options(self.model, self), "extra_body": extra_body or None}

    def _document_inputs(self, texts: list[str]) -> list[str]:
        texts = check_texts(texts)  # a clear TypeError before the prefix is concatenated
        if not self.document_prefix:
            return texts
        return [self.document_prefix + text for text in texts]

    def _query_input(self, text: str) -> list[str]:
        return [self.query_prefix + check_query(text)]

    @contextmanager
    def _progress(self, total: int) -> Iterator[Callable[[int], None] | None]:
        if not self.show_progress_bar or not total:
            yield None
            return
        tqdm = _import_tqdm()
        with tqdm(total=total, unit="text", desc=f"Embedding ({self.model})") as bar:
            yield bar.update


def _import_tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "show_progress_bar=True needs tqdm; install it with `pip install tqdm`."
        ) from exc
    return tqdm
