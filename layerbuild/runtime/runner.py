"""`layerbuild run` and friends: containers from stored images, in the foreground or detached.

A detached container outlives the CLI: its helper (`nsinit.py`, in its own session) is the monitor
that waits for it and writes the exit code. A foreground run forwards the signals the CLI gets;
with `-t` it relays the container's own pty (`terminal.py`).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.errors import UsageError
from layerbuild.runtime import cgroups, containers, terminal
from layerbuild.runtime.containers import Container, alive, apply_env, format_created
from layerbuild.runtime.sandbox import Helper, Launched, launch, lower_dirs_for, prestart
from layerbuild.runtime.spec import BindMount, Network, ProcessSpec, SandboxError, TmpfsMount
from layerbuild.store import Store
from layerbuild.store.layout import proc_start_time
from layerbuild.store.snapshots import remove_tree

if TYPE_CHECKING:  # project networks, shared namespaces and published ports load where they are used
    from layerbuild.runtime import bridge, sharedns
    from layerbuild.runtime.ports import Port

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class RunOptions:
    """`layerbuild run`'s options, as docker spells them."""

    image: str
    command: tuple[str, ...] = ()
    name: str | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    network: Network = "default"
    volumes: tuple[str, ...] = ()
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    remove: bool = False
    entrypoint: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    security_opt: tuple[str, ...] = ()
    limits: cgroups.Limits = field(default_factory=cgroups.Limits)
    hostname: str | None = None  # default: the container's short id, as docker's
    # `--add-host` entries as network.parse_add_host returns them (`host-gateway` not yet resolved)
    add_hosts: tuple[tuple[str, str], ...] = ()
    # project networks to join (bridge.py; the first one carries the default route) and the names
    # the container answers to on them besides its own name
    networks: tuple[bridge.Join, ...] = ()
    dns_names: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()  # published through a forwarder (ports.py); needs `networks` or `shared_netns`
    # instead of `networks`: the project whose shared network namespace (sharedns.py) the container enters
    shared_netns: str = ""
    mounts: tuple[BindMount | TmpfsMount, ...] = ()  # besides `volumes`
    # new volumes (host dir, target) filled from the image at their mount point when the container is made
    fill_volumes: tuple[tuple[Path, str], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


def command_for(entrypoint: Sequence[str] | None, cmd: Sequence[str] | None, args: Sequence[str]) -> list[str]:
    """Docker's rule: arguments replace the image's Cmd; the Entrypoint stays in front."""
    argv = [*(entrypoint or ()), *(args if args else (cmd or ()))]
    if not argv:
        raise SandboxError("no command specified", hint="the image has no CMD or ENTRYPOINT: give a command")
    return argv


def merge_env(image_env: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """The image's Env with `-e K=V` applied; `-e K` copies the caller's K, or drops it if unset."""
    env = dict(e.partition("=")[::2] for e in image_env)
    apply_env(env, overrides)
    return [f"{k}={v}" for k, v in env.items()]


def parse_volume(spec: str) -> BindMount:
    """`-v /host/path:/container/path[:ro|rw]`: bind mounts of absolute host paths."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise UsageError(f"invalid volume {spec!r}", hint="write -v /host/path:/container/path[:ro]")
    src, dst = parts[0], parts[1]
    if not src.startswith("/") or not dst.startswith("/"):
        raise UsageError(f"invalid volume {spec!r}: both paths must be absolute", hint="named volumes are not supported")
    return BindMount(Path(src), dst, readonly=len(parts) == 3 and parts[2] == "ro")


def parse_security_opts(items: Sequence[str]) -> dict[str, Any]:
    """docker's `--security-opt`: `seccomp=unconfined|default|PROFILE.json` and
    `no-new-privileges[=true|false]` (`:` works as the separator too), as ProcessSpec fields."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep and ":" in item:
            key, sep, value = item.partition(":")
        if key == "seccomp" and value:
            if value in ("unconfined", "default", "builtin"):
                out["seccomp"] = "default" if value == "builtin" else value
                continue
            try:
                text = Path(value).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--security-opt seccomp={value}: cannot read the profile: {exc}",
                                 hint="give a JSON profile file in Docker's format, or seccomp=unconfined") from None
            from layerbuild.runtime.seccomp import load_profile

            load_profile(text, f"seccomp profile {value}")
            out["seccomp"] = text
        elif key == "no-new-privileges" and value.lower() in ("", "true", "false", "1", "0"):
            out["no_new_privs"] = value.lower() not in ("false", "0")
        else:
            raise UsageError(f"unsupported --security-opt {item!r}",
                             hint="use seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges=true|false")
    return out


def resolve_hosts(entries: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """`--add-host` entries with `host-gateway` replaced by its address (network.host_gateway_address);
    the others as given, as docker writes them."""
    from layerbuild.runtime.network import HOST_GATEWAY, host_gateway_address

    gateway = host_gateway_address() if any(ip == HOST_GATEWAY for _, ip in entries) else ""
    return tuple((name, gateway if ip == HOST_GATEWAY else ip) for name, ip in entries)


def create(store: Store, opts: RunOptions) -> tuple[Container, ProcessSpec, list[Path]]:
    """Make the container record and everything needed to start it."""
    from layerbuild.image import resolve_image  # the image package is slow to import; ps/stop/rm skip it

    security = parse_security_opts(opts.security_opt)
    image = resolve_image(store, opts.image)
    cfg = image.config.config
    argv = command_for(opts.entrypoint if opts.entrypoint is not None else cfg.entrypoint, cfg.cmd, opts.command)
    lowers = lower_dirs_for(store, image.config.diff_ids)
    for dest, target in opts.fill_volumes:
        _fill(lowers, target, dest)
    mounts = (*(parse_volume(v) for v in opts.volumes), *opts.mounts)
    if opts.ports and not opts.networks and not opts.shared_netns:
        raise UsageError("published ports need a network (--network NAME)",
                         hint="make one with `layerbuild network create NAME`")
    if opts.networks:
        from layerbuild.runtime import bridge

        bridge.require_root()
        for join in opts.networks:
            bridge.find(store.root, join.network)  # refused before anything is made
    env = merge_env(cfg.env, opts.env)
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")  # as docker does for a container with a terminal
    workdir = opts.workdir or cfg.working_dir or "/"
    user = opts.user if opts.user is not None else cfg.user
    extra_hosts = resolve_hosts(opts.add_hosts)
    record = {"env": env, "workdir": workdir, "user": user, "network": opts.network,
              "stop_signal": cfg.stop_signal or "SIGTERM", "auto_remove": opts.remove,
              "detached": opts.detach, "volumes": list(opts.volumes), "security_opt": list(opts.security_opt),
              "extra_hosts": [f"{name}:{ip}" for name, ip in extra_hosts],
              "networks": [{"network": j.network, "aliases": list(j.aliases)} for j in opts.networks],
              "dns_names": list(opts.dns_names), "shared_netns": opts.shared_netns, "ports": [p.to_json() for p in opts.ports],
              "mounts": [_mount_json(m) for m in opts.mounts], "labels": dict(opts.labels),
              "hostname": opts.hostname, "layers": list(image.config.diff_ids)}
    c = containers.create(store.root, name=opts.name, image=opts.image, image_id=image.id, argv=argv,
                          config=record)
    spec = ProcessSpec(argv=tuple(argv), env=tuple(env), cwd=workdir, user=user,
                       hostname=opts.hostname or c.short_id,
                       network="none" if opts.networks or opts.shared_netns else opts.network,
                       mounts=mounts, extra_hosts=extra_hosts, **security)
    return c, spec, lowers


def _fill(lowers: list[Path], target: str, dest: Path) -> None:
    """docker's copy-up: an empty new volume gets what the image has at its mount point."""
    from layerbuild.runtime.copyfs import copy_up
    from layerbuild.store import idmap

    if any(dest.iterdir()):
        return
    if os.geteuid() != 0:  # the image's owners, as the container's user namespace shows them
        idmap.call_in_userns(copy_up, lowers, target, dest)
    else:
        copy_up(lowers, target, dest)


def _mount_json(m: BindMount | TmpfsMount) -> dict[str, Any]:
    if isinstance(m, TmpfsMount):
        return {"type": "tmpfs", "target": m.target, "size": m.size, "mode": m.mode}
    return {"type": "bind", "source": os.fspath(m.source), "target": m.target, "readonly": m.readonly}


def _mount_of(d: dict[str, Any]) -> BindMount | TmpfsMount:
    if d["type"] == "tmpfs":
        return TmpfsMount(d["target"], d.get("size"), d.get("mode", 0o1777))
    return BindMount(Path(d["source"]), d["target"], readonly=d["readonly"])


def spec_of(store: Store, c: Container) -> tuple[ProcessSpec, list[Path]]:
    """What starting an existing container again needs, from its record (`start`, restart policies)."""
    cfg = c.config
    lowers = lower_dirs_for(store, cfg["layers"])
    mounts = (*(parse_volume(v) for v in cfg.get("volumes", [])), *(_mount_of(m) for m in cfg.get("mounts", [])))
    hosts = tuple(tuple(h.split(":", 1)) for h in cfg.get("extra_hosts", []))
    spec = ProcessSpec(argv=tuple(c.argv), env=tuple(cfg["env"]), cwd=cfg["workdir"], user=cfg["user"] or "",
                       hostname=cfg.get("hostname") or c.short_id,
                       network="none" if cfg.get("networks") or cfg.get("shared_netns") else cfg["network"],
                       mounts=mounts,
                       extra_hosts=hosts,
                       **parse_security_opts(cfg.get("security_opt", [])))
    return spec, lowers


def start_existing(store: Store, c: Container, unless: Path | None = None) -> Container:
    """Start a stopped container again, detached, as `docker start` does (its upper dir kept). Two
    callers at once (a `start` and a restart policy) start it once: under a lock, from its record.
    Nothing is started if the file `unless` exists by then (a restart policy after a `stop`)."""
    import fcntl

    lock = os.open(c.dir / "start.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = containers.load(c.dir)
        fresh.restarts = max(fresh.restarts, c.restarts)
        deadline = time.monotonic() + 5
        while not fresh.running() and alive(fresh.helper_pid, fresh.helper_start) and time.monotonic() < deadline:
            time.sleep(0.01)  # the last run's helper is writing its exit code: let it finish first
        if fresh.running() or (unless and unless.exists()):
            return fresh
        spec, lowers = spec_of(store, fresh)
        old = cgroups.Cgroup.from_json(fresh.cgroup)
        if old is not None:  # the last run's, empty now: the new run gets a cgroup of its own
            old.remove()
            fresh.cgroup = None
        fresh.exit_path.unlink(missing_ok=True)
        fresh.pid, fresh.pid_start, fresh.finished, fresh.end_reason = 0, None, None, None
        start(fresh, spec, lowers, detach=True, seccomp_cache=store.layout.seccomp)
        return fresh
    finally:
        os.close(lock)


def start(c: Container, spec: ProcessSpec, lowers: list[Path], *, detach: bool, interactive: bool = False,
          tty: bool = False, limits: cgroups.Limits | None = None,
          seccomp_cache: Path | None = None, helper: Helper | None = None) -> int | None:
    """Start the container in its own cgroup (with `limits`); in the foreground wait and return its exit
    code (137 and `end_reason` "killed: out of memory" after an OOM kill), detached return None.
    `helper` is a `sandbox.prestart` for these stdio, which `launch` takes (the caller discards it
    if this raises)."""
    console = terminal.console_pair() if tty and not detach else None
    if detach:
        log = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        stdio: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": log}
    elif console is not None:  # the container makes its own pty and sends us its master
        stdio = {"stdin": console[1].fileno(), "stdout": None, "stderr": None}
    else:
        stdio = {"stdin": None if interactive else subprocess.DEVNULL, "stdout": None, "stderr": None}
    master = None
    cgroup = None
    try:
        holder = _holder(c)
        cgroup = cgroups.create(limits or cgroups.Limits(), label=c.short_id)
        c.cgroup = cgroup.to_json() if cgroup is not None else None
        started = launch(lowers, c.dir / "upper", c.dir / "work", spec, detached=detach, tty=tty,
                         exit_file=c.exit_path, cgroup=cgroup, seccomp_cache=seccomp_cache,
                         attach=_attacher(c, spec), join_netns=holder.pid if holder else None, helper=helper,
                         **stdio)
        if console is not None:
            fd = terminal.receive_master(console[0])
            master = None if fd is None else io.FileIO(fd, "r+")  # closing it twice is harmless
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        if detach:
            os.close(log)
        for sock in console or ():
            sock.close()
    try:
        return _run_started(c, started, detach=detach, interactive=interactive, master=master, cgroup=cgroup)
    finally:
        if master is not None:
            master.close()


def _holder(c: Container) -> sharedns.Holder | None:
    """The holder of the shared namespace the container enters (None: it has none)."""
    project = c.config.get("shared_netns")
    if not project:
        return None
    from layerbuild.runtime import sharedns

    holder = sharedns.find(c.dir.parent.parent, project)
    if holder is None:
        raise SandboxError(f"the shared network namespace of project {project} is gone",
                           hint="run compose up again (it makes it anew)")
    return holder


def _attacher(c: Container, spec: ProcessSpec) -> Any:
    """The `launch` hook that plugs the container into its project networks, or records it in its
    project's shared namespace (None: it has neither)."""
    root = c.dir.parent.parent
    project = c.config.get("shared_netns")
    if project:
        from layerbuild.runtime import sharedns

        def join_shared(pid: int) -> None:
            names = list(dict.fromkeys([c.name, *c.config.get("dns_names", []), spec.hostname, c.short_id]))
            sharedns.join(root, project, container=c.id, pid=pid, names=names,
                          hosts=c.dir / "work" / "etc" / "hosts")

        return join_shared
    if not c.config.get("networks"):
        return None
    from layerbuild.runtime import bridge

    joins = [bridge.Join(j["network"], tuple(j["aliases"])) for j in c.config["networks"]]

    def attach(pid: int) -> None:
        names = list(dict.fromkeys([c.name, *c.config.get("dns_names", []), c.short_id]))
        c.addresses = dict(bridge.attach(root, joins, container=c.id, pid=pid, names=names,
                                         hostname=spec.hostname, hosts=c.dir / "work" / "etc" / "hosts"))

    return attach


def _publish(c: Container) -> None:
    """Start the forwarder of the container's published ports (on its first network's address)."""
    if not c.config.get("ports"):
        return
    from layerbuild.runtime import bridge
    from layerbuild.runtime.ports import Port, start_forwarder

    ports = [Port(p["TargetPort"], p["PublishedPort"], p["URL"], p["Protocol"]) for p in c.config["ports"]]
    holder = _holder(c)
    if holder is not None:
        c.forwarder_pid, c.forwarder_start, bound = start_forwarder(
            ports, netns=holder.netns, target_ip="127.0.0.1", watch_pid=c.pid, log=c.dir / "forward.log",
            userns=holder.userns)
        c.published = [p.to_json() for p in bound]
        c.save()
        return
    first = c.config["networks"][0]["network"]
    info = bridge.find(c.dir.parent.parent, first)
    c.forwarder_pid, c.forwarder_start, bound = start_forwarder(
        ports, netns=info.netns, target_ip=c.addresses[first], watch_pid=c.pid, log=c.dir / "forward.log")
    c.published = [p.to_json() for p in bound]
    c.save()


def _unplug(c: Container) -> None:
    """Stop the container's forwarder and take it off its networks (the others' hosts files follow)."""
    if c.forwarder_pid:
        from layerbuild.runtime.ports import stop_forwarder

        stop_forwarder(c.forwarder_pid, c.forwarder_start)
        c.forwarder_pid, c.forwarder_start = 0, None
    c.published = []
    if c.config.get("networks"):
        from layerbuild.runtime import bridge

        bridge.leave(c.dir.parent.parent, c.id)
        c.addresses = {}
    if c.config.get("shared_netns"):
        from layerbuild.runtime import sharedns

        sharedns.leave(c.dir.parent.parent, c.config["shared_netns"], c.id)


def _start_keeping_modes(c: Container, spec: ProcessSpec, lowers: list[Path], *, detach: bool, interactive: bool,
                          tty: bool, limits: cgroups.Limits | None, seccomp_cache: Path | None = None,
                          helper: Helper | None = None) -> int | None:
    """`start`, with the caller's terminal modes kept when a foreground container without -t writes
    to it (saved before the container starts, restored once it ended)."""
    fd = None if tty or detach else terminal.terminal_fd(0, 1, 2)
    with terminal.modes_kept(fd):
        return start(c, spec, lowers, detach=detach, interactive=interactive, tty=tty, limits=limits,
                     seccomp_cache=seccomp_cache, helper=helper)


def _run_started(c: Container, started: Launched, *, detach: bool, interactive: bool,
                 master: io.FileIO | None, cgroup: cgroups.Cgroup | None) -> int | None:
    c.pid, c.pid_start = started.pid, proc_start_time(started.pid) if started.pid else None
    c.helper_pid, c.helper_start = started.helper.pid, proc_start_time(started.helper.pid)
    c.started, c.recorded_status = format_created(time.time()), "running"
    c.save()
    if started.error and started.error_stage != "exec":
        started.wait()
        _finish(c)
        raise SandboxError(started.error)
    try:
        _publish(c)
    except BaseException:
        started.helper.kill()
        started.wait()
        _finish(c)
        raise
    if detach:
        return None
    previous = {sig: signal.signal(sig, lambda signum, _f: started.helper.send_signal(signum)) for sig in _FORWARDED}
    try:
        if master is not None:
            _attach_terminal(c, master, interactive)
        code = started.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if cgroup is not None:
        c.end_reason = cgroup.diagnosis(code)
        if c.end_reason == cgroups.OOM_MESSAGE:
            code = 137
    _finish(c)
    return code


def _attach_terminal(c: Container, master: io.FileIO, interactive: bool) -> None:
    """Relay the container's pty until it ends, as `docker run -t[i]` does; the log gets its output.
    Closes the master: if our stdout went away first, the container sees its terminal hang up."""
    sys.stdout.flush()
    stdin = 0 if interactive else None
    log = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        with terminal.follow_size(terminal.terminal_fd(1, 0), master.fileno()), \
                terminal.raw_mode(terminal.terminal_fd(0) if interactive else None):
            terminal.relay(master.fileno(), stdin, 1, log)
    finally:
        os.close(log)
        master.close()


def _remove_cgroup(c: Container) -> None:
    cgroup = cgroups.Cgroup.from_json(c.cgroup)
    if cgroup is not None:
        cgroup.remove()
        c.cgroup = None


def _finish(c: Container) -> None:
    _unplug(c)
    _remove_cgroup(c)
    c.finished, c.recorded_status = format_created(time.time()), "exited"
    c.save()
    if c.config.get("auto_remove"):
        containers.remove(c)
    else:  # the scratch dirs the sandbox made; the upper dir stays, as docker keeps a container's layer
        for name in ("work",):
            path = c.dir / name
            if path.exists():
                remove_tree(path)


def parse_signal(name: str) -> int:
    text = name.strip().upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise UsageError(f"invalid stop signal {name!r}") from None


def stop(c: Container, timeout: float = 10.0) -> None:
    """The image's StopSignal (default SIGTERM), then SIGKILL once `timeout` seconds have passed; every
    process of the container's cgroup is killed with it, whatever it forked."""
    cgroup = cgroups.Cgroup.from_json(c.cgroup)
    if not c.running():
        if not alive(c.helper_pid, c.helper_start):
            _unplug(c)
            if cgroup is not None:
                _remove_cgroup(c)
            c.save()
        return
    os.kill(c.pid, parse_signal(c.config.get("stop_signal") or "SIGTERM"))
    deadline = time.monotonic() + timeout
    while c.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    if c.running():
        if cgroup is not None:
            cgroup.kill()
        else:
            os.kill(c.pid, signal.SIGKILL)
        while c.running():
            time.sleep(0.01)
    c.status()  # waits briefly for the helper to record the exit code
    _unplug(c)
    _remove_cgroup(c)
    c.finished, c.recorded_status = format_created(time.time()), "exited"
    c.save()


def remove(c: Container, force: bool = False) -> None:
    if c.running():
        if not force:
            raise UsageError(f"cannot remove container {c.name}: it is running",
                             hint="stop it first (`layerbuild stop`), or use rm -f")
        cgroup = cgroups.Cgroup.from_json(c.cgroup)
        if cgroup is not None:
            cgroup.kill()
        else:
            os.kill(c.pid, signal.SIGKILL)
        while c.running():
            time.sleep(0.01)
    _unplug(c)
    _remove_cgroup(c)
    containers.remove(c)


def follow_log(c: Container, follow: bool) -> Iterator[bytes]:
    """The container's output so far, and with `follow` what it writes until it ends."""
    try:
        f = open(c.log_path, "rb")  # noqa: SIM115 - read incrementally below
    except FileNotFoundError:
        return
    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                yield chunk
                continue
            if not follow or not c.running():
                rest = f.read()
                if rest:
                    yield rest
                return
            time.sleep(0.05)


def run(store: Store, opts: RunOptions) -> tuple[Container, int | None]:
    """Create and start a container (`layerbuild run`)."""
    if opts.tty and opts.interactive and not opts.detach and not sys.stdin.isatty():
        raise UsageError("the input device is not a TTY", hint="drop -t, or run from a terminal")
    # A foreground container's helper starts now, its interpreter in parallel with the rest of the
    # work here; it gets its spec once the container is made (a detached one's output goes to a log
    # that does not exist yet, and -t and project networks hand the helper more than its stdio).
    helper = None
    if not (opts.detach or opts.tty or opts.networks or opts.shared_netns):
        helper = prestart(stdin=None if opts.interactive else subprocess.DEVNULL)
    try:
        c, spec, lowers = create(store, opts)
    except BaseException:
        if helper is not None:
            helper.discard()
        raise
    try:
        code = _start_keeping_modes(c, spec, lowers, detach=opts.detach, interactive=opts.interactive, tty=opts.tty,
                                    limits=opts.limits, seccomp_cache=store.layout.seccomp, helper=helper)
    except BaseException:
        if helper is not None:
            helper.discard()
        if opts.remove and c.dir.exists():
            containers.remove(c)
        raise
    return c, code
