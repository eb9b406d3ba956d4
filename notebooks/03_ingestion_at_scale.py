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
# # Ingestion at scale: throughput, wire format and dimensions
#
# How fast a few thousand chunks get embedded by an
# [Infinity](https://github.com/michaelfeil/infinity) server through `infinity-rag`, and
# what the client's knobs change:
#
# 1. a few thousand chunks embedded and stored in Qdrant, with a progress bar;
# 2. throughput against `batch_size` (texts per request) and `max_concurrency` (requests
#    in flight), with vectors sent as JSON floats or as base64, and the size of the
#    responses;
# 3. `dimensions` (matryoshka truncation): smaller payloads, at what cost in retrieval
#    quality.
#
# The model is `all-MiniLM-L6-v2` (384 dimensions) on CPU.
#
# **About the numbers.** The outputs below come from a real run on a 2-core machine that
# was running other test suites at the same time: absolute numbers are noisy and low.
# Compare the ratios within one run (float vs base64, one batch size vs another) rather
# than the absolute values, and re-run the notebook on your own hardware and server.

# %%
import os
import tempfile
import time
import warnings

from infinity_rag import InfinityClient
# A real Infinity server for this notebook, and a real corpus: the standard library's
# docstrings.
from infinity_rag.testing import DEFAULT_MODULES, LocalInfinityServer, load_corpus

EMBED_MODEL = "minilm"  # the name the server gives the model (--served-model-name)

# tqdm.auto draws a widget where ipywidgets is installed, else a text bar (after a warning).
warnings.filterwarnings("ignore", message="IProgress not found")

# %% [markdown]
# ## 1. An Infinity server
#
# With `INFINITY_API_BASE` set (and `INFINITY_API_KEY` if it needs one), the notebook uses
# that server, which must serve an embedding model named `minilm` (Infinity's
# `--served-model-name`). Otherwise it starts a real Infinity server here, on loopback,
# offline, serving MiniLM:
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
    server = LocalInfinityServer({EMBED_MODEL: "minilm"})
    server.start()
    client = InfinityClient(base_url=server.url, api_key=server.api_key)
    print(f"local Infinity server ready at {server.url} in {server.startup_seconds:.1f}s")
print("served models:", {m.id: sorted(m.capabilities) for m in client.models()})

# %% [markdown]
# ## 2. A few thousand chunks, ingested with a progress bar
#
# The standard-library corpus again, from more modules and cut into chunks of at most 300
# characters. `InfinityEmbeddings(show_progress_bar=True)` shows a tqdm bar that advances as
# each request (256 texts, 4 in flight) comes back (the first bar, of one text, is
# langchain-qdrant probing the size of the vectors).

# %%
MORE_MODULES = (
    "codecs", "decimal", "email.message", "http.cookiejar", "imaplib", "inspect",
    "mailbox", "pydoc", "ssl", "typing",
)  # fmt: skip
modules = DEFAULT_MODULES + MORE_MODULES
corpus = load_corpus(modules, max_chars=300)
texts = [p.text for p in corpus]
print(f"{len(texts)} chunks from {len(modules)} modules, "
      f"{sum(map(len, texts)) / len(texts):.0f} characters on average")

# %%
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore

from infinity_rag.langchain import InfinityEmbeddings

embeddings = InfinityEmbeddings(model=EMBED_MODEL, client=client, show_progress_bar=True)
documents = [
    Document(page_content=p.text, metadata={"source": p.source, "module": p.module})
    for p in corpus
]
qdrant_dir = tempfile.TemporaryDirectory(prefix="qdrant-")  # removed at the end

started = time.perf_counter()
store = QdrantVectorStore.from_documents(
    documents,
    embeddings,
    path=qdrant_dir.name,  # or url="http://localhost:6333" for a Qdrant server
    collection_name="stdlib-chunks",
    batch_size=len(documents),  # one embed_documents call for all of them
)
seconds = time.perf_counter() - started
print(f"{len(documents)} chunks embedded and stored in {seconds:.1f}s "
      f"({len(documents) / seconds:.0f} chunks/s)")
store.client.close()

# %% [markdown]
# ## 3. Batch size and concurrency, float vs base64
#
# On a fixed subset of the chunks, one `embed` call per setting:
#
# - `batch_size`: texts per request. Infinity batches dynamically on its side (it groups
#   whatever is queued into model batches), so this mostly trades per-request overhead
#   against the size of each response;
# - `max_concurrency`: requests of one call in flight at once. It keeps the server's queue
#   full while the client parses the previous answer;
# - `encoding_format`: `"float"` (JSON numbers) or `"base64"` (little-endian float32, the
#   client's default). Either way the client returns Python floats.
#
# Response sizes come from an `httpx` event hook on an `httpx.Client` given to the
# `InfinityClient`; the client's CPU time (HTTP, JSON parsing and decoding) is the kernel
# process's CPU time during the call.

# %%
import httpx

responses = []  # bytes received per response, filled in by the hook


def count_bytes(response):
    response.read()
    responses.append(response.num_bytes_downloaded)


http = httpx.Client(event_hooks={"response": [count_bytes]}, timeout=300)
# The same server, through an httpx.Client that counts the bytes of each response.
measured = InfinityClient(
    base_url=client.base_url, api_key=client.api_key, http_client=http
)


def measure(subset, **options):
    """One embed call: texts/s, client CPU seconds, bytes received, responses."""
    responses.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    result = measured.embed(subset, model=EMBED_MODEL, **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, {
        "texts/s": len(subset) / wall,
        "cpu_s": cpu,
        "bytes": sum(responses),
        "responses": len(responses),
    }


SUBSET = texts[:384]
BATCH_SIZES = (16, 64, 128)
CONCURRENCY = (1, 2, 4)
FORMATS = ("float", "base64")

measure(SUBSET[:64])  # warm-up
grid = {}
for batch_size in BATCH_SIZES:
    for concurrency in CONCURRENCY:
        for fmt in FORMATS:  # alternate, so that a load spike hits both formats alike
            _, grid[fmt, batch_size, concurrency] = measure(
                SUBSET,
                batch_size=batch_size,
                max_concurrency=concurrency,
                encoding_format=fmt,
            )

print(f"{len(SUBSET)} texts per call\n")
print(f"{'format':<7} {'batch':>5} {'conc.':>5} {'texts/s':>8} {'KB/response':>12} "
      f"{'client CPU ms/1000':>19}")
for (fmt, batch_size, concurrency), m in grid.items():
    print(
        f"{fmt:<7} {batch_size:>5} {concurrency:>5} {m['texts/s']:>8.0f} "
        f"{m['bytes'] / m['responses'] / 1024:>12.1f} "
        f"{m['cpu_s'] / len(SUBSET) * 1e6:>19.0f}"
    )

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=80)
for concurrency, color in zip(CONCURRENCY, ("tab:blue", "tab:orange", "tab:green")):
    for fmt, style in (("base64", "-"), ("float", "--")):
        ax1.plot(
            BATCH_SIZES,
            [grid[fmt, b, concurrency]["texts/s"] for b in BATCH_SIZES],
            style, marker="o", color=color, label=f"{fmt}, {concurrency} in flight",
        )
ax1.set(xscale="log", xlabel="batch_size (texts per request)", ylabel="texts / s",
        title="Throughput")
ax1.set_ylim(bottom=0)
ax1.legend(fontsize=7)

for fmt, style in (("base64", "-"), ("float", "--")):
    kb = [
        grid[fmt, b, 1]["bytes"] / grid[fmt, b, 1]["responses"] / 1024 for b in BATCH_SIZES
    ]
    ax2.plot(BATCH_SIZES, kb, style, marker="o", color="black", label=fmt)
ax2.set(xscale="log", yscale="log", xlabel="batch_size (texts per request)",
        ylabel="KB per response", title="Response size")
for ax in (ax1, ax2):
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.minorticks_off()
ax2.legend()

width = 0.38
for i, fmt in enumerate(FORMATS):
    ms = [
        sum(grid[fmt, b, c]["cpu_s"] for c in CONCURRENCY) / len(CONCURRENCY)
        / len(SUBSET) * 1e6
        for b in BATCH_SIZES
    ]
    ax3.bar([x + (i - 0.5) * width for x in range(len(BATCH_SIZES))], ms, width, label=fmt)
ax3.set_xticks(range(len(BATCH_SIZES)), [str(b) for b in BATCH_SIZES])
ax3.set(xlabel="batch_size", ylabel="ms per 1000 vectors",
        title="Client CPU time (HTTP + parsing)")
ax3.legend()
fig.tight_layout()
plt.show()

def total(fmt, key):
    return sum(m[key] for (f, *_), m in grid.items() if f == fmt)


bytes_ratio = total("float", "bytes") / total("base64", "bytes")
cpu_ratio = total("float", "cpu_s") / total("base64", "cpu_s")
speed_ratio = total("base64", "texts/s") / total("float", "texts/s")
print(f"over the whole grid, float needs {bytes_ratio:.1f}x the bytes and {cpu_ratio:.1f}x "
      f"the client CPU time of base64; base64 gets {speed_ratio:.2f}x float's throughput")

# %% [markdown]
# The client's CPU time above includes the HTTP exchange. Decoding alone, on one response
# of 256 vectors, done the way the client does it (`json.loads`, then for base64 one
# `b64decode` and an `array("f")` per vector), gives the cleanest comparison:

# %%
import base64
import json
import timeit
from array import array

bodies = {}


def keep_body(response):
    response.read()
    bodies[json.loads(response.request.content)["encoding_format"]] = response.content


with httpx.Client(event_hooks={"response": [keep_body]}) as keeping:
    with InfinityClient(
        base_url=client.base_url, api_key=client.api_key, http_client=keeping
    ) as keeping_client:
        for fmt in FORMATS:
            keeping_client.embed(SUBSET[:256], model=EMBED_MODEL, encoding_format=fmt)


def decode(body):
    vectors = [item["embedding"] for item in json.loads(body)["data"]]
    if isinstance(vectors[0], str):
        vectors = [array("f", base64.b64decode(v)).tolist() for v in vectors]
    return vectors


for fmt, body in bodies.items():
    seconds = min(timeit.repeat(lambda: decode(body), number=5, repeat=3)) / 5
    print(f"{fmt:<7} {len(body) / 1024:7.0f} KB  decoded in {seconds * 1000:6.1f} ms")

# %% [markdown]
# ## 4. `dimensions`: matryoshka truncation
#
# `dimensions=d` asks the server for the first `d` components of each vector: the response
# (and the vector index) shrink in proportion. Models trained for it (matryoshka
# representation learning: nomic-embed, mxbai-embed-large, OpenAI's text-embedding-3) keep
# most of their quality when truncated; MiniLM was not, so expect a steeper loss here and
# measure before truncating your own model's vectors.
#
# The measure: each of the first 128 chunks of the subset is a query against the rest of
# the subset; recall@10 is the share of its 10 nearest neighbours by the full 384-dimension
# vectors that the truncated vectors also place in their top 10.

# %%
import numpy as np

DIMENSIONS = (384, 256, 128, 64)
QUERIES = 128


def neighbours(vectors, k=10):
    v = np.asarray(vectors, dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)  # Infinity does not re-normalise
    similarity = v[:QUERIES] @ v.T
    similarity[np.arange(QUERIES), np.arange(QUERIES)] = -np.inf  # not itself
    return np.argsort(-similarity, axis=1)[:, :k]


truncated = {}
for d in DIMENSIONS:
    result, m = measure(SUBSET, dimensions=d)
    truncated[d] = (np.asarray(result.embeddings), m)

full = neighbours(truncated[384][0])
print(f"{'dimensions':>10} {'bytes/vector':>13} {'recall@10':>10}")
recall = {}
for d, (vectors, m) in truncated.items():
    found = neighbours(vectors)
    recall[d] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, found)])
    print(f"{d:>10} {m['bytes'] / len(SUBSET):>13.0f} {recall[d]:>10.2f}")

same = np.abs(truncated[64][0] - truncated[384][0][:, :64]).max()
print(f"\nthe server's 64 dimensions are the first 64 of the full vector "
      f"(largest difference: {same:.1g})")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
labels = [str(d) for d in DIMENSIONS]
ax1.bar(labels, [truncated[d][1]["bytes"] / len(SUBSET) for d in DIMENSIONS])
ax1.set(xlabel="dimensions", ylabel="bytes per vector (base64)", title="Payload")
ax2.plot(labels, [recall[d] for d in DIMENSIONS], marker="o")
ax2.set(xlabel="dimensions", ylabel="recall@10 vs 384 dimensions", ylim=(0, 1.05),
        title="Neighbours kept")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Clean up
#
# Close the clients, stop the server, delete the temporary Qdrant folder.

# %%
measured.close()
http.close()
client.close()
qdrant_dir.cleanup()
if server is not None:
    server.stop()
print("stopped")
