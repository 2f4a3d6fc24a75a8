"""The interpreter the benchmarks time layerbuild with: one that starts as a wheel install does.

A development install (`pip install -e`, which scripts/setup makes) hooks every interpreter of its
environment: site imports setuptools' editable finder (pathlib, re, urllib.parse and more) before any
code of layerbuild runs, about 20 ms of a process that a no-op build or `run --rm` takes 0.1 s for. A
wheel install has no such hook. So the benchmarks run layerbuild under a bare venv of this one whose
single .pth names this source tree and this environment's site-packages (layerbuild's dependencies)
as plain path entries: their .pth files, the editable hook among them, are not run.

`daemon_of_its_own` runs layerbuild as a user does, through the daemon its first command starts, in
a runtime directory of the benchmark's own (never the caller's daemon), stopped at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def daemon_of_its_own(python: str, base: Path, env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The environment (the caller's, with `env`) of a user whose first command started a daemon (in
    `base`/xdg, made here), for `python -m layerbuild`; the daemon answers before this yields
    (`start_daemon`) and is stopped afterwards. Its log is `daemon_log(env)`."""
    runtime = base / "xdg"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}, **(env or {})}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    layerbuild = [python, "-m", "layerbuild"]
    start_daemon(layerbuild, env, base / "unused")
    try:
        yield env
    finally:
        subprocess.run([*layerbuild, "daemon", "stop"], capture_output=True, env=env)


def start_daemon(layerbuild: list[str], env: dict[str, str], unused_root: Path) -> None:
    """Start the daemon as a user's first command does (`layerbuild` is the command, `env` names
    its runtime directory) and return once it answers, so no timing shares the machine with its
    loading."""
    subprocess.run([*layerbuild, "--root", str(unused_root), "images"], check=True, capture_output=True, env=env)
    deadline = time.monotonic() + 60
    while subprocess.run([*layerbuild, "daemon", "status"], capture_output=True, env=env).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("no daemon answered after the first command")
        time.sleep(0.1)


def daemon_log(env: dict[str, str]) -> Path:
    """The log of the daemon `daemon_of_its_own` started for `env`."""
    (log,) = Path(env["XDG_RUNTIME_DIR"], "layerbuild").glob("*.log")
    return log
