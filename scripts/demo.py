"""The main job: start a local Infinity server (or use INFINITY_API_BASE), embed and rerank.

bash scripts/run.sh demo
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_infinity import LocalInfinityServer

from infinity_rag import InfinityClient

PASSAGES = [
    "The json module encodes and decodes JSON documents.",
    "os.path.split splits a pathname into a directory and a file name.",
    "hashlib computes secure digests such as SHA-256.",
    "The random module generates pseudo-random numbers.",
]
QUESTION = "How do I compute a SHA-256 hash?"


def main() -> None:
    with ExitStack() as stack:
        url = os.environ.get("INFINITY_API_BASE")
        key = os.environ.get("INFINITY_API_KEY")
        if not url:
            print("Starting a local Infinity server ...", flush=True)
            server = stack.enter_context(LocalInfinityServer(["minilm", "reranker"]))
            url, key = server.url, server.api_key
            print(f"  ready at {url} after {server.startup_seconds:.1f}s")
        client = stack.enter_context(InfinityClient(base_url=url, api_key=key))
        print(
            "Served models:", ", ".join(f"{m.id} {sorted(m.capabilities)}" for m in client.models())
        )
        started = time.perf_counter()
        vectors = client.embed(PASSAGES, model="minilm").embeddings
        print(
            f"Embedded {len(vectors)} passages into {len(vectors[0])} dimensions "
            f"in {time.perf_counter() - started:.3f}s"
        )
        query = client.embed([QUESTION], model="minilm").embeddings[0]
        similarity = [sum(q * p for q, p in zip(query, v, strict=True)) for v in vectors]
        print(f"\nQuestion: {QUESTION}\nBy cosine similarity:")
        for i in sorted(range(len(PASSAGES)), key=lambda i: -similarity[i]):
            print(f"  {similarity[i]:.3f}  {PASSAGES[i]}")
        print("Reranked:")
        for item in client.rerank(QUESTION, PASSAGES, model="reranker", return_documents=True):
            print(f"  {item.relevance_score:.3f}  {item.document}")


if __name__ == "__main__":
    main()
