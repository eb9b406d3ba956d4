"""A stand-in Infinity server for scenario A: Infinity's exact answers at near-zero compute.

Stdlib only (asyncio HTTP/1.1 with keep-alive, Content-Length and chunked request bodies), so
that any venv can run it. It answers ``POST /embeddings`` (also under ``/v1``) in the exact
format ``infinity-emb`` 0.0.78 serves (compact JSON: ``object``, ``data`` items with
``object``/``embedding``/``index``, ``model``, ``usage``, ``id``, ``created``; base64 is
little-endian float32), ``POST /rerank``, ``GET /health`` and ``GET /models``.

Bodies are built from a fixed pool of random unit vectors and cached per (dimension, format,
count), so after the first request of a size the server only parses the request's JSON and
writes bytes it already has. The vector dimension comes from the model name: a name ending in
``-1024`` (e.g. ``fake-1024``) gets 1024 dimensions, anything else 384.

Run: ``python fake_infinity.py --port P`` (prints ``READY <port>`` once it listens).

``--service-ms-per-256 MS`` makes it a stand-in *replica*: each ``/embeddings`` answer then
takes ``MS * n / 256`` milliseconds of "accelerator" time for ``n`` inputs, and the process
has one accelerator that serves one request at a time, in arrival order (a GPU running one
batch after another; a queued request starts when the one before it ends, not when the event
loop gets round to it). ``GET /stats`` then reports what the replica did (requests, vectors,
accelerator seconds, seconds queued, how late the loop woke after a batch ended, the
process's CPU seconds and the seconds it waited for a core), so that a driver can tell
whether the replicas or their own CPU were the limit.
Without the option (the default) answers are immediate, as before.

``--fixed-ms MS`` makes every ``/embeddings`` and ``/rerank`` answer wait ``MS`` milliseconds,
concurrently (a replica that answers a query in 10 ms however many are in flight: the query
path's stand-in, ``query_latency.py``); ``--stall-ms MS --stall-fraction F`` adds ``MS`` more
to a fraction ``F`` of those answers, drawn from a ``random.Random(--seed)``. ``GET /stats``
always reports the requests received per path (and stalled), whatever the options.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import struct
import time
import uuid

POOL = 64  # distinct vectors per dimension; item i uses vector i % POOL
_VECTORS: dict[int, list[list[float]]] = {}
_ITEMS: dict[tuple[int, str], list[bytes]] = {}
_BODIES: dict[tuple[int, str, int, str], bytes] = {}


def _vectors(dim: int) -> list[list[float]]:
    if dim not in _VECTORS:
        rng = random.Random(dim)
        pool = []
        for _ in range(POOL):
            raw = [rng.gauss(0.0, 1.0) for _ in range(dim)]
            norm = sum(x * x for x in raw) ** 0.5
            # Round through float32 so that the JSON floats look like Infinity's (orjson
            # writes the float32 value widened to float64, shortest repr).
            packed = struct.pack(f"<{dim}f", *(x / norm for x in raw))
            pool.append(list(struct.unpack(f"<{dim}f", packed)))
        _VECTORS[dim] = pool
    return _VECTORS[dim]


def _items(dim: int, fmt: str) -> list[bytes]:
    key = (dim, fmt)
    if key not in _ITEMS:
        items = []
        for vector in _vectors(dim):
            if fmt == "base64":
                value = '"' + base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() + '"'
            else:
                value = json.dumps(vector, separators=(",", ":"))
            items.append(('{"object":"embedding","embedding":' + value + ',"index":').encode())
        _ITEMS[key] = items
    return _ITEMS[key]


def embedding_body(dim: int, fmt: str, count: int, model: str) -> bytes:
    key = (dim, fmt, count, model)
    body = _BODIES.get(key)
    if body is None:
        items = _items(dim, fmt)
        data = b",".join(items[i % POOL] + str(i).encode() + b"}" for i in range(count))
        tail = json.dumps(
            {
                "model": model,
                "usage": {"prompt_tokens": 50 * count, "total_tokens": 50 * count},
                "id": f"infinity-{uuid.uuid4()}",
                "created": int(time.time()),
            },
            separators=(",", ":"),
        )
        body = b'{"object":"list","data":[' + data + b"]," + tail[1:].encode()
        if len(_BODIES) > 256:
            _BODIES.clear()
        _BODIES[key] = body
    return body


def rerank_body(count: int, model: str, top_n: int | None, documents: list[str] | None) -> bytes:
    rng = random.Random(count)
    scores = sorted(((rng.random(), i) for i in range(count)), reverse=True)
    if top_n is not None:
        scores = scores[:top_n]
    results = [
        {
            "relevance_score": score,
            "index": i,
            "document": documents[i] if documents is not None else None,
        }
        for score, i in scores
    ]
    payload = {
        "object": "rerank",
        "results": results,
        "model": model,
        "usage": {"prompt_tokens": 50 * count, "total_tokens": 50 * count},
        "id": f"infinity-{uuid.uuid4()}",
        "created": int(time.time()),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class Accelerator:
    """One replica's GPU: serves one request at a time, ``ms_per_256 * n / 256`` ms each.

    A request arriving while another is served starts when that one ends (``free_at``), so
    the accelerator is never idle while requests wait, whatever the event loop's delays.
    """

    def __init__(self, ms_per_256: float) -> None:
        self.seconds_per_item = ms_per_256 / 256 / 1000
        self.free_at = 0.0
        self.requests = 0
        self.vectors = 0
        self.busy = 0.0  # accelerator seconds of all requests
        self.late = 0.0  # total seconds the event loop woke up after a batch had ended
        self.late_max = 0.0
        self.queued = 0.0  # total seconds requests waited for the ones before them

    async def serve(self, count: int) -> None:
        now = time.monotonic()
        service = count * self.seconds_per_item
        start = max(now, self.free_at)
        self.queued += start - now
        end = self.free_at = start + service
        self.requests += 1
        self.vectors += count
        self.busy += service
        await asyncio.sleep(end - now)
        late = time.monotonic() - end
        self.late += late
        self.late_max = max(self.late_max, late)

    def stats(self) -> dict[str, float]:
        times = os.times()
        try:  # seconds the event loop was ready to run but waited for a core (Linux)
            with open("/proc/thread-self/schedstat") as fh:
                waited = int(fh.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            waited = 0.0
        return {
            "requests": self.requests,
            "vectors": self.vectors,
            "busy_s": self.busy,
            "queued_s": self.queued,
            "late_s": self.late,
            "late_max_s": self.late_max,
            "cpu_s": times.user + times.system,
            "runqueue_wait_s": waited,
            "monotonic": time.monotonic(),
        }


ACCELERATOR: Accelerator | None = None  # set by --service-ms-per-256


class Latency:
    """A fixed wait per answer, plus a stall for a seeded random fraction of answers."""

    def __init__(self, fixed_ms: float, stall_ms: float, stall_fraction: float, seed: int):
        self.fixed = fixed_ms / 1000
        self.stall = stall_ms / 1000
        self.fraction = stall_fraction
        self.rng = random.Random(seed)

    async def wait(self) -> None:
        seconds = self.fixed
        if self.fraction > 0 and self.rng.random() < self.fraction:
            seconds += self.stall
            COUNTS["stalled"] += 1
        if seconds > 0:
            await asyncio.sleep(seconds)


LATENCY: Latency | None = None  # set by --fixed-ms / --stall-ms
COUNTS = {"embeddings": 0, "rerank": 0, "stalled": 0}  # requests received, for GET /stats


def _dim(model: str) -> int:
    return 1024 if model.endswith("-1024") else 384


def _error(status: int, detail: str) -> tuple[int, bytes, int]:
    return status, json.dumps({"detail": detail}).encode(), 0


def handle(method: str, path: str, body: bytes) -> tuple[int, bytes, int]:
    """The answer's status and body, and how many inputs it embedded (0 but for embeddings)."""
    path = path.split("?", 1)[0]
    if path.startswith("/v1/"):
        path = path[3:]
    if method == "GET" and path == "/stats":
        stats: dict[str, float] = {f"{k}_requests": v for k, v in COUNTS.items()}
        if ACCELERATOR is not None:
            stats.update(ACCELERATOR.stats())
        return 200, json.dumps(stats).encode(), 0
    if method == "GET" and path == "/health":
        return 200, json.dumps({"unix": time.time()}).encode(), 0
    if method == "GET" and path == "/models":
        models = [
            {"id": name, "object": "model", "owned_by": "infinity", "capabilities": ["embed"]}
            for name in ("fake-384", "fake-1024")
        ]
        return 200, json.dumps({"data": models, "object": "list"}).encode(), 0
    if method != "POST":
        return _error(405, "Method Not Allowed")
    try:
        request = json.loads(body)
    except ValueError:
        return _error(422, "body is not JSON")
    model = str(request.get("model") or "fake-384")
    if path in ("/embeddings", "/rerank"):
        COUNTS[path[1:]] += 1
    if path == "/embeddings":
        inputs = request.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or len(inputs) > 2048:
            return _error(422, "input must be a list of 1..2048 strings")
        fmt = request.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return _error(422, f"bad encoding_format {fmt!r}")
        return 200, embedding_body(_dim(model), fmt, len(inputs), model), len(inputs)
    if path == "/rerank":
        documents = request.get("documents")
        if not isinstance(documents, list) or not documents or len(documents) > 2048:
            return _error(422, "documents must be a list of 1..2048 strings")
        top_n = request.get("top_n")
        keep = documents if request.get("return_documents") else None
        return 200, rerank_body(len(documents), model, top_n, keep), 0
    return _error(404, "Not Found")


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 422: "Unprocessable Entity"}


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                return
            if not request_line.strip():
                continue
            method, target, version = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await _read_body(reader, headers)
            status, payload, embedded = handle(method, target, body)
            if ACCELERATOR is not None and embedded:
                await ACCELERATOR.serve(embedded)
            if LATENCY is not None and method == "POST" and status != 404:
                await LATENCY.wait()
            close = headers.get("connection", "").lower() == "close" or version.strip() == (
                "HTTP/1.0"
            )
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
                "server: uvicorn\r\n"
                f"content-length: {len(payload)}\r\n"
                "content-type: application/json\r\n"
                f"{'connection: close' + chr(13) + chr(10) if close else ''}\r\n"
            )
            writer.write(head.encode("latin-1"))
            writer.write(payload)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(serve_connection, host, port, backlog=256)
    actual = server.sockets[0].getsockname()[1]
    print(f"READY {actual}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--service-ms-per-256",
        type=float,
        default=0.0,
        help="accelerator time per 256 inputs, one request at a time (default 0: immediate)",
    )
    parser.add_argument(
        "--fixed-ms",
        type=float,
        default=0.0,
        help="wait this long before each /embeddings or /rerank answer, concurrently (default 0)",
    )
    parser.add_argument(
        "--stall-ms", type=float, default=0.0, help="extra wait of a stalled answer (default 0)"
    )
    parser.add_argument(
        "--stall-fraction",
        type=float,
        default=0.0,
        help="fraction of answers that stall, drawn at random (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the stall draws (default 0)")
    args = parser.parse_args()
    if args.service_ms_per_256 > 0:
        ACCELERATOR = Accelerator(args.service_ms_per_256)
    if args.fixed_ms > 0 or (args.stall_ms > 0 and args.stall_fraction > 0):
        LATENCY = Latency(args.fixed_ms, args.stall_ms, args.stall_fraction, args.seed)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port))
