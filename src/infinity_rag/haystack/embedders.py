"""Haystack embedders served by Infinity: a text (query) embedder, a document embedder and a
document image embedder for CLIP-style models."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from haystack import Document, component
from haystack.utils import Secret
from tqdm import tqdm

from infinity_rag._flows import Flow, adrive, call, drive
from infinity_rag._inputs import (
    MAX_ITEMS_PER_REQUEST,
    EncodingFormat,
    check_encoding_format,
    to_media_uri,
)
from infinity_rag._integration import EmbedOptions, embed_options
from infinity_rag._vectors import one_float_vector_per_input
from infinity_rag.client import InfinityClient
from infinity_rag.haystack._component import (
    DEFAULT_API_KEY,
    InfinityComponent,
    check_dimensions,
    check_documents,
    check_meta_fields,
    check_optional_batch_size,
    check_strings,
    document_text,
    new_document,
    usage_meta,
)
from infinity_rag.types import EmbeddingResult

__all__ = ["InfinityDocumentEmbedder", "InfinityDocumentImageEmbedder", "InfinityTextEmbedder"]

#: Images per call of the image embedder (the client sends at most 32 in one request).
DEFAULT_IMAGE_BATCH_SIZE = 32


class _Embedder(InfinityComponent):
    """The embedding settings every embedder shares."""

    dimensions: int | None
    encoding_format: EncodingFormat

    def _embed_settings(self, dimensions: int | None, encoding_format: str) -> None:
        self.dimensions = check_dimensions(dimensions)
        self.encoding_format = check_encoding_format(encoding_format)

    def _embed_args(self) -> EmbedOptions:
        return embed_options(self.model, self)


@contextmanager
def _progress(shown: bool, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar (like Haystack's embedders': ``Calculating embeddings``) advanced by the
    inputs each finished request carried."""
    with tqdm(total=total, desc="Calculating embeddings", unit=unit, disable=not shown) as bar:
        yield bar.update


@component
class InfinityTextEmbedder(_Embedder):
    """Embeds a string (a query) with a model an Infinity server serves.

    Use it in a query pipeline in front of an embedding retriever, with the model (and the
    ``dimensions``) the documents were embedded with by :class:`InfinityDocumentEmbedder`.

    ```python
    from infinity_rag.haystack import InfinityTextEmbedder

    embedder = InfinityTextEmbedder(model="BAAI/bge-small-en-v1.5")
    result = embedder.run("What is the capital of France?")
    print(len(result["embedding"]), result["meta"])
    # 384 {'model': 'BAAI/bge-small-en-v1.5', 'usage': {'prompt_tokens': 30, 'total_tokens': 30}}
    ```
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | list[str] | None = None,
        api_key: Secret = DEFAULT_API_KEY,
        prefix: str = "",
        suffix: str = "",
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] = "base64",
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int | None = None,
        balancer: Literal["peak-ewma", "least-busy"] | None = None,
        hedge: bool | None = None,
        deadline: float | None = None,
        extra_body: dict[str, Any] | None = None,
        client: InfinityClient | None = None,
    ) -> None:
        """Create an InfinityTextEmbedder.

        Args:
            model: The served model's name (``--served-model-name``, else its model id).
            base_url: The server's URL with any ``--url-prefix``, or a list of replicas' URLs
                (requests go to the least busy; failed ones are left out for a while).
                ``None``: ``INFINITY_API_BASE``, then ``INFINITY_API_URL``, then
                ``http://localhost:7997``, read when the component warms up.
            api_key: The server's ``--api-key``; by default ``INFINITY_API_KEY`` if set.
            prefix: Added before the text (the instruction some models expect, such as
                ``"query: "`` for e5 models).
            suffix: Added after the text.
            dimensions: Truncate the vector to this many dimensions (matryoshka models).
            encoding_format: How vectors travel: ``"base64"`` (float32, smaller and faster)
                or ``"float"`` (JSON numbers); the output is a list of floats either way.
            timeout: Seconds to wait for each request; ``None``: 120.
            max_retries: Retries of connection errors, timeouts, 429 and 5xx answers, with
                backoff; ``None``: 2.
            max_concurrency: Requests of one call in flight at once; ``None``: 4.
            balancer: With several replicas, how each request's replica is chosen:
                ``"peak-ewma"`` (by latency and load) or ``"least-busy"``; ``None``: the
                client's (``"peak-ewma"``).
            hedge: With several replicas, send a copy of a slow one-request call (a query) to
                another replica (at most 5% more requests); ``None``: the client's (on).
            deadline: Seconds each call may take in all (retries and hedges included);
                ``None``: no limit but ``timeout`` per request.
            extra_body: Fields added to every request body as they are.
            client: An ``InfinityClient`` to share with other components (one connection
                pool); the connection settings above (but ``max_concurrency`` and
                ``extra_body``) are then its own and cannot be passed.
        """
        self._connect(
            *(model, base_url, api_key, timeout, max_retries, max_concurrency),
            *(balancer, hedge, deadline, extra_body, client),
        )
        check_strings(type(self).__name__, prefix=prefix, suffix=suffix)
        self.prefix = prefix
        self.suffix = suffix
        self._embed_settings(dimensions, encoding_format)

    def _input(self, text: object) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(
                "InfinityTextEmbedder expects a string as input, got "
                f"{type(text).__name__}; to embed a list of Documents, use "
                "InfinityDocumentEmbedder."
            )
        return [self.prefix + text + self.suffix]

    def _flow(self, text: object) -> Flow[EmbeddingResult, dict[str, Any]]:
        """:meth:`run` and :meth:`run_async`, written once (see ``infinity_rag._flows``)."""
        inputs = self._input(text)
        client = self._ready()
        with one_float_vector_per_input(type(self).__name__):
            result = yield call(client.embed, client.aembed)(inputs, **self._embed_args())
        usage = result.usage
        return {
            "embedding": result.embeddings[0],
            "meta": usage_meta(result.model, usage.prompt_tokens, usage.total_tokens),
        }

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    def run(self, text: str) -> dict[str, Any]:
        """Embed one string.

        Args:
            text: The text to embed.

        Returns:
            ``embedding``: its vector; ``meta``: the ``model`` that answered and the
            ``usage`` (Infinity counts characters as ``prompt_tokens`` by default).

        Raises:
            TypeError: ``text`` is not a string (a list: use ``InfinityDocumentEmbedder``).
            InfinityError: the request failed (after the retries).
        """
        return drive(self._flow(text))

    @component.output_types(embedding=list[float], meta=dict[str, Any])
    async def run_async(self, text: str) -> dict[str, Any]:
        """Async :meth:`run` (native async HTTP, no thread pool)."""
        return await adrive(self._flow(text))


@component
class InfinityDocumentEmbedder(_Embedder):
    """Embeds ``Document``s with a model an Infinity server serves, for an indexing pipeline
    (followed by a ``DocumentWriter``).

    Returns new ``Document``s, in input order, each with its ``embedding``; the given ones
    are left untouched. What is embedded for each document: the values of
    ``meta_fields_to_embed`` it has, then its content, joined by ``embedding_separator``,
    between ``prefix`` and ``suffix``. Unlike Haystack's OpenAI embedder, a failed request
    raises its :class:`~infinity_rag.errors.InfinityError`: no document is ever returned
    without its embedding.

    ```python
    from haystack import Document
    from infinity_rag.haystack import InfinityDocumentEmbedder

    embedder = InfinityDocumentEmbedder(
        model="BAAI/bge-small-en-v1.5", meta_fields_to_embed=["title"]
    )
    docs = [Document(content="Paris is the capital of France.", meta={"title": "France"})]
    result = embedder.run(docs)
    print(len(result["documents"][0].embedding))  # 384
    ```
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | list[str] | None = None,
        api_key: Secret = DEFAULT_API_KEY,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] = "base64",
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int | None = None,
        balancer: Literal["peak-ewma", "least-busy"] | None = None,
        hedge: bool | None = None,
        deadline: float | None = None,
        extra_body: dict[str, Any] | None = None,
        client: InfinityClient | None = None,
    ) -> None:
        """Create an InfinityDocumentEmbedder.

        Args:
            model: The served model's name (``--served-model-name``, else its model id).
            base_url: The server's URL with any ``--url-prefix``, or a list of replicas' URLs.
                ``None``: ``INFINITY_API_BASE``, then ``INFINITY_API_URL``, then
                ``http://localhost:7997``, read when the component warms up.
            api_key: The server's ``--api-key``; by default ``INFINITY_API_KEY`` if set.
            prefix: Added before each text (``"passage: "`` for e5 models, say).
            suffix: Added after each text.
            batch_size: Documents per request (at most 2048); ``max_concurrency`` requests
                are in flight at once.
            progress_bar: Show a tqdm progress bar over the documents.
            meta_fields_to_embed: Meta keys whose values are embedded before the content.
            embedding_separator: What joins those values and the content.
            dimensions: Truncate each vector to this many dimensions (matryoshka models).
            encoding_format: ``"base64"`` (float32 on the wire) or ``"float"`` (JSON numbers).
            timeout: Seconds to wait for each request; ``None``: 120.
            max_retries: Retries of connection errors, timeouts, 429 and 5xx; ``None``: 2.
            max_concurrency: Requests in flight at once; ``None``: 4.
            balancer: ``"peak-ewma"`` or ``"least-busy"`` (``None``: the client's).
            hedge: Copy slow one-request calls to another replica (``None``: the client's).
            deadline: Seconds a whole call may take (``None``: ``timeout`` per request only).
            extra_body: Fields added to every request body as they are.
            client: An ``InfinityClient`` to share with other components; the connection
                settings (but ``max_concurrency`` and ``extra_body``) are then its own.
        """
        self._connect(
            *(model, base_url, api_key, timeout, max_retries, max_concurrency),
            *(balancer, hedge, deadline, extra_body, client),
        )
        owner = type(self).__name__
        check_strings(owner, prefix=prefix, suffix=suffix, embedding_separator=embedding_separator)
        self.prefix = prefix
        self.suffix = suffix
        self.batch_size = check_optional_batch_size(batch_size, MAX_ITEMS_PER_REQUEST) or 32
        self.progress_bar = bool(progress_bar)
        self.meta_fields_to_embed = check_meta_fields(meta_fields_to_embed, owner)
        self.embedding_separator = embedding_separator
        self._embed_settings(dimensions, encoding_format)

    def _inputs(self, documents: object) -> tuple[list[Document], list[str]]:
        docs = check_documents(documents, type(self).__name__, "InfinityTextEmbedder")
        texts = [
            self.prefix
            + document_text(doc, self.meta_fields_to_embed, self.embedding_separator)
            + self.suffix
            for doc in docs
        ]
        return docs, texts

    def _flow(self, documents: object) -> Flow[EmbeddingResult, dict[str, Any]]:
        """:meth:`run` and :meth:`run_async`, written once (see ``infinity_rag._flows``)."""
        docs, texts = self._inputs(documents)
        if not docs:  # no request
            return {"documents": [], "meta": usage_meta(self.model, 0, 0)}
        client = self._ready()
        with (
            _progress(self.progress_bar, len(texts), "doc") as on_progress,
            one_float_vector_per_input(type(self).__name__),
        ):
            result = yield call(client.embed, client.aembed)(
                texts,
                batch_size=self.batch_size,
                on_progress=on_progress,
                **self._embed_args(),
            )
        return self._output(docs, result)

    def _output(self, docs: list[Document], result: EmbeddingResult) -> dict[str, Any]:
        if len(result.embeddings) != len(docs):  # the client guarantees it; never pass it by
            raise RuntimeError(f"{len(result.embeddings)} vectors for {len(docs)} documents")
        documents = [
            new_document(doc, embedding=vector)
            for doc, vector in zip(docs, result.embeddings, strict=True)
        ]
        usage = result.usage
        return {
            "documents": documents,
            "meta": usage_meta(result.model, usage.prompt_tokens, usage.total_tokens),
        }

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed ``documents``.

        Args:
            documents: The documents to embed (an empty list sends no request).

        Returns:
            ``documents``: new documents, in input order, each with its ``embedding``;
            ``meta``: the ``model`` and the summed ``usage``.

        Raises:
            TypeError: ``documents`` is not a list of ``Document``s.
            ValueError: a text is longer than Infinity accepts (before any request).
            InfinityError: a request failed (after the retries).
        """
        return drive(self._flow(documents))

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """Async :meth:`run` (native async HTTP, no thread pool)."""
        return await adrive(self._flow(documents))


@component
class InfinityDocumentImageEmbedder(_Embedder):
    """Embeds the images ``Document``s point to with a CLIP-style model an Infinity server
    serves, as Haystack's ``SentenceTransformersDocumentImageEmbedder`` does: each document's
    ``meta[file_path_meta_field]`` names an image file (relative to ``root_path``), such as
    the documents Haystack's ``ImageFileToDocument`` makes. An http(s) URL there is passed
    to the server as it is (Infinity downloads it).

    Returns new ``Document``s, in input order, each with the image's ``embedding`` and
    ``meta["embedding_source"] = {"type": "image", "file_path_meta_field": ...}``. Queries are
    embedded into the same space by an :class:`InfinityTextEmbedder` with the same model.
    PDF pages are not read here: convert them to images first.

    ```python
    from haystack.components.converters.image import ImageFileToDocument
    from infinity_rag.haystack import InfinityDocumentImageEmbedder

    docs = ImageFileToDocument(store_full_path=True).run(sources=["cat.jpg"])["documents"]
    embedder = InfinityDocumentImageEmbedder(model="wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M")
    embedded = embedder.run(docs)["documents"]
    ```
    """

    def __init__(
        self,
        model: str,
        *,
        file_path_meta_field: str = "file_path",
        root_path: str | None = None,
        base_url: str | list[str] | None = None,
        api_key: Secret = DEFAULT_API_KEY,
        batch_size: int = DEFAULT_IMAGE_BATCH_SIZE,
        progress_bar: bool = True,
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] = "base64",
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrency: int | None = None,
        balancer: Literal["peak-ewma", "least-busy"] | None = None,
        hedge: bool | None = None,
        deadline: float | None = None,
        extra_body: dict[str, Any] | None = None,
        client: InfinityClient | None = None,
    ) -> None:
        """Create an InfinityDocumentImageEmbedder.

        Args:
            model: The served CLIP-style model's name (it must embed images and texts).
            file_path_meta_field: The meta key holding each document's image path.
            root_path: The folder those paths are relative to; ``None``: as they are.
            base_url: The server's URL, or a list of replicas' URLs (see
                :class:`InfinityTextEmbedder`).
            api_key: The server's ``--api-key``; by default ``INFINITY_API_KEY`` if set.
            batch_size: Images read and sent per step (the client sends them 32 per request,
                ``max_concurrency`` at once); the progress bar advances per step.
            progress_bar: Show a tqdm progress bar over the documents.
            dimensions: Truncate each vector to this many dimensions.
            encoding_format: ``"base64"`` (float32 on the wire) or ``"float"``.
            timeout: Seconds to wait for each request; ``None``: 120.
            max_retries: Retries of connection errors, timeouts, 429 and 5xx; ``None``: 2.
            max_concurrency: Requests in flight at once; ``None``: 4.
            balancer: ``"peak-ewma"`` or ``"least-busy"`` (``None``: the client's).
            hedge: Copy slow one-request calls to another replica (``None``: the client's).
            deadline: Seconds a whole call may take (``None``: ``timeout`` per request only).
            extra_body: Fields added to every request body as they are.
            client: An ``InfinityClient`` to share with other components; the connection
                settings (but ``max_concurrency`` and ``extra_body``) are then its own.
        """
        self._connect(
            *(model, base_url, api_key, timeout, max_retries, max_concurrency),
            *(balancer, hedge, deadline, extra_body, client),
        )
        owner = type(self).__name__
        check_strings(owner, file_path_meta_field=file_path_meta_field)
        if root_path is not None:
            check_strings(owner, root_path=root_path)
        self.file_path_meta_field = file_path_meta_field
        self.root_path = root_path
        self.batch_size = check_optional_batch_size(batch_size, MAX_ITEMS_PER_REQUEST) or 32
        self.progress_bar = bool(progress_bar)
        self._embed_settings(dimensions, encoding_format)

    def _sources(self, documents: object) -> tuple[list[Document], list[str]]:
        """Each document's image (a checked path, or a URL), before anything is read or sent."""
        docs = check_documents(documents, type(self).__name__)
        sources = []
        for doc in docs:
            value = doc.meta.get(self.file_path_meta_field)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"Document {doc.id!r} has no {self.file_path_meta_field!r} in its meta "
                    "(the image file's path, as ImageFileToDocument sets it)"
                )
            if value.startswith(("http://", "https://", "data:")):
                sources.append(value)
                continue
            path = Path(self.root_path or "", value)
            if not path.is_file():
                raise ValueError(f"Document {doc.id!r}: no image file at {str(path)!r}")
            mime = doc.meta.get("mime_type") or mimetypes.guess_type(path.name)[0]
            if mime == "application/pdf":
                raise ValueError(
                    f"Document {doc.id!r} points to a PDF ({str(path)!r}): "
                    f"{type(self).__name__} embeds image files; convert the PDF's pages to "
                    "images first"
                )
            with path.open("rb") as file:
                head = file.read(16)  # enough for every format's signature
            try:
                to_media_uri(head, 0, "image")  # reads the type from the first bytes
            except ValueError:
                raise ValueError(
                    f"Document {doc.id!r}: {str(path)!r} is not an image file "
                    "(PNG, JPEG, GIF, BMP, TIFF or WebP)"
                ) from None
            sources.append(str(path))
        return docs, sources

    def _batch(self, sources: list[str], start: int) -> list[str]:
        """One step's images as URLs or data URIs (each file read now, as the step is sent)."""
        chunk = sources[start : start + self.batch_size]
        return [to_media_uri(source, start + i, "image") for i, source in enumerate(chunk)]

    @contextmanager
    def _steps(self, docs: list[Document], sources: list[str]) -> Iterator[Iterator[list[str]]]:
        """The images, ``batch_size`` at a time, as URLs or data URIs; the progress bar
        advances as each step's vectors come back."""
        with _progress(self.progress_bar and bool(docs), len(docs), "image") as advance:

            def steps() -> Iterator[list[str]]:
                for start in range(0, len(docs), self.batch_size):
                    uris = self._batch(sources, start)
                    yield uris
                    advance(len(uris))

            yield steps()

    def _flow(self, documents: object) -> Flow[EmbeddingResult, dict[str, Any]]:
        """:meth:`run` and :meth:`run_async`, written once (see ``infinity_rag._flows``)."""
        docs, sources = self._sources(documents)
        client = self._ready()
        results = []
        with (
            self._steps(docs, sources) as steps,
            one_float_vector_per_input(type(self).__name__),
        ):
            for uris in steps:
                step = call(client.embed_images, client.aembed_images)(uris, **self._embed_args())
                results.append((yield step))
        return self._output(docs, results)

    def _output(self, docs: list[Document], results: list[EmbeddingResult]) -> dict[str, Any]:
        vectors = [vector for result in results for vector in result.embeddings]
        source = {"type": "image", "file_path_meta_field": self.file_path_meta_field}
        documents = []
        for doc, vector in zip(docs, vectors, strict=True):
            new = new_document(doc, embedding=vector)
            new.meta["embedding_source"] = dict(source)
            documents.append(new)
        meta = usage_meta(
            results[-1].model if results else self.model,
            sum(result.usage.prompt_tokens for result in results),
            sum(result.usage.total_tokens for result in results),
        )
        return {"documents": documents, "meta": meta}

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """Embed the images ``documents`` point to.

        Args:
            documents: Documents whose ``meta[file_path_meta_field]`` names an image.

        Returns:
            ``documents``: new documents, in input order, each with its image's
            ``embedding``; ``meta``: the ``model`` and the summed ``usage``.

        Raises:
            TypeError: ``documents`` is not a list of ``Document``s.
            ValueError: a document has no image path, its file is missing, a PDF or not an
                image (every document is checked before any request).
            InfinityError: a request failed (after the retries).
        """
        return drive(self._flow(documents))

    @component.output_types(documents=list[Document], meta=dict[str, Any])
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """Async :meth:`run` (native async HTTP; the files are read in this thread)."""
        return await adrive(self._flow(documents))
