"""The main job's promise: on the demo's questions, the passage that answers each one is ranked
first after reranking, through LangChain and LlamaIndex, with the distilled cross-encoder."""

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


def describe(run: rag_demo.RunResult) -> str:
    return "\n".join(
        f"{q.question.text!r}: reranked {[r.source for r in q.reranked]}, "
        f"retrieved {[r.source for r in q.retrieved]}"
        for q in run.questions
        if not q.answered_first
    )


def test_every_answer_is_reachable_by_retrieval(corpus: list[Passage]) -> None:
    sources = {p.source for p in corpus}
    for question in rag_demo.QUESTIONS:
        assert question.answers & sources, question


def test_langchain_run_ranks_each_answer_first(
    demo_client: InfinityClient, corpus: list[Passage], tmp_path: Path
) -> None:
    run = rag_demo.run_langchain(
        demo_client, corpus, rag_demo.QUESTIONS, {"path": str(tmp_path)}, progress=False
    )
    assert run.passages == len(corpus)
    assert len(run.questions) == len(rag_demo.QUESTIONS)
    for result in run.questions:
        scores = [r.score for r in result.reranked]
        assert scores == sorted(scores, reverse=True)
    assert all(q.answered_first for q in run.questions), describe(run)


def test_llama_index_run_ranks_each_answer_first(
    demo_client: InfinityClient, corpus: list[Passage], tmp_path: Path
) -> None:
    run = rag_demo.run_llama_index(
        demo_client, corpus, rag_demo.QUESTIONS, {"path": str(tmp_path)}, progress=False
    )
    assert run.passages == len(corpus)
    assert all(q.answered_first for q in run.questions), describe(run)
