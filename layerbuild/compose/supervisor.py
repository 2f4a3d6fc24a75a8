"""The per-project supervisor (there is no daemon): healthchecks and restart policies.

`up` starts it, detached, as `python -m layerbuild.compose.supervisor ROOT PROJECT` (one per project,
its pid and start time in `<root>/compose/<project>/supervisor.json`); `down` stops it first. Every
half second it looks at the project's containers: a running one with a healthcheck is checked when
its interval is due (the test run inside it through `exec`, with its timeout), and the result goes
to the container's `health.json` (docker's `State.Health`: Status, FailingStreak, Log); an exited
one is started again when its `restart:` policy says so (`always`, `unless-stopped`, `on-failure[:N]`,
never after `stop`). It ends when the project has no container left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from layerbuild.compose import services as svcs
from layerbuild.runtime.containers import Container
from layerbuild.store.layout import proc_start_time

POLL = 0.5
STOPPED = "stopped"  # a file in the container's dir: stopped by `stop`/`down`, not to be restarted
COMPOSE = "compose.json"  # a container's healthcheck (seconds) and restart policy


def state_dir(root: Path, project: str) -> Path:
    return root / "compose" / project


def running(root: Path, project: str) -> int:
    """The supervisor's pid if it runs, else 0."""
    try:
        data = json.loads((state_dir(root, project) / "supervisor.json").read_text())
    except (OSError, ValueError):
        return 0
    pid = int(data.get("pid", 0))
    return pid if pid and proc_start_time(pid) == data.get("start") else 0


def ensure(root: Path, project: str) -> None:
    """Start the project's supervisor unless it runs."""
    if running(root, project):
        return
    d = state_dir(root, project)
    d.mkdir(parents=True, exist_ok=True)
    log = os.open(d / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "layerbuild.compose.supervisor", os.fspath(root), project],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    finally:
        os.close(log)
    tmp = d / "supervisor.json.tmp"
    tmp.write_text(json.dumps({"pid": proc.pid, "start": proc_start_time(proc.pid)}))
    os.replace(tmp, d / "supervisor.json")
    proc.returncode = 0  # it outlives us; init reaps it


def stop(root: Path, project: str) -> None:
    pid = running(root, project)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while running(root, project) and time.monotonic() < deadline:
            time.sleep(0.02)
        if running(root, project):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
    (state_dir(root, project) / "supervisor.json").unlink(missing_ok=True)


def settings(c: Container) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((c.dir / COMPOSE).read_text())
        return data
    except (OSError, ValueError):
        return {}


def should_restart(policy: str, code: int | None, restarts: int) -> bool:
    """docker's rule for a container that ended by itself."""
    name, _, limit = (policy or "no").partition(":")
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        return code not in (0, None) and (not limit or restarts < int(limit))
    return False


class Supervisor:
    def __init__(self, root: Path, project: str) -> None:
        self.root, self.project = root, project
        self.next_check: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self.stopping = False

    def check(self, c: Container, hc: dict[str, Any]) -> None:
        from layerbuild.runtime.enter import exec_in

        now = time.monotonic()
        key = f"{c.id}:{c.pid}"
        if key not in self.started_at:
            self.started_at[key] = now
            svcs.write_health(c, {"Status": "starting", "FailingStreak": 0, "Log": []})
            self.next_check[key] = now + min(hc.get("start_interval", 5.0), hc["interval"]) \
                if hc.get("start_period") else now
        if now < self.next_check.get(key, 0):
            return
        test = hc["test"]
        argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
        begin = time.time()
        with open(os.devnull, "wb") as null:
            try:
                code = exec_in(c, argv, stdin=subprocess.DEVNULL, stdout=null, stderr=null, timeout=hc["timeout"])
            except Exception as exc:  # the container went away under us: judged on the next round
                print(f"healthcheck of {c.name}: {exc}", flush=True)
                return
        state = svcs.health(c) or {"Status": "starting", "FailingStreak": 0, "Log": []}
        log = [*state.get("Log", [])[-4:], {"Start": begin, "End": time.time(), "ExitCode": code}]
        in_grace = now - self.started_at[key] < hc.get("start_period", 0.0)
        if code == 0:
            state = {"Status": "healthy", "FailingStreak": 0, "Log": log}
        elif not in_grace:
            streak = state.get("FailingStreak", 0) + 1
            status = "unhealthy" if streak >= hc["retries"] else state.get("Status", "starting")
            state = {"Status": status, "FailingStreak": streak, "Log": log}
        else:
            state = {**state, "Log": log}
        svcs.write_health(c, state)
        self.next_check[key] = time.monotonic() + hc["interval"]

    def round(self) -> bool:
        """One look at every container; False once the project has none left."""
        from layerbuild.runtime.runner import start_existing
        from layerbuild.store import Store

        found = svcs.project_containers(self.root, self.project)
        if not found:
            return False
        for c in found:
            conf = settings(c)
            status = c.status()
            if status == "running":
                hc = conf.get("healthcheck")
                if hc:
                    self.check(c, hc)
            elif status == "exited" and not (c.dir / STOPPED).exists() and not self.stopping \
                    and should_restart(conf.get("restart", "no"), c.exit_code(), c.restarts):
                c.restarts += 1
                print(f"restarting {c.name} (exit code {c.exit_code()}, restart {c.restarts})", flush=True)
                try:
                    with Store.open(self.root) as store:
                        start_existing(store, c, unless=c.dir / STOPPED)
                except Exception as exc:
                    print(f"cannot restart {c.name}: {exc}", flush=True)
                    c.save()
        return True

    def run(self) -> None:
        def term(_signum: int, _frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, term)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        while not self.stopping:
            if not self.round():
                break
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:  # the helpers of containers it restarted
                    pass
            time.sleep(POLL)


def main() -> int:
    root, project = Path(sys.argv[1]), sys.argv[2]
    Supervisor(root, project).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
