"""Server time of the demo's rerankers: the hybrid (``reranker-hybrid``) against a MiniLM
cross-encoder of the same size (``reranker-random``, the seeded test model: same architecture and
length as a trained one, so the same cost).

One real Infinity server serves both; the same questions, each with the same 10 demo-corpus
passages, are sent to each in turn (interleaved, so machine load hits both alike), one request
at a time, through ``InfinityClient.rerank``. Reported: the median wall time of a request and
pairs per second, and their ratio (the machine is shared: the ratio is the figure to read).

    .venv/bin/python benchmarks/reranker_speed.py            # writes RESULTS-reranker-speed.md
    .venv/bin/python benchmarks/reranker_speed.py --quick    # fewer rounds, to stdout only
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from infinity_rag import InfinityClient
from infinity_rag.testing import LocalInfinityServer, load_corpus

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "examples"))

from rerank_questions import DEV_QUESTIONS  # noqa: E402

MODELS = {"hybrid": "reranker-hybrid", "cross-encoder": "reranker-random"}
DOCS = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over the 40 questions")
    parser.add_argument("--quick", action="store_true", help="1 round, no results file")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    corpus = [p.text for p in load_corpus()]
    # Each question with 10 passages: a fixed, spread-out slice of the corpus.
    work = [
        (q.text, corpus[(i * 97) % (len(corpus) - DOCS) :][:DOCS])
        for i, q in enumerate(DEV_QUESTIONS)
    ]
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    with LocalInfinityServer(MODELS) as server:
        with InfinityClient(base_url=server.url, api_key=server.api_key) as client:
            for name in MODELS:  # warm-up
                client.rerank(work[0][0], work[0][1], model=name)
            for _ in range(rounds):
                for query, docs in work:
                    for name in MODELS:
                        t0 = time.perf_counter()
                        client.rerank(query, docs, model=name)
                        times[name].append(time.perf_counter() - t0)
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append((name, len(ts), median * 1000, DOCS / median))
    ratio = rows[0][2] / rows[1][2]
    lines = [
        "# Reranker speed: the demo's hybrid against a MiniLM cross-encoder",
        "",
        f"Made by `python benchmarks/reranker_speed.py` ({rounds} rounds x {len(work)} "
        f"questions x {DOCS} passages, one request at a time, interleaved; one Infinity "
        f"0.0.78 server on CPU, {platform.machine()}, Python {platform.python_version()}).",
        "",
        "| reranker | requests | median ms per request | pairs/s |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {c} | {ms:.1f} | {ps:.0f} |" for n, c, ms, ps in rows),
        "",
        f"Hybrid / cross-encoder time per request: **{ratio:.2f}x**.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.quick:
        (BENCH / "RESULTS-reranker-speed.md").write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
