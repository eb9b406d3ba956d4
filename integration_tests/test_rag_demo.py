"""The main job's promise: on the demo's held-out questions (none chosen for the reranker's
sake), reranking retrieval's top 10 with the shipped cross-encoder puts the answer first more
often than retrieval alone, and raises MRR@10, through LangChain and LlamaIndex."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infinity_rag import InfinityClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import rag_demo  # noqa: E402

from infinity_rag.testing import LocalInfinityServer, Passage, load_corpus  # noqa: E402


@pytest.fixture(scope="module")
def demo_client() -> Iterator[InfinityClient]:
    models = {rag_demo.EMBED_MODEL: "minilm", rag_demo.RERANK_MODEL: rag_demo.reranker_model_dir()}
    with LocalInfinityServer(models) as server:
        with InfinityClient(base_url=server.url, api_key=server.api_key) as client:
            yield client


@pytest.fixture(scope="module")
def corpus() -> list[Passage]:
    return load_corpus()


# The gain the demo must show, in hit@1 points over retrieval alone (issue 13's floor; the
# measured figures are in benchmarks/RESULTS-reranker.md).
MIN_HIT1_GAIN = 0.08
# Measured on 2026-12-02 (benchmarks/RESULTS-reranker.md): the shipped reranker lowers hit@1
# on the held-out questions (53% -> 46% through LangChain). strict: the day it passes, this
# marker must go.
NOT_YET = pytest.mark.xfail(
    strict=True, reason="the shipped reranker does not beat retrieval yet (issue 13)"
)


def describe(run: rag_demo.RunResult) -> str:
    return (
        f"hit@1 {run.hit_at_1(False):.3f} -> {run.hit_at_1(True):.3f}, "
        f"MRR {run.mrr(False):.3f} -> {run.mrr(True):.3f}; per question (before -> after): "
        + "; ".join(f"{q.question.text!r} {q.rank_before}->{q.rank_after}" for q in run.questions)
    )


@pytest.fixture(scope="module")
def langchain_run(
    demo_client: InfinityClient, corpus: list[Passage], tmp_path_factory: pytest.TempPathFactory
) -> rag_demo.RunResult:
    path = tmp_path_factory.mktemp("qdrant-langchain")
    return rag_demo.run_langchain(
        demo_client, corpus, rag_demo.QUESTIONS, {"path": str(path)}, progress=False
    )


@pytest.fixture(scope="module")
def llama_index_run(
    demo_client: InfinityClient, corpus: list[Passage], tmp_path_factory: pytest.TempPathFactory
) -> rag_demo.RunResult:
    path = tmp_path_factory.mktemp("qdrant-llama-index")
    return rag_demo.run_llama_index(
        demo_client, corpus, rag_demo.QUESTIONS, {"path": str(path)}, progress=False
    )


def check_reordering(run: rag_demo.RunResult, corpus: list[Passage]) -> None:
    assert run.passages == len(corpus)
    assert [q.question for q in run.questions] == list(rag_demo.QUESTIONS)
    for result in run.questions:
        # Reranking reorders the retrieved passages: nothing dropped, nothing added.
        assert sorted(r.source for r in result.reranked) == sorted(
            r.source for r in result.retrieved
        )
        assert len(result.retrieved) == rag_demo.RETRIEVE_K
        scores = [r.score for r in result.reranked]
        assert scores == sorted(scores, reverse=True)


def check_gain(run: rag_demo.RunResult) -> None:
    assert run.hit_at_1(True) >= run.hit_at_1(False) + MIN_HIT1_GAIN, describe(run)
    assert run.mrr(True) > run.mrr(False), describe(run)


def test_every_answer_is_in_the_corpus(corpus: list[Passage]) -> None:
    sources = {p.source for p in corpus}
    for question in rag_demo.QUESTIONS:
        assert question.answers <= sources, question


def test_langchain_reranks_the_retrieved_passages(
    langchain_run: rag_demo.RunResult, corpus: list[Passage]
) -> None:
    check_reordering(langchain_run, corpus)


def test_llama_index_reranks_the_retrieved_passages(
    llama_index_run: rag_demo.RunResult, corpus: list[Passage]
) -> None:
    check_reordering(llama_index_run, corpus)


@NOT_YET
def test_langchain_reranking_beats_retrieval(langchain_run: rag_demo.RunResult) -> None:
    check_gain(langchain_run)


@NOT_YET
def test_llama_index_reranking_beats_retrieval(llama_index_run: rag_demo.RunResult) -> None:
    check_gain(llama_index_run)
