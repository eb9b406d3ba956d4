"""What OpenTelemetry costs the client: CPU per vector in three configurations, side by side.

    python benchmarks/otel_overhead.py [--quick] [--reps N] [--out FILE.md]

Scenario A's set-up (``run.py``): ``fake_infinity.py`` answers in Infinity's exact format at
near-zero compute, so the client's own CPU is what is measured; each measurement is a fresh
interpreter (``python -c``) that builds an ``InfinityClient``, warms it up with one call, then
embeds N texts and reports the process's CPU seconds (``time.process_time``: every thread,
the sync driver's event loop included) for those N. The three configurations run
interleaved, repetition by repetition, so that a busy machine weighs on all three alike:

- ``none``: ``opentelemetry`` cannot be imported (``sys.modules['opentelemetry'] = None``
  before anything else: what a user without the ``[otel]`` extra has);
- ``api``: ``opentelemetry-api`` importable, no SDK configured (the API's no-op tracer);
- ``sdk``: the SDK configured as the global providers: a ``TracerProvider`` with a
  ``BatchSpanProcessor`` to an exporter that drops the spans (counted), and a
  ``MeterProvider`` with an in-memory reader (collected once at the end).

Ratios are medians of ``api`` and ``sdk`` over ``none`` (issue 26's targets: ``api`` within
1%, ``sdk`` within 5%). The ``spans`` column says how many spans the ``sdk`` runs exported: 0
means the client does not call its observer yet (before the request engine of issue 24 wires
``_otel.make_observer`` in), and the script then measures import/no-op costs only; it runs
either way.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

CONFIGS = ("none", "api", "sdk")

WORKLOAD = r"""
import json, sys, time
CONFIG, URL, MODEL, FMT, N, BATCH = sys.argv[1:7]
N = int(N)
if CONFIG == "none":
    sys.modules["opentelemetry"] = None  # as if the package were not installed
exported = [0]
if CONFIG == "sdk":
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            exported[0] += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from infinity_rag import InfinityClient

texts = [f"passage {i} about the subject number {i % 97}" for i in range(N)]
options = {"model": MODEL, "encoding_format": FMT}
if int(BATCH):
    options["batch_size"] = int(BATCH)
with InfinityClient(base_url=URL, timeout=600) as client:
    client.embed(texts[:300], **options)  # warm: connections, the model's vector shape
    started = time.process_time()
    wall = time.perf_counter()
    result = client.embed(texts, **options)
    cpu = time.process_time() - started
    wall = time.perf_counter() - wall
assert len(result) == N
otel_loaded = "opentelemetry.trace" in sys.modules
if CONFIG == "sdk":
    provider.force_flush()
    reader.get_metrics_data()
    provider.shutdown()
print(json.dumps({"cpu": cpu, "wall": wall, "spans": exported[0], "otel_loaded": otel_loaded}))
"""


@contextmanager
def fake_server() -> Iterator[str]:
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
            raise RuntimeError(f"fake server did not start: {line}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(config: str, url: str, cell: dict[str, object]) -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    args = [str(cell[k]) for k in ("model", "fmt", "n", "batch")]
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, config, url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{config} run failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts and repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the table there too")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    n = 5_000 if args.quick else 20_000
    cells: list[
        dict[str, Any]
    ] = [  # scenario A's base64 cell, its float cell, and a small-batch one (many spans)
        {"model": "fake-384", "fmt": "base64", "n": n, "batch": 0},
        {"model": "fake-384", "fmt": "float", "n": n // 4, "batch": 0},
        {"model": "fake-384", "fmt": "base64", "n": n // 4, "batch": 16},
    ]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with fake_server() as url:
        for rep in range(reps):
            for index, cell in enumerate(cells):
                order = CONFIGS if rep % 2 == 0 else tuple(reversed(CONFIGS))
                for config in order:
                    found = measure(config, url, cell)
                    runs.setdefault((index, config), []).append(found)
            print(f"repetition {rep + 1}/{reps} done", flush=True)

    lines = [
        "# OpenTelemetry overhead (client CPU per vector)",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, {reps} interleaved repetitions, medians; "
        "`benchmarks/otel_overhead.py`.",
        "",
        "| cell | none µs/vector | api µs/vector | sdk µs/vector | api/none | sdk/none "
        "| spans per sdk run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for index, cell in enumerate(cells):
        per_vector = {
            config: statistics.median(float(r["cpu"]) for r in runs[(index, config)])
            / int(cell["n"])
            * 1e6
            for config in CONFIGS
        }
        spans = statistics.median(int(r["spans"]) for r in runs[(index, "sdk")])
        loaded = {c: any(r["otel_loaded"] for r in runs[(index, c)]) for c in CONFIGS}
        assert not loaded["none"], "the 'none' runs imported opentelemetry"
        batch = cell["batch"] or "default"
        name = f"{cell['fmt']} {cell['model']} n={cell['n']:,} batch={batch}"
        lines.append(
            f"| {name} | {per_vector['none']:.2f} | {per_vector['api']:.2f} | "
            f"{per_vector['sdk']:.2f} | {per_vector['api'] / per_vector['none']:.3f} | "
            f"{per_vector['sdk'] / per_vector['none']:.3f} | {spans:.0f} |"
        )
    if all(statistics.median(int(r["spans"]) for r in runs[(i, "sdk")]) == 0
           for i in range(len(cells))):  # fmt: skip
        lines += ["", "No span was exported: the client does not call its observer yet."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
