"""Replica scaling: one client over N stand-in replicas; writes RESULTS-replicas.md (+ .json).

    PYTHONPATH=src .venv/bin/python benchmarks/replicas.py          # ~8 min on 2 busy cores
    PYTHONPATH=src .venv/bin/python benchmarks/replicas.py --quick  # smoke test, ~1 min

Each replica is ``fake_infinity.py --service-ms-per-256 20`` in a process of its own: one
accelerator per replica that serves one request at a time, 20 ms per 256 vectors (a GPU's
pace), so one replica serves at most 12,800 vectors/s. Every run embeds the same ``--n``
short texts (base64 on the wire, 256 per request) in a fresh interpreter (``workload.py``)
over the first N replicas, N = 1, 2, 4, 8:

- ``ours``: one ``InfinityClient(base_url=[N URLs])``, ``embed(max_concurrency=2 * N)``
  (least-busy replica choice), lists of floats;
- ``ours-numpy``: the same with ``as_numpy=True`` (when the client has it);
- ``raw``, ``raw-numpy``: the floor, a hand-written httpx loop with as many threads, chunk i
  to replica i mod N, base64 decoded into lists (``array``) or with ``np.frombuffer`` into one
  preallocated array.

Every configuration runs ``--reps`` times, round-robin. Besides the client's wall and CPU time,
each run records what every replica did (``GET /stats``: accelerator seconds, how late its
event loop woke up after a batch ended, its CPU seconds) and how busy the machine's cores
were, so that the report can say what limited each row: the replicas' service time, the
client's CPU, or the machine's cores. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import Job, Runner, fake_server  # noqa: E402

#: label -> (workload.py client, decode into one numpy array)
CLIENTS: dict[str, tuple[str, bool]] = {
    "ours": ("ours", False),
    "ours-numpy": ("ours", True),
    "raw": ("raw", False),
    "raw-numpy": ("raw", True),
}
DESCRIPTIONS = {
    "ours": "**infinity-rag** `InfinityClient(base_url=[...]).embed`, lists",
    "ours-numpy": "**infinity-rag** `embed(..., as_numpy=True)`",
    "raw": "floor: raw httpx threads, round-robin, base64 -> lists",
    "raw-numpy": "floor: raw httpx threads, round-robin, base64 -> `np.frombuffer`",
}
STATS = ("requests", "vectors", "busy_s", "queued_s", "late_s", "cpu_s", "runqueue_wait_s")


def client_has_numpy() -> bool:
    """Whether the infinity_rag that the runs import has ``embed(as_numpy=...)``."""
    probe = (
        "import inspect, infinity_rag\n"
        "print('as_numpy' in inspect.signature(infinity_rag.InfinityClient.embed).parameters)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=str(BENCH)
    )
    return out.stdout.strip() == "True"


def plan(args: argparse.Namespace, labels: list[str]) -> list[Job]:
    jobs = []
    for replicas in args.replicas:
        for label in labels:
            client, as_numpy = CLIENTS[label]
            cfg = {
                "model": f"fake-{args.dim}",
                "fmt": "base64",
                "n": args.n,
                "dim": args.dim,
                "batch": args.batch,
                "concurrency": args.per_replica * replicas,
                "words": args.words,
                "replicas": replicas,
            }
            if as_numpy:
                cfg["as_numpy"] = True
            if args.profile_dir:  # the last run of each row leaves its profile
                cfg["profile"] = str(args.profile_dir / f"{label}-N{replicas}.pstats")
            jobs.append(Job("R", label, client, cfg, args.reps))
    return jobs


# ------------------------------------------------------------------------------ measuring


def replica_stats(http: Any, urls: list[str]) -> list[dict[str, float]]:
    return [http.get(f"{url}/stats").json() for url in urls]


def prewarm(http: Any, urls: list[str], args: argparse.Namespace) -> None:
    """Every replica builds (and caches) the answers of every size the runs ask for."""
    sizes = {8, args.batch, args.n % args.batch or args.batch}
    for url in urls:
        for size in sorted(sizes):
            body = {"model": f"fake-{args.dim}", "input": ["x"] * size, "encoding_format": "base64"}
            http.post(f"{url}/embeddings", json=body).raise_for_status()


def measure(args: argparse.Namespace, jobs: list[Job], save: Any) -> None:
    import httpx

    count = max(args.replicas)
    option = ("--service-ms-per-256", str(args.service_ms_per_256))
    runner = Runner(args.timeout, None, save, python=Path(sys.executable))
    with ExitStack() as stack, httpx.Client(timeout=60) as http:
        urls = [
            stack.enter_context(fake_server(*option, python=Path(sys.executable)))[0]
            for _ in range(count)
        ]
        prewarm(http, urls, args)
        for rep in range(args.reps):
            for job in jobs:
                used = urls[: job.cfg["replicas"]]
                before = replica_stats(http, used)
                started = time.monotonic()
                result = runner.run_once(job, used)
                after = replica_stats(http, used)
                result["replicas"] = [
                    {key: b[key] - a[key] for key in STATS}
                    for a, b in zip(before, after, strict=True)
                ]
                job.runs.append(result)
                took = time.monotonic() - started
                print(f"  {rep + 1}/{args.reps} {line(job, result)}  [{took:.0f}s]", flush=True)
                save()


def line(job: Job, run: dict[str, Any]) -> str:
    what = f"{job.label:<11} N={job.cfg['replicas']}"
    if run.get("status") != "ok":
        return f"{what} {run.get('status')}: {str(run.get('error', ''))[:160]}"
    d = derived(job, run)
    return (
        f"{what} {d['rate']:8,.0f} vectors/s  util {d['util']:.2f}  client {d['client_cores']:.2f} "
        f"cores ({d['per_core'] / 1000:.0f}k/s a core)  machine {d['machine_cores']:.2f}  "
        f"late {d['late_ms']:.2f} ms"
    )


def derived(job: Job, run: dict[str, Any]) -> dict[str, float]:
    """What one run says: rates, who was busy, how late the replicas were."""
    wall, cpu, n = run["wall"], run["cpu"], job.cfg["n"]
    replicas = run["replicas"]
    requests = sum(r["requests"] for r in replicas) or 1
    server_cpu = sum(r["cpu_s"] for r in replicas)
    machine = run.get("machine_cpu")
    return {
        "rate": n / wall,
        # accelerator seconds over the call's wall time, averaged over the replicas
        "util": sum(r["busy_s"] for r in replicas) / len(replicas) / wall,
        "util_min": min(r["busy_s"] for r in replicas) / wall,
        "client_cores": cpu / wall,
        # ready to run but waiting for a core: the CPU a busy machine denied the client
        "client_waiting": run.get("runqueue_wait", 0.0) / wall,
        "per_core": n / cpu if cpu else float("nan"),
        "server_cores": server_cpu / wall,
        "server_ms_per_request": server_cpu / requests * 1000,
        "late_ms": sum(r["late_s"] for r in replicas) / requests * 1000,
        "server_waiting": sum(r.get("runqueue_wait_s", 0.0) for r in replicas) / wall,
        "machine_cores": float("nan") if machine is None else machine / wall,
        "other_cores": float("nan") if machine is None else (machine - cpu - server_cpu) / wall,
    }


def medians(job: Job) -> dict[str, float] | None:
    runs = [derived(job, run) for run in job.ok_runs()]
    if not runs:
        return None
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# ------------------------------------------------------------------------------ the report

UTIL_LIMIT = 0.9  # replicas at least this busy: they are the limit
CLIENT_LIMIT = 0.85  # client cores at least this: its CPU is (one Python process, the GIL)
MACHINE_LIMIT = 0.9  # share of the machine's cores busy at which the cores are the limit


def limit(m: dict[str, float], short: bool = False) -> str:
    """What held a row back, from its medians (``short``: a few words)."""
    cores = os.cpu_count() or 1
    if m["util"] >= UTIL_LIMIT:
        return "replicas' service time"
    used, waiting = m["client_cores"], m["client_waiting"]
    if used + waiting >= CLIENT_LIMIT:
        if short:
            return f"client CPU, {used:.2f} cores"
        if waiting >= 0.1:
            return (
                f"client CPU, its share of the cores: it got {used:.2f}, its threads waited "
                f"{waiting:.2f} s/s for one (other processes held {m['other_cores']:.2f} of "
                f"the {cores})"
            )
        return f"client CPU ({used:.2f} cores)"
    if m["machine_cores"] >= MACHINE_LIMIT * cores:
        if short:
            return f"the machine's cores, client {used:.2f}"
        return (
            f"the machine's {cores} cores (client {used:.2f}, replicas {m['server_cores']:.2f}, "
            f"other processes {m['other_cores']:.2f})"
        )
    return "none saturated: latency in the client"


def capacity(args: argparse.Namespace) -> float:
    """Vectors per second one replica serves when never idle."""
    return 256 / (args.service_ms_per_256 / 1000)


def report(jobs: list[Job], args: argparse.Namespace, header: list[str], notes: list[str]) -> str:
    labels = list(dict.fromkeys(job.label for job in jobs))
    by = {(job.label, job.cfg["replicas"]): job for job in jobs}
    stats = {key: medians(job) for key, job in by.items()}
    lines = [
        "# Replica scaling: one client over N replicas",
        "",
        *header,
        "",
        f"Each replica: `fake_infinity.py --service-ms-per-256 {args.service_ms_per_256:g}` in "
        f"its own process, one request at a time: at most {capacity(args):,.0f} vectors/s a "
        f"replica. Each run: {args.n:,} texts of ~{args.words} words, {args.batch} per request, "
        f"base64, {args.dim} dimensions, {args.per_replica} x N requests in flight "
        f"(`max_concurrency`, and as many threads for the floor); a fresh interpreter per run, "
        f"{args.reps} runs of every row, round-robin; medians.",
        "",
        "## Targets",
        "",
        *verdicts(stats, args),
        "",
        "## Every row",
        "",
        "- **vectors/s**: the call's throughput (min-max over the runs); **x one replica**: over "
        "the same client's throughput with one replica (the target: at least 0.9 x N).",
        "- **replicas busy**: the replicas' accelerator seconds over the call's wall time, "
        "averaged over the replicas (1.00: never idle; at least 0.90 is 0.9 x N replicas' pace).",
        "- **client cores**: the client process's CPU time (user + system, all threads) over wall "
        "time, + the seconds per second its threads were ready to run but waited for a core "
        "(`schedstat`, summed over threads, so several threads queued behind the GIL count "
        "several times: a sign the machine's other work denied it CPU, not a measure of how "
        "much). **vectors per client CPU s**: its cost, the rate one core of its own would give.",
        "- **replicas' CPU**: their processes' CPU per request; how late their event loops woke "
        "up after a batch ended (their own CPU would limit only if that neared the "
        f"{args.service_ms_per_256:g} ms a batch takes: the accelerator's clock runs on "
        "regardless); cores' worth they waited for a core.",
        "- **machine**: busy cores during the call (`/proc/stat`, all processes); **other**: "
        "the part that is neither the client nor the replicas (other work on this shared machine).",
        "",
        "| client | N | runs | vectors/s | x one replica | replicas busy "
        "| client cores used + waits | vectors per client CPU s "
        "| replicas' CPU: ms/request, late ms, waiting | machine (other) | limited by |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label in labels:
        base = stats.get((label, 1))
        for replicas in args.replicas:
            job, m = by[(label, replicas)], stats[(label, replicas)]
            if m is None:
                error = job.runs[0].get("error", "") if job.runs else ""
                lines.append(f"| {DESCRIPTIONS[label]} | {replicas} | 0 | failed: {error} |||||||")
                continue
            rates = [derived(job, run)["rate"] for run in job.ok_runs()]
            spread = f" ({min(rates):,.0f}-{max(rates):,.0f})" if len(rates) > 1 else ""
            scale = f"{m['rate'] / base['rate']:.2f}" if base else "-"
            lines.append(
                f"| {DESCRIPTIONS[label]} | {replicas} | {len(rates)} | {m['rate']:,.0f}{spread} "
                f"| {scale} | {m['util']:.2f} "
                f"| {m['client_cores']:.2f} + {m['client_waiting']:.2f} | {m['per_core']:,.0f} "
                f"| {m['server_ms_per_request']:.2f}, {m['late_ms']:.2f}, "
                f"{m['server_waiting']:.2f} "
                f"| {m['machine_cores']:.2f} ({m['other_cores']:.2f}) | {limit(m)} |"
            )
    lines += ["", *checks(stats, args), *notes]
    return "\n".join(lines).rstrip() + "\n"


def checks(stats: dict[tuple[str, int], dict[str, float] | None], args: Any) -> list[str]:
    """Whether the replicas' own CPU, or other work on the machine, shaped the rows."""
    rows = [m for m in stats.values() if m]
    if not rows:
        return []
    late = max(m["late_ms"] for m in rows)
    cost = max(m["server_ms_per_request"] for m in rows)
    used = max(m["server_cores"] for m in rows)
    share = late / args.service_ms_per_256
    verdict = "limited no row" if share < 0.5 else "may have limited the rows that were late"
    out = [
        f"- **The replicas' own CPU {verdict}**: their event loops woke up at most {late:.2f} ms "
        f"late after a batch ended (the worst row's mean: {share:.0%} of a "
        f"{args.service_ms_per_256:g} ms batch; it would limit only as it neared a whole "
        f"batch), spent at most {cost:.2f} ms of CPU per request and {used:.2f} cores in all. "
        "A late wake-up delays that answer, not the accelerator: the request queued behind it "
        "starts on time.",
    ]
    other = statistics.median(m["other_cores"] for m in rows)
    if other > 0.5:
        out.append(
            f"- **Busy machine**: other processes held {other:.2f} of the "
            f"{os.cpu_count()} cores during the median row, so the client got only part of a "
            "core and its throughput is its share, not its limit; the vectors per client CPU "
            "second are the figure to compare. Re-run on a quiet machine to see the "
            "one-core ceiling."
        )
    return out


def verdicts(stats: dict[tuple[str, int], dict[str, float] | None], args: Any) -> list[str]:
    """Per path of ours: the scaling target row by row, and the client's CPU limit."""
    out = []
    for label, floor in (("ours", "raw"), ("ours-numpy", "raw-numpy")):
        rows = {n: stats.get((label, n)) for n in args.replicas}
        if not any(rows.values()):
            continue
        parts = []
        base = rows.get(1)
        for replicas, m in rows.items():
            if m is None:
                parts.append(f"N={replicas}: failed")
                continue
            scale = f"{m['rate'] / base['rate']:.2f}x, " if base else ""
            verdict = "**met**" if m["util"] >= UTIL_LIMIT else limit(m, short=True)
            parts.append(f"N={replicas} {scale}replicas {m['util']:.2f} busy ({verdict})")
        per_core = [m["per_core"] for m in rows.values() if m]
        raw = [m["per_core"] for n in args.replicas if (m := stats.get((floor, n)))]
        cost = statistics.median(per_core)
        versus = (
            f"; the {floor} floor {statistics.median(raw):,.0f} (ours "
            f"{cost / statistics.median(raw):.2f}x its rate)"
            if raw
            else ""
        )
        out += [
            f"- **{label}**, throughput over its own with one replica: " + "; ".join(parts) + ".",
            f"  - Client CPU limit: **{cost:,.0f} vectors/s per client core** (median over its "
            f"rows, {min(per_core):,.0f}-{max(per_core):,.0f}){versus}: one core of its own "
            f"keeps {cost / capacity(args):.1f} replicas of this pace busy.",
        ]
    return out


# ------------------------------------------------------------------------------ main


def header(started: dt.datetime, load: float) -> list[str]:
    versions = subprocess.run(
        [sys.executable, "-c", "import httpx, numpy, infinity_rag as rag, sys; print(sys"
         ".version.split()[0], httpx.__version__, numpy.__version__, rag.__file__)"],
        capture_output=True, text=True, cwd=str(BENCH),  # where the runs start
    ).stdout.split()  # fmt: skip
    rev = subprocess.run(
        ["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    python, httpx_v, numpy_v, where = (versions + ["?"] * 4)[:4]
    return [
        f"- **Date**: {started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; 1-min load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end (a shared machine)",
        f"- **Python** {python}, httpx {httpx_v}, numpy {numpy_v}; infinity_rag from `{where}` "
        f"(benchmarks/ at commit {rev})",
        "- **This run**: `" + " ".join(["benchmarks/replicas.py", *sys.argv[1:]]) + "`",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 2; 20,000 texts; one run")
    parser.add_argument("--replicas", default="1,2,4,8", help="the values of N (default 1,2,4,8)")
    parser.add_argument("--n", type=int, default=100_000, help="texts per run (default 100,000)")
    parser.add_argument("--reps", type=int, default=3, help="runs of every row (default 3)")
    parser.add_argument("--service-ms-per-256", type=float, default=20.0)
    parser.add_argument("--per-replica", type=int, default=2, help="in flight per replica (2)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--words", type=int, default=8, help="words per text (default 8)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="labels to run")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=None, help="the Markdown report's path")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="cProfile (CPU time, all threads) each row's last run into DIR/LABEL-NN.pstats",
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite from the .json")
    args = parser.parse_args()
    # The runs start in benchmarks/: a relative PYTHONPATH (PYTHONPATH=src) keeps its meaning.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in paths if p)
    args.replicas = [int(x) for x in args.replicas.split(",")]
    if args.quick:
        args.replicas, args.n, args.reps = [1, 2], 20_000, 1
    out_md = args.out or BENCH / (
        "RESULTS-replicas-quick.md" if args.quick else "RESULTS-replicas.md"
    )
    out_json = out_md.with_suffix(".json")
    if args.report_only:
        saved = json.loads(out_json.read_text())
        vars(args).update(saved["settings"])
        jobs = [Job(**entry) for entry in saved["jobs"]]
        out_md.write_text(report(jobs, args, saved["header"], saved["notes"]))
        print(f"rewrote {out_md} from {out_json}")
        return 0

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwind the servers' context managers: they stop

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.profile_dir:
        args.profile_dir = args.profile_dir.resolve()
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    labels = [label for label in args.clients.split(",") if label]
    notes: list[str] = []
    if "ours-numpy" in labels and not client_has_numpy():
        labels.remove("ours-numpy")
        notes.append(
            "- `ours-numpy` not run: the infinity_rag imported has no `embed(as_numpy=...)` yet."
        )
    jobs = plan(args, labels)
    started, load, t0 = dt.datetime.now(dt.UTC), os.getloadavg()[0], time.monotonic()
    settings = {key: vars(args)[key] for key in
                ("replicas", "n", "reps", "service_ms_per_256", "per_replica", "batch", "dim",
                 "words")}  # fmt: skip
    head: list[str] = []

    def save() -> None:
        saved = {"settings": settings, "header": head, "notes": notes,
                 "jobs": [asdict(job) for job in jobs]}  # fmt: skip
        out_json.write_text(json.dumps(saved, indent=1))

    print(f"{len(jobs)} configurations x {args.reps} runs; load {load:.2f}", flush=True)
    try:
        measure(args, jobs, save)
    finally:
        notes.append(f"- The whole run took {(time.monotonic() - t0) / 60:.1f} min.")
        head[:] = header(started, load)
        save()
        out_md.write_text(report(jobs, args, head, notes))
        print(f"wrote {out_md} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
