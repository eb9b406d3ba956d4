# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Haystack RAG with reranking on Infinity
#
# Retrieval-augmented generation stands or falls with the passages put in front of the LLM.
# A common recipe is two stages: a fast vector search over the whole corpus finds a few
# dozen candidates, then a slower, more precise reranker reads each (question, passage) pair
# and puts the best on top. This notebook builds both stages as
# [Haystack](https://haystack.deepset.ai) pipelines, with models served by
# [Infinity](https://github.com/michaelfeil/infinity) through `infinity-rag`, and measures
# what the second stage adds:
#
# 1. start an Infinity server serving an embedding model and a reranker;
# 2. load the demo corpus (the docstrings of Python's standard library) as Haystack
#    `Document`s;
# 3. an **indexing pipeline**: `InfinityDocumentEmbedder` → `DocumentWriter` into an
#    `InMemoryDocumentStore`;
# 4. a **query pipeline**: `InfinityTextEmbedder` → `InMemoryEmbeddingRetriever` →
#    `InfinityRanker`;
# 5. hit@1 and MRR@10 before and after reranking, over questions whose answers are known;
# 6. the same pipeline with `run_async`, saved to YAML and loaded back.
#
# The models are small and run on CPU, offline: `all-MiniLM-L6-v2` for embeddings and, as
# the reranker, MiniLM's cosines (with the whole passage and with its opening) plus BM25
# over each (question, passage) pair (`scripts/build_reranker.py`: a hybrid that adds
# exact-word evidence, not a cross-encoder).
# The outputs below come from a real run on a 2-core machine.

# %%
import os
import time
import warnings

# Haystack sends usage statistics from Pipeline.run unless this is set before its import.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

from infinity_rag import InfinityClient
from infinity_rag.testing import QUESTIONS, LocalInfinityServer, load_corpus, server_env_paths

EMBED_MODEL = "minilm"  # the names the server gives its models (--served-model-name)
RERANK_MODEL = "reranker"
RETRIEVE_K = 10  # candidates per question, all of them reranked

# tqdm.auto draws a widget where ipywidgets is installed, else a text bar (after a warning).
warnings.filterwarnings("ignore", message="IProgress not found")

# %% [markdown]
# ## 1. An Infinity server
#
# With `INFINITY_API_BASE` set (and `INFINITY_API_KEY` if it needs one), the notebook uses
# that server, which must serve an embedding model named `minilm` and a reranker named
# `reranker` (Infinity's `--served-model-name`). Otherwise it starts a real Infinity server
# here, on loopback, offline, serving MiniLM and the demo's reranker
# ([`LocalInfinityServer`](../docs/reference/testing.md), stopped by the last cell, or when the
# kernel exits).
#
# The Haystack components read the server's key the way Haystack components read secrets:
# from an environment variable, `INFINITY_API_KEY` (`Secret.from_env_var`), so that a saved
# pipeline holds the variable's name, never the key.

# %%
server = None
if os.environ.get("INFINITY_API_BASE"):
    url = os.environ["INFINITY_API_BASE"]
else:
    reranker_dir = server_env_paths().models_dir / "reranker-hybrid"
    server = LocalInfinityServer({EMBED_MODEL: "minilm", RERANK_MODEL: str(reranker_dir)})
    server.start()
    url = server.url
    os.environ["INFINITY_API_KEY"] = server.api_key  # where the components look for it
    print(f"local Infinity server ready at {url} in {server.startup_seconds:.1f}s")
with InfinityClient(base_url=url) as client:  # the key from INFINITY_API_KEY
    print("served models:", {m.id: sorted(m.capabilities) for m in client.models()})

# %% [markdown]
# ## 2. The corpus
#
# The demo's corpus: one passage per documented function, class or method of the
# standard-library modules the demo uses, cut at paragraph boundaries to at most 700
# characters, each starting with the dotted name it documents (`json.loads: ...`). The name
# and the module go in `meta` too, where the evaluation finds them.

# %%
from haystack import Document

passages = load_corpus()
documents = [Document(content=p.text, meta={"source": p.source, "module": p.module})
             for p in passages]
print(f"{len(documents)} passages, e.g.:\n")
print(next(d for d in documents if d.meta["source"] == "json.loads").content[:300])

# %% [markdown]
# ## 3. The indexing pipeline
#
# `InfinityDocumentEmbedder` sends the passages 64 to a request, 4 requests at a time, and
# returns new `Document`s with their `embedding` (the ones given are left untouched); the
# `DocumentWriter` stores them. Vectors travel as base64 (float32), not JSON floats. A
# request that still fails after the client's retries raises: no document is ever written
# without its vector.

# %%
from haystack import Pipeline
from haystack.components.writers import DocumentWriter
from haystack.document_stores.in_memory import InMemoryDocumentStore

from infinity_rag.haystack import InfinityDocumentEmbedder

store = InMemoryDocumentStore(embedding_similarity_function="cosine")
indexing = Pipeline()
indexing.add_component(
    "embedder", InfinityDocumentEmbedder(EMBED_MODEL, base_url=url, batch_size=64)
)
indexing.add_component("writer", DocumentWriter(document_store=store))
indexing.connect("embedder.documents", "writer.documents")

started = time.perf_counter()
result = indexing.run({"embedder": {"documents": documents}})
seconds = time.perf_counter() - started
written = result["writer"]["documents_written"]
print(f"{written} passages embedded and stored in {seconds:.1f}s ({written / seconds:.0f}/s)")

# %% [markdown]
# ## 4. The query pipeline
#
# The question is embedded by `InfinityTextEmbedder` (the same model), the retriever returns
# the 10 closest passages, and `InfinityRanker` scores each (question, passage) pair with the
# reranker. `top_k=None` keeps all 10, reordered, so that both rankings can be compared
# below; in an application, `top_k=3` would hand the LLM only the best three.
# `include_outputs_from={"retriever"}` returns the retriever's ranking too.

# %%
from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever

from infinity_rag.haystack import InfinityRanker, InfinityTextEmbedder

query = Pipeline()
query.add_component("text_embedder", InfinityTextEmbedder(EMBED_MODEL, base_url=url))
query.add_component("retriever", InMemoryEmbeddingRetriever(store, top_k=RETRIEVE_K))
query.add_component("ranker", InfinityRanker(RERANK_MODEL, base_url=url, top_k=None))
query.connect("text_embedder.embedding", "retriever.query_embedding")
query.connect("retriever.documents", "ranker.documents")


def ask(question):
    out = query.run({"text_embedder": {"text": question}, "ranker": {"query": question}},
                    include_outputs_from={"retriever"})
    return out["retriever"]["documents"], out["ranker"]["documents"]


question = QUESTIONS[0]
retrieved, reranked = ask(question.text)
print("Q:", question.text, "   answer:", ", ".join(sorted(question.answers)))
print("\nretriever (cosine similarity):")
for doc in retrieved[:5]:
    print(f"   {doc.score:.3f}  {doc.meta['source']}")
print("\nretriever + ranker (reranker relevance):")
for doc in reranked[:5]:
    print(f"   {doc.score:.3f}  {doc.meta['source']}")

# %% [markdown]
# ## 5. Before and after reranking
#
# The corpus comes with questions whose answers are known (`infinity_rag.testing.QUESTIONS`,
# the same as notebooks 01 and 02): for each, the rank of the first passage that answers it
# (from the function the question is about), by the retriever alone and after reranking.
# **hit@1**: how often that passage comes first; **MRR@10**: the mean of 1/rank (0 when
# none of the 10 answers). Nine questions are few (one question is 11 points of hit@1): the
# demo (`bash scripts/run.sh demo`) measures the same over 132 held-out questions.
#
# The two scores are on different scales: cosine similarity on the left, the reranker's logit
# through a sigmoid on the right (Infinity's default; `raw_scores=True` gives the logit).

# %%
from IPython.display import display
from rankings import SideBySide, answer_rank, summary  # notebooks/rankings.py


def as_hits(docs):
    return [(d.score, d.meta["source"], d.content) for d in docs]


started = time.perf_counter()
results = []
for q in QUESTIONS:
    retrieved, reranked = ask(q.text)
    results.append((q, as_hits(retrieved), as_hits(reranked)))
seconds = time.perf_counter() - started
print(f"{len(QUESTIONS)} questions embedded, retrieved and reranked in {seconds:.1f}s "
      f"({1000 * seconds / len(QUESTIONS):.0f} ms each)")

for q, retrieved, reranked in results:
    display(SideBySide(q, retrieved[:5], reranked[:5]))

# %%
def hit_at_1(ranks):
    return sum(rank == 1 for rank in ranks) / len(ranks)


def mrr(ranks):
    return sum(1 / rank for rank in ranks if rank) / len(ranks)


before = [answer_rank(q, retrieved) for q, retrieved, _ in results]
after = [answer_rank(q, reranked) for q, _, reranked in results]
better = sum((b or 11) > (a or 11) for b, a in zip(before, after))
worse = sum((b or 11) < (a or 11) for b, a in zip(before, after))
print(f"{'':<22}{'hit@1':>8}{'MRR@10':>9}")
print(f"{'retriever':<22}{hit_at_1(before):>8.1%}{mrr(before):>9.3f}")
print(f"{'retriever + ranker':<22}{hit_at_1(after):>8.1%}{mrr(after):>9.3f}")
print(f"\nthe answer moved up: {better}, down: {worse}; "
      f"no answering passage in the top {RETRIEVE_K}: {sum(a is None for a in after)}")

# %% [markdown]
# Every question, the answer's rank before and after:

# %%
summary(results)

# %% [markdown]
# ## 6. Async, and the pipeline saved to YAML
#
# Every Infinity component has a native `run_async`, so `Pipeline.run_async` runs the
# query end to end on the event loop (no thread pool); several questions run concurrently.

# %%
import asyncio


async def ask_async(text):
    out = await query.run_async({"text_embedder": {"text": text}, "ranker": {"query": text}})
    return out["ranker"]["documents"]


started = time.perf_counter()
answers = await asyncio.gather(*(ask_async(q.text) for q in QUESTIONS))
seconds = time.perf_counter() - started
sync_rankings = [[source for _, source, _ in reranked] for _, _, reranked in results]
same = sum([d.meta["source"] for d in docs] == sources
           for docs, sources in zip(answers, sync_rankings))
print(f"{len(QUESTIONS)} questions through run_async, concurrently, in {seconds:.2f}s; "
      f"{same}/{len(QUESTIONS)} rankings identical to Pipeline.run's")

# %% [markdown]
# `Pipeline.dumps()` saves every component's parameters; the key is saved as the name of its
# environment variable. Haystack 3 loads classes only from modules on its allowlist, so the
# caller names `infinity_rag.haystack` when loading. (The in-memory store is saved by its
# index name: the loaded pipeline finds the same documents in this process.)

# %%
yaml_text = query.dumps()
start = yaml_text.index("\n  ranker:")
print(yaml_text[start + 1 : yaml_text.index("\n    type:", start)])  # the ranker's parameters

loaded = Pipeline.loads(yaml_text, allowed_modules=["infinity_rag.haystack"])
q = QUESTIONS[1]
out = loaded.run({"text_embedder": {"text": q.text}, "ranker": {"query": q.text}})
print("Q:", q.text)
print("loaded pipeline's best:", out["ranker"]["documents"][0].meta["source"],
      "| original's:", ask(q.text)[1][0].meta["source"])

# %% [markdown]
# ## Clean up
#
# Close the pipelines' connection pools and stop the server.

# %%
await query.close_async()
await loaded.close_async()
indexing.close()
if server is not None:
    server.stop()
print("stopped")
