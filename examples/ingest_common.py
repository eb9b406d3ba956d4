"""What the two ingestion examples share: a synthetic corpus (as many short, unique texts as
asked for) and the PostgreSQL URL for SQLAlchemy."""

from __future__ import annotations

import argparse

SUBJECTS = (
    "The river", "A violin", "The glacier", "An old map", "The lighthouse", "A beehive",
    "The compiler", "A sourdough loaf", "The comet", "A chess club", "The harbour", "A kite",
)  # fmt: skip
PREDICATES = (
    "shimmered at dawn", "was repaired in spring", "drew a crowd of visitors",
    "appeared in the local paper", "needed a new coat of paint", "was measured twice",
    "outlasted the winter storms", "was photographed from above",
)  # fmt: skip


def document_text(number: int, *, revised: bool = False) -> str:
    """A short, unique text for document ``number`` (about 50 characters); ``revised``: its
    changed version."""
    subject = SUBJECTS[number % len(SUBJECTS)]
    predicate = PREDICATES[(number // len(SUBJECTS)) % len(PREDICATES)]
    text = f"{subject} {predicate} (note {number})."
    return f"{text} Revised." if revised else text


def parse_numbers(text: str) -> set[int]:
    """``"3,17"`` -> ``{3, 17}`` (the ``--revise`` option of the examples)."""
    return {int(part) for part in text.split(",") if part.strip()}


def sqlalchemy_url(uri: str) -> str:
    """A libpq URI (``postgresql://user:pw@host/db``) for SQLAlchemy with psycopg 3, which
    serves both the sync and the async engines."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"expected a postgresql:// URI, got {scheme}://...")
    return f"postgresql+psycopg://{rest}"


def base_parser(doc: str, *, use_async_help: str) -> argparse.ArgumentParser:
    """The options both examples take: where the servers are, the corpus, sync or async."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--postgres-url", required=True, help="a libpq URI")
    parser.add_argument("--infinity-url", required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--revise", default="", help="comma-separated document numbers")
    parser.add_argument("--async", dest="use_async", action="store_true", help=use_async_help)
    return parser
