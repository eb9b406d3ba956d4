"""Build the sdist and the wheel, check what they carry, and test the wheel as users install it.

    python scripts/check_dist.py [--extras langchain,llama-index,haystack,otel,all] [--keep DIR]

1. ``python -m build``: the sdist, then the wheel built from the unpacked sdist (so a file
   the sdist lacks breaks the wheel).
2. The sdist holds what the wheel, the tests and the docs need and nothing stray (venvs,
   caches, bytecode, build output, benchmarks, notebooks); the wheel holds the package with
   ``py.typed``, the licence in its metadata, and nothing else; both carry the version of
   ``src/infinity_rag/_version.py``, and the long description (README.md) has no relative
   link, which would break on PyPI.
3. Per extra, a fresh virtualenv (no system site-packages, no PYTHONPATH): ``pip install
   "<wheel>[extra]"`` plus pytest, resolved by pip from the wheel's own metadata, then
   ``unit_tests/test_imports.py`` and ``unit_tests/test_version.py`` against the installed
   wheel, and ``scripts/wheel_smoke.py``: a real embed and rerank against a local Infinity
   server (``infinity_rag.testing.LocalInfinityServer``, started while the venvs install;
   ``INFINITY_TEST_URL`` / ``INFINITY_TEST_API_KEY`` name one that is already running instead).

pip on these machines keeps no HTTP cache, so the dependencies are downloaded once into a
wheelhouse (``${INFINITY_RAG_HOME:-~/.cache/infinity-rag}/wheelhouse/<key>``, the key a hash
of the wheel's requirements, the test requirements and the interpreter) and each venv installs
from it with ``--no-index``: the wheel and its dependency resolution are tested for real, and a
change of requirements in pyproject.toml downloads them again. Prints how long each step took.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from infinity_rag.testing import LocalInfinityServer

ROOT = Path(__file__).resolve().parents[1]

EXTRAS = ("langchain", "llama-index", "haystack", "otel", "all")
# The pytest plugins pyproject.toml's [tool.pytest.ini_options] configures (asyncio_mode,
# timeout): without them pytest warns about unknown options.
TEST_REQUIREMENTS = ("pytest>=8", "pytest-asyncio>=1.0", "pytest-timeout>=2.3")
TESTS = ("unit_tests/test_imports.py", "unit_tests/test_version.py")

SDIST_REQUIRED = (
    "PKG-INFO",
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "mkdocs.yml",
    "src/infinity_rag/__init__.py",
    "src/infinity_rag/py.typed",
    "unit_tests/test_imports.py",
    "integration_tests/conftest.py",
    "scripts/local_infinity.py",
    "scripts/setup_server.sh",
    "src/infinity_rag/testing/__init__.py",
)
#: Patterns (fnmatch, on each path part) that must not appear in either archive.
STRAY = (
    ".venv",
    "venv",
    ".env",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".ipynb_checkpoints",
    ".cache",
    ".git",
    "dist",
    "build",
    "site",
    "*.egg-info",
    "benchmarks",
    "notebooks",
    "qdrant*",
)


def source_version() -> str:
    tree = ast.parse((ROOT / "src/infinity_rag/_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise SystemExit("src/infinity_rag/_version.py has no __version__")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without what would let a venv see the source tree or the dev venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["HAYSTACK_TELEMETRY_ENABLED"] = "False"  # Haystack phones home from Pipeline.run
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(
            f"FAILED ({result.returncode}): {' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


@contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
    print(f"[dist] {name}: {timings[name]:.1f} s", flush=True)


def stray(names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if any(fnmatch.fnmatch(part, pattern) for part in name.split("/") for pattern in STRAY)
    ]


def check_sdist(path: Path, version: str) -> None:
    prefix = f"infinity_rag-{version}/"
    with tarfile.open(path) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    outside = [n for n in names if not n.startswith(prefix)]
    if outside:
        raise SystemExit(f"FAILED: sdist members outside {prefix}: {outside}")
    relative = [n.removeprefix(prefix) for n in names]
    missing = [n for n in SDIST_REQUIRED if n not in relative]
    if missing:
        raise SystemExit(f"FAILED: the sdist lacks {missing}")
    if found := stray(relative):
        raise SystemExit(f"FAILED: stray files in the sdist: {found}")
    print(f"ok: sdist {path.name}: {len(names)} files, nothing stray")


def check_wheel(path: Path, version: str) -> None:
    dist_info = f"infinity_rag-{version}.dist-info/"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata = archive.read(f"{dist_info}METADATA").decode()
    required = (
        "infinity_rag/__init__.py",
        "infinity_rag/py.typed",
        "infinity_rag/langchain/__init__.py",
        "infinity_rag/llama_index/__init__.py",
        "infinity_rag/haystack/__init__.py",
        "infinity_rag/testing/__init__.py",
        "infinity_rag/testing/_infinity.py",
        "infinity_rag/testing/_postgres.py",
        "infinity_rag/testing/_corpus.py",
        f"{dist_info}licenses/LICENSE",
    )
    missing = [n for n in required if n not in names]
    if missing:
        raise SystemExit(f"FAILED: the wheel lacks {missing}")
    foreign = [n for n in names if not n.startswith(("infinity_rag/", dist_info))]
    if foreign or (found := stray(names)):
        raise SystemExit(f"FAILED: the wheel holds more than the package: {foreign or found}")
    headers = dict(
        line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line
    )
    if headers.get("Version") != version or headers.get("License-Expression") != "MIT":
        raise SystemExit(
            f"FAILED: wheel metadata Version={headers.get('Version')!r} "
            f"License-Expression={headers.get('License-Expression')!r}"
        )
    description = metadata.split("\n\n", 1)[1] if "\n\n" in metadata else ""
    if "## The two commands" not in description:
        raise SystemExit("FAILED: the wheel's long description is not README.md")
    if relative := re.findall(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s]+)\)", description):
        raise SystemExit(f"FAILED: relative links in the long description (PyPI): {relative}")
    print(f"ok: wheel {path.name}: {len(names)} files, py.typed, LICENSE, version {version}")


def wheelhouse(wheel: Path) -> Path:
    """A folder with every distribution the extras (``all`` leaves ``otel`` out) and the tests
    need, downloaded once."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(
            archive.read(n).decode()
            for n in archive.namelist()
            if n.endswith(".dist-info/METADATA")
        )
    requirements = sorted(
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    )
    key_text = "\n".join([*requirements, *EXTRAS, *TEST_REQUIREMENTS, sys.version, sys.platform])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    home = Path(os.environ.get("INFINITY_RAG_HOME", Path.home() / ".cache" / "infinity-rag"))
    parent = home / "wheelhouse"
    folder = parent / key
    if not folder.is_dir():
        print(f"[dist] downloading the wheels' dependencies into {folder}", flush=True)
        partial = parent / f".{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(partial)]
        run([*pip, f"{wheel}[{','.join(EXTRAS)}]", *TEST_REQUIREMENTS])
        for own in partial.glob("infinity_rag-*"):
            own.unlink()  # the wheel under test is always the one just built
        for old in parent.iterdir():  # one wheelhouse at a time: the current requirements
            if old.is_dir() and old != partial:
                shutil.rmtree(old)
        partial.rename(folder)
    return folder


def install(venv: Path, wheel: Path, extra: str, wheels: Path) -> Path:
    """A fresh venv with ``wheel[extra]`` and pytest (from ``wheels``); returns its python."""
    # No pip inside: the dev venv's pip installs into it (``--python``), which saves seconds.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    # --no-compile: byte-compiling every installed module is most of an install's time; the
    # modules the tests import are compiled when imported.
    offline = ["--no-index", "--find-links", str(wheels), "--no-compile"]
    run([*pip, "install", "--quiet", *offline, f"{wheel}[{extra}]", *TEST_REQUIREMENTS])
    run([*pip, "check"])
    return python


def test_install(
    python: Path, extra: str, version: str, url: str, api_key: str | None
) -> list[str]:
    """The imports and version tests, then the smoke script, from the venv; their report."""
    # The tests run from a folder outside the repository, so only the wheel can be imported
    # (the unit_tests package itself is found through the test files' paths).
    env = clean_env(INFINITY_API_BASE=url, **({"INFINITY_API_KEY": api_key} if api_key else {}))
    with tempfile.TemporaryDirectory(prefix="infinity-rag-wheel-tests-") as cwd:
        tests = [str(ROOT / t) for t in TESTS]
        out = run(
            [str(python), "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider",
             f"--rootdir={ROOT}"],
            cwd=Path(cwd),
            env=env,
        )  # fmt: skip
        report = [f"pytest {' '.join(TESTS)}: {out.strip().splitlines()[-1]}"]
        out = run([str(python), str(ROOT / "scripts/wheel_smoke.py"), extra, version], env=env)
        return report + out.strip().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default=",".join(EXTRAS))
    parser.add_argument("--keep", type=Path, help="build and install here, and keep it")
    args = parser.parse_args()
    extras = [e for e in args.extras.split(",") if e]
    if unknown := set(extras) - set(EXTRAS):
        raise SystemExit(f"unknown extras {unknown}; choose from {EXTRAS}")

    work = args.keep or Path(tempfile.mkdtemp(prefix="infinity-rag-dist-"))
    timings: dict[str, float] = {}
    version = source_version()
    try:
        with step("build sdist + wheel", timings):
            out_dir = work / "dist"
            shutil.rmtree(out_dir, ignore_errors=True)
            run([sys.executable, "-m", "build", "--outdir", str(out_dir), str(ROOT)])
            (sdist,) = out_dir.glob("*.tar.gz")
            (wheel,) = out_dir.glob("*.whl")
        check_sdist(sdist, version)
        check_wheel(wheel, version)

        with step("wheelhouse (downloads only when the requirements change)", timings):
            wheels = wheelhouse(wheel)

        server: LocalInfinityServer | None = None
        with ThreadPoolExecutor(len(extras)) as pool:
            started = time.perf_counter()
            installs: dict[str, Future[Path]] = {}
            for extra in extras:
                venv = work / f"venv-{extra}"
                shutil.rmtree(venv, ignore_errors=True)
                installs[extra] = pool.submit(install, venv, wheel, extra, wheels)
            url = os.environ.get("INFINITY_TEST_URL")
            api_key = os.environ.get("INFINITY_TEST_API_KEY")
            try:
                if not url:  # start the server while the venvs install
                    server = LocalInfinityServer(["minilm", "reranker"]).start()
                    url, api_key = server.url, server.api_key
                pythons = {extra: future.result() for extra, future in installs.items()}
                name = "venvs + installs (in parallel; the server starts meanwhile)"
                timings[name] = time.perf_counter() - started
                print(f"[dist] {name}: {timings[name]:.1f} s", flush=True)
                # One after the other: on 2 cores, in parallel they take longer (imports are
                # CPU-bound).
                for extra, python in pythons.items():
                    with step(f"tests from the [{extra}] install", timings):
                        report = test_install(python, extra, version, url, api_key)
                        print("\n".join(f"[{extra}] {line}" for line in report))
            finally:
                if server is not None:
                    with step("server stop", timings):
                        server.stop()
    finally:
        if args.keep is None:
            with step("clean-up", timings), ThreadPoolExecutor(4) as pool:
                # One thread per venv: deleting ~40,000 files is I/O-bound.
                list(pool.map(shutil.rmtree, [p for p in work.iterdir() if p.is_dir()]))
                shutil.rmtree(work, ignore_errors=True)
        print(f"[dist] total: {sum(timings.values()):.1f} s")


if __name__ == "__main__":
    main()
