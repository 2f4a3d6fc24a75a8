"""Running a project: `up`, `down`, `stop`, `start`, `restart`, `ps`, `run`, `exec`, in docker compose's ways.

Services start in the order of their `depends_on`, each once what it depends on meets its condition
(`service_started`, `service_healthy` through the supervisor's healthchecks, or
`service_completed_successfully`). Everything is found again through the containers' labels, the
networks' and the volumes' names under the store root, so `ps` and `down` work from another shell.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from layerbuild.compose import mounts, supervisor
from layerbuild.compose import services as svcs
from layerbuild.compose.model import Project
from layerbuild.errors import ComposeFileError, LayerbuildError, UsageError
from layerbuild.runtime import bridge, containers, runner, sharedns
from layerbuild.runtime.containers import Container, command_text
from layerbuild.store import Store

Say = Callable[[str], None]
DEFAULT_TIMEOUT = 10.0


class ServiceError(LayerbuildError):
    """A service failed to start or to meet its dependents' condition (exit 1)."""


def order(project: Project, selected: Sequence[str] = ()) -> list[str]:
    """The selected services (all if none) and what they depend on, dependencies first."""
    for name in selected:
        if name not in project.services:
            raise UsageError(f"no such service: {name}", hint=f"the project has {', '.join(project.service_names())}")
    out: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in out:
            return
        if name in visiting:
            raise ComposeFileError(f"dependency cycle detected at service {name}")
        visiting.add(name)
        for dep in sorted(project.services[name].get("depends_on") or {}):
            if dep in project.services:
                visit(dep)
        visiting.discard(name)
        out.append(name)

    for name in selected or project.service_names():
        visit(name)
    return out


def _healthcheck(svc: dict[str, Any]) -> dict[str, Any] | None:
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable") or not hc.get("test") or hc["test"][0] == "NONE":
        return None
    test = hc["test"]
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    return {"test": test, "interval": svcs.duration(hc.get("interval"), 30.0),
            "timeout": svcs.duration(hc.get("timeout"), 30.0), "retries": int(hc.get("retries", 3)),
            "start_period": svcs.duration(hc.get("start_period"), 0.0),
            "start_interval": svcs.duration(hc.get("start_interval"), 5.0)}


def _find(root: Path, project: Project, service: str, number: int = 1) -> Container | None:
    name = svcs.container_name(project, service, number)
    for c in svcs.project_containers(root, project.name):
        if c.name == name:
            return c
    return None


def _replicas(root: Path, project: Project, service: str) -> list[Container]:
    """The service's containers, by their number."""
    found = [c for c in svcs.project_containers(root, project.name) if svcs.service_of(c) == service]
    return sorted(found, key=svcs.number_of)


def _create(store: Store, project: Project, service: str, number: int = 1) -> Container:
    labels = {svcs.PROJECT: project.name, svcs.SERVICE: service, svcs.NUMBER: str(number), svcs.ONEOFF: "False",
              svcs.HASH: svcs.config_hash(project, service)}
    opts = svcs.run_options(store.root, project, service, name=svcs.container_name(project, service, number),
                            labels=labels)
    c, spec, lowers = runner.create(store, opts)
    svc = project.services[service]
    (c.dir / supervisor.COMPOSE).write_text(json.dumps({
        "healthcheck": _healthcheck(svc), "restart": str(svc.get("restart") or "no"),
        "stop_grace_period": svcs.duration(svc.get("stop_grace_period"), DEFAULT_TIMEOUT)}))
    try:
        runner.start(c, spec, lowers, detach=True, seccomp_cache=store.layout.seccomp)
    except BaseException:
        runner.remove(c, force=True)
        raise
    return c


def _wait_condition(root: Path, project: Project, service: str, dep: str, condition: str, say: Say) -> None:
    replicas = _replicas(root, project, dep)
    if not replicas:
        if svcs.scale_of(project, dep) == 0:
            return  # scaled to zero: nothing to wait for
        raise ServiceError(f"service {dep} has no container", hint="start it with compose up")
    for number in (svcs.number_of(c) for c in replicas):
        _wait_one(root, project, dep, number, condition)


def _wait_one(root: Path, project: Project, dep: str, number: int, condition: str) -> None:
    c = _find(root, project, dep, number)
    if c is None:
        raise ServiceError(f"service {dep} has no container", hint="start it with compose up")
    if condition == "service_healthy" and supervisor.settings(c).get("healthcheck") is None:
        raise ServiceError(f"dependency failed to start: container {c.name} has no healthcheck configured")
    while True:
        status = c.status()
        if condition == "service_started":
            return
        if condition == "service_completed_successfully":
            if status == "exited":
                code = c.exit_code()
                if code != 0:
                    raise ServiceError(f"service {dep!r} didn't complete successfully: exit {code}")
                return
        elif condition == "service_healthy":
            h = svcs.health(c) or {}
            if h.get("Status") == "healthy":
                return
            if h.get("Status") == "unhealthy":
                raise ServiceError(f"dependency failed to start: container {c.name} is unhealthy")
            if status == "exited" and not _restarting(c):
                raise ServiceError(f"dependency failed to start: container {c.name} exited ({c.exit_code()})")
        time.sleep(0.1)
        c = _find(root, project, dep, number) or c


def _restarting(c: Container) -> bool:
    return supervisor.should_restart(supervisor.settings(c).get("restart", "no"), c.exit_code(), c.restarts) \
        and not (c.dir / supervisor.STOPPED).exists()


def up(store: Store, project: Project, selected: Sequence[str] = (), *, force_recreate: bool = False,
       wait: bool = False, wait_timeout: float | None = None, scale: dict[str, int] | None = None,
       renew_anon_volumes: bool = False, say: Say = lambda _m: None) -> list[Container]:
    """Create or start the services (and their dependencies), each as many containers as its scale
    (`scale` overrides, as `up --scale` does; extra ones are removed, highest numbers first); return
    once each is started (with `wait`: running and, with a healthcheck, healthy). A recreated
    container keeps its predecessor's anonymous volumes, unless `renew_anon_volumes` (`up -V`)."""
    root = store.root
    names = order(project, selected)
    for name, count in (scale or {}).items():
        if name not in project.services:
            raise UsageError(f"no such service: {name}", hint=f"the project has {', '.join(project.service_names())}")
        if count < 0:
            raise UsageError(f"invalid scale {count} for service {name}", hint="give a number of containers >= 0")
    project = svcs.with_scale(project, scale or {})
    if svcs.shared(project, names):
        say(f"Network {project.name}  {sharedns.NOTICE}")
    svcs.ensure_networks(root, project, names)
    supervisor.ensure(root, project.name)
    started: list[Container] = []
    for name in names:
        for dep, conf in (project.services[name].get("depends_on") or {}).items():
            if dep in project.services:
                _wait_condition(root, project, name, dep, (conf or {}).get("condition", "service_started"), say)
        count = svcs.scale_of(project, name)
        _each([c for c in _replicas(root, project, name) if svcs.number_of(c) > count][::-1],
              lambda c: _remove(c, None, say))
        for number in range(1, count + 1):
            started.append(_up_one(store, project, name, number, force_recreate, renew_anon_volumes, say))
    if wait:
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        for c in started:
            _wait_ready(c, deadline)
            say(f"Container {c.name}  Healthy" if supervisor.settings(c).get("healthcheck") else
                f"Container {c.name}  Running")
    return started


def _up_one(store: Store, project: Project, name: str, number: int, force_recreate: bool, renew: bool,
            say: Say) -> Container:
    c = _find(store.root, project, name, number)
    if c is not None and (force_recreate or c.config.get("labels", {}).get(svcs.HASH)
                          != svcs.config_hash(project, name)):
        say(f"Container {c.name}  Recreate")
        _stop(c)
        runner.remove(c, force=True)
        if renew:
            mounts.orphan_anonymous(store.root, project.name, c.name)
        c = None
    if c is None:
        say(f"Container {svcs.container_name(project, name, number)}  Creating")
        c = _create(store, project, name, number)
        say(f"Container {c.name}  Started")
    elif c.status() != "running":
        (c.dir / supervisor.STOPPED).unlink(missing_ok=True)
        runner.start_existing(store, c)
        say(f"Container {c.name}  Started")
    else:
        say(f"Container {c.name}  Running")
    return c


def _wait_ready(c: Container, deadline: float | None) -> None:
    has_check = supervisor.settings(c).get("healthcheck") is not None
    while True:
        status = c.status()
        if status == "exited" and not _restarting(c):
            if c.exit_code() == 0 and not has_check:
                return  # a one-shot service that finished is what docker compose --wait accepts
            raise ServiceError(f"container {c.name} exited ({c.exit_code()})")
        h = svcs.health(c) or {}
        if status == "running" and (not has_check or h.get("Status") == "healthy"):
            return
        if h.get("Status") == "unhealthy":
            raise ServiceError(f"container {c.name} is unhealthy")
        if deadline is not None and time.monotonic() > deadline:
            raise ServiceError(f"container {c.name} is not ready after the --wait-timeout")
        time.sleep(0.1)


def _stop(c: Container, timeout: float | None = None) -> None:
    (c.dir / supervisor.STOPPED).touch()
    c = containers.load(c.dir)  # as it is now: a restart policy may have started it again
    grace = supervisor.settings(c).get("stop_grace_period", DEFAULT_TIMEOUT) if timeout is None else timeout
    runner.stop(c, grace)


def stop(root: Path, project: Project, selected: Sequence[str] = (), timeout: float | None = None,
         say: Say = lambda _m: None) -> None:
    """Stop the services' containers (all if none named), dependents first, each level at once."""
    levels: dict[int, list[Container]] = {}
    for c in svcs.project_containers(root, project.name):
        if not selected or svcs.service_of(c) in selected:
            levels.setdefault(_depth(project, svcs.service_of(c)), []).append(c)

    def one(c: Container) -> None:
        if c.running():
            say(f"Container {c.name}  Stopping")
        _stop(c, timeout)
        say(f"Container {c.name}  Stopped")

    for depth in sorted(levels, reverse=True):
        _each(levels[depth], one)


def start(store: Store, project: Project, selected: Sequence[str] = (), say: Say = lambda _m: None) -> None:
    names = order(project, selected)
    supervisor.ensure(store.root, project.name)
    for name in names:
        replicas = _replicas(store.root, project, name)
        if not replicas and svcs.scale_of(project, name):
            raise ServiceError(f"service {name} has no container to start", hint="create it with compose up")
        for c in replicas:
            if not c.running():
                (c.dir / supervisor.STOPPED).unlink(missing_ok=True)
                runner.start_existing(store, c)
                say(f"Container {c.name}  Started")


def down(store: Store, project: Project, *, volumes: bool = False, rmi: str | None = None,
         timeout: float | None = None, say: Say = lambda _m: None) -> None:
    """Stop and remove the project's containers (one-off ones too), its networks, its forwarders and
    supervisor, and with `volumes` its named volumes; with `rmi` its images (`local`: those it built)."""
    root = store.root
    supervisor.stop(root, project.name)
    # dependents first, each level of the dependency order at once (as docker compose does)
    levels: dict[int, list[Container]] = {}
    for c in svcs.project_containers(root, project.name, oneoff=True):
        levels.setdefault(_depth(project, svcs.service_of(c)), []).append(c)
    for depth in sorted(levels, reverse=True):
        _each(levels[depth], lambda c: _remove(c, timeout, say))
    for info in bridge.list_all(root):
        if info.labels.get(svcs.PROJECT) == project.name:
            bridge.remove(root, info.name)
            say(f"Network {info.name}  Removed")
    if sharedns.remove(root, project.name):
        say(f"Network {project.name}  Removed")
    if volumes:
        for name in mounts.remove_volumes(root, project):
            say(f"Volume {name}  Removed")
    if rmi is not None:
        from layerbuild.image.store_io import untag_image

        for name in project.service_names():
            svc = project.services[name]
            if rmi == "all" or (rmi == "local" and not svc.get("image")):
                try:
                    untag_image(store, project.image_of(name))
                    say(f"Image {project.image_of(name)}  Removed")
                except LayerbuildError:
                    pass
    shutil.rmtree(supervisor.state_dir(root, project.name), ignore_errors=True)


def _depth(project: Project, service: str) -> int:
    """0 for a service that depends on nothing, else one more than its deepest dependency."""
    deps = [d for d in (project.services.get(service, {}).get("depends_on") or {}) if d in project.services]
    return 1 + max((_depth(project, d) for d in deps), default=-1)


def _each(items: list[Container], work: Callable[[Container], None]) -> None:
    """`work` on every item at once; the first error raised once all are done."""
    import threading

    errors: list[BaseException] = []

    def one(c: Container) -> None:
        try:
            work(c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,)) for c in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _remove(c: Container, timeout: float | None, say: Say) -> None:
    """Stop and remove a container for good (its anonymous volumes stay, nobody's, until down -v)."""
    if c.running():
        say(f"Container {c.name}  Stopping")
        _stop(c, timeout)
    runner.remove(c, force=True)
    project = (c.config.get("labels") or {}).get(svcs.PROJECT)
    if project:
        mounts.orphan_anonymous(c.dir.parent.parent, project, c.name)
    say(f"Container {c.name}  Removed")


def ps(root: Path, project: Project, selected: Sequence[str] = (), all_: bool = False) -> list[dict[str, Any]]:
    """docker compose ps --json's entries (Name, Service, State, Health, ExitCode, Publishers, ...)."""
    out = []
    for c in svcs.project_containers(root, project.name):
        service = svcs.service_of(c)
        if selected and service not in selected:
            continue
        status = c.status()
        restarting = status == "exited" and _restarting(c) and supervisor.running(root, project.name)
        state = "restarting" if restarting else status
        if not all_ and state == "exited":
            continue
        h = svcs.health(c) if status == "running" and supervisor.settings(c).get("healthcheck") else None
        code = c.exit_code() if status == "exited" else 0
        out.append({"ID": c.id, "Name": c.name, "Image": c.image, "Command": command_text(c.argv),
                    "Project": project.name, "Service": service, "Created": c.created, "State": state,
                    "Health": (h or {}).get("Status", "") if h is not None else "",
                    "ExitCode": code or 0, "Status": _status_text(c, state, h),
                    "Publishers": c.published or c.config.get("ports", []), "Networks": sorted(c.addresses)})
    return out


def _status_text(c: Container, state: str, h: dict[str, Any] | None) -> str:
    if state == "running":
        return "Up" + (f" ({h.get('Status')})" if h else "")
    if state == "exited":
        return f"Exited ({c.exit_code()})"
    return state.capitalize()


def service_container(root: Path, project: Project, service: str, index: int = 1) -> Container:
    """The running container number `index` of the service (`exec --index`)."""
    if service not in project.services:
        raise UsageError(f"no such service: {service}", hint=f"the project has {', '.join(project.service_names())}")
    c = next((c for c in _replicas(root, project, service) if svcs.number_of(c) == index), None)
    if c is None or not c.running():
        raise ServiceError(f"service {service!r} is not running", hint="start it with compose up -d")
    return c


def run_oneoff(store: Store, project: Project, service: str, command: Sequence[str], *, remove: bool,
               deps: bool = True, tty: bool = False, say: Say = lambda _m: None) -> int:
    """`compose run`: a new container of the service in the foreground (its dependencies started first),
    its stdin attached, as docker compose's is; with `tty`, on a pty of its own relayed to ours."""
    import secrets

    if service not in project.services:
        raise UsageError(f"no such service: {service}", hint=f"the project has {', '.join(project.service_names())}")
    deps_of = [d for d in (project.services[service].get("depends_on") or {}) if d in project.services]
    if deps and deps_of:
        up(store, project, deps_of, say=say)
    svcs.ensure_networks(store.root, project, [service])
    labels = {svcs.PROJECT: project.name, svcs.SERVICE: service, svcs.ONEOFF: "True"}
    name = f"{project.name}-{service}-run-{secrets.token_hex(6)}"
    opts = svcs.run_options(store.root, project, service, name=name, labels=labels, command=tuple(command),
                            detach=False, remove=remove, publish=False)
    opts = dataclasses.replace(opts, interactive=True, tty=tty)
    try:
        _, code = runner.run(store, opts)
    finally:
        if remove:  # its anonymous volumes go with it, as docker compose run --rm removes them
            mounts.remove_anonymous(store.root, project.name, name)
            shutil.rmtree(mounts.files_dir(store.root, project.name, name), ignore_errors=True)
    return code if code is not None else 0
