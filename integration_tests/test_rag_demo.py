"""The main job's promise: on the demo's held-out questions (none chosen for the reranker's
sake), reranking retrieval's top 10 with the demo's reranker puts the answer first more
often than retrieval alone, and raises MRR@10, through LangChain and LlamaIndex."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infinity_rag import InfinityClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import rag_demo  # noqa: E402

from infinity_rag.testing import (  # noqa: E402
    LocalInfinityServer,
    Passage,
    load_corpus,
    server_env_paths,
)


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
# Measured on 2026-12-03 (benchmarks/RESULTS-reranker.md): through LlamaIndex the demo reranker
# raises hit@1 on the 132 held-out questions by 6.8 points only (62.9% -> 69.7%, MRR 0.755 ->
# 0.795); its nodes are scored with their metadata lines (MetadataMode.EMBED). strict: the day
# it passes, this marker must go.
NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="through LlamaIndex the demo reranker gains 6.8 points of hit@1, not 8 (issue 13)",
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


def test_langchain_reranks_the_retrieved_passages(
    langchain_run: rag_demo.RunResult, corpus: list[Passage]
) -> None:
    check_reordering(langchain_run, corpus)


def test_llama_index_reranks_the_retrieved_passages(
    llama_index_run: rag_demo.RunResult, corpus: list[Passage]
) -> None:
    check_reordering(llama_index_run, corpus)


def test_langchain_reranking_beats_retrieval(langchain_run: rag_demo.RunResult) -> None:
    check_gain(langchain_run)


@NOT_YET
def test_llama_index_reranking_beats_retrieval(llama_index_run: rag_demo.RunResult) -> None:
    check_gain(llama_index_run)


def test_the_demo_reranker_is_served_as_built() -> None:
    """Infinity's /rerank gives the logits the model folder computes in process (the hybrid's
    own code, loaded with trust_remote_code), checked by the script that builds it."""
    folder = rag_demo.reranker_model_dir()
    python = server_env_paths().venv / "bin" / "python"
    done = subprocess.run(
        [str(python), str(ROOT / "scripts" / "build_reranker.py"), folder, "--check-server"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "through Infinity /rerank: max |server - in-process| logit" in done.stdout
