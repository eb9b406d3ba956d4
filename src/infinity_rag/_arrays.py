"""numpy results: embeddings decoded straight into one preallocated float32 array.

numpy is optional (the ``[numpy]`` extra): it is imported here, on the first ``as_numpy=True``
call, never by ``import infinity_rag``. No I/O: the parsers in :mod:`infinity_rag._protocol`
hand each vector of an answer to an :class:`ArraySink`, which writes it into its row.
"""

from __future__ import annotations

import base64
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
        self._array: NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def array(self) -> NDArray[np.float32]:
        """The filled array (``(0, dimensions or 0)`` when there were no rows)."""
        if self._array is None:
            return self._np.empty((self.rows, self.dimensions or 0), dtype=self._np.float32)  # type: ignore[no-any-return]
        return self._array

    def put_base64(self, row: int, data: str, index: int) -> None:
        """Little-endian float32 in base64 (Infinity's ``encoding_format="base64"``)."""
        raw = base64.b64decode(data)
        if len(raw) % 4:
            raise InvalidResponseError(
                f"base64 embedding has {len(raw)} bytes, not a whole number of float32 values"
            )
        self._put(row, self._np.frombuffer(raw, dtype="<f4"), len(raw) // 4, index)

    def put_floats(self, row: int, values: list[Any], index: int) -> None:
        """JSON floats (already checked to be numbers)."""
        self._put(row, values, len(values), index)

    def _put(self, row: int, vector: Any, width: int, index: int) -> None:
        if self.dimensions is not None and width < self.dimensions:
            raise InvalidResponseError(
                f"asked for {self.dimensions} dimensions, the model's vectors have "
                f"{width} (a proxy such as LiteLLM does not forward `dimensions`)"
            )
        target = self._target(width if self.dimensions is None else self.dimensions)
        columns = target.shape[1]
        if width == columns:
            target[row] = vector
        elif self.dimensions is not None:
            # A proxy may drop `dimensions` (LiteLLM renames it); Infinity itself only
            # truncates, so truncating here gives the same vector.
            target[row] = vector[:columns]
        else:
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
