"""The demo reranker's question sets (examples/rerank_questions.py): every answer is a passage of
the demo corpus, and no question is in two sets (a development question held out too would leak
the recipe's choice into its report)."""

from __future__ import annotations

import sys
from pathlib import Path

from infinity_rag.testing import load_corpus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import rerank_questions as rq

SETS = {
    "DEV_QUESTIONS": rq.DEV_QUESTIONS,
    "DEV2_QUESTIONS": rq.DEV2_QUESTIONS,
    "HELDOUT_QUESTIONS": rq.HELDOUT_QUESTIONS,
    "HELDOUT2_QUESTIONS": rq.HELDOUT2_QUESTIONS,
}


def test_every_answer_is_a_passage_of_the_corpus() -> None:
    # The two held-out sets are the demo's (examples/rag_demo.py's QUESTIONS).
    sources = {p.source for p in load_corpus()}
    missing = {
        (name, q.text): sorted(q.answers - sources)
        for name, qs in SETS.items()
        for q in qs
        if not q.answers or q.answers - sources
    }
    assert missing == {}


def test_no_question_is_in_two_sets() -> None:
    seen: dict[str, str] = {}
    for name, qs in SETS.items():
        for q in qs:
            assert q.text not in seen, f"{q.text!r} is in {seen[q.text]} and {name}"
            seen[q.text] = name
    assert len(seen) == 100 + 59 + 73
