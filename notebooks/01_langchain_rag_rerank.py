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
# # LangChain RAG with reranking on Infinity
#
# A retrieval pipeline in [LangChain](https://python.langchain.com) whose models are served
# by [Infinity](https://github.com/michaelfeil/infinity) through `infinity-rag`:
#
# 1. start an Infinity server serving an embedding model and a reranker;
# 2. load a real corpus (the docstrings of Python's standard library) and split it with
#    `RecursiveCharacterTextSplitter`;
# 3. ingest it into [Qdrant](https://qdrant.tech) with `InfinityEmbeddings`;
# 4. retrieve by vector similarity, then rerank with `ContextualCompressionRetriever` and
#    `InfinityRerank`;
# 5. compare the two rankings, side by side, for questions whose answers are known (those
#    of the main demo, `examples/rag_demo.py`).
#
# The models are small and run on CPU, offline: `all-MiniLM-L6-v2` for embeddings and, as
# the reranker, MiniLM's cosines (with the whole passage and with its opening) plus BM25
# over each (question, passage) pair (`scripts/build_reranker.py`: a hybrid that adds
# exact-word evidence, not a cross-encoder).
# With `INFINITY_API_BASE` pointing at your own server, serve better ones under the same
# names (e.g. `BAAI/bge-small-en-v1.5` and `BAAI/bge-reranker-base`). The outputs below come
# from a real run on a 2-core machine.

# %%
import os
import tempfile
import time
import warnings

from infinity_rag import InfinityClient
# A real Infinity server for this notebook, and a real corpus: the standard library's
# docstrings, with questions whose answering docstrings are known.
from infinity_rag.testing import DEFAULT_MODULES, QUESTIONS, LocalInfinityServer, load_corpus

EMBED_MODEL = "minilm"  # the names the server gives its models (--served-model-name)
RERANK_MODEL = "reranker"

# tqdm.auto draws a widget where ipywidgets is installed, else a text bar (after a warning).
warnings.filterwarnings("ignore", message="IProgress not found")

# %% [markdown]
# ## 1. An Infinity server
#
# With `INFINITY_API_BASE` set (and `INFINITY_API_KEY` if it needs one), the notebook uses
# that server, which must serve an embedding model named `minilm` and a reranker named
# `reranker` (Infinity's `--served-model-name`). Otherwise it starts a real Infinity server
# here, on loopback, offline, serving MiniLM and the demo's reranker:
# [`infinity_rag.testing.LocalInfinityServer`](../docs/reference/testing.md) runs it from its
# own virtualenv (built once, when missing, by the repository's `scripts/setup_server.sh`).
#
# The server is a child process of this kernel. The last cell stops it; if a cell fails
# before that, it is stopped anyway when the kernel exits (an `atexit` hook), and killed by
# the operating system if the kernel dies (`PR_SET_PDEATHSIG`): no server is left behind.

# %%
server = None
if os.environ.get("INFINITY_API_BASE"):
    client = InfinityClient()  # INFINITY_API_BASE and INFINITY_API_KEY from the environment
else:
    # MiniLM, and the demo's reranker built from it (scripts/build_reranker.py)
    server = LocalInfinityServer({EMBED_MODEL: "minilm", RERANK_MODEL: "reranker-hybrid"})
    server.start()
    client = InfinityClient(base_url=server.url, api_key=server.api_key)
    print(f"local Infinity server ready at {server.url} in {server.startup_seconds:.1f}s")
print("served models:", {m.id: sorted(m.capabilities) for m in client.models()})

# %% [markdown]
# ## 2. Load and split the corpus
#
# One `Document` per documented function, class or method of the standard-library
# modules the demo uses: its whole docstring, with the dotted name (`source`) and the
# module as metadata. The splitter cuts long docstrings into chunks of at most 700
# characters at paragraph, line or word boundaries, with some overlap. A chunk from the
# middle of a docstring no longer says what it documents, so each one gets its source as
# a header.

# %%
from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

documents = [
    Document(page_content=p.text, metadata={"source": p.source, "module": p.module})
    for p in load_corpus(max_chars=100_000)  # whole docstrings, not cut
]
splitter = RecursiveCharacterTextSplitter(chunk_size=700, chunk_overlap=100)
chunks = splitter.split_documents(documents)
for chunk in chunks:
    header = chunk.metadata["source"] + ": "
    if not chunk.page_content.startswith(header):
        chunk.page_content = header + chunk.page_content

size = sum(len(c.page_content) for c in chunks) / len(chunks)
print(f"{len(documents)} docstrings from {len(DEFAULT_MODULES)} modules")
print(f"-> {len(chunks)} chunks of {size:.0f} characters on average")
for chunk in [c for c in chunks if c.metadata["source"] == "json.loads"]:
    print("---", chunk.metadata)
    print(chunk.page_content[:300])

# %% [markdown]
# ## 3. Ingest into Qdrant with `InfinityEmbeddings`
#
# Qdrant runs here in *local mode*: embedded in this process, stored in a temporary
# folder. `batch_size=len(chunks)` hands every chunk to one `embed_documents` call; the
# client cuts it into requests of 256 texts, sends 4 at a time, and the progress bar
# advances as they come back (the first bar, of one text, is langchain-qdrant probing the
# size of the vectors). Vectors travel as base64 (float32), not JSON floats.
#
# To use a Qdrant server instead, pass its URL rather than a folder:
#
# ```python
# store = QdrantVectorStore.from_documents(
#     chunks, embeddings, url="http://localhost:6333", collection_name="stdlib-docs"
# )
# # an existing collection:
# # QdrantVectorStore.from_existing_collection("stdlib-docs", embeddings, url=...)
# ```

# %%
from langchain_qdrant import QdrantVectorStore

from infinity_rag.langchain import InfinityEmbeddings

embeddings = InfinityEmbeddings(model=EMBED_MODEL, client=client, show_progress_bar=True)
qdrant_dir = tempfile.TemporaryDirectory(prefix="qdrant-")  # removed at the end

started = time.perf_counter()
store = QdrantVectorStore.from_documents(
    chunks,
    embeddings,
    path=qdrant_dir.name,
    collection_name="stdlib-docs",
    batch_size=len(chunks),
)
seconds = time.perf_counter() - started
print(f"{len(chunks)} chunks embedded and stored in {seconds:.1f}s "
      f"({len(chunks) / seconds:.0f} chunks/s)")

# %% [markdown]
# ## 4. Retrieve, then rerank
#
# The vector store's retriever returns the 10 chunks closest to the question. A
# `ContextualCompressionRetriever` wraps it: it retrieves the same 10, then `InfinityRerank`
# scores each (question, chunk) pair with the reranker and keeps the best 3, each
# with its `relevance_score` in the metadata. `InfinityRerank` and `InfinityEmbeddings`
# share one `InfinityClient` (one connection pool).

# %%
from langchain_classic.retrievers import ContextualCompressionRetriever

from infinity_rag.langchain import InfinityRerank

retriever = store.as_retriever(search_kwargs={"k": 10})
reranker = InfinityRerank(model=RERANK_MODEL, client=client, top_n=3)
reranking_retriever = ContextualCompressionRetriever(
    base_compressor=reranker, base_retriever=retriever
)

question = QUESTIONS[0].text
print("Q:", question)
print("\nretriever:")
for doc in retriever.invoke(question):
    print("  ", doc.metadata["source"])
print("\nretriever + reranker:")
for doc in reranking_retriever.invoke(question):
    print(f"   {doc.metadata['relevance_score']:.3f}  {doc.metadata['source']}")

# %% [markdown]
# ## 5. The rankings side by side
#
# For each question of the main demo: the retriever's top 10 with their cosine
# similarity, next to the reranker's top 3 with their relevance score. ✓ marks the
# chunks that answer the question (from the function the question is about).
#
# The two scores are on different scales: cosine similarity of the vectors on the left;
# on the right the reranker's logit through a sigmoid (Infinity's default;
# `raw_scores=True` returns the logit). The reranker served here is built offline from
# MiniLM (its cosines plus BM25: no model hub here), good enough to show what a second stage
# adds; for real use, serve a cross-encoder (e.g. `BAAI/bge-reranker-base`) and point
# `INFINITY_API_BASE` at it.

# %%
from IPython.display import display
from rankings import SideBySide, summary  # notebooks/rankings.py, next to this notebook

results = []
for q in QUESTIONS:
    retrieved = [
        (score, doc.metadata["source"], doc.page_content)
        for doc, score in store.similarity_search_with_score(q.text, k=10)
    ]
    reranked = [
        (doc.metadata["relevance_score"], doc.metadata["source"], doc.page_content)
        for doc in reranking_retriever.invoke(q.text)
    ]
    results.append((q, retrieved, reranked))
    display(SideBySide(q, retrieved, reranked))

# %%
summary(results)

# %% [markdown]
# ## 6. Async
#
# Both classes have native async methods (`aembed_documents`, `aembed_query`,
# `acompress_documents`) over pooled `httpx.AsyncClient` connections, so a batch of
# questions can run concurrently. (Qdrant's local mode is synchronous: LangChain runs
# its search in a thread.)

# %%
import asyncio

started = time.perf_counter()
answers = await asyncio.gather(*(reranking_retriever.ainvoke(q.text) for q in QUESTIONS))
print(f"{len(QUESTIONS)} questions retrieved and reranked concurrently in "
      f"{time.perf_counter() - started:.2f}s")
for q, docs in zip(QUESTIONS, answers):
    print(f"  {docs[0].metadata['source']:<28} <- {q.text}")

# %% [markdown]
# ## Clean up
#
# Close the vector store and the client, stop the server, delete the temporary Qdrant folder.

# %%
store.client.close()
qdrant_dir.cleanup()
client.close()
if server is not None:
    server.stop()
print("stopped")
