"""Exec (RUN) tasks: the parent's filesystem as overlay lower dirs, the sandbox runs the op's process,
the upper dir becomes the layer. Mounts: cache dirs kept under the store root, binds from the context
(keyed by their content, only what .dockerignore lets through, never writable in place) or from an
input, tmpfs, secrets (bind-mounted files that never reach a layer, a key or a log) and ssh agents (a
socket of the step's own relaying to the agent, see sshagent.py)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerbuild import runtime as rt  # its names load the sandbox when a RUN step first runs
from layerbuild.context.ignore import go_clean
from layerbuild.context.tree import BuildContext, Entry, SourceTree, StageTree
from layerbuild.digest import key_hash, xxh3
from layerbuild.errors import BuildError, StepError, StoreError, UsageError
from layerbuild.layer import LayerInfo, write_overlay_upper
from layerbuild.plan import (
    BindMountDef,
    BuildPlan,
    CacheMountDef,
    Exec,
    SecretMountDef,
    SshMountDef,
    TmpfsMountDef,
)
from layerbuild.solve import Content, Inputs, Output
from layerbuild.store.db import LOW_SPACE, free_space
from layerbuild.store.idmap import call_in_userns, current, unmapped
from layerbuild.store.layout import make_scratch
from layerbuild.store.snapshots import remove_tree
from layerbuild.worker.copy import not_found
from layerbuild.worker.copyop import named_context
from layerbuild.worker.ops import BuildServices

if TYPE_CHECKING:
    from layerbuild.worker.sshagent import SshAgents

TAIL_LINES = 20
INSECURE = "security.insecure"
NETWORK_HOST = "network.host"


def _bind_fingerprint(tree: SourceTree, entry: Entry) -> str:
    """An entry as a bind mount shows it: its COPY fingerprint, with its owner (a RUN sees it) where
    the tree's fingerprints leave owners out (the context)."""
    if tree.keep_owner:
        return tree.fingerprint(entry)
    return key_hash(f"{tree.fingerprint(entry)}:{entry.st.st_uid}:{entry.st.st_gid}".encode())



def cache_mount_path(store_root: Path, mount_id: str) -> Path:
    """Where the shared cache mount `mount_id` keeps its files in the store."""
    return store_root / "cache-mounts" / xxh3(mount_id.encode())

class RunTask:
    """One Exec op on the sandbox."""

    def __init__(self, services: BuildServices, op: Exec, inputs: Inputs, *, secrets: Mapping[str, Path],
                 context: BuildContext, contexts: Mapping[str, BuildContext] | None = None,
                 ssh: SshAgents | None = None) -> None:
        self.services = services
        self.op = op
        self.inputs = inputs
        self.secrets = secrets
        self.context = context
        self.contexts = contexts or {}
        self.ssh = ssh
        # mount position -> (the tree it shows, its source there, whether the mount needs a copy)
        self._binds: dict[int, tuple[SourceTree, Entry, bool]] = {}

    def content(self) -> Content | None:
        """The bind mounts, keyed by what they show: from the context, or the source path of another
        stage or image (the op keys those inputs by this content, not by their whole result)."""
        files: dict[str, str] = {}
        h = hashlib.sha256()
        for position, mount in enumerate(self.op.mounts):
            if not isinstance(mount, BindMountDef):
                continue
            h.update(f"\0{position}\0{mount.target}".encode("utf-8", "surrogateescape"))
            tree: SourceTree = self.context
            prefix = ""
            if mount.from_input is not None:
                dep = self.inputs.deps[mount.from_input]
                if dep.context is not None:  # a named context, read as the main one is
                    tree = named_context(self.contexts, dep.context)
                    prefix = f"context {dep.context}: "
                else:
                    tree = StageTree(self.services.filesystem(dep))
                    prefix = f"{mount.target}: "
            rel = go_clean("/" + mount.source).lstrip("/")
            entry = tree.resolve(rel, what=mount.source)
            if entry is None:
                raise not_found(rel, tree, label=f"--mount=type=bind,source={mount.source}")
            # A mount that would show what the tree hides (.dockerignore), or that is writable, is a copy.
            # So is one of a view in the build's own mount namespace (see rootfs.py): a bind mount
            # cannot take its source from another namespace.
            copy = not mount.readonly or entry.path.startswith("/proc/")
            for item in [entry, *tree.walk(entry.rel)] if entry.is_dir else [entry]:
                copy = copy or (item.is_dir and tree.hides(item.rel))
                fp = _bind_fingerprint(tree, item)
                files[prefix + (item.rel or ".")] = fp
                h.update(f"\n{item.rel}\0{fp}".encode("utf-8", "surrogateescape"))
            self._binds[position] = (tree, entry, copy)
        if not self._binds:
            return None
        return Content(h.hexdigest(), files)

    def close(self) -> None:
        pass

    def _mounts(self, stack: ExitStack, tmp: Path) -> list[rt.Mount]:
        mounts: list[rt.Mount] = []
        for position, mount in enumerate(self.op.mounts):
            if isinstance(mount, CacheMountDef):
                mounts.append(rt.BindMount(self._cache_dir(stack, mount), mount.target, readonly=mount.readonly))
            elif isinstance(mount, BindMountDef):
                tree, entry, copy = self._binds[position]
                source = Path(entry.path)
                if copy:
                    # Only what the build may see, and writes go to the copy: never into the context
                    # or the stage's files.
                    source = tmp / f"bind-{position}"
                    _copy_visible(tree, entry, source)
                mounts.append(rt.BindMount(source, mount.target, readonly=mount.readonly))
            elif isinstance(mount, TmpfsMountDef):
                mounts.append(rt.TmpfsMount(mount.target, size=mount.size))
            elif isinstance(mount, SecretMountDef):
                path = self.secrets.get(mount.id)
                if path is None:
                    if mount.required:
                        raise BuildError(f"secret {mount.id} not provided", hint=f"pass --secret id={mount.id},src=FILE")
                    continue
                mounts.append(rt.SecretMount(mount.id, Path(path), mount.target or ""))
            elif isinstance(mount, SshMountDef):
                ssh = self._ssh(stack, mount)
                if ssh is not None:
                    mounts.append(ssh)
        if self.op.files:  # as BuildKit: a read-only directory at /dev/pipes holding the scripts
            pipes = tmp / "pipes"
            pipes.mkdir(0o755)
            for script in self.op.files:
                path = pipes / script.name
                path.write_text(script.body)
                path.chmod(0o755)
            mounts.append(rt.BindMount(pipes, "/dev/pipes", readonly=True))
        return mounts

    def _ssh(self, stack: ExitStack, mount: SshMountDef) -> rt.Mount | None:
        """A socket of this step's own at the target, relaying to the agent `mount.id` names; None
        (the mount skipped, as BuildKit skips it) when that id was not given and it is not required."""
        proxy = self.ssh.proxy(mount.id) if self.ssh is not None else None
        if proxy is None:
            if not mount.required:
                return None
            if self.ssh is None or not self.ssh.sources:  # BuildKit's words, for either case
                raise BuildError(f'no SSH key "{mount.id}" forwarded from the client',
                                 hint=f"pass --ssh {mount.id} ($SSH_AUTH_SOCK) or --ssh {mount.id}=SOCKET|KEY")
            raise BuildError(f"unset ssh forward key {mount.id}",
                             hint=f"pass --ssh {mount.id} ($SSH_AUTH_SOCK) or --ssh {mount.id}=SOCKET|KEY")
        stack.callback(proxy.close)  # the step's socket ends with the step
        os.chmod(proxy.path, mount.mode)
        if os.geteuid() == 0:
            os.chown(proxy.path, mount.uid, mount.gid)
        elif mount.uid or mount.gid:  # rootless: the owner is a subordinate id, set from the user namespace
            if not current().has(mount.uid, mount.gid):
                raise unmapped(f"--mount=type=ssh,id={mount.id}", mount.uid, mount.gid)
            call_in_userns(os.chown, proxy.path, mount.uid, mount.gid)
        return rt.BindMount(proxy.path, mount.target, readonly=False)

    def _cache_dir(self, stack: ExitStack, mount: CacheMountDef) -> Path:
        path = cache_mount_path(self.services.store.root, mount.id)
        root = path.parent
        if mount.sharing != "private" and not path.exists() and self.services.restore_mount is not None:
            restored = path.with_name(f".{path.name}.restoring-{os.getpid()}")
            restored.mkdir(parents=True, mode=mount.mode)
            if self.services.restore_mount(mount.id, restored):
                with contextlib.suppress(OSError):  # another build restored it first: theirs stays
                    os.rename(restored, path)
            if restored.exists():
                _discard(restored)
        if mount.sharing == "private":
            path = Path(tempfile.mkdtemp(prefix="private-", dir=root if root.is_dir() else None))
            stack.callback(_discard, path)  # its files may belong to subordinate ids (rootless)
        path.mkdir(parents=True, exist_ok=True, mode=mount.mode)
        if mount.sharing == "locked":
            fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            stack.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if os.geteuid() == 0 and (mount.uid or mount.gid):
            os.chown(path, mount.uid, mount.gid)
        elif mount.uid or mount.gid:  # rootless: the owner is a subordinate id, set from the user namespace
            if not current().has(mount.uid, mount.gid):
                raise unmapped(f"--mount=type=cache,target={mount.target}", mount.uid, mount.gid)
            call_in_userns(os.chown, path, mount.uid, mount.gid)
        return path

    def run(self, previous: Output | None) -> Output:
        services, op, parent = self.services, self.op, self.inputs.parent
        if not self._binds and any(isinstance(m, BindMountDef) for m in op.mounts):
            self.content()
        diff_ids = (*services.base_layers(parent), *parent.layers)
        services.need_layers(diff_ids)
        lower = rt.lower_dirs_for(services.store, diff_ids)
        tmp_root = services.store.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            tmp = make_scratch(tmp_root, "run-")
            stack.callback(services.discard_later, tmp)  # removed while the build goes on
            upper, work = tmp / "upper", tmp / "work"
            upper.mkdir()
            work.mkdir()
            spec = rt.ProcessSpec(argv=op.argv, env=tuple(f"{k}={v}" for k, v in op.env), cwd=op.workdir or "/",
                               user=op.user, hostname=op.hostname, network=op.network,
                               mounts=tuple(self._mounts(stack, tmp)), privileged=op.security == "insecure",
                               extra_hosts=op.extra_hosts)
            lines = _LineWriter(self.inputs.log) if self.inputs.log is not None else None
            result = rt.run_step(lower, upper, work, spec, stdout=lines, limits=services.limits,  # type: ignore[arg-type]
                              seccomp_cache=services.store.layout.seccomp, release=False)
            if lines is not None:
                lines.close()
            if result.exit_code != 0:
                tail = result.output_tail.decode("utf-8", "replace").rstrip("\n").splitlines()[-TAIL_LINES:]
                shown = "\n".join(f"  | {line}" for line in tail)
                detail = f" ({result.error})" if result.error else ""
                if free_space(tmp) < LOW_SPACE:  # the likely reason, which the command may not have said
                    raise BuildError(
                        f"the command failed with exit code {result.exit_code}{detail}: no space left on device "
                        f"for the store at {services.store.root}" + (f"\n{shown}" if shown else ""),
                        hint="free space on that filesystem; `layerbuild prune` frees what the store no longer needs",
                    )
                raise BuildError(
                    f"the command failed with exit code {result.exit_code}{detail}" + (f"\n{shown}" if shown else ""),
                    hint="the last lines of its output are above" if shown else None,
                )
            epoch = op.source_date_epoch
            if os.geteuid() != 0:  # read in the user namespace: container owners, every file readable
                return services.store_layer(lambda out: call_in_userns(_write_upper, upper, epoch, sink=out))
            return services.store_layer(lambda out: write_overlay_upper(upper, out, source_date_epoch=epoch))


def _write_upper(out: BinaryIO, upper: Path, epoch: int | None) -> LayerInfo:
    return write_overlay_upper(upper, out, source_date_epoch=epoch)


def check_entitled(op: Exec, allow: frozenset[str]) -> None:
    """`RUN --security=insecure` and `RUN --network=host` run only when the build was given their
    entitlement, as in BuildKit (`build --network host` grants `network.host`, as buildx does)."""
    if op.security == "insecure" and INSECURE not in allow:
        raise UsageError(f"RUN --security=insecure needs the {INSECURE} entitlement",
                         hint=f"build with `--allow {INSECURE}` (allow=[{INSECURE!r}] from the library): the step "
                              "then runs with every capability and without seccomp")
    if op.network == "host" and NETWORK_HOST not in allow:
        raise UsageError(f"RUN --network=host needs the {NETWORK_HOST} entitlement",
                         hint=f"build with `--allow {NETWORK_HOST}` (allow=[{NETWORK_HOST!r}] from the library), or "
                              "`--network host` for every step: the step then shares the host's network")


def entitlements(allow: frozenset[str], network: str) -> frozenset[str]:
    """The entitlements a build has: those it was given, plus `network.host` when its network is host."""
    return allow | {NETWORK_HOST} if network == "host" else allow


def prewarm_seccomp(cache: Path) -> threading.Thread:
    """Compile the default seccomp program of RUN steps in the background, now: a build's first RUN
    then finds it compiled (or waits for this compile) instead of compiling it on its critical path."""
    from layerbuild.runtime import seccomp
    from layerbuild.runtime.spec import DEFAULT_CAPABILITIES

    def compile_now() -> None:
        with contextlib.suppress(Exception):  # the RUN step compiles it again and reports what is wrong
            seccomp.compile_profile(None, DEFAULT_CAPABILITIES, cache)

    thread = threading.Thread(target=compile_now, name="seccomp-prewarm", daemon=True)
    thread.start()
    return thread


def check_plan_entitled(plan: BuildPlan, allow: frozenset[str]) -> None:
    """`check_entitled` for every Exec of the plan, naming the Dockerfile line of the first refused."""
    for stage in plan.stages:
        for step in stage.steps:
            if isinstance(step.op, Exec):
                try:
                    check_entitled(step.op, allow)
                except UsageError as exc:
                    raise StepError(exc.message, filename=plan.filename, line=step.line, instruction=step.text,
                                    hint=exc.hint) from None


def _copy_visible(tree: SourceTree, entry: Entry, dest: Path) -> None:
    """A copy of `entry` (and, for a directory, what the build can see below it) at `dest`."""
    _copy_entry(Path(entry.path), dest, entry.st)
    if not entry.is_dir:
        return
    base = len(entry.rel) + 1 if entry.rel else 0
    dirs = [(dest, entry)]
    for item in tree.walk(entry.rel):
        target = dest / item.rel[base:]
        _copy_entry(Path(item.path), target, item.st)
        if item.is_dir:
            dirs.append((target, item))
    # Making entries inside a directory moved its times: set them again, deepest first.
    for target, item in reversed(dirs):
        os.utime(target, ns=(item.st.st_atime_ns, item.st.st_mtime_ns))


def _copy_entry(src: Path, dest: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        dest.mkdir(exist_ok=True)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dest, follow_symlinks=False)
    else:
        return  # devices and fifos in a context are not shown to a bind mount
    if os.geteuid() == 0:
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


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


def _discard(path: Path) -> None:
    """Best-effort removal of a step's scratch dir (read-only dirs included); never masks the step's error."""
    with contextlib.suppress(StoreError):
        remove_tree(path)
