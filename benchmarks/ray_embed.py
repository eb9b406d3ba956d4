"""Rows per second embedding a corpus through Ray Data, against the client alone in one process.

Starts two real Infinity replicas (MiniLM, ``--batch-size 128``) and a local Ray cluster
(``num_cpus=2``), then runs each configuration ``--reps`` times round-robin over the same
corpus and writes a table (median and spread of the rows/s) to ``--out``::

    .venv/bin/python benchmarks/ray_embed.py                  # 10,000 rows, 2 reps
    .venv/bin/python benchmarks/ray_embed.py --rows 20000 --reps 3

Configurations: ``driver`` (``InfinityClient.embed(..., as_numpy=True)`` in this process),
``actors=N`` (``EmbedBatches`` on an actor pool of N, ``num_cpus=0.5``) and ``tasks``
(a plain function closing over the client). Every Ray run is counted only after its vectors
were checked against the driver's (same ids, 1e-5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import ray

import infinity_rag
from infinity_rag import InfinityClient
from infinity_rag.ray import EmbedBatches
from infinity_rag.testing import LocalInfinityServer

ROOT = Path(__file__).resolve().parents[1]
MODEL = "minilm"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--actors", default="1,2,4", help="actor pool sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-ray.md")
    args = parser.parse_args()

    texts = [f"passage {i} on topic {i % 101}" for i in range(args.rows)]
    servers = [LocalInfinityServer([MODEL], extra_args=["--batch-size", "128"]) for _ in "ab"]
    pool = ThreadPoolExecutor(max_workers=2)  # alive until the servers stop (PDEATHSIG)
    load_start = os.getloadavg()
    try:
        for future in [pool.submit(s.start) for s in servers]:
            future.result()
        urls = [s.url for s in servers]
        key = servers[0].api_key
        client = InfinityClient(base_url=urls, api_key=key)
        src = str(Path(infinity_rag.__file__).resolve().parents[1])
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=300 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": src}},
            log_to_driver=False,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        reference = client.embed(texts, model=MODEL, as_numpy=True).embeddings  # warm-up too

        def dataset() -> ray.data.Dataset:
            items = [{"id": i, "text": t} for i, t in enumerate(texts)]
            return ray.data.from_items(items, override_num_blocks=40)

        def run_ray(ds: ray.data.Dataset) -> None:
            ids, vectors = [], []
            for batch in ds.select_columns(["id", "embedding"]).iter_batches(batch_size=None):
                ids.append(batch["id"])
                vectors.append(batch["embedding"])
            order = np.argsort(np.concatenate(ids))
            got = np.concatenate(vectors)[order]
            if got.shape != reference.shape or not np.allclose(got, reference, atol=1e-5, rtol=0):
                raise SystemExit("a Ray run returned other vectors than the driver")

        def driver() -> None:
            client.embed(texts, model=MODEL, as_numpy=True)

        def actors(size: int) -> Callable[[], None]:
            def run() -> None:
                run_ray(
                    dataset().map_batches(
                        EmbedBatches,
                        fn_constructor_kwargs={"model": MODEL, "client": client},
                        compute=ray.data.ActorPoolStrategy(size=size),
                        batch_size=1024,
                        num_cpus=0.5,
                    )
                )

            return run

        def tasks() -> None:
            def embed(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                result = client.embed(batch["text"].tolist(), model=MODEL, as_numpy=True)
                return {"id": batch["id"], "embedding": result.embeddings}

            run_ray(dataset().map_batches(embed, batch_size=1024, num_cpus=0.5))

        configs: dict[str, Callable[[], None]] = {"driver": driver}
        for size in (int(s) for s in args.actors.split(",")):
            configs[f"actors={size}"] = actors(size)
        configs["tasks"] = tasks
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for rep in range(args.reps):
            for name, run in configs.items():
                t0 = time.perf_counter()
                run()
                seconds = time.perf_counter() - t0
                rates[name].append(args.rows / seconds)
                print(f"rep {rep} {name}: {seconds:.1f} s, {args.rows / seconds:.0f} rows/s")
        ray.shutdown()
    finally:
        for server in servers:
            server.stop()
        pool.shutdown()
    load_end = os.getloadavg()

    lines = [
        "# Ray Data vs the client alone: rows per second",
        "",
        f"{args.rows:,} short texts (`passage i on topic i % 101`), two MiniLM replicas on CPU "
        "(`--batch-size 128`), a local Ray cluster (`num_cpus=2`) on the same machine; "
        f"{args.reps} runs per configuration, round-robin; Ray runs include building the "
        "dataset and collecting the vectors in the driver, and were checked against the "
        "driver's vectors.",
        "",
        f"Machine: {os.cpu_count()} cores; load average {load_start[0]:.1f} at the start, "
        f"{load_end[0]:.1f} at the end (other jobs share the cores: read the ratios, not the "
        f"absolute numbers). Ray {ray.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| configuration | median rows/s | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, values in rates.items():
        lines.append(
            f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
