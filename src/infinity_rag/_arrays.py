"""numpy results: embeddings decoded straight into one preallocated float32 array.

numpy is optional (the ``[numpy]`` extra): it is imported here, on the first ``as_numpy=True``
call, never by ``import infinity_rag``. No I/O: the parsers in :mod:`infinity_rag._protocol`
hand each vector of an answer to an :class:`ArraySink`, which writes it into its row.
"""

from __future__ import annotations

import binascii
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from infinity_rag.errors import InvalidResponseError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

NUMPY_MISSING = (
    'as_numpy=True needs numpy, which is not installed: pip install "infinity-rag[numpy]" '
    '(or pip install "numpy>=1.26")'
)


def require_numpy() -> ModuleType:
    """The numpy module, or an ImportError that says how to install it."""
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(NUMPY_MISSING) from exc
    return numpy


class ArraySink:
    """One ``(rows, d)`` float32 array, filled row by row as the answers arrive.

    ``d`` is ``dimensions`` when given (longer vectors are truncated, as Infinity does),
    otherwise the length of the first vector that arrives; the array is allocated then, once.
    Answers may arrive in any order and from several threads: each writes its own rows.
    """

    def __init__(self, rows: int, dimensions: int | None) -> None:
        self._np = require_numpy()
        self.rows = rows
        self.dimensions = dimensions
        #: Without ``dimensions``: the model's vector width, when known; a vector of another
        #: width is refused (a flattened matrix is never taken for a vector).
        self.width: int | None = None
        self._array: NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def array(self) -> NDArray[np.float32]:
        """The filled array (``(0, dimensions or 0)`` when there were no rows)."""
        if self._array is None:
            return self._np.empty((self.rows, self.dimensions or 0), dtype=self._np.float32)  # type: ignore[no-any-return]
        return self._array

    def put(self, start: int, order: list[int] | None, embeddings: list[Any]) -> None:
        """One answer's vectors: ``embeddings[j]`` goes to row ``start + order[j]`` (``order``
        ``None``: to ``start + j``). Each is base64 (little-endian float32) or a list of numbers
        (already checked to be numbers)."""
        block = self._block(embeddings)
        if block is None:  # mixed kinds or lengths: row by row, which names the odd one out
            for j, embedding in enumerate(embeddings):
                index = j if order is None else order[j]
                self._put_row(start + index, embedding, index)
            return
        target = self._target(block.shape[1] if self.dimensions is None else self.dimensions)
        block = self._fit(block, target.shape[1], 0)
        if order is None:
            target[start : start + len(block)] = block
        else:
            target[self._np.asarray(order, dtype=self._np.intp) + start] = block

    def _block(self, embeddings: list[Any]) -> NDArray[Any] | None:
        """All the vectors as one ``(k, w)`` array, if they have one kind and one length.

        base64: every vector decoded by ``binascii`` (C), joined, and read with one
        ``numpy.frombuffer``: no Python float, no numpy call per vector.
        """
        kinds = set(map(type, embeddings))
        if kinds == {str}:
            raws = list(map(binascii.a2b_base64, embeddings))
            sizes = set(map(len, raws))
            if len(sizes) != 1 or (size := sizes.pop()) % 4:
                return None
            joined = b"".join(raws)
            return self._np.frombuffer(joined, dtype="<f4").reshape(len(raws), size // 4)  # type: ignore[no-any-return]
        if kinds == {list} and len(set(map(len, embeddings))) == 1:
            return self._np.array(embeddings, dtype=self._np.float32)  # type: ignore[no-any-return]
        return None

    def _put_row(self, row: int, embedding: Any, index: int) -> None:
        if isinstance(embedding, str):
            raw = binascii.a2b_base64(embedding)
            if len(raw) % 4:
                raise InvalidResponseError(
                    f"base64 embedding has {len(raw)} bytes, not a whole number of float32 values"
                )
            vector = self._np.frombuffer(raw, dtype="<f4")
        else:
            vector = self._np.array(embedding, dtype=self._np.float32)
        width = len(vector)
        target = self._target(width if self.dimensions is None else self.dimensions)
        target[row] = self._fit(vector.reshape(1, width), target.shape[1], index)[0]

    def _fit(self, block: NDArray[Any], columns: int, index: int) -> NDArray[Any]:
        """``block`` cut to ``columns`` wide (``dimensions``), or an error if it cannot be."""
        width = block.shape[1]
        if self.width is not None and self.dimensions is None and width != self.width:
            raise InvalidResponseError(
                f"embedding {index} has {width} values, not the {self.width} of the model's "
                "vectors seen before (was the model replaced? the next call learns it again)"
            )
        if width == columns:
            return block
        if self.dimensions is not None and width > columns:
            # A proxy may drop `dimensions` (LiteLLM renames it); Infinity itself only
            # truncates, so truncating here gives the same vector.
            return block[:, :columns]
        if self.dimensions is not None:
            raise InvalidResponseError(
                f"asked for {self.dimensions} dimensions, the model's vectors have "
                f"{width} (a proxy such as LiteLLM does not forward `dimensions`)"
            )
        raise InvalidResponseError(
            f"embedding {index} has {width} values where the others have {columns}: "
            "the vectors do not make one array"
        )

    def _target(self, columns: int) -> NDArray[np.float32]:
        array = self._array
        if array is None:
            with self._lock:
                if self._array is None:
                    self._array = self._np.empty((self.rows, columns), dtype=self._np.float32)
                array = self._array
        return array
