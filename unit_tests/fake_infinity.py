"""A fake Infinity server for unit tests, served through ``httpx.MockTransport`` (no socket).

It answers in Infinity 0.0.78's wire format (see ``fixtures/``) with deterministic vectors
and scores derived from the inputs, records every request, and can be told to fail.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

DIM = 4
PACKED_WIDTH = 8  # bytes per bit-packed vector: 64 dimensions


def vector_for(text: str, dim: int = DIM) -> list[float]:
    """A deterministic, float32-exact vector for ``text``."""
    seed = sum(ord(ch) for ch in text) + len(text)
    return [float((seed * (k + 3)) % 97) / 8.0 for k in range(dim)]


def matrix_for(text: str, dim: int = DIM) -> list[list[float]]:
    """A multi-vector model's deterministic matrix for ``text``: one row per word, plus two
    (as ColBERT's [CLS] and [SEP])."""
    return [vector_for(f"{text}#{row}", dim) for row in range(len(text.split()) + 2)]


def packed_for(text: str, packing: str, width: int = PACKED_WIDTH) -> list[int]:
    """A bit-packed model's deterministic bytes for ``text`` (``binary``: byte - 128)."""
    seed = sum(ord(ch) for ch in text) + len(text)
    values = [(seed * (k + 5) + 17) % 256 for k in range(width)]
    return values if packing == "ubinary" else [v - 128 for v in values]


def score_for(query: str, document: str) -> float:
    """A deterministic relevance score: shared words with the query, then shorter first."""
    shared = len(set(query.lower().split()) & set(document.lower().split()))
    return round(shared + 1.0 / (1 + len(document)), 6)


@dataclass
class FakeInfinity:
    """Call ``transport()`` / ``async_transport()`` and inject them into httpx clients."""

    models: dict[str, list[str]] = field(
        default_factory=lambda: {
            "embedder": ["embed"],
            "reranker": ["rerank"],
            "classifier": ["classify"],
            "clip": ["embed", "image_embed"],
        }
    )
    api_key: str | None = None
    dim: int = DIM
    #: Models answering like a ColBERT model (a matrix per input; flattened as base64).
    multi_vector: set[str] = field(default_factory=set)
    #: Models answering like ``--embedding-dtype ubinary`` / ``binary`` (base64 refused).
    packed: dict[str, str] = field(default_factory=dict)
    max_items: int = 2048
    #: Answer each batch's items in reverse order (Infinity may; the client must reorder).
    shuffle: bool = True
    #: Queue of (status, body) answers served before normal ones: to inject failures.
    failures: list[tuple[int, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    hook: Callable[[httpx.Request], httpx.Response | None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    # --- the server -------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            failure = self.failures.pop(0) if self.failures else None
        if self.hook is not None and (hooked := self.hook(request)) is not None:
            return hooked
        if failure is not None:
            status, body = failure
            if isinstance(body, str | bytes):
                return httpx.Response(status, content=body)
            return httpx.Response(status, json=body)
        path = request.url.path.rsplit("/", 1)[-1]
        if path == "health":
            return httpx.Response(200, json={"unix": 1.0})
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return httpx.Response(401, json={"detail": "Unauthorized: invalid API key"})
        if path == "models":
            return httpx.Response(200, json={"data": self._models(), "object": "list"})
        body = json.loads(request.content)
        items = body.get("input", body.get("documents"))
        if isinstance(items, list) and not items:
            return self._validation_error(body, "List should have at least 1 item")
        if isinstance(items, list) and len(items) > self.max_items:
            return self._validation_error(body, f"List should have at most {self.max_items} items")
        capability = {"embeddings": "embed", "rerank": "rerank", "classify": "classify"}[path]
        # Without a model name, the first model that can do the job answers.
        model = body.get(
            "model", next((m for m, caps in self.models.items() if capability in caps), "")
        )
        if model not in self.models:
            return _error(
                400,
                f"Invalid model: Engine for model name `{model}` not found. "
                f"Available model names are {list(self.models)}",
            )
        handler = {"embeddings": self._embed, "rerank": self._rerank, "classify": self._classify}
        if capability not in self.models[model]:
            return _error(
                400,
                f"ModelNotDeployedError: model=`{model}` does not support `{capability}`. "
                f"Reason: the loaded moded cannot fullyfill `{capability}`. "
                f"Options are {set(self.models[model])}.",
            )
        return handler[path](body, model)

    def _models(self) -> list[dict[str, Any]]:
        return [
            {
                "id": name,
                "object": "model",
                "owned_by": "infinity",
                "created": 1,
                "backend": "torch",
                "capabilities": caps,
            }
            for name, caps in self.models.items()
        ]

    def _embed(self, body: dict[str, Any], model: str) -> httpx.Response:
        base64_asked = body.get("encoding_format") == "base64"
        if model in self.packed and base64_asked:  # Infinity 0.0.78's words
            return _error(
                500,
                f"InternalServerError: model {model} does not support base64 encoding, as it "
                f"uses uint8-bitpacking with EmbeddingDtype.{self.packed[model]}",
            )
        data = []
        for index, text in enumerate(body["input"]):
            vector: Any = vector_for(text, self.dim)[: body.get("dimensions") or self.dim]
            if model in self.multi_vector:
                vector = matrix_for(text, self.dim)
            if model in self.packed:
                vector = packed_for(text, self.packed[model])
            if base64_asked and model in self.multi_vector:
                flat = [x for row in vector for x in row]
                embedding: Any = base64.b64encode(struct.pack(f"<{len(flat)}f", *flat)).decode()
            elif base64_asked:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        if self.shuffle:
            data.reverse()
        chars = sum(len(t) for t in body["input"])
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": chars, "total_tokens": chars},
                "id": "infinity-1",
                "created": 1,
            },
        )

    def _rerank(self, body: dict[str, Any], model: str) -> httpx.Response:
        docs = body["documents"]
        results = [
            {
                "relevance_score": score_for(body["query"], doc),
                "index": i,
                "document": doc if body.get("return_documents") else None,
            }
            for i, doc in enumerate(docs)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        if body.get("top_n") is not None:
            results = results[: body["top_n"]]
        chars = len(body["query"]) * len(docs) + sum(len(d) for d in docs)
        return httpx.Response(
            200,
            json={
                "object": "rerank",
                "results": results,
                "model": model,
                "usage": {"prompt_tokens": chars, "total_tokens": chars},
                "id": "infinity-2",
                "created": 1,
            },
        )

    def _classify(self, body: dict[str, Any], model: str) -> httpx.Response:
        data = []
        for text in body["input"]:
            positive = 0.9 if "good" in text else 0.2
            labels = [
                {"score": round(1 - positive, 6), "label": "negative"},
                {"score": positive, "label": "positive"},
            ]
            data.append(labels)
        chars = sum(len(t) for t in body["input"])
        return httpx.Response(
            200,
            json={
                "object": "classify",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": chars, "total_tokens": chars},
                "id": "infinity-3",
                "created": 1,
            },
        )

    def _validation_error(self, body: dict[str, Any], message: str) -> httpx.Response:
        # FastAPI's 422 echoes the whole input, as the real server does.
        detail = [{"type": "too_long", "loc": ["body", "input"], "msg": message, "input": body}]
        return httpx.Response(422, json={"detail": detail})


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": None, "param": None, "code": status}}
    )
