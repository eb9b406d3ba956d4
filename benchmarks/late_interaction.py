"""Client cost of late-interaction reranking: MaxSim over ColBERT matrices, on the client.

``InfinityClient.rerank(..., late_interaction=True)`` against what a user would write by hand
with the same client: ``embed_multi_vector`` of the query and of every document
(``as_numpy=True``), then MaxSim in numpy. Answers are Infinity 0.0.78's base64 wire format
(a matrix flattened to one float32 string per input), built once and replayed by an
in-process ``httpx.MockTransport``: no socket, no server compute, the client's work alone.
CPU is ``time.process_time`` during the call (median of ``--reps``); peak memory is
``tracemalloc``'s peak during a separate call (numpy reports its buffers to it). OpenBLAS
runs single-threaded (``OPENBLAS_NUM_THREADS=1``, set before numpy is imported): on a busy
machine its idle threads spin, and ``process_time`` would count that as the client's work.

    .venv/bin/python benchmarks/late_interaction.py          # writes RESULTS-late-interaction.md
    .venv/bin/python benchmarks/late_interaction.py --quick  # smaller, to stdout only
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see the docstring

import httpx
import numpy as np

from infinity_rag import InfinityClient

BENCH = Path(__file__).resolve().parent
BATCH = 32  # documents per request (the client's embedding batch size here)
QUERY_TOKENS = 32


def _client(tokens: int, dim: int) -> InfinityClient:
    rng = np.random.default_rng(0)
    matrix = {n: rng.standard_normal((n, dim)).astype("<f4") for n in (QUERY_TOKENS, tokens)}
    encoded = {n: base64.b64encode(m.tobytes()).decode() for n, m in matrix.items()}
    cache: dict[tuple[int, str], bytes] = {}

    def body(inputs: int, fmt: str) -> bytes:
        if (inputs, fmt) not in cache:
            rows = QUERY_TOKENS if inputs == 1 else tokens
            one: Any = encoded[rows] if fmt == "base64" else matrix[rows].tolist()
            data = [{"object": "embedding", "embedding": one, "index": i} for i in range(inputs)]
            usage = {"prompt_tokens": inputs * rows, "total_tokens": inputs * rows}
            cache[inputs, fmt] = json.dumps({"data": data, "model": "m", "usage": usage}).encode()
        return cache[inputs, fmt]

    def handle(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        content = body(len(sent["input"]), sent.get("encoding_format", "float"))
        return httpx.Response(200, content=content, headers={"content-type": "application/json"})

    client = InfinityClient(
        base_url="http://bench.invalid",
        http_client=httpx.Client(transport=httpx.MockTransport(handle)),
        batch_size=BATCH,
        max_concurrency=1,
    )
    client.vector_shape("m")  # learned once, as in a long-lived client
    return client


def by_hand(client: InfinityClient, query: str, documents: list[str]) -> list[float]:
    """What a user writes without the reranker: every matrix, then MaxSim in numpy."""
    q = client.embed_multi_vector([query], model="m", as_numpy=True)[0]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = []
    for d in client.embed_multi_vector(documents, model="m", as_numpy=True):
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        scores.append(float((q @ d.T).max(axis=1).sum()))
    return scores


def _measure(call: Callable[[], Any], reps: int) -> tuple[list[float], int]:
    call()  # warm-up
    cpu = []
    for _ in range(reps):
        started = time.process_time()
        call()
        cpu.append(time.process_time() - started)
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return cpu, peak


def run(documents: int, tokens: int, dim: int, reps: int) -> list[dict[str, Any]]:
    client = _client(tokens, dim)
    texts = [f"passage {i}" for i in range(documents)]
    calls = {
        "rerank(late_interaction=True)": lambda: client.rerank(
            "query", texts, model="m", late_interaction=True, top_n=10
        ),
        "embed_multi_vector + numpy MaxSim": lambda: by_hand(client, "query", texts),
    }
    rows = []
    for name, call in calls.items():
        cpu, peak = _measure(call, reps)
        median = statistics.median(cpu)
        rows.append(
            {
                "method": name,
                "documents": documents,
                "tokens": tokens,
                "dim": dim,
                "cpu_s": median,
                "cpu_min_max": [min(cpu), max(cpu)],
                "us_per_document": median / documents * 1e6,
                "peak_mb": peak / 2**20,
                "matrices_mb": documents * tokens * dim * 4 / 2**20,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | documents x tokens | dim | client CPU s | µs per document | peak MB "
        "(all matrices: MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lo, hi = r["cpu_min_max"]
        lines.append(
            f"| {r['method']} | {r['documents']:,} x {r['tokens']} | {r['dim']} | "
            f"{r['cpu_s']:.3f} ({lo:.3f}-{hi:.3f}) | {r['us_per_document']:.0f} | "
            f"{r['peak_mb']:.1f} ({r['matrices_mb']:.1f}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    sizes = [(64, 32)] if args.quick else [(100, 128), (1024, 128)]
    reps = 1 if args.quick else args.reps
    rows = [
        row for docs, tokens in sizes for dim in (128, 384) for row in run(docs, tokens, dim, reps)
    ]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    header = (
        "# Late-interaction reranking: client CPU and memory\n\n"
        f"`benchmarks/late_interaction.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{reps} rep(s), medians (min-max). Python {platform.python_version()}, httpx "
        f"{httpx.__version__}, numpy {np.__version__}; load average {load} (a shared 2-core "
        f"machine: compare rows, not absolute figures). A {QUERY_TOKENS}-token query, {BATCH} "
        "documents a request, base64 answers replayed by an in-process httpx.MockTransport "
        "(client work only: decoding, normalising, MaxSim, ranking), OpenBLAS on one thread. "
        "Peak: tracemalloc's during one call; in brackets, the size of every document's "
        "float32 matrix.\n\n"
    )
    report = header + table(rows) + "\n"
    print(report)
    if not args.quick:
        (BENCH / "RESULTS-late-interaction.md").write_text(report)
        (BENCH / "RESULTS-late-interaction.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
