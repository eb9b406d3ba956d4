"""The as_numpy overloads give each mode its return type under mypy --strict."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent / "typing"
ROOT = HERE.parent.parent


def mypy(*files: Path) -> subprocess.CompletedProcess[str]:
    """mypy on ``files`` against this tree's package (MYPYPATH before the installed one)."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", os.devnull, *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        check=False,
    )


def test_overloads_give_each_mode_its_type() -> None:
    good, bad = HERE / "overloads.py", HERE / "errors.py"
    result = mypy(good, bad)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if "overloads.py" in line], result.stdout
    # Each line marked `# E` in errors.py is refused, and nothing else.
    marked = {n for n, line in enumerate(bad.read_text().splitlines(), 1) if line.endswith("# E")}
    refused = {int(m.group(1)) for m in (re.search(r"errors\.py:(\d+):", e) for e in errors) if m}
    assert refused == marked, result.stdout
