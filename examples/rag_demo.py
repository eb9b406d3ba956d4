"""The main job: a RAG run with reranking against a real Infinity server, through LangChain and
LlamaIndex, on a real vector database (Qdrant, embedded on disk).

    bash scripts/run.sh demo                 # sets everything up, then runs this
    python examples/rag_demo.py --help

1. Start a local Infinity server (or use the one ``INFINITY_API_BASE`` names) serving MiniLM
   and the demo's reranker, built from it offline in seconds (``scripts/build_reranker.py``:
   MiniLM's cosines with the passage and its opening, plus BM25 over the pair's tokens, served
   on ``/rerank``; not a cross-encoder).
   ``INFINITY_RAG_RERANKER`` names another (a Hugging Face cross-encoder, with network access).
2. Load a real corpus: the docstrings of Python's standard library (about 1,100 passages).
3. LangChain: ingest into Qdrant with ``InfinityEmbeddings``; for each of the 132 held-out
   questions (``examples/rerank_questions.py``: natural how-to questions the reranker never saw),
   retrieve 10 with the vector store, then rerank them with ``ContextualCompressionRetriever`` +
   ``InfinityRerank``.
4. LlamaIndex: the same corpus through ``VectorStoreIndex`` on Qdrant with ``InfinityEmbedding``,
   a retriever, and ``InfinityRerank`` as a node postprocessor.
5. Per question, the rank of the first passage that answers it before and after reranking; a few
   questions reranking made better and worse, in full; a summary: passages ingested, throughput,
   time per query, hit@1 and MRR@10 of retrieval alone and after reranking over all questions.

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
from pathlib import Path
from typing import Any

from rerank_questions import HELDOUT2_QUESTIONS, HELDOUT_QUESTIONS, Question

from infinity_rag import InfinityClient
from infinity_rag.testing import LocalInfinityServer, Passage, load_corpus, server_env_paths

EMBED_MODEL = "minilm"
RERANK_MODEL = "reranker"
COLLECTION = "stdlib-docs"


# The held-out questions: natural how-to questions that played no part in building the reranker
# or in choosing its recipe (examples/rerank_questions.py), all 132 of both held-out sets,
# whatever the outcome.
QUESTIONS: tuple[Question, ...] = HELDOUT_QUESTIONS + HELDOUT2_QUESTIONS
RETRIEVE_K = 10  # passages retrieved per question, then reranked
SHOW_TOP = 3  # reranked passages shown per question


@dataclass
class Ranked:
    source: str
    score: float
    text: str


@dataclass
class QuestionResult:
    question: Question
    retrieved: list[Ranked]  # the vector store's top RETRIEVE_K
    reranked: list[Ranked]  # the same passages in the reranker's order
    seconds: float

    @property
    def rank_before(self) -> int | None:
        """1-based rank of the first answering passage by retrieval alone (None: not in top k)."""
        return _first_rank(self.retrieved, self.question)

    @property
    def rank_after(self) -> int | None:
        return _first_rank(self.reranked, self.question)

    @property
    def answered_first(self) -> bool:
        return self.rank_after == 1


def _first_rank(ranked: Sequence[Ranked], question: Question) -> int | None:
    return next((i for i, r in enumerate(ranked, 1) if r.source in question.answers), None)


@dataclass
class RunResult:
    framework: str
    passages: int
    ingest_seconds: float
    questions: list[QuestionResult] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.passages / self.ingest_seconds if self.ingest_seconds else 0.0

    def hit_at_1(self, reranked: bool) -> float:
        """Share of questions whose first passage answers them (retrieval alone or reranked)."""
        ranks = [q.rank_after if reranked else q.rank_before for q in self.questions]
        return sum(r == 1 for r in ranks) / max(len(ranks), 1)

    def mrr(self, reranked: bool) -> float:
        """Mean reciprocal rank of the first answering passage in the top RETRIEVE_K (0 if none)."""
        ranks = [q.rank_after if reranked else q.rank_before for q in self.questions]
        return sum(1 / r for r in ranks if r) / max(len(ranks), 1)


# --- LangChain -------------------------------------------------------------------------------


def run_langchain(
    client: InfinityClient,
    corpus: Sequence[Passage],
    questions: Sequence[Question],
    qdrant: dict[str, str],
    *,
    retrieve_k: int = RETRIEVE_K,
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
        base_compressor=InfinityRerank(model=RERANK_MODEL, client=client, top_n=retrieve_k),
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
    retrieve_k: int = RETRIEVE_K,
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
    rerank = InfinityRerank(model=RERANK_MODEL, client=client, top_n=retrieve_k)
    for question in questions:
        started = time.perf_counter()
        hits = retriever.retrieve(question.text)
        reranked = rerank.postprocess_nodes(hits, query_bundle=QueryBundle(question.text))
        run.questions.append(
            QuestionResult(
                question,
                [_ranked_node(h) for h in hits],
                [_ranked_node(h) for h in reranked],
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
    users with network access), else the demo's hybrid reranker built offline."""
    named = os.environ.get("INFINITY_RAG_RERANKER")
    if named:
        return named
    built = server_env_paths().models_dir / "reranker-hybrid"
    if not (built / "config.json").is_file():
        raise SystemExit(f"No demo reranker at {built}; run `bash scripts/setup_server.sh` first.")
    return str(built)


@contextmanager
def infinity(stack: ExitStack) -> Iterator[InfinityClient]:
    """A client for ``INFINITY_API_BASE``, or for a local server started (and stopped) here."""
    url = os.environ.get("INFINITY_API_BASE")
    key = os.environ.get("INFINITY_API_KEY")
    if not url:
        print("Starting a local Infinity server (MiniLM + the demo's reranker) ...", flush=True)
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


def _rank(rank: int | None) -> str:
    return str(rank) if rank else "-"


def changed(run: RunResult) -> tuple[list[QuestionResult], list[QuestionResult]]:
    """Questions whose answer reranking moved up, and those it moved down (biggest first)."""

    def key(rank: int | None) -> float:
        return 1 / rank if rank else 0.0

    better = [q for q in run.questions if key(q.rank_after) > key(q.rank_before)]
    worse = [q for q in run.questions if key(q.rank_after) < key(q.rank_before)]
    better.sort(key=lambda q: key(q.rank_before) - key(q.rank_after))
    worse.sort(key=lambda q: key(q.rank_after) - key(q.rank_before))
    return better, worse


def print_run(run: RunResult, show: int, examples: int) -> None:
    print(
        f"\n=== {run.framework}: {run.passages} passages ingested into Qdrant in "
        f"{run.ingest_seconds:.1f}s ({run.throughput:.0f} passages/s)"
    )
    print(
        f"Rank of the first passage that answers each question, retrieval -> reranked "
        f"(top {RETRIEVE_K}; '-': not retrieved):"
    )
    for result in run.questions:
        before, after = _rank(result.rank_before), _rank(result.rank_after)
        print(f"  {before:>2} -> {after:<2}  {result.question.text}")
    better, worse = changed(run)
    for title, picked in (("better", better[:examples]), ("worse", worse[:examples])):
        for result in picked:
            print(
                f"\nQ: {result.question.text}   [reranking made it {title}: answer at "
                f"{_rank(result.rank_before)} -> {_rank(result.rank_after)}]"
            )
            print("  retrieved (vector similarity):")
            for hit in result.retrieved[:show]:
                print(f"    {hit.score:6.3f}  {hit.source:<32} {_snippet(hit.text)}")
            print("  reranked (reranker relevance):")
            for hit in result.reranked[:SHOW_TOP]:
                print(f"    {hit.score:6.3f}  {hit.source:<32} {_snippet(hit.text)}")


def _snippet(text: str, width: int = 60) -> str:
    body = text.split(": ", 1)[-1].replace("\n", " ")
    return body if len(body) <= width else body[: width - 1] + "…"


def summary_lines(run: RunResult) -> list[str]:
    per_query = sum(q.seconds for q in run.questions) / max(len(run.questions), 1)
    better, worse = changed(run)
    return [
        f"  {run.framework:<10} {run.passages} passages, {run.throughput:.0f} passages/s "
        f"ingest, {per_query * 1000:.0f} ms per query (retrieve + rerank)",
        f"  {'':<10} {len(run.questions)} held-out questions: hit@1 "
        f"{run.hit_at_1(False):.0%} -> {run.hit_at_1(True):.0%} after reranking, MRR@{RETRIEVE_K} "
        f"{run.mrr(False):.3f} -> {run.mrr(True):.3f} ({len(better)} better, {len(worse)} worse)",
    ]


def print_summary(runs: Sequence[RunResult], total_seconds: float) -> None:
    print("\n=== Summary")
    for run in runs:
        print("\n".join(summary_lines(run)))
    print(f"  total {total_seconds:.1f}s")


def results_markdown(runs: Sequence[RunResult], reranker: str, command: str) -> str:
    """benchmarks/RESULTS-reranker.md: the headline and every question, for each framework."""
    lines = [
        "# The demo's reranker on held-out questions",
        "",
        f"Made by `{command}` (reranker: `{reranker}`). {len(QUESTIONS)} natural how-to "
        f"questions (`examples/rerank_questions.py`: the {len(HELDOUT_QUESTIONS)} of "
        "`HELDOUT_QUESTIONS`, written before the reranker was built, and the "
        f"{len(HELDOUT2_QUESTIONS)} of `HELDOUT2_QUESTIONS`, written after its recipe was "
        "fixed), never used to build it or to choose its recipe. For each, "
        f"the vector store retrieves {RETRIEVE_K} passages of the demo corpus (MiniLM "
        "bi-encoder), then the reranker reranks them. A question's rank is that of the "
        "first passage that answers it ('-': none of the 10 does; it counts 0 in MRR).",
        "",
        f"| framework | questions | hit@1 retrieval | hit@1 reranked | MRR@{RETRIEVE_K} "
        f"retrieval | MRR@{RETRIEVE_K} reranked | better | worse |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        better, worse = changed(run)
        lines.append(
            f"| {run.framework} | {len(run.questions)} | {run.hit_at_1(False):.1%} | "
            f"{run.hit_at_1(True):.1%} | {run.mrr(False):.3f} | {run.mrr(True):.3f} | "
            f"{len(better)} | {len(worse)} |"
        )
    for run in runs:
        lines += [
            "",
            f"## {run.framework}, question by question",
            "",
            "| question | answers | rank retrieval | rank reranked | reranked first |",
            "|---|---|---:|---:|---|",
        ]
        for q in run.questions:
            first = q.reranked[0].source if q.reranked else ""
            lines.append(
                f"| {q.question.text} | {', '.join(sorted(q.question.answers))} | "
                f"{_rank(q.rank_before)} | {_rank(q.rank_after)} | {first} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qdrant-path", help="folder for Qdrant's embedded storage (default: temp)"
    )
    parser.add_argument("--qdrant-url", help="a Qdrant server instead, e.g. http://localhost:6333")
    parser.add_argument("--framework", choices=["langchain", "llama-index", "both"], default="both")
    parser.add_argument("--show", type=int, default=5, help="retrieved passages shown per example")
    parser.add_argument(
        "--examples", type=int, default=3, help="questions shown in full that reranking changed"
    )
    parser.add_argument(
        "--results", type=Path, help="also write the per-question results (Markdown) here"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    corpus = load_corpus()
    print(f"Corpus: {len(corpus)} passages from the standard library's docstrings")
    runs = []
    with ExitStack() as stack, infinity(stack) as client:
        qdrant = qdrant_location(args, stack)
        if args.framework in ("langchain", "both"):
            runs.append(run_langchain(client, corpus, QUESTIONS, qdrant))
            print_run(runs[-1], args.show, args.examples)
        if args.framework in ("llama-index", "both"):
            runs.append(run_llama_index(client, corpus, QUESTIONS, qdrant))
            print_run(runs[-1], args.show, args.examples)
        if "path" in qdrant and args.qdrant_path is None:
            shutil.rmtree(qdrant["path"], ignore_errors=True)
    print_summary(runs, time.perf_counter() - started)
    if args.results:
        reranker = (
            os.environ.get("INFINITY_RAG_RERANKER")
            or "models/reranker-hybrid (scripts/build_reranker.py)"
        )
        command = "python examples/rag_demo.py --results " + str(args.results)
        args.results.write_text(results_markdown(runs, reranker, command))
        print(f"  results written to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
