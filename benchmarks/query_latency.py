"""The query path under a slow replica: per-query latency, ours against LiteLLM's Router.

Three stand-in replicas (``fake_infinity.py --fixed-ms 10``: every answer takes 10 ms, however
many are in flight), ``--threads`` workers asking queries back to back, a query = embed one
text + rerank ``--passages`` passages (two requests), in three scenarios:

- ``healthy``: the three replicas answer in 10 ms;
- ``slow``: one replica answers in 100 ms (10x slower);
- ``stall``: 2% of answers, on every replica, stall 250 ms more (seeded draws).

Configurations (each in a fresh interpreter, all in one run, scenario after scenario):

- ``ours...``: ``infinity_rag.InfinityClient(base_url=[3 URLs], **kwargs)``, ``embed`` then
  ``rerank`` from each thread. A configuration is a kwargs dict (``CONFIGS``); one whose
  kwargs the installed client's constructor does not take (``balancer``, ``hedge`` before
  the query-path work lands) is reported as skipped, not failed;
- ``litellm-*``: LiteLLM's ``Router`` over the three replicas (``infinity/`` provider, one
  deployment per replica) with ``least-busy``, ``latency-based-routing`` and
  ``simple-shuffle``. Its Router has ``aembedding``/``arerank`` but no sync ``rerank``, so
  these run as ``--threads`` asyncio tasks on one event loop, as its docs recommend for
  concurrency. It runs in its own venv (``--litellm-python``; ``setup_litellm_venv`` builds
  ``$INFINITY_RAG_HOME/bench-venvs/litellm`` with ``litellm`` alone, no proxy extra);
- ``raw-random``: the floor, an httpx loop posting to a replica drawn at random (one
  ``httpx.Client`` shared by the threads), base64 decoded with ``array``.

Reported per scenario and configuration: p50, p99, p99.9 and max per query (ms), queries
per second, and requests per query counted by the replicas (``GET /stats``: a hedge or a
retry is a request; a hedge cancelled after it was sent still counts).

    PYTHONPATH=src .venv/bin/python benchmarks/query_latency.py            # 1,500 queries
    PYTHONPATH=src .venv/bin/python benchmarks/query_latency.py --quick    # 300, no write
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import inspect
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOME_DIR = Path(os.environ.get("INFINITY_RAG_HOME", Path.home() / ".cache" / "infinity-rag"))
LITELLM_VENV = HOME_DIR / "bench-venvs" / "litellm"
LITELLM_PIN = "litellm==1.110.2"  # installs without the proxy extra (NOTES); never 1.107.0

SCENARIOS: dict[str, list[list[str]]] = {
    # fake_infinity.py arguments per replica
    "healthy": [["--fixed-ms", "10"]] * 3,
    "slow": [["--fixed-ms", "100"], ["--fixed-ms", "10"], ["--fixed-ms", "10"]],
    "stall": [
        ["--fixed-ms", "10", "--stall-ms", "250", "--stall-fraction", "0.02", "--seed", str(i)]
        for i in range(3)
    ],
}
SCENARIO_TITLES = {
    "healthy": "healthy",
    "slow": "one replica 10x slower",
    "stall": "2% of answers stall 250 ms",
}

# label -> (kind, kwargs). Ours' kwargs go to InfinityClient(...) as they are.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "ours": ("ours", {}),
    "ours least-busy": ("ours", {"balancer": "least-busy", "hedge": False}),
    "ours peak-ewma": ("ours", {"balancer": "peak-ewma", "hedge": False}),
    "ours peak-ewma+hedge": ("ours", {"balancer": "peak-ewma", "hedge": True}),
    # Today's client with _balance.PeakEwma patched into its pool (no hedging): the balancer
    # alone, measurable before the engine calls it. See patch_peak_ewma.
    "ours +patch peak-ewma": ("ours", {"_patch": "peak-ewma"}),
    "litellm least-busy": ("litellm", {"routing_strategy": "least-busy"}),
    "litellm latency-based": ("litellm", {"routing_strategy": "latency-based-routing"}),
    "litellm simple-shuffle": ("litellm", {"routing_strategy": "simple-shuffle"}),
    "raw-random": ("raw", {}),
}

MODEL = "fake-384"


# --- the workload (runs in the worker process) -----------------------------------------------


def make_queries(n: int, passages: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(500)]
    out = []
    for _ in range(n):
        query = " ".join(rng.choices(words, k=8)) + "?"
        docs = [" ".join(rng.choices(words, k=40)) for _ in range(passages)]
        out.append((query, docs))
    return out


def run_threads(one_query: Any, queries: list[tuple[str, list[str]]], threads: int) -> list[float]:
    """Each thread takes the next query until none is left; per-query seconds, in order."""
    latencies: list[float] = [0.0] * len(queries)
    lock = threading.Lock()
    next_index = 0
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal next_index
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= len(queries):
                return
            started = time.perf_counter()
            try:
                one_query(*queries[i])
            except Exception as exc:  # reported, not hidden
                errors.append(exc)
                return
            latencies[i] = time.perf_counter() - started

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return latencies


def worker_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    import infinity_rag
    from infinity_rag import InfinityClient

    kwargs = dict(cfg["kwargs"])
    if kwargs.pop("_patch", None) == "peak-ewma" and not patch_peak_ewma():
        return {"skipped": "the pool has no _least_busy to patch (the engine landed)"}
    accepted = inspect.signature(InfinityClient.__init__).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        return {"skipped": f"InfinityClient takes no {', '.join(unknown)} (this version)"}
    client = InfinityClient(base_url=cfg["urls"], **kwargs)

    def one_query(query: str, docs: list[str]) -> None:
        client.embed([query], model=MODEL)
        client.rerank(query, docs, model=MODEL, top_n=5)

    run_threads(one_query, make_queries(cfg["warmup"], cfg["passages"]), cfg["threads"])
    cfg["ready"]()
    started = time.perf_counter()
    latencies = run_threads(one_query, cfg["queries_list"], cfg["threads"])
    wall = time.perf_counter() - started
    replicas = [
        dataclasses.asdict(state) if dataclasses.is_dataclass(state) else repr(state)
        for state in client.replicas()
    ]
    return {
        "latencies": latencies,
        "wall": wall,
        "version": getattr(infinity_rag, "__version__", "?"),
        "replicas": replicas,
    }


def patch_peak_ewma() -> bool:
    """Make today's ``ReplicaPool`` choose with ``_balance.PeakEwma`` and time each try.

    ``_least_busy`` (called under the pool's lock with the candidates) becomes
    ``PeakEwma.pick``; ``acquire``/``release`` note each try's start and record its latency
    (a sync call's try is started and ended on one thread). False when the pool has changed.
    """
    from infinity_rag import _pool
    from infinity_rag._balance import PeakEwma

    pool_class: Any = _pool.ReplicaPool
    if not hasattr(pool_class, "_least_busy"):
        return False
    balancer = PeakEwma()
    local = threading.local()
    acquire, release = pool_class.acquire, pool_class.release

    def least_busy(self: Any, replicas: list[Any]) -> Any:
        return balancer.pick(replicas, self._clock())

    def timed_acquire(self: Any, avoid: Any = ()) -> Any:
        replica = acquire(self, avoid)
        local.try_ = (replica, time.perf_counter())
        return replica

    def timed_release(self: Any, replica: Any, error: BaseException | None = None) -> None:
        release(self, replica, error)
        started = getattr(local, "try_", None)
        if started is not None and started[0] is replica:
            seconds = time.perf_counter() - started[1]
            with self._lock:
                if error is None:
                    balancer.record(replica, seconds, self._clock())
                else:
                    balancer.record_failure(replica, seconds, self._clock())

    pool_class._least_busy = least_busy
    pool_class.acquire = timed_acquire
    pool_class.release = timed_release
    return True


def worker_raw(cfg: dict[str, Any]) -> dict[str, Any]:
    import array
    import base64

    import httpx

    urls = cfg["urls"]
    http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
    rng = random.Random(11)
    rng_lock = threading.Lock()

    def pick() -> str:
        with rng_lock:
            return rng.choice(urls)

    def one_query(query: str, docs: list[str]) -> None:
        r = http.post(
            f"{pick()}/embeddings",
            json={"model": MODEL, "input": [query], "encoding_format": "base64"},
        )
        r.raise_for_status()
        for item in r.json()["data"]:
            array.array("f", base64.b64decode(item["embedding"])).tolist()
        r = http.post(
            f"{pick()}/rerank",
            json={"model": MODEL, "query": query, "documents": docs, "top_n": 5},
        )
        r.raise_for_status()
        r.json()

    run_threads(one_query, make_queries(cfg["warmup"], cfg["passages"]), cfg["threads"])
    cfg["ready"]()
    started = time.perf_counter()
    latencies = run_threads(one_query, cfg["queries_list"], cfg["threads"])
    wall = time.perf_counter() - started
    return {"latencies": latencies, "wall": wall, "version": httpx.__version__}


def worker_litellm(cfg: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata
    import logging

    import litellm
    from litellm import Router

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM Router").setLevel(logging.ERROR)
    model_list = []
    for url in cfg["urls"]:
        for name in ("emb", "rr"):
            model_list.append(
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": f"infinity/{MODEL}",
                        "api_base": url,
                        "api_key": "none",
                    },
                }
            )
    router = Router(model_list=model_list, **cfg["kwargs"])

    async def one_query(query: str, docs: list[str]) -> None:
        await router.aembedding(model="emb", input=[query])
        await router.arerank(model="rr", query=query, documents=docs, top_n=5)

    async def run(queries: list[tuple[str, list[str]]]) -> list[float]:
        latencies = [0.0] * len(queries)
        counter = iter(range(len(queries)))

        async def task() -> None:
            for i in counter:
                started = time.perf_counter()
                await one_query(*queries[i])
                latencies[i] = time.perf_counter() - started

        await asyncio.gather(*(task() for _ in range(cfg["threads"])))
        return latencies

    async def main() -> tuple[list[float], float]:
        await run(make_queries(cfg["warmup"], cfg["passages"]))
        cfg["ready"]()
        started = time.perf_counter()
        latencies = await run(cfg["queries_list"])
        return latencies, time.perf_counter() - started

    latencies, wall = asyncio.run(main())
    return {
        "latencies": latencies,
        "wall": wall,
        "version": importlib.metadata.version("litellm"),
    }


def worker_main(spec: str) -> None:
    cfg = json.loads(spec)
    cfg["queries_list"] = make_queries(cfg["queries"], cfg["passages"])

    def ready() -> None:  # warm-up done: the driver snapshots the replicas' counters now
        print("READY", flush=True)
        sys.stdin.readline()

    cfg["ready"] = ready
    kind = cfg["kind"]
    result = {"ours": worker_ours, "raw": worker_raw, "litellm": worker_litellm}[kind](cfg)
    print("RESULT " + json.dumps(result), flush=True)


# --- the driver --------------------------------------------------------------------------------


def start_replicas(
    args_per_replica: list[list[str]],
) -> tuple[list[subprocess.Popen[str]], list[str]]:
    procs, urls = [], []
    for extra in args_per_replica:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_infinity.py"), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"fake_infinity did not start: {line!r}")
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{int(line.split()[1])}")
    return procs, urls


def replica_counts(urls: list[str]) -> list[dict[str, float]]:
    import urllib.request

    out = []
    for url in urls:
        with urllib.request.urlopen(f"{url}/stats", timeout=10) as r:
            out.append(json.loads(r.read()))
    return out


def python_for(kind: str, args: argparse.Namespace) -> str | None:
    if kind != "litellm":
        return sys.executable
    python = Path(args.litellm_python) if args.litellm_python else LITELLM_VENV / "bin" / "python"
    return str(python) if python.exists() else None


def run_config(
    kind: str, kwargs: dict[str, Any], urls: list[str], queries: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One round of one configuration in a fresh interpreter: its latencies, its requests."""
    python = python_for(kind, args)
    if python is None:
        return {"skipped": "no LiteLLM venv (run with --setup-litellm, or --litellm-python)"}
    spec = {
        "kind": kind,
        "kwargs": kwargs,
        "urls": urls,
        "queries": queries,
        "warmup": args.warmup,
        "threads": args.threads,
        "passages": args.passages,
    }
    env = dict(os.environ)
    if kind == "ours" and "PYTHONPATH" not in env:
        env["PYTHONPATH"] = str(ROOT / "src")
    if kind == "litellm":
        env.pop("PYTHONPATH", None)
        env.update({"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"})
    proc = subprocess.Popen(
        [python, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    before: list[dict[str, float]] = []
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith("READY"):
            before = replica_counts(urls)
            proc.stdin.write("\n")
            proc.stdin.flush()
        elif line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    if result is None:
        tail = stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    if "skipped" in result:
        return result
    after = replica_counts(urls)
    requests = [
        (a["embeddings_requests"] - b["embeddings_requests"])
        + (a["rerank_requests"] - b["rerank_requests"])
        for a, b in zip(after, before, strict=True)
    ]
    stalled = sum(
        a["stalled_requests"] - b["stalled_requests"] for a, b in zip(after, before, strict=True)
    )
    result.update({"requests_per_replica": requests, "stalled": stalled})
    return result


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds merged: quantiles over every query of every round."""
    for r in rounds:
        if "error" in r or "skipped" in r:
            return r
    ms = sorted(x * 1000 for r in rounds for x in r["latencies"])
    requests = [sum(col) for col in zip(*(r["requests_per_replica"] for r in rounds), strict=True)]
    out = {k: v for k, v in rounds[-1].items() if k not in ("latencies", "wall")}
    out.update(
        {
            "rounds": len(rounds),
            "queries": len(ms),
            "p50": quantile(ms, 0.50),
            "p99": quantile(ms, 0.99),
            "p999": quantile(ms, 0.999),
            "max": ms[-1],
            "mean": statistics.fmean(ms),
            "qps": len(ms) / sum(r["wall"] for r in rounds),
            "requests_per_query": sum(requests) / len(ms),
            "requests_per_replica": requests,
            "stalled": sum(r["stalled"] for r in rounds),
        }
    )
    return out


def brief(result: dict[str, Any]) -> str:
    if "latencies" in result:
        ms = sorted(x * 1000 for x in result["latencies"])
        return f"p50 {quantile(ms, 0.5):.1f} p99 {quantile(ms, 0.99):.1f} ({len(ms)} queries)"
    if "p50" in result:
        return (
            f"p50 {result['p50']:.1f} p99 {result['p99']:.1f} p99.9 {result['p999']:.1f} "
            f"req/q {result['requests_per_query']:.3f}"
        )
    return str(result)


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    rank = max(int(-(-q * len(sorted_values) // 1)) - 1, 0)
    return sorted_values[rank]


def setup_litellm_venv() -> None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", LITELLM_PIN], check=True)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load": os.getloadavg(),
    }


def fmt(result: dict[str, Any], key: str) -> str:
    if "error" in result:
        return "error"
    if "skipped" in result:
        return "—"
    return f"{result[key]:.0f}"


def report(data: dict[str, Any]) -> str:
    lines = [
        "# The query path under a slow replica",
        "",
        f"Run {data['date']} by `benchmarks/query_latency.py` "
        f"({' '.join(data['argv']) or 'no options'}). Machine: {data['machine']['cpu']}, "
        f"{data['machine']['cores']} cores, Python {data['machine']['python']}; load average "
        f"{data['machine']['load'][0]:.2f} at the start, {data['load_end'][0]:.2f} at the end.",
        "",
        f"Three stand-in replicas (`fake_infinity.py --fixed-ms 10`), {data['threads']} threads "
        f"asking queries back to back, a query = embed 1 text + rerank {data['passages']} "
        f"passages (`top_n=5`), {data['queries']} queries per configuration in "
        f"{data['rounds']} rounds run round-robin, each in a fresh interpreter after "
        f"{data['warmup']} warm-up queries. Per-query latency in ms over all rounds; requests "
        "per query counted by the replicas (`GET /stats`).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(data["versions"].items())) + ".",
        "",
        "Configurations: `ours` is `InfinityClient(base_url=[3 URLs])` with its defaults, "
        "`embed` then `rerank` from each thread; `ours <balancer>[+hedge]` pass "
        "`balancer=`/`hedge=` (skipped while the client has no such setting); `ours +patch "
        "peak-ewma` is today's client with `_balance.PeakEwma` patched into its pool (the "
        "balancer alone, no hedging); `litellm <strategy>` is LiteLLM's `Router` with one "
        "`infinity/` deployment per replica, run as 8 asyncio tasks on one event loop "
        "(`aembedding` + `arerank`: the Router has no sync `rerank`); `raw-random` is an httpx "
        "loop posting to a replica drawn at random.",
        "",
        "Reproduce: `bash benchmarks/setup.sh` is not needed; "
        "`PYTHONPATH=src .venv/bin/python benchmarks/query_latency.py --setup-litellm` once "
        "(builds `$INFINITY_RAG_HOME/bench-venvs/litellm`), then the same command without "
        "`--setup-litellm` "
        "(`--quick` for a 300-query smoke run to stdout). Run it on a quiet machine: the "
        "replicas, the client and everything else share the cores.",
        "",
    ]
    for scenario, results in data["results"].items():
        lines += [
            f"## {SCENARIO_TITLES[scenario]}",
            "",
            "| configuration | p50 | p99 | p99.9 | max | queries/s | requests/query "
            "| requests per replica |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, result in results.items():
            if "skipped" in result:
                lines.append(f"| {label} | skipped: {result['skipped']} | | | | | | |")
                continue
            if "error" in result:
                lines.append(f"| {label} | error: {result['error'][:120]} | | | | | | |")
                continue
            lines.append(
                f"| {label} | {result['p50']:.1f} | {result['p99']:.1f} | {result['p999']:.1f} "
                f"| {result['max']:.0f} | {result['qps']:.0f} "
                f"| {result['requests_per_query']:.3f} "
                f"| {' / '.join(str(n) for n in result['requests_per_replica'])} |"
            )
        lines.append("")
    labels = [
        label
        for label in next(iter(data["results"].values()))
        if any("skipped" not in r[label] for r in data["results"].values())
    ]
    lines += [
        "## Summary (p50 / p99, ms)",
        "",
        "| scenario | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for scenario, results in data["results"].items():
        cells = [f"{fmt(results[label], 'p50')} / {fmt(results[label], 'p99')}" for label in labels]
        lines.append(f"| {SCENARIO_TITLES[scenario]} | " + " | ".join(cells) + " |")
    if data.get("note"):
        lines += ["", data["note"]]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=50, help="queries before each round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per configuration, round-robin (3)"
    )
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--passages", type=int, default=20)
    parser.add_argument("--scenarios", default="healthy,slow,stall")
    parser.add_argument("--only", help="keep the configurations whose label matches this regex")
    parser.add_argument("--quick", action="store_true", help="300 queries, print, no files")
    parser.add_argument("--litellm-python", help="a python with litellm (default: its venv)")
    parser.add_argument("--setup-litellm", action="store_true", help="build the LiteLLM venv")
    parser.add_argument("--out", default=str(HERE / "RESULTS-query-latency.md"))
    parser.add_argument("--note", help="a paragraph added to the report (the run's conditions)")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the Markdown from the .json"
    )
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if args.report_only:
        out = Path(args.out)
        saved = json.loads(out.with_suffix(".json").read_text())
        if args.note:
            saved["note"] = args.note
            out.with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")
        out.write_text(report(saved))
        print(f"wrote {out}")
        return
    if args.setup_litellm:
        setup_litellm_venv()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the replicas on kill
    if args.quick:
        args.queries = min(args.queries, 300)
    configs = {
        label: c for label, c in CONFIGS.items() if not args.only or re.search(args.only, label)
    }
    data: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": sys.argv[1:],
        "machine": machine(),
        "queries": args.queries,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "threads": args.threads,
        "passages": args.passages,
        "versions": {},
        "results": {},
        "note": args.note,
    }
    per_round = [
        args.queries // args.rounds + (1 if i < args.queries % args.rounds else 0)
        for i in range(args.rounds)
    ]
    for scenario in args.scenarios.split(","):
        procs, urls = start_replicas(SCENARIOS[scenario])
        try:
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
            for n in per_round:  # round-robin: a change in the load falls on all alike
                for label, (kind, kwargs) in configs.items():
                    done = rounds[label]
                    if done and ("skipped" in done[-1] or "error" in done[-1]):
                        continue
                    started = time.monotonic()
                    result = run_config(kind, kwargs, urls, n, args)
                    done.append(result)
                    if "version" in result:
                        name = {"ours": "infinity-rag", "raw": "httpx", "litellm": "litellm"}
                        data["versions"][name[kind]] = result["version"]
                    took = time.monotonic() - started
                    print(
                        f"[{scenario}] round {len(done)} {label}: {brief(result)} ({took:.0f} s)",
                        flush=True,
                    )
            data["results"][scenario] = {label: summarize(r) for label, r in rounds.items()}
            for label, result in data["results"][scenario].items():
                print(f"[{scenario}] {label}: {brief(result)}", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
    data["load_end"] = os.getloadavg()
    text = report(data)
    if args.quick:
        print(text)
        return
    out = Path(args.out)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
