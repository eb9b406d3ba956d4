"""The main job: a RAG run with reranking against a real Infinity server, through LangChain and
LlamaIndex, on a real vector database (Qdrant, embedded on disk).

    bash scripts/run.sh demo                 # sets everything up, then runs this
    python examples/rag_demo.py --help

1. Start a local Infinity server (or use the one ``INFINITY_API_BASE`` names) serving MiniLM
   and a cross-encoder reranker distilled from it offline (``scripts/distill_reranker.py``).
2. Load a real corpus: the docstrings of Python's standard library (about 1,100 passages).
3. LangChain: ingest into Qdrant with ``InfinityEmbeddings``; for each question, retrieve with the
   vector store, then rerank with ``ContextualCompressionRetriever`` + ``InfinityRerank``.
4. LlamaIndex: the same corpus through ``VectorStoreIndex`` on Qdrant with ``InfinityEmbedding``,
   a retriever, and ``InfinityRerank`` as a node postprocessor.
5. A summary: passages ingested, throughput, time per query, and whether the passage that
   answers each question came first after reranking.

To scale out, point Qdrant at a server instead of a folder: ``--qdrant-url http://host:6333``.
To use another reranker (with network access), ``INFINITY_RAG_RERANKER=BAAI/bge-reranker-base``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from infinity_rag import InfinityClient
from infinity_rag.testing import (
    QUESTIONS,
    LocalInfinityServer,
    Passage,
    Question,
    load_corpus,
    server_env_paths,
)

EMBED_MODEL = "minilm"
RERANK_MODEL = "reranker"
COLLECTION = "stdlib-docs"


@dataclass
class Ranked:
    source: str
    score: float
    text: str


@dataclass
class QuestionResult:
    question: Question
    retrieved: list[Ranked]
    reranked: list[Ranked]
    seconds: float

    @property
    def answered_first(self) -> bool:
        return bool(self.reranked) and self.reranked[0].source in self.question.answers


@dataclass
class RunResult:
    framework: str
    passages: int
    ingest_seconds: float
    questions: list[QuestionResult] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.passages / self.ingest_seconds if self.ingest_seconds else 0.0


# --- LangChain -------------------------------------------------------------------------------


def run_langchain(
    client: InfinityClient,
    corpus: Sequence[Passage],
    questions: Sequence[Question],
    qdrant: dict[str, str],
    *,
    retrieve_k: int = 10,
    top_n: int = 3,
    progress: bool = True,
) -> RunResult:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_qdrant import QdrantVectorStore

    from infinity_rag.langchain import InfinityEmbeddings, InfinityRerank

    embeddings = InfinityEmbeddings(model=EMBED_MODEL, client=client, show_progress_bar=progress)
    documents = [
        Document(page_content=p.text, metadata={"source": p.source, "module": p.module})
        for p in corpus
    ]
    started = time.perf_counter()
    store = QdrantVectorStore.from_documents(
        documents,
        embeddings,
        collection_name=COLLECTION + "-langchain",
        force_recreate=True,
        batch_size=len(documents),  # one embed call: the client chunks and parallelises
        **qdrant,  # type: ignore[arg-type]
    )
    run = RunResult("LangChain", len(documents), time.perf_counter() - started)

    retriever = store.as_retriever(search_kwargs={"k": retrieve_k})
    reranking = ContextualCompressionRetriever(
        base_compressor=InfinityRerank(model=RERANK_MODEL, client=client, top_n=top_n),
        base_retriever=retriever,
    )
    for question in questions:
        started = time.perf_counter()
        hits = store.similarity_search_with_score(question.text, k=retrieve_k)
        reranked = reranking.invoke(question.text)
        run.questions.append(
            QuestionResult(
                question,
                [Ranked(d.metadata["source"], s, d.page_content) for d, s in hits],
                [
                    Ranked(d.metadata["source"], d.metadata["relevance_score"], d.page_content)
                    for d in reranked
                ],
                time.perf_counter() - started,
            )
        )
    store.client.close()
    return run


# --- LlamaIndex ------------------------------------------------------------------------------


def run_llama_index(
    client: InfinityClient,
    corpus: Sequence[Passage],
    questions: Sequence[Question],
    qdrant: dict[str, str],
    *,
    retrieve_k: int = 10,
    top_n: int = 3,
    progress: bool = True,
) -> RunResult:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import QueryBundle, TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from infinity_rag.llama_index import InfinityEmbedding, InfinityRerank

    qdrant_client = QdrantClient(**qdrant)  # type: ignore[arg-type]
    name = COLLECTION + "-llama-index"
    if qdrant_client.collection_exists(name):
        qdrant_client.delete_collection(name)
    store = QdrantVectorStore(client=qdrant_client, collection_name=name)
    embed_model = InfinityEmbedding(model_name=EMBED_MODEL, client=client)
    nodes = [
        TextNode(text=p.text, metadata={"source": p.source, "module": p.module}) for p in corpus
    ]
    started = time.perf_counter()
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
        show_progress=progress,
    )
    run = RunResult("LlamaIndex", len(nodes), time.perf_counter() - started)

    retriever = index.as_retriever(similarity_top_k=retrieve_k)
    rerank = InfinityRerank(model=RERANK_MODEL, client=client, top_n=top_n)
    for question in questions:
        started = time.perf_counter()
        hits = retriever.retrieve(question.text)
        reranked = rerank.postprocess_nodes(hits, query_bundle=QueryBundle(question.text))
        run.questions.append(
            QuestionResult(
                question,
                [
                    Ranked(h.node.metadata["source"], h.score or 0.0, h.node.get_content())
                    for h in hits
                ],
                [
                    Ranked(h.node.metadata["source"], h.score or 0.0, h.node.get_content())
                    for h in reranked
                ],
                time.perf_counter() - started,
            )
        )
    qdrant_client.close()
    return run


def _ranked_node(hit: Any) -> Ranked:
    return Ranked(hit.node.metadata["source"], hit.score or 0.0, hit.node.get_content())


# --- the run ---------------------------------------------------------------------------------


def reranker_model_dir() -> str:
    """The reranker to serve: ``INFINITY_RAG_RERANKER`` (a Hugging Face id or a folder, for
    users with network access), else the cross-encoder distilled offline."""
    named = os.environ.get("INFINITY_RAG_RERANKER")
    if named:
        return named
    distilled = server_env_paths().models_dir / "reranker-distilled"
    if not (distilled / "config.json").is_file():
        raise SystemExit(
            f"No distilled reranker at {distilled}; run `bash scripts/setup_server.sh` first."
        )
    return str(distilled)


@contextmanager
def infinity(stack: ExitStack) -> Iterator[InfinityClient]:
    """A client for ``INFINITY_API_BASE``, or for a local server started (and stopped) here."""
    url = os.environ.get("INFINITY_API_BASE")
    key = os.environ.get("INFINITY_API_KEY")
    if not url:
        print("Starting a local Infinity server (MiniLM + distilled reranker) ...", flush=True)
        server = stack.enter_context(
            LocalInfinityServer({EMBED_MODEL: "minilm", RERANK_MODEL: reranker_model_dir()})
        )
        url, key = server.url, server.api_key
        print(f"  ready at {url} in {server.startup_seconds:.1f}s", flush=True)
    with InfinityClient(base_url=url, api_key=key) as client:
        yield client


def qdrant_location(args: argparse.Namespace, stack: ExitStack) -> dict[str, str]:
    if args.qdrant_url:
        return {"url": args.qdrant_url}
    folder = args.qdrant_path or stack.enter_context(tempfile.TemporaryDirectory())
    return {"path": str(folder)}


def print_run(run: RunResult, show: int) -> None:
    print(
        f"\n=== {run.framework}: {run.passages} passages ingested into Qdrant in "
        f"{run.ingest_seconds:.1f}s ({run.throughput:.0f} passages/s)"
    )
    for result in run.questions:
        mark = "first" if result.answered_first else "NOT first"
        print(f"\nQ: {result.question.text}   [answer {mark} after reranking]")
        print("  retrieved (vector similarity):")
        for hit in result.retrieved[:show]:
            print(f"    {hit.score:6.3f}  {hit.source:<32} {_snippet(hit.text)}")
        print("  reranked (cross-encoder relevance):")
        for hit in result.reranked:
            print(f"    {hit.score:6.3f}  {hit.source:<32} {_snippet(hit.text)}")


def _snippet(text: str, width: int = 60) -> str:
    body = text.split(": ", 1)[-1].replace("\n", " ")
    return body if len(body) <= width else body[: width - 1] + "…"


def print_summary(runs: Sequence[RunResult], total_seconds: float) -> None:
    print("\n=== Summary")
    for run in runs:
        per_query = sum(q.seconds for q in run.questions) / max(len(run.questions), 1)
        first = sum(q.answered_first for q in run.questions)
        print(
            f"  {run.framework:<10} {run.passages} passages, {run.throughput:.0f} passages/s "
            f"ingest, {per_query * 1000:.0f} ms per query (retrieve + rerank), "
            f"answer ranked first for {first}/{len(run.questions)} questions"
        )
    print(f"  total {total_seconds:.1f}s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qdrant-path", help="folder for Qdrant's embedded storage (default: temp)"
    )
    parser.add_argument("--qdrant-url", help="a Qdrant server instead, e.g. http://localhost:6333")
    parser.add_argument("--framework", choices=["langchain", "llama-index", "both"], default="both")
    parser.add_argument("--show", type=int, default=5, help="retrieved passages shown per question")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    corpus = load_corpus()
    print(f"Corpus: {len(corpus)} passages from the standard library's docstrings")
    runs = []
    with ExitStack() as stack, infinity(stack) as client:
        qdrant = qdrant_location(args, stack)
        if args.framework in ("langchain", "both"):
            runs.append(run_langchain(client, corpus, QUESTIONS, qdrant))
            print_run(runs[-1], args.show)
        if args.framework in ("llama-index", "both"):
            runs.append(run_llama_index(client, corpus, QUESTIONS, qdrant))
            print_run(runs[-1], args.show)
        if "path" in qdrant and args.qdrant_path is None:
            shutil.rmtree(qdrant["path"], ignore_errors=True)
    print_summary(runs, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
