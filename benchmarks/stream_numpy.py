"""Streaming and numpy results against the replay server (``fake_infinity.py``).

Three questions, each answered in one run so that the ratios share the machine's load:

(a) ``embed_stream`` over 100,000 and 1,000,000 texts read from a generator: is the peak memory
    flat (independent of the corpus size), and is the throughput that of ``embed`` on the same
    chunks (256 texts a request, 4 in flight)?
(b) CPU per vector of ``embed(..., as_numpy=True)`` next to two hand-written floors on the same
    server: httpx + base64 -> Python lists (``array('f').tolist()``) and httpx +
    ``np.frombuffer`` into a preallocated array; 384 and 1,024 dimensions.
(c) Peak memory of ``embed(100,000 texts, as_numpy=True)`` (384 dims) against the array's size.

Every configuration runs in a fresh interpreter (this script with ``--worker``): CPU time is the
process's user + system time during the call alone, peak memory its VmHWM (reset just before
the call) minus its RSS before, and, in separate runs, tracemalloc's peak. Repetitions run
round-robin. Run from the repository root:

    .venv/bin/python benchmarks/stream_numpy.py            # ~5 min; writes RESULTS-stream-numpy.md
    .venv/bin/python benchmarks/stream_numpy.py --quick    # smaller sizes, 1 rep, to stdout only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BATCH = 256


# --- the worker: one configuration, one JSON line ----------------------------------------------


def _texts(n: int) -> Iterator[str]:
    return (f"passage number {i} of the corpus" for i in range(n))


def _rss() -> int:
    return _status("VmRSS:")


def _hwm() -> int:
    return _status("VmHWM:")


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _raw(cfg: dict[str, Any], texts: list[str], as_numpy: bool) -> Any:
    """The floors: httpx, one request after the other, ``response.json()``, then decode."""
    import base64
    from array import array

    import httpx

    http = _raw.http = getattr(_raw, "http", None) or httpx.Client(timeout=600)  # type: ignore[attr-defined]
    url = cfg["url"] + "/embeddings"
    if as_numpy:
        import numpy as np

        out = np.empty((len(texts), cfg["dim"]), dtype=np.float32)
    vectors: list[list[float]] = []
    for start in range(0, len(texts), BATCH):
        body = {"model": cfg["model"], "input": texts[start : start + BATCH]}
        body["encoding_format"] = "base64"
        response = http.post(url, json=body)
        response.raise_for_status()
        data = response.json()["data"]
        if as_numpy:
            for item in data:
                raw = base64.b64decode(item["embedding"])
                out[start + item["index"]] = np.frombuffer(raw, dtype="<f4")
        else:
            for item in data:
                vector = array("f")
                vector.frombytes(base64.b64decode(item["embedding"]))
                vectors.append(vector.tolist())
    return out if as_numpy else vectors


def _break_response_cycle() -> None:
    """Replace each read response's stream (which points back at the response) by its bytes."""
    import httpx

    send = httpx.Client.send

    def patched(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = send(self, request, **kwargs)
        if not kwargs.get("stream"):
            response.stream = httpx.ByteStream(response.content)
        return response

    httpx.Client.send = patched  # type: ignore[method-assign]


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import tracemalloc

    import numpy as np

    from infinity_rag import InfinityClient

    n, kind = cfg["n"], cfg["kind"]
    if cfg.get("break_cycle"):
        _break_response_cycle()
    client = InfinityClient(base_url=cfg["url"], max_concurrency=cfg.get("concurrency", 4))
    client.embed(["warm up"], model=cfg["model"], as_numpy=True)
    _raw(cfg, ["warm up"], True)
    texts = None if kind == "stream" else list(_texts(n))
    rows = 0
    if cfg.get("tracemalloc"):
        tracemalloc.start()
    _reset_hwm()
    rss0, cpu0, wall0 = _rss(), _cpu(), time.perf_counter()
    result: Any = None
    if kind == "stream":
        for part in client.embed_stream(_texts(n), model=cfg["model"], as_numpy=cfg["numpy"]):
            rows += len(part)
    elif kind == "embed":
        result = client.embed(texts, model=cfg["model"], as_numpy=cfg["numpy"])  # type: ignore[call-overload]
        rows = len(result)
    elif kind == "raw":
        result = _raw(cfg, texts, cfg["numpy"])  # type: ignore[arg-type]
        rows = len(result)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    peak = max(_hwm(), _rss()) - rss0
    traced = tracemalloc.get_traced_memory()[1] if cfg.get("tracemalloc") else None
    if rows != n:
        raise RuntimeError(f"{rows} rows for {n} texts")
    out = {"wall": wall, "cpu": cpu, "peak": peak, "traced": traced, "rows": rows}
    if isinstance(result, np.ndarray) or hasattr(result, "embeddings"):
        array = result if isinstance(result, np.ndarray) else result.embeddings
        if isinstance(array, np.ndarray):
            out["nbytes"] = array.nbytes
    return out


# --- the driver --------------------------------------------------------------------------------


@contextmanager
def replay_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "fake_infinity.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"replay server did not start: {line}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def configs(url: str, quick: bool) -> dict[str, list[dict[str, Any]]]:
    small, big, cpu_n = (10_000, 100_000, 5_000) if quick else (100_000, 1_000_000, 20_000)
    m384 = {"url": url, "model": "fake-384", "dim": 384}
    m1024 = {"url": url, "model": "fake-1024", "dim": 1024}
    stream: list[dict[str, Any]] = []
    for n in (small, big):
        for numpy in (False, True):
            stream.append({**m384, "kind": "stream", "n": n, "numpy": numpy})
    stream.append({**m384, "kind": "embed", "n": small, "numpy": False})  # lists: 1.2 GB at 100k
    stream.append({**m384, "kind": "embed", "n": big, "numpy": True})
    cpu: list[dict[str, Any]] = []
    for model in (m384, m1024):
        for kind, numpy in (("embed", True), ("embed", False), ("raw", False), ("raw", True)):
            cpu.append({**model, "kind": kind, "n": cpu_n, "numpy": numpy, "concurrency": 1})
    memory = [{**m384, "kind": "embed", "n": small, "numpy": True}]
    # tracemalloc slows the lists path (a Python float per value) too much for 1,000,000 texts.
    traced = [
        {**m384, "kind": "stream", "n": n, "numpy": True, "tracemalloc": True} for n in (small, big)
    ] + [{**m384, "kind": "embed", "n": small, "numpy": True, "tracemalloc": True}]
    # What the peak would be if httpx's Response <-> BoundSyncStream reference cycle were broken
    # (each response, body included, is otherwise freed only by the cyclic garbage collector).
    uncycled = [
        {**m384, "kind": "stream", "n": n, "numpy": numpy, "break_cycle": True}
        for n in (small, big)
        for numpy in (False, True)
    ]
    return {
        "stream": stream,
        "cpu": cpu,
        "memory": memory,
        "traced": traced,
        "uncycled": uncycled,
    }


def label(cfg: dict[str, Any]) -> str:
    names = {
        ("stream", False): "embed_stream (lists)",
        ("stream", True): "embed_stream (numpy)",
        ("embed", False): "embed (lists)",
        ("embed", True): "embed (numpy)",
        ("raw", False): "raw httpx + base64 -> lists",
        ("raw", True): "raw httpx + np.frombuffer",
    }
    return names[(cfg["kind"], cfg["numpy"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(BENCH / "RESULTS-stream-numpy.md"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    reps = 1 if args.quick else args.reps
    started = time.time()
    load0 = os.getloadavg()
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with replay_server() as (url, pid):
        groups = configs(url, args.quick)
        for rep in range(reps):
            for group in ("stream", "cpu", "memory"):
                for cfg in groups[group]:
                    result = run_worker(cfg)
                    runs.append(({**cfg, "group": group, "rep": rep}, result))
                    print(
                        f"[{rep}] {group:6} {label(cfg):30} n={cfg['n']:<8} "
                        f"{cfg['model']:9} wall {result['wall']:6.2f}s cpu {result['cpu']:6.2f}s "
                        f"peak {result['peak'] / 1e6:7.1f} MB",
                        flush=True,
                    )
        for cfg in groups["traced"]:
            result = run_worker(cfg)
            runs.append(({**cfg, "group": "traced", "rep": 0}, result))
            print(
                f"[t] {label(cfg):30} n={cfg['n']:<8} traced peak {result['traced'] / 1e6:.1f} MB"
            )
        for cfg in groups["uncycled"]:
            result = run_worker(cfg)
            runs.append(({**cfg, "group": "uncycled", "rep": 0}, result))
            print(f"[u] {label(cfg):30} n={cfg['n']:<8} peak {result['peak'] / 1e6:.1f} MB")
        server_cpu = process_cpu(pid)
    load1 = os.getloadavg()
    report = render(runs, reps, started, load0, load1, server_cpu, args.quick)
    if args.quick:
        print(report)
        return
    Path(args.out).write_text(report)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps([{"config": c, "result": r} for c, r in runs], indent=1, default=str)
    )
    print(f"wrote {args.out}")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    med = fmt.format(_median(values) * scale)
    if len(values) < 2:
        return med
    return f"{med} ({fmt.format(min(values) * scale)}-{fmt.format(max(values) * scale)})"


def render(
    runs: list[tuple[dict[str, Any], dict[str, Any]]],
    reps: int,
    started: float,
    load0: tuple[float, float, float],
    load1: tuple[float, float, float],
    server_cpu: float,
    quick: bool,
) -> str:
    def pick(group: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for c, r in runs
            if c["group"] == group and all(c.get(k) == v for k, v in match.items())
        ]

    import httpx
    import numpy

    lines = [
        "# Streaming and numpy results: benchmark",
        "",
        f"`benchmarks/stream_numpy.py{' --quick' if quick else ''}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {reps} rep(s) "
        f"round-robin, medians (min-max). Python {platform.python_version()}, "
        f"httpx {httpx.__version__}, numpy {numpy.__version__}, {os.cpu_count()} cores; "
        f"load average {load0[0]:.1f} at the start, {load1[0]:.1f} at the end "
        f"(the machine is shared: compare ratios within this run, not absolute figures). "
        f"Server: `fake_infinity.py` (Infinity 0.0.78's exact answers, base64, at near-zero "
        f"compute; its CPU over the whole run: {server_cpu:.1f} s).",
        "",
        "## (a) embed_stream over a generator: memory and throughput",
        "",
        "256 texts a request, 4 in flight (the defaults). The stream's results are counted and "
        "dropped as they come (what an ingestion loop writing to a vector store does). Peak = "
        "VmHWM during the call minus RSS before it.",
        "",
        "| what | texts | wall s | texts/s | client CPU s | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    stream_cfgs = []
    for c, _ in runs:
        key = (c["kind"], c["n"], c["numpy"])
        if c["group"] == "stream" and key not in stream_cfgs:
            stream_cfgs.append(key)
    for kind, n, numpy_ in stream_cfgs:
        rs = pick("stream", kind=kind, n=n, numpy=numpy_)
        label_ = label({"kind": kind, "numpy": numpy_})
        lines.append(
            f"| {label_} | {n:,} | {_spread([r['wall'] for r in rs])} | "
            f"{_median([n / r['wall'] for r in rs]):,.0f} | {_spread([r['cpu'] for r in rs])} | "
            f"{_spread([r['peak'] for r in rs], 1e-6, '{:.1f}')} |"
        )
    traced = [(c, r) for c, r in runs if c["group"] == "traced"]
    if traced:
        lines += [
            "",
            "tracemalloc's peak (separate runs, 1 each; Python and numpy allocations, not the "
            "allocator's slack):",
            "",
        ]
        for c, r in traced:
            lines.append(f"- {label(c)}, {c['n']:,} texts: {r['traced'] / 1e6:.1f} MB")
    uncycled = [(c, r) for c, r in runs if c["group"] == "uncycled"]
    if uncycled:
        lines += [
            "",
            "The same streams (1 run each) with httpx's `Response` <-> `BoundSyncStream` "
            "reference cycle broken by a monkeypatch (each read response's stream replaced by "
            "its bytes), so that a response and its body go when the last reference does "
            "instead of at the next cyclic garbage collection:",
            "",
        ]
        for c, r in uncycled:
            lines.append(f"- {label(c)}, {c['n']:,} texts: peak {r['peak'] / 1e6:.1f} MB")
    lines += ["", "## (b) CPU per vector: the numpy path against the floors", ""]
    lines += [
        "20,000 texts (5,000 with --quick), one request at a time (`max_concurrency=1` for "
        "ours) so every configuration does the same work on one thread; µs of client CPU "
        "(user + system) per vector.",
        "",
        "| dims | embed (numpy) | embed (lists) | raw httpx + base64 -> lists | "
        "raw httpx + np.frombuffer | numpy / lists floor (target ≤ 0.5) | "
        "numpy / frombuffer floor (target ≤ 1.2) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, dim in (("fake-384", 384), ("fake-1024", 1024)):
        cells = {}
        per_rep: dict[tuple[str, bool], list[float]] = {}
        for kind, numpy_ in (("embed", True), ("embed", False), ("raw", False), ("raw", True)):
            rs = pick("cpu", model=model, kind=kind, numpy=numpy_)
            us = [r["cpu"] / r["rows"] * 1e6 for r in rs]
            per_rep[(kind, numpy_)] = us
            cells[(kind, numpy_)] = _spread(us, fmt="{:.1f}")
        ours = per_rep[("embed", True)]
        lists_floor = per_rep[("raw", False)]
        np_floor = per_rep[("raw", True)]
        ratio_lists = [a / b for a, b in zip(ours, lists_floor, strict=True)]
        ratio_np = [a / b for a, b in zip(ours, np_floor, strict=True)]
        lines.append(
            f"| {dim} | {cells[('embed', True)]} | {cells[('embed', False)]} | "
            f"{cells[('raw', False)]} | {cells[('raw', True)]} | "
            f"{_spread(ratio_lists)} | {_spread(ratio_np)} |"
        )
    lines += [
        "",
        "Ratios are taken rep by rep (each rep runs the four configurations back to back), "
        "then the median.",
        "",
        "## (c) Peak memory of embed(100,000 x 384, as_numpy=True)",
        "",
        "| what | array MB | peak MB | peak / array (target ≤ 1.5) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c, r in runs:
        if c["group"] == "memory" and c["rep"] == 0:
            nbytes = r["nbytes"]
    rs = pick("memory")
    ratios = [r["peak"] / r["nbytes"] for r in rs]
    lines.append(
        f"| embed (numpy), {rs[0]['rows']:,} texts, 4 in flight | {nbytes / 1e6:.1f} | "
        f"{_spread([r['peak'] for r in rs], 1e-6, '{:.1f}')} | {_spread(ratios)} |"
    )
    traced_embed = [r for c, r in traced if c["kind"] == "embed"]
    if traced_embed:
        t = traced_embed[0]
        lines.append(
            f"| same, tracemalloc's peak | {t['nbytes'] / 1e6:.1f} | {t['traced'] / 1e6:.1f} | "
            f"{t['traced'] / t['nbytes']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
