"""Show two rankings of one question side by side, and how far up each put the answer.

Imported by the RAG notebooks (they run in this folder). A hit is ``(score, source, text)``;
a question is an ``infinity_rag.testing.Question`` (its text and the sources that answer it).
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from typing import Any

Hit = tuple[float, str, str]
TITLES = ("vector search (cosine similarity)", "reranked (reranker relevance)")


def snippet(source: str, text: str, width: int = 60) -> str:
    """The start of a passage's text, without its ``"source: "`` header, on one line."""
    body = text.removeprefix(source + ": ").replace("\n", " ")
    return body if len(body) <= width else body[: width - 1] + "…"


class SideBySide:
    """Two rankings of one question next to each other: hits are (score, source, text),
    best first. A ✓ marks the passages that answer the question."""

    def __init__(
        self,
        question: Any,
        left: Sequence[Hit],
        right: Sequence[Hit],
        titles: tuple[str, str] = TITLES,
    ) -> None:
        self.question, self.left, self.right, self.titles = question, left, right, titles

    def rows(self) -> Iterator[tuple[int, tuple[float, str, str] | None, Any]]:
        for i in range(max(len(self.left), len(self.right))):
            yield i + 1, self._cells(self.left, i), self._cells(self.right, i)

    def _cells(self, hits: Sequence[Hit], i: int) -> tuple[float, str, str] | None:
        if i >= len(hits):
            return None
        score, source, text = hits[i]
        return score, ("✓ " if source in self.question.answers else "") + source, text

    def _repr_html_(self) -> str:
        def tds(cells: tuple[float, str, str] | None) -> str:
            if cells is None:
                return "<td></td>" * 3
            score, source, text = cells
            body = html.escape(snippet(source.removeprefix("✓ "), text))
            return f"<td>{score:.3f}</td><td><b>{html.escape(source)}</b></td><td>{body}</td>"

        head = "".join(f"<th colspan='3'>{html.escape(t)}</th>" for t in self.titles)
        rows = "".join(f"<tr><td>{n}</td>{tds(a)}{tds(b)}</tr>" for n, a, b in self.rows())
        return (
            f"<p><b>Q: {html.escape(self.question.text)}</b></p>"
            f"<table><tr><th>#</th>{head}</tr>{rows}</table>"
        )

    def __repr__(self) -> str:
        def text(cells: tuple[float, str, str] | None) -> str:
            return "" if cells is None else f"{cells[0]:6.3f}  {cells[1]}"

        lines = [f"Q: {self.question.text}", f"     {self.titles[0]:<40} {self.titles[1]}"]
        lines += [f"{n:>3}  {text(a):<40} {text(b)}" for n, a, b in self.rows()]
        return "\n".join(lines)


def answer_rank(question: Any, hits: Sequence[Hit]) -> int | None:
    """1-based rank of the first hit that answers the question, or None."""
    ranks = [i + 1 for i, (_, source, _) in enumerate(hits) if source in question.answers]
    return ranks[0] if ranks else None


def summary(results: Sequence[tuple[Any, Sequence[Hit], Sequence[Hit]]]) -> None:
    """Print, per question, the answer's rank before and after reranking.

    ``results``: (question, retrieved, reranked) triples.
    """
    print(f"{'question':<68} answer's rank: retrieved -> reranked")
    for question, retrieved, reranked in results:
        before, after = answer_rank(question, retrieved), answer_rank(question, reranked)
        print(f"{question.text:<68} {before or '-':>10} -> {after or '-'}")
    n = len(results)
    first_before = sum(answer_rank(q, a) == 1 for q, a, _ in results)
    first_after = sum(answer_rank(q, b) == 1 for q, _, b in results)
    print(
        f"\nanswer ranked first: {first_before}/{n} by vector search, "
        f"{first_after}/{n} after reranking"
    )
