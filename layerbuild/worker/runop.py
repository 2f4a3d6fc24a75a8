"""RUN as a solver Op: the step's filesystem as overlay lower dirs, the sandbox runs it, the upper dir
becomes the layer. Mounts: cache dirs kept under the store root, binds from the context or a stage,
tmpfs, and secrets (bind-mounted files that never reach a layer, a key or a log)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from layerbuild.digest import xxh3
from layerbuild.errors import BuildError, StoreError
from layerbuild.instructions import BindMount, CacheMount, SecretMount, SshMount, TmpfsMount
from layerbuild.instructions import commands as c
from layerbuild.layer import write_overlay_upper
from layerbuild.plan import Step
from layerbuild.runtime import BindMount as RtBind
from layerbuild.runtime import Mount as RtMount
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step
from layerbuild.runtime import SecretMount as RtSecret
from layerbuild.runtime import TmpfsMount as RtTmpfs
from layerbuild.solve import Content, Output, State
from layerbuild.store.snapshots import remove_tree
from layerbuild.worker.meta import DEFAULT_PATH
from layerbuild.worker.ops import BuildServices

TAIL_LINES = 20


def _script(command: c.Run, shell: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The argv for a RUN, and heredoc files to mount at /dev/pipes (BuildKit's rules)."""
    if not command.prepend_shell:
        return tuple(command.command), {}
    text = command.command[0] if command.command else ""
    docs = command.heredocs
    if docs and len(docs) == 1 and text.strip() in (f"<<{docs[0].name}", f"<<-{docs[0].name}",
                                                     f"<<'{docs[0].name}'", f'<<"{docs[0].name}"'):
        body = docs[0].chomped_content()
        if body.startswith("#!"):
            # A script with its own interpreter: run it as a file, as BuildKit does.
            return (f"/dev/pipes/{docs[0].name}",), {docs[0].name: body}
        return (*shell, body), {}
    if docs:
        # The shell reads the heredocs itself: hand it the line followed by the bodies.
        text = text + "\n" + "".join(d.content + d.name + "\n" for d in docs)
    return (*shell, text), {}


class RunOp:
    """One RUN step on the sandbox."""

    cacheable = True

    def __init__(self, services: BuildServices, step: Step, *, network: str, secrets: Mapping[str, Path],
                 context_dir: Path, stage_fs: Callable[[State], Path]) -> None:
        self.services = services
        self.step = step
        command = step.command
        assert isinstance(command, c.Run)
        self.command = command
        self.network = command.network or network
        self.secrets = secrets
        self.context_dir = context_dir
        self.stage_fs = stage_fs

    def content(self, parent: State, deps: Sequence[State]) -> Content | None:
        return None

    def usable(self, output: Output) -> bool:
        return self.services.usable(output)

    def close(self) -> None:
        pass

    def _env(self) -> tuple[str, ...]:
        env = dict(self.step.env)
        env.setdefault("PATH", DEFAULT_PATH)
        return tuple(f"{k}={v}" for k, v in env.items())

    def _mounts(self, stack: ExitStack, deps: Sequence[State], tmp: Path, pipes: dict[str, str]) -> list[RtMount]:
        mounts: list[RtMount] = []
        dep_iter = iter(deps)
        for mount in self.command.mounts:
            if isinstance(mount, CacheMount):
                mounts.append(RtBind(self._cache_dir(stack, mount), mount.target, readonly=mount.readonly))
            elif isinstance(mount, BindMount):
                base = self.stage_fs(next(dep_iter)) if mount.from_stage else self.context_dir
                source = (base / mount.source.lstrip("/")).resolve()
                if not source.is_relative_to(base.resolve()):
                    raise BuildError(f"--mount=type=bind,source={mount.source} points outside its source")
                mounts.append(RtBind(source, mount.target, readonly=mount.readonly))
            elif isinstance(mount, TmpfsMount):
                mounts.append(RtTmpfs(mount.target))
            elif isinstance(mount, SecretMount):
                path = self.secrets.get(mount.id)
                if path is None:
                    if getattr(mount, "required", False):
                        raise BuildError(f"secret {mount.id} not provided", hint=f"pass --secret id={mount.id},src=FILE")
                    continue
                mounts.append(RtSecret(mount.id, Path(path), mount.target or ""))
            elif isinstance(mount, SshMount):
                raise BuildError("--mount=type=ssh is not supported yet")
        for name, body in pipes.items():
            script = tmp / f"pipe-{name}"
            script.write_text(body)
            script.chmod(0o755)
            mounts.append(RtBind(script, f"/dev/pipes/{name}", readonly=True))
        return mounts

    def _cache_dir(self, stack: ExitStack, mount: CacheMount) -> Path:
        root = self.services.store.root / "cache-mounts"
        path = root / xxh3(mount.id.encode())
        if mount.sharing == "private":
            path = Path(tempfile.mkdtemp(prefix="private-", dir=root if root.is_dir() else None))
            stack.callback(shutil.rmtree, path, True)
        path.mkdir(parents=True, exist_ok=True, mode=mount.mode)
        if mount.sharing == "locked":
            fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if os.geteuid() == 0 and (mount.uid or mount.gid):
            os.chown(path, mount.uid, mount.gid)
        return path

    def run(self, parent: State, deps: Sequence[State]) -> Output:
        services = self.services
        argv, pipes = _script(self.command, self.step.shell)
        diff_ids = (*services.base_layers(parent), *parent.layers)
        lower = lower_dirs_for(services.store, diff_ids)
        tmp_root = services.store.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root))
            stack.callback(_discard, tmp)
            upper, work = tmp / "upper", tmp / "work"
            upper.mkdir()
            work.mkdir()
            spec = ProcessSpec(argv=argv, env=self._env(), cwd=self.step.workdir or "/", user=self.step.user,
                               network=_network(self.network),
                               mounts=tuple(self._mounts(stack, deps, tmp, pipes)))
            log = self.services.log
            lines = _LineWriter(functools.partial(log, self.step)) if log is not None else None
            result = run_step(lower, upper, work, spec, stdout=lines)  # type: ignore[arg-type]
            if lines is not None:
                lines.close()
            if result.exit_code != 0:
                tail = result.output_tail.decode("utf-8", "replace").rstrip("\n").splitlines()[-TAIL_LINES:]
                shown = "\n".join(f"  | {line}" for line in tail)
                detail = f" ({result.error})" if result.error else ""
                raise BuildError(
                    f"the command failed with exit code {result.exit_code}{detail}" + (f"\n{shown}" if shown else ""),
                    hint="the last lines of its output are above" if shown else None,
                )
            epoch = services.source_date_epoch
            return services.store_layer(lambda out: write_overlay_upper(upper, out, source_date_epoch=epoch))


class _LineWriter:
    """A file-like sink that hands RUN output on line by line (bytes decoded leniently)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._buf = b""

    def write(self, data: bytes) -> int:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            self._emit(line.decode("utf-8", "replace").rstrip("\r"))
        return len(data)

    def flush(self) -> None:
        if len(self._buf) > 4096:  # a very long line without an end: hand it on in pieces
            self._emit(self._buf.decode("utf-8", "replace"))
            self._buf = b""

    def close(self) -> None:
        if self._buf:
            self._emit(self._buf.decode("utf-8", "replace"))
            self._buf = b""


def _network(mode: str) -> Literal["default", "none", "host"]:
    if mode == "none":
        return "none"
    if mode == "host":
        return "host"
    return "default"


def _discard(path: Path) -> None:
    """Best-effort removal of a step's scratch dir (read-only dirs included); never masks the step's error."""
    with contextlib.suppress(StoreError):
        remove_tree(path)
