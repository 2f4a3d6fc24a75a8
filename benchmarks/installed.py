"""The interpreter the benchmarks time layerbuild with: one that starts as a wheel install does.

A development install (`pip install -e`, which scripts/setup makes) hooks every interpreter of its
environment: site imports setuptools' editable finder (pathlib, re, urllib.parse and more) before any
code of layerbuild runs, about 20 ms of a process that a no-op build or `run --rm` takes 0.1 s for. A
wheel install has no such hook. So the benchmarks run layerbuild under a bare venv of this one whose
single .pth names this source tree and this environment's site-packages (layerbuild's dependencies)
as plain path entries: their .pth files, the editable hook among them, are not run.
"""

from __future__ import annotations

import hashlib
import site
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def installed_python(work: Path | None = None) -> str:
    """The python of a venv under `work` (default: the temp dir; made on first use) that imports
    layerbuild and its dependencies as an installed wheel would, without the development install's
    start-up hook."""
    tag = hashlib.sha256(f"{REPO}\0{sys.prefix}".encode()).hexdigest()[:12]
    venv = (work or Path(tempfile.gettempdir())) / f"layerbuild-bench-python-{tag}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        (purelib,) = {p for p in (venv / "lib").glob("python*/site-packages")}
        paths = [str(REPO), *site.getsitepackages()]
        (purelib / "layerbuild-bench.pth").write_text("".join(f"{p}\n" for p in paths))
    return str(python)
