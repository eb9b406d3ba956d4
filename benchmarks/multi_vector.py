"""Client CPU per token vector on the multi-vector path (ColBERT-style answers).

What the client spends reading a late-interaction answer, next to the single-vector path for
the same number of vectors: ``embed_multi_vector`` (lists and ``as_numpy``; base64 and JSON
floats) against ``embed`` answering one vector per "token". The answers are Infinity 0.0.78's
exact wire format (a ColBERT matrix flattened to one float32 base64 string per input, or
nested JSON lists), built once per configuration and replayed by an in-process
``httpx.MockTransport``: no socket, no server compute, so the figure is the client's alone
(httpx's request/response handling included). Each configuration runs ``--reps`` times after a
warm-up call that also teaches the client the model's width; CPU is the process's user +
system time during the call (``time.process_time``), the median is reported.

    .venv/bin/python benchmarks/multi_vector.py            # ~1 min; writes RESULTS-multi-vector.md
    .venv/bin/python benchmarks/multi_vector.py --quick    # smaller, to stdout only
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from infinity_rag import InfinityClient

BENCH = Path(__file__).resolve().parent
BATCH = 32  # texts per request: what a ColBERT ingestion sends (matrices are large)


def _answers(texts: int, tokens: int, dim: int, rng: np.random.Generator) -> dict[str, Any]:
    """Per encoding and kind, the answer body for ``BATCH`` inputs (the same for every
    request: the client's work does not depend on the values)."""
    matrices = [rng.standard_normal((tokens, dim)).astype(np.float32) for _ in range(BATCH)]
    rows = [row for matrix in matrices for row in matrix][:BATCH]

    def body(embeddings: list[Any]) -> bytes:
        data = [
            {"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)
        ]
        usage = {"prompt_tokens": BATCH * tokens, "total_tokens": BATCH * tokens}
        return json.dumps({"object": "list", "data": data, "model": "m", "usage": usage}).encode()

    def b64(array: np.ndarray) -> str:
        return base64.b64encode(array.astype("<f4").tobytes()).decode()

    return {
        ("multi", "base64"): body([b64(m) for m in matrices]),
        ("multi", "float"): body([m.tolist() for m in matrices]),
        ("single", "base64"): body([b64(r) for r in rows]),
        ("single", "float"): body([r.tolist() for r in rows]),
    }


def _client(answer: bytes, single: bytes) -> InfinityClient:
    # The first request (floats, to learn the model) gets the float answer of its kind.
    def handle(request: httpx.Request) -> httpx.Response:
        inputs = len(json.loads(request.content)["input"])
        if inputs != BATCH:
            raise AssertionError(f"{inputs} inputs: not a full batch")
        return httpx.Response(200, content=answer, headers={"content-type": "application/json"})

    return InfinityClient(
        base_url="http://bench.invalid",
        http_client=httpx.Client(transport=httpx.MockTransport(handle)),
        batch_size=BATCH,
        max_concurrency=1,
    )


def run(texts: int, tokens: int, dim: int, reps: int) -> list[dict[str, Any]]:
    answers = _answers(texts, tokens, dim, np.random.default_rng(0))
    inputs = [f"passage {i}" for i in range(texts)]
    rows = []
    for kind, fmt, as_numpy in [
        ("multi", "base64", False),
        ("multi", "base64", True),
        ("multi", "float", False),
        ("multi", "float", True),
        ("single", "base64", False),
        ("single", "base64", True),
    ]:
        # The float answer for the warm-up (first request to the model), then the measured one.
        warm = _client(answers[(kind, "float")], answers[(kind, "float")])
        if kind == "multi":
            warm.embed_multi_vector(inputs[:BATCH], model="m")
        else:
            warm.embed(inputs[:BATCH], model="m")
        client = _client(answers[(kind, fmt)], answers[(kind, fmt)])
        client._shapes = warm._shapes  # the width learned by the warm-up
        n = texts if kind == "multi" else texts * tokens  # the same number of vectors
        batch = inputs if kind == "multi" else [f"t{i}" for i in range(n)]
        cpu = []
        for _ in range(reps):
            started = time.process_time()
            if kind == "multi":
                result: Any = client.embed_multi_vector(
                    batch, model="m", encoding_format=fmt, as_numpy=as_numpy
                )
                vectors = sum(len(m) for m in result)
            else:
                result = client.embed(batch, model="m", encoding_format=fmt, as_numpy=as_numpy)
                vectors = len(result)
            cpu.append(time.process_time() - started)
            del result
        if vectors != texts * tokens:
            raise AssertionError(f"{vectors} vectors, expected {texts * tokens}")
        median = statistics.median(cpu)
        rows.append(
            {
                "method": "embed_multi_vector" if kind == "multi" else "embed (1 vector/input)",
                "encoding": fmt,
                "result": "numpy" if as_numpy else "lists",
                "vectors": vectors,
                "dim": dim,
                "cpu_s": median,
                "us_per_vector": median / vectors * 1e6,
                "cpu_min_max": [min(cpu), max(cpu)],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | encoding | result | token vectors | dim | client CPU s | µs per vector |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lo, hi = r["cpu_min_max"]
        lines.append(
            f"| {r['method']} | {r['encoding']} | {r['result']} | {r['vectors']:,} | {r['dim']} "
            f"| {r['cpu_s']:.3f} ({lo:.3f}-{hi:.3f}) | {r['us_per_vector']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    texts, tokens = (64, 32) if args.quick else (1024, 64)
    reps = 1 if args.quick else args.reps
    rows = [row for dim in (128, 384) for row in run(texts, tokens, dim, reps)]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    header = (
        f"# Multi-vector path: client CPU per token vector\n\n"
        f"`benchmarks/multi_vector.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{reps} rep(s), medians (min-max). Python {platform.python_version()}, httpx "
        f"{httpx.__version__}, numpy {np.__version__}; load average {load} (a shared 2-core "
        f"machine: compare rows, not absolute figures). {texts:,} texts of {tokens} tokens "
        f"({texts * tokens:,} token vectors), {BATCH} texts a request, answers replayed by an "
        f"in-process httpx.MockTransport (client work only). The `embed` rows read the same "
        f"number of vectors, one per input, for comparison.\n\n"
    )
    report = header + table(rows) + "\n"
    print(report)
    if not args.quick:
        (BENCH / "RESULTS-multi-vector.md").write_text(report)
        (BENCH / "RESULTS-multi-vector.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
