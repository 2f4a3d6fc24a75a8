"""Op definitions: each step as data that states everything its execution can observe.

The planner turns every step into one of a few op kinds. An op's fields are its whole cache
definition: `solve` keys an op by all of its fields (nothing is left out by a list to remember) plus
the results of its inputs, and the executor receives the op and its resolved inputs only, so what
an op does not state it cannot read. Inputs are referred to by position (`Step.sources`), and an op
says which of them it keys by the content it reads from them rather than by their whole result
(`content_inputs`), as BuildKit's CacheMap does with content-based selectors.

What an op observes that is not keyed, on purpose, is listed in `UNKEYED` (the values of secrets,
the contents of cache mounts, the host's resolver configuration): BuildKit leaves the same out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Observable by an Exec but deliberately not part of any key (documented in the README as well).
UNKEYED = (
    "the value of a secret mount (its id, target and options are keyed)",
    "the contents of a cache mount (a cache by design; its id, target and options are keyed)",
    "/etc/resolv.conf and, with network=host, the host's name and network",
    "the clock, the kernel and anything else a non-hermetic command can ask the host",
)


@dataclass(frozen=True)
class CacheMountDef:
    """`--mount=type=cache`: a directory kept under the store root between builds, keyed by its id."""

    target: str
    id: str
    sharing: str = "shared"
    readonly: bool = False
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    source: str = ""
    from_input: int | None = None
    type: Literal["cache"] = "cache"


@dataclass(frozen=True)
class BindMountDef:
    """`--mount=type=bind`: `source` of the build context (`from_input` None) or of an input, read-only
    unless `readonly` is False. Keyed by the content it shows (the input's other files are not)."""

    target: str
    source: str = ""
    from_input: int | None = None
    readonly: bool = True
    type: Literal["bind"] = "bind"


@dataclass(frozen=True)
class TmpfsMountDef:
    """`--mount=type=tmpfs`."""

    target: str
    size: int | None = None
    type: Literal["tmpfs"] = "tmpfs"


@dataclass(frozen=True)
class SecretMountDef:
    """`--mount=type=secret`: the id and where it goes are keyed; the secret's value never is."""

    id: str
    target: str
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    type: Literal["secret"] = "secret"


@dataclass(frozen=True)
class SshMountDef:
    """`--mount=type=ssh`: a socket at `target` relaying to the agent `id` names (`--ssh`); the agent and
    its keys are never keyed, the id, target and options are."""

    id: str = "default"
    target: str = ""
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0
    type: Literal["ssh"] = "ssh"


MountDef = CacheMountDef | BindMountDef | TmpfsMountDef | SecretMountDef | SshMountDef


@dataclass(frozen=True)
class ScriptFile:
    """A heredoc script the process runs as a file (`/dev/pipes/NAME`), with its body."""

    name: str
    body: str


@dataclass(frozen=True)
class Exec:
    """A process run on the parent's filesystem (RUN): everything the process can see, as data.

    `env` is the whole environment it gets (PATH defaulted like BuildKit), in order. The command
    line is `shell + args`: `shell` is the SHELL for shell form and empty for exec form (so a SHELL
    change re-runs only what it runs), `args` the words or the script, heredoc bodies included.
    `extra_hosts` are the (name, address) lines `build --add-host` adds to its /etc/hosts: part of
    the exec op's definition, as in BuildKit's ExecOp (Meta.ExtraHosts).
    """

    shell: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    user: str = ""
    workdir: str = "/"
    network: Literal["default", "none", "host"] = "default"
    security: str = "sandbox"
    hostname: str = "layerbuild"
    platform: str = "linux/amd64"
    mounts: tuple[MountDef, ...] = ()
    files: tuple[ScriptFile, ...] = ()
    source_date_epoch: int | None = None
    extra_hosts: tuple[tuple[str, str], ...] = ()

    kind = "exec"
    cacheable = True

    @property
    def argv(self) -> tuple[str, ...]:
        return (*self.shell, *self.args)

    def content_inputs(self) -> frozenset[int]:
        return frozenset(m.from_input for m in self.mounts
                         if isinstance(m, BindMountDef) and m.from_input is not None)

    def reads_only_inputs(self) -> bool:
        """Whether every file it reads beyond its definition comes from its inputs (no bind mount of
        the build context): then the inputs' results stand for all it reads."""
        binds = [m for m in self.mounts if isinstance(m, BindMountDef)]
        return bool(binds) and all(m.from_input is not None for m in binds)


@dataclass(frozen=True)
class InlineFile:
    """A COPY/ADD heredoc source: its name and its (expanded) data."""

    name: str
    data: str


@dataclass(frozen=True)
class FileCopy:
    """COPY/ADD: the sources of the context (`from_input` None) or of an input, and where they go.

    The sources are keyed by the content selected from them (path, type, mode, size, link target,
    content; owners too for another stage's files), not by the whole of the tree they come from.
    """

    sources: tuple[str, ...]
    dest: str
    workdir: str = "/"
    add: bool = False
    contents: tuple[InlineFile, ...] = ()
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    checksum: str | None = None
    keep_git_dir: bool = False
    from_input: int | None = None
    source_date_epoch: int | None = None

    kind = "copy"
    cacheable = True

    def content_inputs(self) -> frozenset[int]:
        return frozenset() if self.from_input is None else frozenset({self.from_input})

    def reads_only_inputs(self) -> bool:
        """Whether its sources are an input's files (COPY --from), not the build context's."""
        return self.from_input is not None


@dataclass(frozen=True)
class MakeDir:
    """WORKDIR: make `path` (and missing parents) when the parent's filesystem lacks it; the
    directories made are owned by `user` (the USER in effect, as BuildKit's mkdir does)."""

    path: str
    source_date_epoch: int | None = None
    user: str = ""

    kind = "mkdir"
    cacheable = True

    def content_inputs(self) -> frozenset[int]:
        return frozenset()


@dataclass(frozen=True)
class ConfigEdit:
    """A config-only instruction (ENV, LABEL, CMD, USER, ...): no filesystem effect, never cached.

    `instruction` is the expanded instruction as text, for the record; the config change itself is
    applied when the image is assembled."""

    instruction: str

    kind = "config"
    cacheable = False

    def content_inputs(self) -> frozenset[int]:
        return frozenset()


@dataclass(frozen=True)
class Source:
    """FROM: the start of a stage; `identity` is the base image's config digest ("" for scratch)."""

    ref: str
    identity: str = ""

    kind = "source"
    cacheable = False

    def content_inputs(self) -> frozenset[int]:
        return frozenset()


OpDef = Exec | FileCopy | MakeDir | ConfigEdit | Source
OP_KINDS: tuple[type, ...] = (Exec, FileCopy, MakeDir, ConfigEdit, Source)
MOUNT_KINDS: tuple[type, ...] = (CacheMountDef, BindMountDef, TmpfsMountDef, SecretMountDef, SshMountDef)
