"""Run the notebooks: from their sources (``notebooks/NN_name.py``) to ``.ipynb`` with outputs.

Each notebook is a jupytext "percent" script, ``notebooks/NN_name.py`` (edit it in any editor,
or open the paired ``.ipynb`` in Jupyter with jupytext installed), paired with
``notebooks/NN_name.ipynb``, committed with the outputs of a real run so that a reader sees
results without running anything.

    .venv/bin/python scripts/build_notebooks.py              # run every notebook, save outputs
    .venv/bin/python scripts/build_notebooks.py 03           # only names containing "03"
    .venv/bin/python scripts/build_notebooks.py --no-execute # sync .ipynb inputs, keep outputs
    .venv/bin/python scripts/build_notebooks.py --check      # the test command's check

A run executes the ``.py`` in a fresh kernel (nbclient, the notebook's folder as working
directory, so a notebook imports ``infinity_rag`` and helpers next to it, such as
``notebooks/rankings.py``), checks the outputs (no error, no API key, no local path) and writes
the ``.ipynb``. ``--check`` (``bash scripts/run.sh test``) writes nothing: each ``.ipynb``
must hold the inputs of its ``.py`` and clean outputs, and each ``.py`` must run without error.

Notebooks run in the kernel named ``python3``, which must be this interpreter (the dev venv: it
has ``infinity_rag`` and the frameworks). Each starts a local Infinity server (or uses the one
``INFINITY_API_BASE`` names) and stops it in its last cell. A notebook that runs longer than
``--timeout`` seconds (also the limit per cell) fails, and its kernel is shut down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupytext.combine import combine_inputs_with_outputs
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from infinity_rag.testing import DEFAULT_API_KEY

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
KERNEL = "python3"
TIMEOUT = 1800  # seconds per notebook, and per cell (a busy machine)


def sources(names: list[str]) -> list[Path]:
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not names or any(n in p.name for n in names)]


def read_source(path: Path) -> nbformat.NotebookNode:
    """The notebook a ``.py`` describes, with stable cell ids (a rebuild changes what changed)."""
    nb = jupytext.read(path)
    nb.metadata.setdefault("kernelspec", {"name": KERNEL, "display_name": "Python 3"})
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    return nb


def inputs(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def check_kernel() -> None:
    """The ``python3`` kernel must be this interpreter: nbclient uses the notebook's kernel."""
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


def execute(path: Path, nb: nbformat.NotebookNode, timeout: int) -> float:
    """Run ``nb`` in place; on failure save the partial run and exit with the error."""
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},  # the working directory
        record_timing=False,
    )
    started = time.perf_counter()
    try:
        # The whole notebook's guard: on expiry the run is cancelled and the kernel shut down
        # (its Infinity server dies with it).
        asyncio.run(asyncio.wait_for(client.async_execute(), timeout))
    except (CellExecutionError, CellTimeoutError, DeadKernelError, TimeoutError) as error:
        failed = Path(tempfile.mkdtemp(prefix="notebook-failed-")) / path.with_suffix(".ipynb").name
        nbformat.write(nb, failed)
        # (the cancelled run surfaces as the kernel's death: nbclient shut it down)
        late = time.perf_counter() - started >= timeout
        what = f"still running after {timeout} s: stopped" if late else error
        raise SystemExit(f"{path.name} failed (partial run saved as {failed}):\n{what}") from None
    return time.perf_counter() - started


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


def local_folders() -> list[str]:
    """The folders no output may show (each with a trailing slash), most specific first.

    The repository often lies inside one of the others (a clone under the home folder or the
    temporary folder): a printed path is then named by the most specific folder holding it.
    """
    folders = {tempfile.gettempdir(), str(Path.home()), str(REPO)}
    return sorted((p + "/" for p in folders if p not in ("", "/")), key=len, reverse=True)


_PATH_END = re.compile(r"[\s\"'\\]")


def local_path_places(text: str) -> list[tuple[int, str]]:
    """Where ``text`` shows a local path: ``(offset, folder)`` once per path, ``folder`` the
    most specific of :func:`local_folders` (without its slash) that holds it."""
    named: list[tuple[int, int, str]] = []  # (start, end, folder) of each path found
    for folder in local_folders():  # most specific first: it names the place
        at = text.find(folder)
        while at >= 0:
            if not any(start <= at < end for start, end, _ in named):
                end = _PATH_END.search(text, at)
                named.append((at, end.start() if end else len(text), folder[:-1]))
            at = text.find(folder, at + 1)
    return sorted((start, folder) for start, _, folder in named)


def output_problems(nb: nbformat.NotebookNode) -> list[str]:
    """No error, no secret and no local path may reach a committed notebook."""
    forbidden = {DEFAULT_API_KEY: "the local server's API key"}
    if os.environ.get("INFINITY_API_KEY"):
        forbidden[os.environ["INFINITY_API_KEY"]] = "INFINITY_API_KEY"
    keys = list(forbidden)
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
            for at, folder in local_path_places(text):
                problems.append(f"cell {i}: output contains a local path ({folder})")
                # With what printed it, to find the cause (never with a key).
                shown = text[max(at - 160, 0) : at + 80]
                for key in keys:
                    shown = shown.replace(key, "***")
                print(f"cell {i}: {shown!r}", file=sys.stderr)
    return sorted(set(problems))


def build(path: Path, timeout: int) -> None:
    nb = read_source(path)
    print(f"running {path.relative_to(REPO)} ...", flush=True)
    seconds = execute(path, nb, timeout)
    tidy_outputs(nb)
    if problems := output_problems(nb):
        raise SystemExit(f"{path.name}: " + "; ".join(problems))
    write(path, nb)
    print(f"  {seconds:.0f}s", flush=True)


def sync(path: Path) -> None:
    """Write the ``.py``'s inputs into the ``.ipynb``, keeping the outputs of unchanged cells."""
    nb = read_source(path)
    target = path.with_suffix(".ipynb")
    if target.exists():
        nb = combine_inputs_with_outputs(nb, nbformat.read(target, as_version=4), fmt="py:percent")
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:02d}"
    write(path, nb)


def write(path: Path, nb: nbformat.NotebookNode) -> None:
    target = path.with_suffix(".ipynb")
    nb.metadata.pop("execution", None)  # nbmake's per-cell timeout, from older files
    nb.metadata.get("jupytext", {}).pop("text_representation", None)  # the .py's, not ours
    nbformat.validate(nb)
    nbformat.write(nb, target)
    print(f"wrote {target.relative_to(REPO)}", flush=True)


def check(path: Path, timeout: int) -> None:
    """The committed ``.ipynb`` matches its ``.py`` and is clean; the ``.py`` runs cleanly."""
    name = path.relative_to(REPO)
    paired = path.with_suffix(".ipynb")
    if not paired.exists():
        raise SystemExit(f"{name}: no {paired.name}; run scripts/build_notebooks.py {path.stem}")
    committed = nbformat.read(paired, as_version=4)
    source = read_source(path)
    if inputs(committed) != inputs(source):
        raise SystemExit(
            f"{paired.name} does not hold the cells of {path.name}: run "
            f"`.venv/bin/python scripts/build_notebooks.py {path.stem}` (or --no-execute)"
        )
    if problems := output_problems(committed):
        raise SystemExit(f"{paired.name} (committed): " + "; ".join(problems))
    print(f"running {name} ...", flush=True)
    seconds = execute(path, source, timeout)
    if problems := output_problems(source):
        raise SystemExit(f"{name}: " + "; ".join(problems))
    print(f"  ok in {seconds:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only the notebooks whose file name has one")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--no-execute", action="store_true", help="sync the .ipynb inputs only")
    mode.add_argument("--check", action="store_true", help="check and run; write nothing")
    parser.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per notebook")
    args = parser.parse_args(argv)

    paths = sources(args.names)
    if not paths:
        parser.error(f"no notebook source notebooks/NN_*.py matches {args.names}")
    if not args.no_execute:
        check_kernel()
    for path in paths:
        if args.no_execute:
            sync(path)
        elif args.check:
            check(path, args.timeout)
        else:
            build(path, args.timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
