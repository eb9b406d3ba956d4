"""Build the notebooks under ``notebooks/`` from the cell sources below, run them, save outputs.

The cells live here, as code, so that a change to a notebook is reviewed as a change to this
file; the ``.ipynb`` files are generated and committed with the outputs of a real run, so a reader
sees results without running anything. ``bash scripts/run.sh test`` executes every notebook again
(nbmake, without writing back), so none of them can rot.

    .venv/bin/python scripts/build_notebooks.py                   # write all, run, save outputs
    .venv/bin/python scripts/build_notebooks.py --execute-only    # re-run the existing files
    .venv/bin/python scripts/build_notebooks.py 03                # only names containing "03"
    .venv/bin/python scripts/build_notebooks.py --no-execute      # write the cells, no outputs

Notebooks run in the kernel named ``python3``, which must be this interpreter (the dev venv: it
has ``infinity_rag`` and the frameworks). Each starts a local Infinity server (or uses the one
``INFINITY_API_BASE`` names) and stops it in its last cell. The outputs are checked before they
are saved: no API key, no absolute local path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
KERNEL = "python3"
CELL_TIMEOUT = 1800  # nbmake's limit per cell, as run.sh's per notebook (a busy machine)
LOCAL_API_KEY = "infinity-rag-local-key"  # scripts/local_infinity.py's DEFAULT_API_KEY


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))


# --- cells shared by the notebooks -------------------------------------------------------------

SETUP = """
    import os
    import sys
    import tempfile
    import time
    import warnings
    from pathlib import Path

    # The repository's scripts/ and examples/ hold the local server launcher, the corpus and the
    # demo's questions. nbmake runs a notebook in its own folder: look upwards from there.
    REPO = next(
        folder
        for folder in (Path.cwd(), *Path.cwd().parents)
        if (folder / "scripts" / "local_infinity.py").is_file()
    )
    sys.path[:0] = [str(REPO / "examples"), str(REPO / "scripts")]

    from local_infinity import LocalInfinityServer
    from rag_demo import EMBED_MODEL, QUESTIONS, RERANK_MODEL, reranker_model_dir
    from stdlib_corpus import DEFAULT_MODULES, load_corpus

    from infinity_rag import InfinityClient

    # tqdm.auto draws a widget where ipywidgets is installed, else a text bar (after a warning).
    warnings.filterwarnings("ignore", message="IProgress not found")
"""

START_SERVER_MD = """
    ## 1. An Infinity server

    With `INFINITY_API_BASE` set (and `INFINITY_API_KEY` if it needs one), the notebook uses
    that server, which must serve
    {served}.
    Otherwise it starts a real Infinity server here, on loopback, offline, serving
    {models}:
    `scripts/local_infinity.py` runs it from its own virtualenv (built once by
    `bash scripts/setup_server.sh`).

    The server is a child process of this kernel. The last cell stops it; if a cell fails
    before that, it is stopped anyway when the kernel exits (an `atexit` hook), and killed by
    the operating system if the kernel dies (`PR_SET_PDEATHSIG`): no server is left behind.
"""


def server_cells(*, served: str, models: str, models_expr: str) -> list[nbformat.NotebookNode]:
    """Every notebook's opening: imports, then a server (the environment's, or one started here).

    ``served``/``models`` describe it in the Markdown; ``models_expr`` is the Python dict of
    served name -> model that the code cell hands to ``LocalInfinityServer``.
    """
    return [
        code(SETUP),
        md(START_SERVER_MD.format(served=served, models=models)),
        code(start_server(models_expr)),
    ]


def start_server(models: str) -> str:
    return f"""
    server = None
    if os.environ.get("INFINITY_API_BASE"):
        client = InfinityClient()  # INFINITY_API_BASE and INFINITY_API_KEY from the environment
    else:
        server = LocalInfinityServer({models})
        server.start()
        client = InfinityClient(base_url=server.url, api_key=server.api_key)
        print(f"local Infinity server ready at {{server.url}} in {{server.startup_seconds:.1f}}s")
    print("served models:", {{m.id: sorted(m.capabilities) for m in client.models()}})
    """


SIDE_BY_SIDE = """
    import html

    from IPython.display import display


    def snippet(source, text, width=60):
        body = text.removeprefix(source + ": ").replace("\\n", " ")
        return body if len(body) <= width else body[: width - 1] + "…"


    class SideBySide:
        \"\"\"Two rankings of one question next to each other: hits are (score, source, text),
        best first. A ✓ marks the passages that answer the question.\"\"\"

        def __init__(self, question, left, right, titles):
            self.question, self.left, self.right, self.titles = question, left, right, titles

        def rows(self):
            for i in range(max(len(self.left), len(self.right))):
                yield i + 1, self._cells(self.left, i), self._cells(self.right, i)

        def _cells(self, hits, i):
            if i >= len(hits):
                return None
            score, source, text = hits[i]
            return score, ("✓ " if source in self.question.answers else "") + source, text

        def _repr_html_(self):
            def tds(cells):
                if cells is None:
                    return "<td></td>" * 3
                score, source, text = cells
                body = html.escape(snippet(source.removeprefix("✓ "), text))
                return f"<td>{score:.3f}</td><td><b>{html.escape(source)}</b></td><td>{body}</td>"

            head = "".join(f"<th colspan='3'>{html.escape(t)}</th>" for t in self.titles)
            rows = "".join(f"<tr><td>{n}</td>{tds(a)}{tds(b)}</tr>" for n, a, b in self.rows())
            return (
                f"<p><b>Q: {html.escape(self.question.text)}</b></p>"
                f"<table><tr><th>#</th>{head}</tr>{rows}</table>"
            )

        def __repr__(self):
            def text(cells):
                return "" if cells is None else f"{cells[0]:6.3f}  {cells[1]}"

            lines = [f"Q: {self.question.text}", f"     {self.titles[0]:<40} {self.titles[1]}"]
            lines += [f"{n:>3}  {text(a):<40} {text(b)}" for n, a, b in self.rows()]
            return "\\n".join(lines)


    def answer_rank(question, hits):
        \"\"\"1-based rank of the first hit that answers the question, or None.\"\"\"
        ranks = [i + 1 for i, (_, source, _) in enumerate(hits) if source in question.answers]
        return ranks[0] if ranks else None


    def summary(results):
        \"\"\"results: (question, retrieved, reranked) triples.\"\"\"
        print(f"{'question':<68} answer's rank: retrieved -> reranked")
        for question, retrieved, reranked in results:
            before, after = answer_rank(question, retrieved), answer_rank(question, reranked)
            print(f"{question.text:<68} {before or '-':>10} -> {after or '-'}")
        n = len(results)
        first_before = sum(answer_rank(q, a) == 1 for q, a, _ in results)
        first_after = sum(answer_rank(q, b) == 1 for q, _, b in results)
        print(
            f"\\nanswer ranked first: {first_before}/{n} by vector search, "
            f"{first_after}/{n} after reranking"
        )
"""

TITLES = '("vector search (cosine similarity)", "reranked (cross-encoder relevance)")'

CLEAN_UP_MD = """
    ## Clean up

    Close the vector store and the client, stop the server, delete the temporary Qdrant folder.
"""

# --- 01: LangChain ------------------------------------------------------------------------------

LANGCHAIN: list[nbformat.NotebookNode] = [
    md(
        """
        # LangChain RAG with reranking on Infinity

        A retrieval pipeline in [LangChain](https://python.langchain.com) whose models are served
        by [Infinity](https://github.com/michaelfeil/infinity) through `infinity-rag`:

        1. start an Infinity server serving an embedding model and a reranker;
        2. load a real corpus (the docstrings of Python's standard library) and split it with
           `RecursiveCharacterTextSplitter`;
        3. ingest it into [Qdrant](https://qdrant.tech) with `InfinityEmbeddings`;
        4. retrieve by vector similarity, then rerank with `ContextualCompressionRetriever` and
           `InfinityRerank`;
        5. compare the two rankings, side by side, for the questions of the main demo
           (`examples/rag_demo.py`).

        The models are small and run on CPU, offline: `all-MiniLM-L6-v2` for embeddings and a
        cross-encoder distilled from it (`scripts/distill_reranker.py`). With `INFINITY_API_BASE`
        pointing at your own server, serve better ones under the same names (e.g.
        `BAAI/bge-small-en-v1.5` and `BAAI/bge-reranker-base`). The outputs below come from a real
        run on a 2-core machine.
        """
    ),
    *server_cells(
        served="an embedding model named `minilm` and a reranker named `reranker` (Infinity's "
        "`--served-model-name`)",
        models="MiniLM and the distilled reranker",
        models_expr='{EMBED_MODEL: "minilm", RERANK_MODEL: reranker_model_dir()}',
    ),
    md(
        """
        ## 2. Load and split the corpus

        One `Document` per documented function, class or method of the standard-library
        modules the demo uses: its whole docstring, with the dotted name (`source`) and the
        module as metadata. The splitter cuts long docstrings into chunks of at most 700
        characters at paragraph, line or word boundaries, with some overlap. A chunk from the
        middle of a docstring no longer says what it documents, so each one gets its source as
        a header.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 3. Ingest into Qdrant with `InfinityEmbeddings`

        Qdrant runs here in *local mode*: embedded in this process, stored in a temporary
        folder. `batch_size=len(chunks)` hands every chunk to one `embed_documents` call; the
        client cuts it into requests of 256 texts, sends 4 at a time, and the progress bar
        advances as they come back (the first bar, of one text, is langchain-qdrant probing the
        size of the vectors). Vectors travel as base64 (float32), not JSON floats.

        To use a Qdrant server instead, pass its URL rather than a folder:

        ```python
        store = QdrantVectorStore.from_documents(
            chunks, embeddings, url="http://localhost:6333", collection_name="stdlib-docs"
        )
        # an existing collection:
        # QdrantVectorStore.from_existing_collection("stdlib-docs", embeddings, url=...)
        ```
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 4. Retrieve, then rerank

        The vector store's retriever returns the 10 chunks closest to the question. A
        `ContextualCompressionRetriever` wraps it: it retrieves the same 10, then `InfinityRerank`
        scores each (question, chunk) pair with the cross-encoder and keeps the best 3, each
        with its `relevance_score` in the metadata. `InfinityRerank` and `InfinityEmbeddings`
        share one `InfinityClient` (one connection pool).
        """
    ),
    code(
        """
        from langchain_classic.retrievers import ContextualCompressionRetriever

        from infinity_rag.langchain import InfinityRerank

        retriever = store.as_retriever(search_kwargs={"k": 10})
        reranker = InfinityRerank(model=RERANK_MODEL, client=client, top_n=3)
        reranking_retriever = ContextualCompressionRetriever(
            base_compressor=reranker, base_retriever=retriever
        )

        question = QUESTIONS[0].text
        print("Q:", question)
        print("\\nretriever:")
        for doc in retriever.invoke(question):
            print("  ", doc.metadata["source"])
        print("\\nretriever + reranker:")
        for doc in reranking_retriever.invoke(question):
            print(f"   {doc.metadata['relevance_score']:.3f}  {doc.metadata['source']}")
        """
    ),
    md(
        """
        ## 5. The rankings side by side

        For each question of the main demo: the retriever's top 10 with their cosine
        similarity, next to the reranker's top 3 with their relevance score. ✓ marks the
        chunks that answer the question (from the function the question is about).

        The two scores are on different scales: cosine similarity of the vectors on the left;
        on the right the cross-encoder's logit through a sigmoid (Infinity's default;
        `raw_scores=True` returns the logit). The reranker served here is a small cross-encoder
        distilled offline from MiniLM itself, good enough to show the pipeline; for real use,
        serve a production one (e.g. `BAAI/bge-reranker-base`) and point `INFINITY_API_BASE` at it.
        """
    ),
    code(SIDE_BY_SIDE),
    code(
        f"""
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
            display(SideBySide(q, retrieved, reranked, {TITLES}))
        """
    ),
    code("summary(results)"),
    md(
        """
        ## 6. Async

        Both classes have native async methods (`aembed_documents`, `aembed_query`,
        `acompress_documents`) over pooled `httpx.AsyncClient` connections, so a batch of
        questions can run concurrently. (Qdrant's local mode is synchronous: LangChain runs
        its search in a thread.)
        """
    ),
    code(
        """
        import asyncio

        started = time.perf_counter()
        answers = await asyncio.gather(*(reranking_retriever.ainvoke(q.text) for q in QUESTIONS))
        print(f"{len(QUESTIONS)} questions retrieved and reranked concurrently in "
              f"{time.perf_counter() - started:.2f}s")
        for q, docs in zip(QUESTIONS, answers):
            print(f"  {docs[0].metadata['source']:<28} <- {q.text}")
        """
    ),
    md(CLEAN_UP_MD),
    code(
        """
        store.client.close()
        qdrant_dir.cleanup()
        client.close()
        if server is not None:
            server.stop()
        print("stopped")
        """
    ),
]

# --- 02: LlamaIndex -----------------------------------------------------------------------------

LLAMA_INDEX: list[nbformat.NotebookNode] = [
    md(
        """
        # LlamaIndex RAG with reranking on Infinity

        The same corpus and questions as the LangChain notebook, through
        [LlamaIndex](https://docs.llamaindex.ai) with models served by
        [Infinity](https://github.com/michaelfeil/infinity) through `infinity-rag`:

        1. start an Infinity server serving an embedding model and a reranker;
        2. load the docstrings of Python's standard library as `Document`s;
        3. build a `VectorStoreIndex` on [Qdrant](https://qdrant.tech) with `InfinityEmbedding`
           (a `SentenceSplitter` cuts the documents into nodes);
        4. retrieve, then rerank with `InfinityRerank` as a node postprocessor;
        5. a query engine with the reranker (and a mock LLM: swap in a real one).

        The models are small and run on CPU, offline: `all-MiniLM-L6-v2` for embeddings and a
        cross-encoder distilled from it (`scripts/distill_reranker.py`). The outputs below come
        from a real run on a 2-core machine.
        """
    ),
    *server_cells(
        served="an embedding model named `minilm` and a reranker named `reranker` (Infinity's "
        "`--served-model-name`)",
        models="MiniLM and the distilled reranker",
        models_expr='{EMBED_MODEL: "minilm", RERANK_MODEL: reranker_model_dir()}',
    ),
    md(
        """
        ## 2. The corpus

        One `Document` per documented function, class or method of the standard-library
        modules the demo uses: its whole docstring, with the dotted name (`source`) and the
        module as metadata. The index splits them with a `SentenceSplitter` (chunks of at most
        200 tokens). LlamaIndex puts a node's metadata in the text it embeds and reranks
        (`MetadataMode.EMBED`), so every chunk names what it documents.
        """
    ),
    code(
        """
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
        print(f"json.loads -> {len(example)} node(s); the first as the model sees it:\\n")
        print(example[0].get_content(metadata_mode=MetadataMode.EMBED)[:400])
        """
    ),
    md(
        """
        ## 3. A `VectorStoreIndex` on Qdrant with `InfinityEmbedding`

        Qdrant runs in *local mode*: embedded in this process, stored in a temporary folder. For a
        Qdrant server, build the client with its URL instead:
        `QdrantClient(url="http://localhost:6333")` (and `api_key=...` for Qdrant Cloud).

        `InfinityEmbedding` gets batches of 1024 texts from LlamaIndex and sends each as 4
        requests of 256, all at once (`embed_batch_size`, and the client's `batch_size` and
        `max_concurrency`). Vectors travel as base64 (float32), not JSON floats.
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 4. Retrieve, then rerank

        The retriever returns the 10 nodes closest to the question; `InfinityRerank` (a node
        postprocessor) scores each (question, node) pair with the cross-encoder and keeps the best
        3, with the reranker's score as the node's score. It shares the embedder's
        `InfinityClient` (one connection pool).
        """
    ),
    code(
        """
        from infinity_rag.llama_index import InfinityRerank

        retriever = index.as_retriever(similarity_top_k=10)
        rerank = InfinityRerank(model=RERANK_MODEL, client=client, top_n=3)

        question = QUESTIONS[0].text
        hits = retriever.retrieve(question)
        print("Q:", question)
        print("\\nretriever:")
        for hit in hits:
            print(f"   {hit.score:.3f}  {hit.node.metadata['source']}")
        print("\\nretriever + reranker:")
        for hit in rerank.postprocess_nodes(hits, query_str=question):
            print(f"   {hit.score:.3f}  {hit.node.metadata['source']}")
        """
    ),
    md(
        """
        ## 5. The rankings side by side

        For each question of the main demo: the retriever's top 10 with their cosine
        similarity, next to the reranker's top 3 with their relevance score. ✓ marks the nodes
        that answer the question (from the function the question is about).

        The two scores are on different scales: cosine similarity of the vectors on the left;
        on the right the cross-encoder's logit through a sigmoid (Infinity's default;
        `raw_scores=True` returns the logit). The reranker served here is a small cross-encoder
        distilled offline from MiniLM itself, good enough to show the pipeline; for real use,
        serve a production one (e.g. `BAAI/bge-reranker-base`) and point `INFINITY_API_BASE` at it.
        """
    ),
    code(SIDE_BY_SIDE),
    code(
        f"""
        def as_hits(nodes):
            return [(n.score, n.node.metadata["source"], n.node.get_content()) for n in nodes]


        results = []
        for q in QUESTIONS:
            hits = retriever.retrieve(q.text)
            reranked = rerank.postprocess_nodes(hits, query_str=q.text)
            results.append((q, as_hits(hits), as_hits(reranked)))
            display(SideBySide(q, as_hits(hits), as_hits(reranked), {TITLES}))
        """
    ),
    code("summary(results)"),
    md(
        """
        ## 6. A query engine with the reranker

        `as_query_engine` chains the retriever, the postprocessors and a response synthesizer.
        `MockLLM` stands in for a real LLM: it answers with the prompt it was given, which shows
        exactly the context the reranker selected. With a real model, pass e.g.
        `llm=OpenAI(model="gpt-4o-mini")` (package `llama-index-llms-openai`) instead.
        """
    ),
    code(
        """
        from llama_index.core.llms import MockLLM

        query_engine = index.as_query_engine(
            llm=MockLLM(), similarity_top_k=10, node_postprocessors=[rerank]
        )
        response = query_engine.query(QUESTIONS[2].text)
        print("sources:", [(n.node.metadata["source"], round(n.score, 3))
                           for n in response.source_nodes])
        print("\\nthe prompt the LLM received:\\n")
        print(str(response)[:1500])
        """
    ),
    md(
        """
        Everything has a native async path too (`aquery`, `aretrieve`, `apostprocess_nodes`,
        `aget_text_embedding_batch`). Qdrant's local mode is synchronous only: with a Qdrant
        server, give the vector store an `aclient=AsyncQdrantClient(url=...)` as well and
        `await query_engine.aquery(...)` runs end to end. Here the searches run one after the
        other and the rerankings concurrently:
        """
    ),
    code(
        """
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
        """
    ),
    md(CLEAN_UP_MD),
    code(
        """
        qdrant.close()
        qdrant_dir.cleanup()
        client.close()
        if server is not None:
            server.stop()
        print("stopped")
        """
    ),
]

# --- 03: ingestion at scale ---------------------------------------------------------------------

INGESTION: list[nbformat.NotebookNode] = [
    md(
        """
        # Ingestion at scale: throughput, wire format and dimensions

        How fast a few thousand chunks get embedded by an
        [Infinity](https://github.com/michaelfeil/infinity) server through `infinity-rag`, and
        what the client's knobs change:

        1. a few thousand chunks embedded and stored in Qdrant, with a progress bar;
        2. throughput against `batch_size` (texts per request) and `max_concurrency` (requests
           in flight), with vectors sent as JSON floats or as base64, and the size of the
           responses;
        3. `dimensions` (matryoshka truncation): smaller payloads, at what cost in retrieval
           quality.

        The model is `all-MiniLM-L6-v2` (384 dimensions) on CPU.

        **About the numbers.** The outputs below come from a real run on a 2-core machine that
        was running other test suites at the same time: absolute numbers are noisy and low.
        Compare the ratios within one run (float vs base64, one batch size vs another) rather
        than the absolute values, and re-run the notebook on your own hardware and server.
        """
    ),
    *server_cells(
        served="an embedding model named `minilm` (Infinity's `--served-model-name`)",
        models="MiniLM",
        models_expr='{EMBED_MODEL: "minilm"}',
    ),
    md(
        """
        ## 2. A few thousand chunks, ingested with a progress bar

        The standard-library corpus again, from more modules and cut into chunks of at most 300
        characters. `InfinityEmbeddings(show_progress_bar=True)` shows a tqdm bar that advances as
        each request (256 texts, 4 in flight) comes back (the first bar, of one text, is
        langchain-qdrant probing the size of the vectors).
        """
    ),
    code(
        """
        MORE_MODULES = (
            "codecs", "decimal", "email.message", "http.cookiejar", "imaplib", "inspect",
            "mailbox", "pydoc", "ssl", "typing",
        )  # fmt: skip
        modules = DEFAULT_MODULES + MORE_MODULES
        corpus = load_corpus(modules, max_chars=300)
        texts = [p.text for p in corpus]
        print(f"{len(texts)} chunks from {len(modules)} modules, "
              f"{sum(map(len, texts)) / len(texts):.0f} characters on average")
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 3. Batch size and concurrency, float vs base64

        On a fixed subset of the chunks, one `embed` call per setting:

        - `batch_size`: texts per request. Infinity batches dynamically on its side (it groups
          whatever is queued into model batches), so this mostly trades per-request overhead
          against the size of each response;
        - `max_concurrency`: requests of one call in flight at once. It keeps the server's queue
          full while the client parses the previous answer;
        - `encoding_format`: `"float"` (JSON numbers) or `"base64"` (little-endian float32, the
          client's default). Either way the client returns Python floats.

        Response sizes come from an `httpx` event hook on an `httpx.Client` given to the
        `InfinityClient`; the client's CPU time (HTTP, JSON parsing and decoding) is the kernel
        process's CPU time during the call.
        """
    ),
    code(
        """
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
            \"\"\"One embed call: texts/s, client CPU seconds, bytes received, responses.\"\"\"
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

        print(f"{len(SUBSET)} texts per call\\n")
        print(f"{'format':<7} {'batch':>5} {'conc.':>5} {'texts/s':>8} {'KB/response':>12} "
              f"{'client CPU ms/1000':>19}")
        for (fmt, batch_size, concurrency), m in grid.items():
            print(
                f"{fmt:<7} {batch_size:>5} {concurrency:>5} {m['texts/s']:>8.0f} "
                f"{m['bytes'] / m['responses'] / 1024:>12.1f} "
                f"{m['cpu_s'] / len(SUBSET) * 1e6:>19.0f}"
            )
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        The client's CPU time above includes the HTTP exchange. Decoding alone, on one response
        of 256 vectors, done the way the client does it (`json.loads`, then for base64 one
        `b64decode` and an `array("f")` per vector), gives the cleanest comparison:
        """
    ),
    code(
        """
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
        """
    ),
    md(
        """
        ## 4. `dimensions`: matryoshka truncation

        `dimensions=d` asks the server for the first `d` components of each vector: the response
        (and the vector index) shrink in proportion. Models trained for it (matryoshka
        representation learning: nomic-embed, mxbai-embed-large, OpenAI's text-embedding-3) keep
        most of their quality when truncated; MiniLM was not, so expect a steeper loss here and
        measure before truncating your own model's vectors.

        The measure: each of the first 128 chunks of the subset is a query against the rest of
        the subset; recall@10 is the share of its 10 nearest neighbours by the full 384-dimension
        vectors that the truncated vectors also place in their top 10.
        """
    ),
    code(
        """
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
        print(f"\\nthe server's 64 dimensions are the first 64 of the full vector "
              f"(largest difference: {same:.1g})")
        """
    ),
    code(
        """
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
        labels = [str(d) for d in DIMENSIONS]
        ax1.bar(labels, [truncated[d][1]["bytes"] / len(SUBSET) for d in DIMENSIONS])
        ax1.set(xlabel="dimensions", ylabel="bytes per vector (base64)", title="Payload")
        ax2.plot(labels, [recall[d] for d in DIMENSIONS], marker="o")
        ax2.set(xlabel="dimensions", ylabel="recall@10 vs 384 dimensions", ylim=(0, 1.05),
                title="Neighbours kept")
        fig.tight_layout()
        plt.show()
        """
    ),
    md(
        """
        ## Clean up

        Close the clients, stop the server, delete the temporary Qdrant folder.
        """
    ),
    code(
        """
        measured.close()
        http.close()
        client.close()
        qdrant_dir.cleanup()
        if server is not None:
            server.stop()
        print("stopped")
        """
    ),
]


@dataclass(frozen=True)
class Spec:
    filename: str
    cells: list[nbformat.NotebookNode]


NOTEBOOKS = (
    Spec("01_langchain_rag_rerank.ipynb", LANGCHAIN),
    Spec("02_llama_index_rag_rerank.ipynb", LLAMA_INDEX),
    Spec("03_ingestion_at_scale.ipynb", INGESTION),
)


# --- building and running -----------------------------------------------------------------------


def new_notebook(spec: Spec) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {
            "name": KERNEL,
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        },
        "language_info": {"name": "python"},
        "execution": {"timeout": CELL_TIMEOUT},  # nbmake's default, 300 s, is too tight
    }
    for i, cell in enumerate(spec.cells):
        cell = nbformat.from_dict(dict(cell))
        cell.id = f"cell-{i:02d}"  # stable ids: a rebuild changes only what changed
        nb.cells.append(cell)
    return nb


def check_kernel() -> None:
    """The ``python3`` kernel must be this interpreter: nbmake uses the notebook's kernel."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise SystemExit(f"no Jupyter kernel named {KERNEL!r}: pip install ipykernel") from None
    exe = spec.argv[0]
    # jupyter_client replaces a bare "python" with the interpreter that launches the kernel.
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}
    if exe not in bare and Path(exe).absolute() != Path(sys.executable).absolute():
        raise SystemExit(
            f"the {KERNEL!r} kernel ({spec.resource_dir}) runs {exe}, not {sys.executable}; "
            f"remove it or run `{sys.executable} -m ipykernel install --sys-prefix`"
        )


def execute(nb: nbformat.NotebookNode, timeout: int) -> None:
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # cwd, as nbmake does
        record_timing=False,
    )
    client.execute()


def _collapse_carriage_returns(text: str) -> str:
    """What a terminal shows: each line as its last ``\\r``-separated part (tqdm's final bar)."""
    lines = []
    for line in text.split("\n"):
        parts = [part for part in line.split("\r") if part]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def tidy_outputs(nb: nbformat.NotebookNode) -> None:
    """Merge consecutive stream outputs and keep only the final state of progress bars."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged: list[Any] = []
        for output in cell.outputs:
            previous = merged[-1] if merged else None
            if (
                output.output_type == "stream"
                and previous is not None
                and previous.output_type == "stream"
                and previous.name == output.name
            ):
                previous.text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream":
                output.text = _collapse_carriage_returns(output.text)
        cell.outputs = merged


def check_outputs(name: str, nb: nbformat.NotebookNode) -> None:
    """No secret and no local path may reach a committed notebook."""
    forbidden = {LOCAL_API_KEY: "the local server's API key"}
    if os.environ.get("INFINITY_API_KEY"):
        forbidden[os.environ["INFINITY_API_KEY"]] = "INFINITY_API_KEY"
    for path in {tempfile.gettempdir(), str(Path.home()), str(REPO)}:
        if path not in ("", "/"):
            forbidden[path + "/"] = f"a local path ({path})"
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "error":
                problems.append(f"cell {i}: error {output.ename}")
            data = output.get("data", {})
            text = json.dumps(
                [output.get("text", ""), output.get("traceback", [])]
                + [value for kind, value in data.items() if not kind.startswith("image/")]
            )
            for needle, what in forbidden.items():
                if needle in text:
                    problems.append(f"cell {i}: output contains {what}")
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(sorted(set(problems))))


def run(path: Path, nb: nbformat.NotebookNode, timeout: int) -> float:
    started = time.perf_counter()
    try:
        execute(nb, timeout)
    except (CellExecutionError, CellTimeoutError) as error:
        failed = Path(tempfile.mkdtemp(prefix="notebook-failed-")) / path.name
        nbformat.write(nb, failed)
        raise SystemExit(f"{path.name} failed (partial run saved as {failed}):\n{error}") from None
    seconds = time.perf_counter() - started
    tidy_outputs(nb)
    check_outputs(path.name, nb)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only the notebooks whose file name has one")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--execute-only", action="store_true", help="re-run the existing files")
    mode.add_argument("--no-execute", action="store_true", help="write the cells, no outputs")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)

    specs = [s for s in NOTEBOOKS if not args.names or any(n in s.filename for n in args.names)]
    if not specs:
        parser.error(f"no notebook matches {args.names}")
    if not args.no_execute:
        check_kernel()
    NOTEBOOKS_DIR.mkdir(exist_ok=True)
    for spec in specs:
        path = NOTEBOOKS_DIR / spec.filename
        if args.execute_only:
            nb = nbformat.read(path, as_version=4)
            nb.metadata["execution"] = {"timeout": CELL_TIMEOUT}
        else:
            nb = new_notebook(spec)
        if not args.no_execute:
            print(f"running {path.relative_to(REPO)} ...", flush=True)
            seconds = run(path, nb, args.timeout)
            print(f"  {seconds:.0f}s", flush=True)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(REPO)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
