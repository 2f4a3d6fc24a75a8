"""Typed Dockerfile commands: one frozen dataclass per instruction, each keeping its source Instruction."""

from __future__ import annotations

from dataclasses import dataclass, field

from layerbuild.instructions.mounts import Mount
from layerbuild.parser.ast import Heredoc, Instruction


@dataclass(frozen=True, kw_only=True)
class KeyValue:
    """One `key=value` of ENV or LABEL."""

    key: str
    value: str


@dataclass(frozen=True, kw_only=True)
class ArgDef:
    """One name of an ARG instruction, with its default (None when declared without `=`)."""

    key: str
    default: str | None = None


@dataclass(frozen=True, kw_only=True)
class SourceContent:
    """An inline file from a heredoc source of COPY/ADD (`path` is the heredoc name)."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of every command: `node` is the parser's Instruction (for locations and messages)."""

    node: Instruction = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.node.cmd

    @property
    def line(self) -> int:
        return self.node.start_line


@dataclass(frozen=True, kw_only=True)
class From(Command):
    """FROM [--platform=P] base [AS name]; `stage_name` is lower-cased like BuildKit does."""

    base_name: str
    stage_name: str | None = None
    platform: str | None = None


@dataclass(frozen=True, kw_only=True)
class ShellDependent(Command):
    """A command line in exec form (`prepend_shell` False) or shell form (one string, run by SHELL)."""

    command: tuple[str, ...]
    prepend_shell: bool


@dataclass(frozen=True, kw_only=True)
class Run(ShellDependent):
    """RUN with its heredoc files, typed `--mount`s, `--network` and `--security`."""

    heredocs: tuple[Heredoc, ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    security: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cmd(ShellDependent):
    """CMD: the default command of the image."""


@dataclass(frozen=True, kw_only=True)
class Entrypoint(ShellDependent):
    """ENTRYPOINT: the executable of the image."""


@dataclass(frozen=True, kw_only=True)
class Env(Command):
    """ENV pairs; before expansion values are as written (quotes in), after expansion unquoted."""

    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True, kw_only=True)
class Label(Command):
    """LABEL pairs, expanded and unquoted like ENV."""

    pairs: tuple[KeyValue, ...]


@dataclass(frozen=True, kw_only=True)
class Maintainer(Command):
    """MAINTAINER (deprecated): the author, never expanded."""

    maintainer: str


@dataclass(frozen=True, kw_only=True)
class Expose(Command):
    """EXPOSE port[/proto] ...; one word may expand into several ports."""

    ports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SourcesAndDest(Command):
    """The sources (paths and heredoc contents) and the destination of COPY/ADD."""

    sources: tuple[str, ...]
    contents: tuple[SourceContent, ...] = ()
    dest: str
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Add(SourcesAndDest):
    """ADD: like COPY, plus URLs, archives, git sources and `--checksum`."""

    checksum: str | None = None
    keep_git_dir: bool = False


@dataclass(frozen=True, kw_only=True)
class Copy(SourcesAndDest):
    """COPY, optionally `--from` another stage, image or stage index."""

    from_stage: str | None = None
    parents: bool = False


@dataclass(frozen=True, kw_only=True)
class Volume(Command):
    """VOLUME paths."""

    paths: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class User(Command):
    """USER user[:group]."""

    user: str


@dataclass(frozen=True, kw_only=True)
class Workdir(Command):
    """WORKDIR path."""

    path: str


@dataclass(frozen=True, kw_only=True)
class Arg(Command):
    """ARG name[=default] ..."""

    args: tuple[ArgDef, ...]


@dataclass(frozen=True, kw_only=True)
class Onbuild(Command):
    """ONBUILD: the trigger's text, run when a later build uses this image as its base."""

    expression: str


@dataclass(frozen=True, kw_only=True)
class StopSignal(Command):
    """STOPSIGNAL signal."""

    signal: str


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Command):
    """HEALTHCHECK NONE (`test == ("NONE",)`) or CMD (`("CMD", ...)` exec, `("CMD-SHELL", cmd)` shell).

    Durations are in nanoseconds as the image config stores them; None means the flag was not given.
    """

    test: tuple[str, ...]
    interval_ns: int | None = None
    timeout_ns: int | None = None
    start_period_ns: int | None = None
    start_interval_ns: int | None = None
    retries: int | None = None


@dataclass(frozen=True, kw_only=True)
class Shell(Command):
    """SHELL ["executable", "parameters"]: the shell for later shell-form commands."""

    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A build stage: its FROM line and the commands after it, up to the next FROM."""

    index: int
    from_: From
    commands: tuple[Command, ...] = ()

    @property
    def name(self) -> str | None:
        return self.from_.stage_name

    @property
    def base_name(self) -> str:
        return self.from_.base_name

    @property
    def platform(self) -> str | None:
        return self.from_.platform
