"""A real corpus that every machine has: the docstrings of Python's standard library.

Each passage is one documented function, class or method, cut to at most ``max_chars``
characters at paragraph boundaries, with its dotted name as the source. The order is fixed
(module list order, then names sorted), so a corpus is the same on every run of the same
Python version.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DEFAULT_MODULES: tuple[str, ...] = (
    "argparse",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "csv",
    "datetime",
    "difflib",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "itertools",
    "json",
    "logging",
    "math",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "random",
    "re",
    "secrets",
    "shlex",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "urllib.parse",
    "uuid",
    "zipfile",
)


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # dotted name of the documented object, e.g. "json.loads"
    module: str


def load_corpus(
    modules: Sequence[str] = DEFAULT_MODULES, *, max_chars: int = 700, min_chars: int = 20
) -> list[Passage]:
    """Every documented public function, class and method of ``modules``, as passages."""
    passages: list[Passage] = []
    seen: set[str] = set()
    for module_name in modules:
        module = importlib.import_module(module_name)
        for source, doc in _documented(module, module_name):
            if source in seen:
                continue
            seen.add(source)
            for chunk in _split(doc, max_chars):
                if len(chunk) >= min_chars:
                    passages.append(Passage(f"{source}: {chunk}", source, module_name))
    return passages


def _documented(module: object, module_name: str) -> Iterator[tuple[str, str]]:
    module_doc = inspect.getdoc(module)
    if module_doc:
        yield module_name, module_doc
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) not in (module_name, getattr(module, "__name__", "")):
            continue  # re-exported from elsewhere
        if not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        doc = inspect.getdoc(obj)
        if doc:
            yield f"{module_name}.{name}", doc
        if inspect.isclass(obj):
            for member_name in sorted(vars(obj)):
                if member_name.startswith("_"):
                    continue
                member = vars(obj)[member_name]
                member_doc = inspect.getdoc(member) if callable(member) else None
                if member_doc and member_doc != doc:
                    yield f"{module_name}.{name}.{member_name}", member_doc


def _split(doc: str, max_chars: int) -> Iterator[str]:
    """Paragraphs packed into chunks of at most ``max_chars`` (long paragraphs are cut)."""
    chunk = ""
    for paragraph in (p.strip() for p in doc.split("\n\n")):
        if not paragraph:
            continue
        paragraph = " ".join(paragraph.split())
        while len(paragraph) > max_chars:
            cut = paragraph.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if chunk:
                yield chunk
                chunk = ""
            yield paragraph[:cut]
            paragraph = paragraph[cut:].strip()
        if chunk and len(chunk) + 1 + len(paragraph) > max_chars:
            yield chunk
            chunk = ""
        chunk = f"{chunk}\n{paragraph}" if chunk else paragraph
    if chunk:
        yield chunk


if __name__ == "__main__":
    corpus = load_corpus()
    print(f"{len(corpus)} passages from {len(DEFAULT_MODULES)} modules")
    print(f"{sum(len(p.text) for p in corpus):,} characters")
    for passage in corpus[:3]:
        print("---", passage.source, "\n", passage.text[:200])
