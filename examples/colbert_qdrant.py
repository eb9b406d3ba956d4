"""ColBERT token matrices from Infinity in Qdrant multivectors, searched by MaxSim.

Each document is stored as its matrix (one vector per token) in a collection whose vectors
are ``MultiVectorConfig(comparator=MAX_SIM)`` with cosine distance: Qdrant then scores a
query matrix against each document exactly as ColBERT does (the sum over the query's tokens
of the best cosine with a document token), the number ``InfinityClient.rerank(...,
late_interaction=True, raw_scores=True)`` gives for the same texts.

    python examples/colbert_qdrant.py --infinity-url http://localhost:7997 \\
        --model colbert-ir/colbertv2.0 [--qdrant-path ./qdrant | --qdrant-url URL] \\
        [--docs 200] "how do I parse a JSON string?"

The corpus is the standard library's docstrings (``infinity_rag.testing``); Qdrant runs in local
mode (in memory, or in ``--qdrant-path``) unless ``--qdrant-url`` names a server. One JSON
line per hit is printed: rank, score, source.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from infinity_rag import InfinityClient
from infinity_rag.testing import load_corpus

#: Documents embedded (and upserted) per round: a round's matrices are all that is held.
ROUND = 64

#: The standard library modules whose docstrings are the corpus.
MODULES = ("json", "shutil", "textwrap", "pathlib", "random", "re", "csv")


def create_collection(qdrant: QdrantClient, name: str, dimensions: int) -> None:
    """A collection of token matrices compared by MaxSim over cosines."""
    qdrant.create_collection(
        name,
        vectors_config=models.VectorParams(
            size=dimensions,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(
                comparator=models.MultiVectorComparator.MAX_SIM
            ),
        ),
    )


def ingest(
    client: InfinityClient, qdrant: QdrantClient, name: str, texts: Sequence[str], *, model: str
) -> int:
    """Embed ``texts`` as matrices and store them (ids = positions); creates the collection."""
    dimensions = client.vector_shape(model).width
    if not qdrant.collection_exists(name):
        create_collection(qdrant, name, dimensions)
    for start in range(0, len(texts), ROUND):
        batch = list(texts[start : start + ROUND])
        matrices = client.embed_multi_vector(batch, model=model, as_numpy=True)
        qdrant.upsert(
            name,
            points=[
                models.PointStruct(id=start + i, vector=matrix.tolist(), payload={"text": text})
                for i, (matrix, text) in enumerate(zip(matrices, batch, strict=True))
            ],
        )
    return len(texts)


def search(
    client: InfinityClient, qdrant: QdrantClient, name: str, query: str, *, model: str, limit: int
) -> list[models.ScoredPoint]:
    """The ``limit`` documents with the highest MaxSim for ``query``, best first."""
    matrix = client.embed_multi_vector([query], model=model, as_numpy=True)[0]
    return qdrant.query_points(name, query=matrix.tolist(), limit=limit, with_payload=True).points


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("query")
    parser.add_argument("--infinity-url", required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default="colbert")
    parser.add_argument("--qdrant-path", default=None, help="local mode on disk (else memory)")
    parser.add_argument("--qdrant-url", default=None, help="a Qdrant server instead")
    parser.add_argument("--collection", default="colbert_docs")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args(argv)
    passages = load_corpus(MODULES, max_chars=400)[: args.docs]
    if args.qdrant_url:
        qdrant = QdrantClient(url=args.qdrant_url)
    else:
        qdrant = (
            QdrantClient(path=args.qdrant_path) if args.qdrant_path else QdrantClient(":memory:")
        )
    try:
        with InfinityClient(base_url=args.infinity_url, api_key=args.api_key) as client:
            ingest(client, qdrant, args.collection, [p.text for p in passages], model=args.model)
            hits = search(
                client, qdrant, args.collection, args.query, model=args.model, limit=args.limit
            )
    finally:
        qdrant.close()
    for rank, hit in enumerate(hits, 1):
        source = passages[int(hit.id)].source
        print(json.dumps({"rank": rank, "score": round(hit.score, 4), "source": source}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
