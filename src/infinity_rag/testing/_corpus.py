"""A real corpus that every machine has: the docstrings of Python's standard library.

Each passage is one documented function, class or method, cut to at most ``max_chars``
characters at paragraph boundaries, with its dotted name as the source. The order is fixed
(module list order, then names sorted), so a corpus is the same on every run of the same
Python version. ``QUESTIONS`` are questions about it, each with the sources that answer it:
enough to see whether retrieval and reranking put the right passage first, offline.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: The standard-library modules ``load_corpus`` reads by default (about 1,100 passages).
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
    """One chunk of a docstring.

    Attributes:
        text: ``"<source>: <chunk>"``: the chunk names what it documents.
        source: the dotted name of the documented object, e.g. ``"json.loads"``.
        module: the module it was read from, e.g. ``"json"``.
    """

    text: str
    source: str
    module: str


@dataclass(frozen=True)
class Question:
    """A question about the corpus.

    Attributes:
        text: the question, as a user would type it.
        answers: the sources of the passages that answer it.
    """

    text: str
    answers: frozenset[str]


#: Questions about the default corpus, each answered by one documented function or class.
QUESTIONS: tuple[Question, ...] = (
    Question("Recursively delete a directory tree", frozenset({"shutil.rmtree"})),
    Question("Split a pathname into head and tail", frozenset({"os.path.split"})),
    Question(
        "Replace occurrences of a regex pattern in a string",
        frozenset({"re.sub", "re.Pattern.sub"}),
    ),
    Question("Extract all members from a zip archive", frozenset({"zipfile.ZipFile.extractall"})),
    Question(
        "How do I create a temporary directory?",
        frozenset({"tempfile.mkdtemp", "tempfile.TemporaryDirectory"}),
    ),
    Question(
        "How do I parse a date string into a datetime object?",
        frozenset({"datetime.datetime.strptime"}),
    ),
    Question(
        "How do I run a shell command and capture its output?",
        frozenset({"subprocess.getoutput", "subprocess.check_output", "subprocess.run"}),
    ),
    Question(
        "How do I quote a string for safe use in a shell command?", frozenset({"shlex.quote"})
    ),
    Question("How do I generate a random UUID?", frozenset({"uuid.uuid4"})),
)


def load_corpus(
    modules: Sequence[str] = DEFAULT_MODULES, *, max_chars: int = 700, min_chars: int = 20
) -> list[Passage]:
    """Every documented public function, class and method of ``modules``, as passages.

    Args:
        modules: module names, imported here (all of the standard library by default).
        max_chars: the longest chunk; a longer docstring is cut at paragraph boundaries
            (a long paragraph at a word boundary).
        min_chars: shorter chunks are left out.
    """
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
                if _patched_in(member, module_name):
                    continue
                member_doc = inspect.getdoc(member) if callable(member) else None
                if member_doc and member_doc != doc:
                    yield f"{module_name}.{name}.{member_name}", member_doc


def _patched_in(member: object, module_name: str) -> bool:
    """A class member another package set at import time (transformers adds ``warning_once``
    to ``logging.Logger``): left out, so the corpus does not depend on what was imported."""
    owner = getattr(member, "__module__", None)
    if not isinstance(owner, str):
        return False
    top = owner.partition(".")[0]
    return top not in sys.stdlib_module_names and top != module_name.partition(".")[0]


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
