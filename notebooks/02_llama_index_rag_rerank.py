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
# # LlamaIndex RAG with reranking on Infinity
#
# The same corpus and questions as the LangChain notebook, through
# [LlamaIndex](https://docs.llamaindex.ai) with models served by
# [Infinity](https://github.com/michaelfeil/infinity) through `infinity-rag`:
#
# 1. start an Infinity server serving an embedding model and a reranker;
# 2. load the docstrings of Python's standard library as `Document`s;
# 3. build a `VectorStoreIndex` on [Qdrant](https://qdrant.tech) with `InfinityEmbedding`
#    (a `SentenceSplitter` cuts the documents into nodes);
# 4. retrieve, then rerank with `InfinityRerank` as a node postprocessor;
# 5. a query engine with the reranker (and a mock LLM: swap in a real one).
#
# The models are small and run on CPU, offline: `all-MiniLM-L6-v2` for embeddings and, as
# the reranker, MiniLM's cosines (with the whole passage and with its opening) plus BM25
# over each (question, passage) pair (`scripts/build_reranker.py`: a hybrid that adds
# exact-word evidence, not a cross-encoder).
# The outputs below come from a real run on a 2-core machine.

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
# ## 2. The corpus
#
# One `Document` per documented function, class or method of the standard-library
# modules the demo uses: its whole docstring, with the dotted name (`source`) and the
# module as metadata. The index splits them with a `SentenceSplitter` (chunks of at most
# 200 tokens). LlamaIndex puts a node's metadata in the text it embeds and reranks
# (`MetadataMode.EMBED`), so every chunk names what it documents.

# %%
from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode

documents = [
    Document(text=p.text, metadata={"source": p.source, "module": p.module})
    for p in load_corpus(max_chars=100_000)  # whole docstrings, not cut
]
splitter = SentenceSplitter(chunk_size=200, chunk_overlap=20)
print(f"{len(documents)} docstrings from {len(DEFAULT_MODULES)} modules")
example = splitter.get_nodes_from_documents(
    [d for d in documents if d.metadata["source"] == "json.loads"]
)
print(f"json.loads -> {len(example)} node(s); the first as the model sees it:\n")
print(example[0].get_content(metadata_mode=MetadataMode.EMBED)[:400])

# %% [markdown]
# ## 3. A `VectorStoreIndex` on Qdrant with `InfinityEmbedding`
#
# Qdrant runs in *local mode*: embedded in this process, stored in a temporary folder. For a
# Qdrant server, build the client with its URL instead:
# `QdrantClient(url="http://localhost:6333")` (and `api_key=...` for Qdrant Cloud).
#
# `InfinityEmbedding` gets batches of 1024 texts from LlamaIndex and sends each as 4
# requests of 256, all at once (`embed_batch_size`, and the client's `batch_size` and
# `max_concurrency`). Vectors travel as base64 (float32), not JSON floats.

# %%
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from infinity_rag.llama_index import InfinityEmbedding

# llama-index asks Qdrant for payload indexes, which its local mode ignores (and says so).
warnings.filterwarnings("ignore", message="Payload indexes have no effect")

qdrant_dir = tempfile.TemporaryDirectory(prefix="qdrant-")  # removed at the end
qdrant = QdrantClient(path=qdrant_dir.name)
vector_store = QdrantVectorStore(client=qdrant, collection_name="stdlib-docs")
embed_model = InfinityEmbedding(model_name=EMBED_MODEL, client=client)

started = time.perf_counter()
index = VectorStoreIndex.from_documents(
    documents,
    storage_context=StorageContext.from_defaults(vector_store=vector_store),
    embed_model=embed_model,
    transformations=[splitter],
    show_progress=True,
)
seconds = time.perf_counter() - started
count = qdrant.count("stdlib-docs").count
print(f"{count} nodes split, embedded and stored in {seconds:.1f}s "
      f"({count / seconds:.0f} nodes/s)")

# %% [markdown]
# ## 4. Retrieve, then rerank
#
# The retriever returns the 10 nodes closest to the question; `InfinityRerank` (a node
# postprocessor) scores each (question, node) pair with the reranker and keeps the best
# 3, with the reranker's score as the node's score. It shares the embedder's
# `InfinityClient` (one connection pool).

# %%
from infinity_rag.llama_index import InfinityRerank

retriever = index.as_retriever(similarity_top_k=10)
rerank = InfinityRerank(model=RERANK_MODEL, client=client, top_n=3)

question = QUESTIONS[0].text
hits = retriever.retrieve(question)
print("Q:", question)
print("\nretriever:")
for hit in hits:
    print(f"   {hit.score:.3f}  {hit.node.metadata['source']}")
print("\nretriever + reranker:")
for hit in rerank.postprocess_nodes(hits, query_str=question):
    print(f"   {hit.score:.3f}  {hit.node.metadata['source']}")

# %% [markdown]
# ## 5. The rankings side by side
#
# For each question of the main demo: the retriever's top 10 with their cosine
# similarity, next to the reranker's top 3 with their relevance score. ✓ marks the nodes
# that answer the question (from the function the question is about).
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

def as_hits(nodes):
    return [(n.score, n.node.metadata["source"], n.node.get_content()) for n in nodes]


results = []
for q in QUESTIONS:
    hits = retriever.retrieve(q.text)
    reranked = rerank.postprocess_nodes(hits, query_str=q.text)
    results.append((q, as_hits(hits), as_hits(reranked)))
    display(SideBySide(q, as_hits(hits), as_hits(reranked)))

# %%
summary(results)

# %% [markdown]
# ## 6. A query engine with the reranker
#
# `as_query_engine` chains the retriever, the postprocessors and a response synthesizer.
# `MockLLM` stands in for a real LLM: it answers with the prompt it was given, which shows
# exactly the context the reranker selected. With a real model, pass e.g.
# `llm=OpenAI(model="gpt-4o-mini")` (package `llama-index-llms-openai`) instead.

# %%
from llama_index.core.llms import MockLLM

query_engine = index.as_query_engine(
    llm=MockLLM(), similarity_top_k=10, node_postprocessors=[rerank]
)
response = query_engine.query(QUESTIONS[2].text)
print("sources:", [(n.node.metadata["source"], round(n.score, 3))
                   for n in response.source_nodes])
print("\nthe prompt the LLM received:\n")
print(str(response)[:1500])

# %% [markdown]
# Everything has a native async path too (`aquery`, `aretrieve`, `apostprocess_nodes`,
# `aget_text_embedding_batch`). Qdrant's local mode is synchronous only: with a Qdrant
# server, give the vector store an `aclient=AsyncQdrantClient(url=...)` as well and
# `await query_engine.aquery(...)` runs end to end. Here the searches run one after the
# other and the rerankings concurrently:

# %%
import asyncio

started = time.perf_counter()
reranked_all = await asyncio.gather(
    *(
        rerank.apostprocess_nodes(retriever.retrieve(q.text), query_str=q.text)
        for q in QUESTIONS
    )
)
seconds = time.perf_counter() - started
print(f"{len(QUESTIONS)} questions retrieved and reranked in {seconds:.2f}s")
for q, nodes in zip(QUESTIONS, reranked_all):
    print(f"  {nodes[0].node.metadata['source']:<28} <- {q.text}")

# %% [markdown]
# ## Clean up
#
# Close the vector store and the client, stop the server, delete the temporary Qdrant folder.

# %%
qdrant.close()
qdrant_dir.cleanup()
client.close()
if server is not None:
    server.stop()
print("stopped")
