"""The request engine against the one before it, side by side in one run: client CPU per
vector (scenario A of run.py: a stand-in server answering at once) and replica scaling
(replicas.py's set-up: stand-in replicas with an accelerator each), sync and async.

    git worktree add /tmp/infinity-rag-before 7b4e0bb   # the last commit before the engine
    .venv/bin/python benchmarks/engine_compare.py --before /tmp/infinity-rag-before/src

Each measurement runs in a fresh interpreter whose ``infinity_rag`` comes from the tree
being measured (``PYTHONPATH``); the two trees alternate rep by rep, so a change in the
machine's load falls on both alike, and the report gives the ratio rep by rep (after /
before) and its median. Writes ``benchmarks/RESULTS-engine.md`` (+ ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import fake_server  # noqa: E402

# One measurement: embed N texts through the tree's client; print client CPU and wall time.
WORKER = r"""
import asyncio, json, sys, time
from infinity_rag import InfinityClient
urls, n, mode, concurrency, model = json.loads(sys.argv[1])
texts = [f"passage {i} about something" for i in range(n)]
client = InfinityClient(base_url=urls, max_concurrency=concurrency)
client.embed(texts[:256], model=model)  # warm-up: pools, the model's shape
async def run_async():
    return await client.aembed(texts, model=model)
cpu, wall = time.process_time(), time.perf_counter()
result = asyncio.run(run_async()) if mode == "async" else client.embed(texts, model=model)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
assert len(result.embeddings) == n
print(json.dumps({"cpu": cpu, "wall": wall}))
"""


def measure(src: str, urls: list[str], n: int, mode: str, concurrency: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps([urls, n, mode, concurrency, "fake-384"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the src/ folder of the tree before")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000, help="texts per CPU measurement")
    parser.add_argument("--scaling-n", type=int, default=20_000, help="texts per scaling run")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--out", default=str(BENCH / "RESULTS-engine"))
    args = parser.parse_args()
    trees = {"before": args.before, "after": str(REPO / "src")}
    rows: list[dict[str, Any]] = []
    started = time.time()
    load = os.getloadavg()[0]
    with ExitStack() as stack:
        url, _ = stack.enter_context(fake_server(python=Path(sys.executable)))
        counts = [int(c) for c in args.replicas.split(",")]
        fleet = [
            stack.enter_context(
                fake_server("--service-ms-per-256", "20", python=Path(sys.executable))
            )[0]
            for _ in range(max(counts))
        ]
        cases: list[tuple[str, list[str], int, str, int]] = []
        for mode in ("sync", "async"):
            cases.append((f"CPU per vector, {mode}", [url], args.n, mode, 4))
        for count in counts:
            for mode in ("sync", "async"):
                cases.append(
                    (f"{count} replica(s), {mode}", fleet[:count], args.scaling_n, mode, 2 * count)
                )
        for label, urls, n, mode, concurrency in cases:
            for rep in range(args.reps):
                pair = {}
                order = ("before", "after") if rep % 2 == 0 else ("after", "before")
                for tree in order:
                    pair[tree] = measure(trees[tree], urls, n, mode, concurrency)
                row = {"case": label, "rep": rep, "n": n, **{t: pair[t] for t in trees}}
                rows.append(row)
                print(
                    f"{label} rep {rep}: cpu {pair['before']['cpu']:.2f} -> "
                    f"{pair['after']['cpu']:.2f} s, wall {pair['before']['wall']:.2f} -> "
                    f"{pair['after']['wall']:.2f} s",
                    flush=True,
                )
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    write_report(rows, Path(args.out + ".md"), load, os.getloadavg()[0], time.time() - started)


def write_report(
    rows: list[dict[str, Any]], path: Path, load0: float, load1: float, took: float
) -> None:
    lines = [
        "# The request engine against the one before it",
        "",
        f"Run {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, load average {load0:.1f} "
        f"at the start and {load1:.1f} at the end, {took / 60:.0f} min. `before`: the tree at "
        "7b4e0bb (two engines, sync in threads); `after`: this tree (one async engine; sync "
        "calls in the calling thread, on an event loop of its own). Reproduce: see the "
        "docstring of `benchmarks/engine_compare.py`.",
        "",
        "CPU per vector: one stand-in server answering at once (scenario A), 4 requests in "
        "flight, the client process's CPU time over the call. Replica scaling: stand-in "
        "replicas with one accelerator each (20 ms per 256 texts), 2 requests in flight per "
        "replica, wall time. Ratios are after / before, rep by rep; lower is better.",
        "",
        "| case | texts | before CPU µs/vector | after CPU µs/vector | CPU ratio (median) "
        "| before vectors/s | after vectors/s | wall ratio (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in dict.fromkeys(row["case"] for row in rows):
        mine = [row for row in rows if row["case"] == case]
        n = mine[0]["n"]
        cpu = {
            t: statistics.median(r[t]["cpu"] for r in mine) * 1e6 / n for t in ("before", "after")
        }
        rate = {t: n / statistics.median(r[t]["wall"] for r in mine) for t in ("before", "after")}
        cpu_ratio = statistics.median(r["after"]["cpu"] / r["before"]["cpu"] for r in mine)
        wall_ratio = statistics.median(r["after"]["wall"] / r["before"]["wall"] for r in mine)
        lines.append(
            f"| {case} | {n:,} | {cpu['before']:.1f} | {cpu['after']:.1f} | {cpu_ratio:.2f} "
            f"| {rate['before']:,.0f} | {rate['after']:,.0f} | {wall_ratio:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
