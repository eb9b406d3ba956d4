"""Run by scripts/check_dist.py with the python of a fresh venv holding the built wheel.

    wheel_smoke.py EXTRA VERSION      (INFINITY_API_BASE / INFINITY_API_KEY name the server)

Checks that ``infinity_rag`` is the installed wheel (not a source tree), that its version is
the wheel's, then embeds and reranks against the real server through the client and through
the framework classes the extra brings; the framework the extra leaves out must be missing
and its import must say which extra to install. Prints one line per check; exits non-zero on
the first failure.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

EMBED_MODEL = "minilm"  # the names scripts/local_infinity.py serves
RERANK_MODEL = "reranker"
TEXTS = ["The Nile flows north through Egypt.", "Paris is the capital of France."]
QUERY = "What is the capital of France?"


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def check_vectors(vectors: list[list[float]], what: str) -> None:
    check(
        len(vectors) == len(TEXTS)
        and len({len(v) for v in vectors}) == 1
        and len(vectors[0]) > 0
        and all(isinstance(x, float) and math.isfinite(x) for v in vectors for x in v),
        f"{what}: {len(vectors)} vectors of {len(vectors[0]) if vectors else 0} floats",
    )


def check_ranking(indexes: list[int], scores: list[float], what: str) -> None:
    check(
        sorted(indexes) == list(range(len(TEXTS))) and scores == sorted(scores, reverse=True),
        f"{what}: every document once, best first (scores {[round(s, 4) for s in scores]})",
    )


def main() -> None:
    extra, expected_version = sys.argv[1], sys.argv[2]
    import infinity_rag
    from infinity_rag import InfinityClient

    package = Path(infinity_rag.__file__).resolve().parent
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    check(package.parent == site_packages, f"infinity_rag imported from the wheel ({package})")
    check((package / "py.typed").is_file(), "py.typed installed")
    check(
        infinity_rag.__version__ == version("infinity-rag") == expected_version,
        f"__version__ == metadata == the wheel's ({infinity_rag.__version__})",
    )

    with InfinityClient() as client:  # INFINITY_API_BASE / INFINITY_API_KEY
        check_vectors(client.embed(TEXTS, model=EMBED_MODEL).embeddings, "InfinityClient.embed")
        ranked = client.rerank(QUERY, TEXTS, model=RERANK_MODEL)
        check_ranking(
            [r.index for r in ranked], [r.relevance_score for r in ranked], "InfinityClient.rerank"
        )

    # [otel] brings opentelemetry-api (no SDK): the client makes an observer, whose spans are
    # the API's no-op ones; every other extra leaves it out and the client makes none.
    from infinity_rag import _otel

    with_otel = extra == "otel"
    has_api = importlib.util.find_spec("opentelemetry") is not None
    check(
        has_api == with_otel, f"[{extra}] {'brings' if with_otel else 'leaves out'} opentelemetry"
    )
    observer = _otel.make_observer(list)
    check((observer is not None) == with_otel, f"an OpenTelemetry observer iff [otel] ({observer})")

    frameworks = {
        "langchain": extra in ("langchain", "all"),
        "llama_index": extra in ("llama-index", "all"),
        "haystack": extra in ("haystack", "all"),
    }
    modules = {
        "langchain": "langchain_core",
        "llama_index": "llama_index.core",
        "haystack": "haystack",
    }
    for name, expected in frameworks.items():
        module = modules[name]
        present = importlib.util.find_spec(module.split(".")[0]) is not None
        check(present == expected, f"[{extra}] {'brings' if expected else 'leaves out'} {module}")
        if not expected:
            try:
                __import__(f"infinity_rag.{name}")
            except ImportError as exc:
                check("pip install" in str(exc), f"infinity_rag.{name} says what to install")
            else:
                check(False, f"infinity_rag.{name} imports without {module}")

    if frameworks["langchain"]:
        from langchain_core.documents import Document

        from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

        check_vectors(
            InfinityEmbeddings(model=EMBED_MODEL).embed_documents(TEXTS),
            "langchain InfinityEmbeddings.embed_documents",
        )
        docs = InfinityRerank(model=RERANK_MODEL, top_n=None).compress_documents(
            [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)], QUERY
        )
        check_ranking(
            [d.metadata["i"] for d in docs],
            [d.metadata["relevance_score"] for d in docs],
            "langchain InfinityRerank.compress_documents",
        )

    if frameworks["llama_index"]:
        from llama_index.core.schema import NodeWithScore, TextNode

        from infinity_rag.llama_index import InfinityEmbedding
        from infinity_rag.llama_index import InfinityRerank as LlamaRerank

        check_vectors(
            InfinityEmbedding(model_name=EMBED_MODEL).get_text_embedding_batch(TEXTS),
            "llama_index InfinityEmbedding.get_text_embedding_batch",
        )
        nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(TEXTS)]
        ranked_nodes = LlamaRerank(model=RERANK_MODEL, top_n=None).postprocess_nodes(
            nodes, query_str=QUERY
        )
        check_ranking(
            [int(n.node.node_id) for n in ranked_nodes],
            [math.nan if n.score is None else n.score for n in ranked_nodes],
            "llama_index InfinityRerank.postprocess_nodes",
        )

    if frameworks["haystack"]:
        from haystack import Document as HaystackDocument

        from infinity_rag.haystack import InfinityDocumentEmbedder, InfinityRanker

        haystack_docs = [HaystackDocument(content=t, meta={"i": i}) for i, t in enumerate(TEXTS)]
        embedded = InfinityDocumentEmbedder(model=EMBED_MODEL, progress_bar=False).run(
            haystack_docs
        )["documents"]
        check_vectors(
            [d.embedding or [] for d in embedded], "haystack InfinityDocumentEmbedder.run"
        )
        ranked_docs = InfinityRanker(model=RERANK_MODEL, top_k=None).run(
            query=QUERY, documents=haystack_docs
        )["documents"]
        check_ranking(
            [d.meta["i"] for d in ranked_docs],
            [math.nan if d.score is None else d.score for d in ranked_docs],
            "haystack InfinityRanker.run",
        )


if __name__ == "__main__":
    main()
