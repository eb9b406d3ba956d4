"""Ray Data: embed one column of a dataset with Infinity, in ``Dataset.map_batches``.

``EmbedBatches`` is a callable class in the shape Ray Data's batch-inference guide uses
(state built once in ``__init__``, one batch per ``__call__``)::

    import ray
    from infinity_rag.ray import EmbedBatches

    ds = ray.data.read_parquet("s3://bucket/chunks/")           # a "text" column
    ds = ds.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": "BAAI/bge-small-en-v1.5",
            "base_url": ["http://gpu-0:7997", "http://gpu-1:7997"],
            "api_key": "...",
        },
        compute=ray.data.ActorPoolStrategy(size=2),            # about one actor per replica
        batch_size=1024,
        num_cpus=0.5,
    )
    ds.write_parquet("s3://bucket/embedded/")                  # + an "embedding" column

Neither this module nor ``import infinity_rag`` imports Ray: the class only takes and returns
batches (a dict of numpy arrays, Ray Data's default ``batch_format``, or a pandas DataFrame).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from infinity_rag._inputs import MAX_TEXT_CHARS, EncodingFormat
from infinity_rag.client import InfinityClient

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - Ray Data depends on numpy
    raise ImportError(
        'infinity_rag.ray needs numpy: pip install "numpy>=1.26" (Ray Data installs it)'
    ) from exc

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["EmbedBatches"]


class EmbedBatches:
    """Embed the texts of ``column`` into ``output_column``, one batch at a time.

    Made for ``ds.map_batches(EmbedBatches, fn_constructor_kwargs={...}, compute=...)``: Ray
    builds one instance per actor, so each actor holds one :class:`InfinityClient` (one
    connection pool) for all its batches. It can also be called directly on a batch.

    Args:
        column: the column holding the texts (every row a ``str``).
        output_column: the column added to each batch: a ``(rows, d)`` float32 array (a
            pandas batch gets one 1-d array per row). It must not exist yet.
        model: the served model name (needed when the server serves several).
        client: an :class:`InfinityClient` to use (Ray pickles it to each actor: its settings
            travel, the API key included). Without it the class builds one from
            ``client_settings``.
        dimensions: truncate each vector (matryoshka models), as in
            :meth:`InfinityClient.embed`.
        encoding_format: ``"base64"`` (the client's default) or ``"float"`` on the wire.
        extra_body: provider parameters sent in the request body as they are.
        id_column: a column whose value errors quote, to find a bad row in the source data.
        **client_settings: keyword arguments of :class:`InfinityClient` (``base_url``,
            ``api_key``, ``timeout``, ``max_retries``, ``batch_size``, ``max_concurrency``,
            ``headers``, ``verify`` ...); unset ones come from the worker's
            ``INFINITY_API_BASE`` / ``INFINITY_API_KEY``. Not together with ``client=``.

    Rows come back in the order they came in, one vector each: the batch's other columns are
    kept as they are (the input batch itself is not modified). A row that is not a string
    (a null, bytes, a number) raises ``TypeError`` naming the column and the row, before any
    request.
    """

    def __init__(
        self,
        column: str = "text",
        output_column: str = "embedding",
        *,
        model: str | None = None,
        client: InfinityClient | None = None,
        dimensions: int | None = None,
        encoding_format: EncodingFormat | None = None,
        extra_body: Mapping[str, Any] | None = None,
        id_column: str | None = None,
        **client_settings: Any,
    ) -> None:
        for name, value in (("column", column), ("output_column", output_column)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"EmbedBatches: {name} must be a non-empty string, got {value!r}")
        if output_column == column:
            raise ValueError(
                f"EmbedBatches: output_column {output_column!r} is the text column; "
                "give the vectors a column of their own (e.g. output_column='embedding')"
            )
        if id_column is not None and not isinstance(id_column, str):
            raise TypeError(f"EmbedBatches: id_column must be a string, got {id_column!r}")
        if client is not None:
            if client_settings:
                raise TypeError(
                    "EmbedBatches: with client= the shared client's connection settings "
                    f"apply; do not pass {sorted(client_settings)} as well"
                )
            if not isinstance(client, InfinityClient):
                raise TypeError(
                    f"EmbedBatches: client must be an InfinityClient, got {type(client).__name__}"
                )
        self.column = column
        self.output_column = output_column
        self.model = model
        self.dimensions = dimensions
        self.encoding_format: EncodingFormat | None = encoding_format
        self.extra_body = dict(extra_body) if extra_body is not None else None
        self.id_column = id_column
        self.client = client if client is not None else InfinityClient(**client_settings)

    def __repr__(self) -> str:
        return (
            f"EmbedBatches(column={self.column!r}, output_column={self.output_column!r}, "
            f"model={self.model!r}, client={self.client!r})"
        )

    def __call__(self, batch: Any) -> Any:
        """The batch with ``output_column`` added (a new dict, or a shallow-copied DataFrame)."""
        is_frame = _is_pandas_frame(batch)
        if not is_frame and not isinstance(batch, Mapping):
            raise TypeError(
                "EmbedBatches takes a batch as a dict of numpy arrays (map_batches' default "
                "batch_format) or a pandas DataFrame (batch_format='pandas'), got "
                f"{type(batch).__module__}.{type(batch).__name__}"
            )
        columns = list(batch.columns) if is_frame else list(batch)
        if self.column not in columns:
            raise ValueError(
                f"EmbedBatches: the batch has no column {self.column!r} (its columns: "
                f"{columns}); pass column= the name of the text column"
            )
        if self.output_column in columns:
            raise ValueError(
                f"EmbedBatches: the batch already has a column {self.output_column!r}; pass "
                "another output_column= or drop that column first (ds.drop_columns)"
            )
        texts = self._texts(batch)
        vectors = self._embed(texts)
        if is_frame:
            frame = batch.copy(deep=False)
            frame[self.output_column] = list(vectors)
            return frame
        return {**batch, self.output_column: vectors}

    def _texts(self, batch: Any) -> list[str]:
        values = batch[self.column]
        rows = values.tolist() if hasattr(values, "tolist") else list(values)
        for row, text in enumerate(rows):
            if isinstance(text, str):
                if len(text) > MAX_TEXT_CHARS:
                    raise ValueError(
                        f"EmbedBatches: column {self.column!r}, {self._where(batch, row)}, has "
                        f"{len(text):,} characters; Infinity accepts at most "
                        f"{MAX_TEXT_CHARS:,} per string: split the texts into chunks first"
                    )
                continue
            what = "a null" if _is_null(text) else f"a value of type {type(text).__name__}"
            raise TypeError(
                f"EmbedBatches: column {self.column!r}, {self._where(batch, row)}, is {what}; "
                "every row must hold a string (drop or fill nulls first, e.g. with ds.filter; "
                "decode bytes)"
            )
        return rows

    def _where(self, batch: Any, row: int) -> str:
        where = f"row {row} of this batch"
        if self.id_column is not None and self.id_column in batch:
            ids = batch[self.id_column]
            value = ids.iloc[row] if hasattr(ids, "iloc") else ids[row]
            where += f" ({self.id_column}={value!r})"
        return where

    def _embed(self, texts: list[str]) -> NDArray[np.float32]:
        return self.client.embed(
            texts,
            as_numpy=True,
            model=self.model,
            dimensions=self.dimensions,
            encoding_format=self.encoding_format,
            extra_body=self.extra_body,
        ).embeddings


def _is_null(value: object) -> bool:
    """None, NaN (pandas' null in a string column) or pandas.NA."""
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or type(value).__name__ == "NAType"
    )


def _is_pandas_frame(batch: object) -> bool:
    kind = type(batch)
    return kind.__name__ == "DataFrame" and kind.__module__.split(".")[0] == "pandas"
