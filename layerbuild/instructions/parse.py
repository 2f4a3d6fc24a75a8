"""AST instructions to typed commands and stages, validated the way BuildKit's instructions.Parse does."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from layerbuild.errors import DockerfileSyntaxError, ExpansionError
from layerbuild.instructions import commands as c
from layerbuild.instructions.flags import FlagError, FlagKind, Flags, describe, parse_duration, parse_flags
from layerbuild.instructions.locate import syntax_error
from layerbuild.instructions.mounts import Mount, MountError, parse_mount
from layerbuild.parser.ast import Dockerfile, Instruction
from layerbuild.parser.shell import ShellLex

__all__ = ["KEYWORDS", "parse_command", "parse_stages"]

_FLAGS: dict[str, dict[str, FlagKind]] = {
    "from": {"platform": "string"},
    "run": {"mount": "strings", "network": "string", "security": "string"},
    "add": {
        "chown": "string", "chmod": "string", "link": "bool", "keep-git-dir": "bool",
        "checksum": "string", "exclude": "strings",
    },
    "copy": {
        "from": "string", "chown": "string", "chmod": "string", "link": "bool", "parents": "bool",
        "exclude": "strings",
    },
    "healthcheck": {
        "interval": "string", "timeout": "string", "start-period": "string", "start-interval": "string",
        "retries": "string",
    },
}  # fmt: skip
KEYWORDS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)  # fmt: skip
_USAGE = {
    "from": "FROM [--platform=<platform>] <image> [AS <name>]",
    "add": "ADD [--chown=<user>] <src>... <dest>",
    "copy": "COPY [--from=<stage>] <src>... <dest>",
    "env": "ENV <key>=<value> ...",
    "label": "LABEL <key>=<value> ...",
    "arg": "ARG <name>[=<default value>] ...",
    "expose": "EXPOSE <port>[/<protocol>] ...",
    "volume": 'VOLUME ["/data"] or VOLUME /data',
    "user": "USER <user>[:<group>]",
    "workdir": "WORKDIR /path/to/workdir",
    "stopsignal": "STOPSIGNAL SIGTERM",
    "maintainer": "MAINTAINER <name>",
    "shell": 'SHELL ["/bin/sh", "-c"]',
    "onbuild": "ONBUILD <INSTRUCTION>",
    "healthcheck": "HEALTHCHECK [--interval=30s] CMD <command>, or HEALTHCHECK NONE",
    "run": 'RUN <command> or RUN ["executable", "param"]',
}
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")


class _Parser:
    """Parses the instructions of one Dockerfile; holds it for error locations."""

    def __init__(self, dockerfile: Dockerfile) -> None:
        self.df = dockerfile

    def error(
        self, node: Instruction, message: str, *, hint: str | None = None, near: str | None = None
    ) -> DockerfileSyntaxError:
        return syntax_error(self.df, node, message, hint=hint, near=near)

    def usage(self, node: Instruction, message: str) -> DockerfileSyntaxError:
        usage = _USAGE.get(node.cmd)
        return self.error(node, message, hint=f"usage: {usage}" if usage else None)

    def command(self, node: Instruction) -> c.Command:
        handler = _HANDLERS.get(node.cmd)
        if handler is None:
            import difflib  # only for a hint: not on every parse's path

            close = difflib.get_close_matches(node.cmd.upper(), KEYWORDS, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else "instructions: " + ", ".join(KEYWORDS)
            raise self.error(node, f"unknown instruction: {node.keyword or node.cmd.upper()}", hint=hint)
        allowed = _FLAGS.get(node.cmd, {})
        try:
            flags = parse_flags(node.keyword or node.cmd.upper(), node.flags, allowed)
        except FlagError as exc:
            raise self.error(node, exc.message, hint=exc.hint, near=exc.flag) from None
        return handler(self, node, flags)

    # -- one method per instruction ------------------------------------------------------------

    def from_(self, node: Instruction, flags: Flags) -> c.From:
        args = node.value
        stage_name = None
        if len(args) == 3 and args[1].lower() == "as":
            stage_name = args[2].lower()
            if not _STAGE_NAME.match(stage_name):
                raise self.error(
                    node,
                    f"invalid name for build stage: {args[2]!r}, name can't start with a number or contain symbols",
                    hint="stage names start with a letter and use letters, digits, '-', '_' and '.'",
                    near=args[2],
                )
        elif len(args) != 1:
            raise self.usage(node, "FROM requires either one or three arguments")
        return c.From(node=node, base_name=args[0], stage_name=stage_name, platform=flags.get("platform"))

    def run(self, node: Instruction, flags: Flags) -> c.Run:
        if not node.value:
            raise self.usage(node, "RUN requires at least one argument")
        mounts: list[Mount] = []
        for spec in flags.many("mount"):
            try:
                mounts.append(parse_mount(spec))
            except MountError as exc:
                raise self.error(
                    node, f"invalid --mount: {exc.message}", hint=exc.hint, near=exc.near or spec
                ) from None
        network = flags.get("network")
        if network is not None and network not in ("default", "none", "host"):
            raise self.error(
                node, f"unsupported network mode {network!r}", hint="use --network=default, none or host",
                near=flags.written["network"],
            )  # fmt: skip
        security = flags.get("security")
        if security is not None and security not in ("sandbox", "insecure"):
            raise self.error(
                node, f"unsupported security mode {security!r}", hint="use --security=sandbox or insecure",
                near=flags.written["security"],
            )  # fmt: skip
        command, prepend = _cmdline(node)
        return c.Run(
            node=node, command=command, prepend_shell=prepend, heredocs=node.heredocs, mounts=tuple(mounts),
            network=network, security=security,
        )  # fmt: skip

    def cmd(self, node: Instruction, flags: Flags) -> c.Cmd:
        command, prepend = _cmdline(node)
        return c.Cmd(node=node, command=command, prepend_shell=prepend)

    def entrypoint(self, node: Instruction, flags: Flags) -> c.Entrypoint:
        command, prepend = _cmdline(node)
        return c.Entrypoint(node=node, command=command, prepend_shell=prepend)

    def _pairs(self, node: Instruction) -> tuple[c.KeyValue, ...]:
        name = node.cmd.upper()
        if not node.value:
            raise self.usage(node, f"{name} requires at least one argument")
        if len(node.value) % 2:
            raise self.usage(node, f"Bad input to {name}, too many arguments")
        pairs = []
        for key, value in zip(node.value[::2], node.value[1::2]):
            if not key:
                raise self.usage(node, f"{name} names can not be blank")
            pairs.append(c.KeyValue(key=key, value=value))
        return tuple(pairs)

    def env(self, node: Instruction, flags: Flags) -> c.Env:
        return c.Env(node=node, pairs=self._pairs(node))

    def label(self, node: Instruction, flags: Flags) -> c.Label:
        return c.Label(node=node, pairs=self._pairs(node))

    def _one(self, node: Instruction) -> str:
        if len(node.value) != 1 or not node.value[0].strip():
            raise self.usage(node, f"{node.cmd.upper()} requires exactly one argument")
        return node.value[0]

    def maintainer(self, node: Instruction, flags: Flags) -> c.Maintainer:
        return c.Maintainer(node=node, maintainer=self._one(node))

    def user(self, node: Instruction, flags: Flags) -> c.User:
        return c.User(node=node, user=self._one(node))

    def workdir(self, node: Instruction, flags: Flags) -> c.Workdir:
        return c.Workdir(node=node, path=self._one(node))

    def stopsignal(self, node: Instruction, flags: Flags) -> c.StopSignal:
        return c.StopSignal(node=node, signal=self._one(node))

    def expose(self, node: Instruction, flags: Flags) -> c.Expose:
        if not node.value:
            raise self.usage(node, "EXPOSE requires at least one argument")
        return c.Expose(node=node, ports=node.value)

    def volume(self, node: Instruction, flags: Flags) -> c.Volume:
        if not node.value:
            raise self.usage(node, "VOLUME requires at least one argument")
        if any(not path.strip() for path in node.value):
            raise self.usage(node, "VOLUME specified can not be an empty string")
        return c.Volume(node=node, paths=node.value)

    def arg(self, node: Instruction, flags: Flags) -> c.Arg:
        if not node.value:
            raise self.usage(node, "ARG requires at least one argument")
        args = []
        for word in node.value:
            key, eq, default = word.partition("=")
            if not key:
                raise self.usage(node, "ARG names can not be blank")
            args.append(c.ArgDef(key=key, default=default if eq else None))
        return c.Arg(node=node, args=tuple(args))

    def shell(self, node: Instruction, flags: Flags) -> c.Shell:
        if not node.value:
            raise self.usage(node, "SHELL requires at least one argument")
        if not node.json:
            raise self.error(
                node, "SHELL requires the arguments to be in JSON form",
                hint='write it as SHELL ["executable", "param1"]',
            )  # fmt: skip
        return c.Shell(node=node, shell=node.value)

    def onbuild(self, node: Instruction, flags: Flags) -> c.Onbuild:
        inner = node.inner
        if inner is None:
            raise self.usage(node, "ONBUILD requires at least one argument")
        trigger = inner.cmd.upper()
        if trigger == "ONBUILD":
            raise self.error(
                node, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", near=inner.keyword or None,
                hint="write the trigger once: ONBUILD RUN ...",
            )
        if trigger in ("FROM", "MAINTAINER"):
            raise self.error(
                node, f"{trigger} isn't allowed as an ONBUILD trigger", near=inner.keyword or None,
                hint="ONBUILD takes any instruction except FROM, MAINTAINER and ONBUILD",
            )  # fmt: skip
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)
        return c.Onbuild(node=node, expression=expression)

    def healthcheck(self, node: Instruction, flags: Flags) -> c.Healthcheck:
        if not node.value:
            raise self.usage(node, "HEALTHCHECK requires at least one argument")
        kind = node.value[0].upper()
        rest = node.value[1:]
        if kind == "NONE":
            if rest:
                raise self.usage(node, "HEALTHCHECK NONE takes no arguments")
            if node.flags:
                raise self.error(node, "HEALTHCHECK NONE takes no flags", near=node.flags[0])
            return c.Healthcheck(node=node, test=("NONE",))
        if kind != "CMD":
            raise self.error(
                node, f'Unknown type "{node.value[0]}" in HEALTHCHECK (try CMD)', near=node.value[0],
                hint="HEALTHCHECK CMD <command> or HEALTHCHECK NONE",
            )  # fmt: skip
        if node.json:
            test = ("CMD", *rest)
        else:
            joined = " ".join(rest)
            test = ("CMD-SHELL", joined) if joined else ()
        if len(test) < 2:
            raise self.usage(node, "Missing command after HEALTHCHECK CMD")
        durations = {name: self._interval(node, flags, name) for name in _DURATIONS}
        retries = None
        if (text := flags.get("retries")) is not None:
            try:
                retries = int(text, 10) if re.fullmatch(r"[+-]?\d+", text) else None
            except ValueError:
                retries = None
            if retries is None or not -(2**31) <= retries < 2**31:
                raise self.error(node, f"invalid --retries value {text!r}", hint="--retries takes a whole number",
                                 near=flags.written["retries"])  # fmt: skip
            if retries < 0:
                raise self.error(
                    node, f"--retries cannot be negative ({retries})", near=flags.written["retries"]
                )
        return c.Healthcheck(
            node=node, test=test, interval_ns=durations["interval"], timeout_ns=durations["timeout"],
            start_period_ns=durations["start-period"], start_interval_ns=durations["start-interval"],
            retries=retries,
        )  # fmt: skip

    def _interval(self, node: Instruction, flags: Flags, name: str) -> int | None:
        text = flags.get(name)
        if text is None:
            return None
        if text == "":
            return 0
        try:
            value = parse_duration(text)
        except ValueError:
            raise self.error(
                node, f"time: invalid duration {text!r} for --{name}", near=flags.written[name],
                hint="durations look like 30s, 1m30s, 500ms or 1h",
            ) from None  # fmt: skip
        if value != 0 and value < 1_000_000:
            raise self.error(node, f'Interval "{name}" cannot be less than 1ms', near=flags.written[name])
        return value

    def add(self, node: Instruction, flags: Flags) -> c.Add:
        sources, contents, dest = self._sources(node)
        return c.Add(
            node=node, sources=sources, contents=contents, dest=dest, chown=flags.get("chown"),
            chmod=flags.get("chmod"), link=flags.flag("link"), excludes=flags.many("exclude"),
            checksum=flags.get("checksum"), keep_git_dir=flags.flag("keep-git-dir"),
        )  # fmt: skip

    def copy(self, node: Instruction, flags: Flags) -> c.Copy:
        sources, contents, dest = self._sources(node)
        source_stage = flags.get("from")
        if source_stage is not None:
            try:
                plain = ShellLex(self.df.escape).process_word(source_stage, {}) == source_stage
            except ExpansionError:
                plain = False
            if not plain:
                raise self.error(
                    node, "variable expansion is not supported for --from",
                    hint="define a stage with `FROM ${VAR} AS <name>` (global ARGs work in FROM) and copy from it",
                    near=flags.written["from"],
                )  # fmt: skip
        return c.Copy(
            node=node, sources=sources, contents=contents, dest=dest, chown=flags.get("chown"),
            chmod=flags.get("chmod"), link=flags.flag("link"), excludes=flags.many("exclude"),
            from_stage=source_stage, parents=flags.flag("parents"),
        )  # fmt: skip

    def _sources(self, node: Instruction) -> tuple[tuple[str, ...], tuple[c.SourceContent, ...], str]:
        name = node.cmd.upper()
        if len(node.value) < 2:
            raise self.error(
                node,
                f"{name} requires at least two arguments, but only one was provided. "
                "Destination could not be determined."
                if node.value
                else f"{name} requires at least two arguments",
                hint=f"usage: {_USAGE[node.cmd]}",
                near=node.value[0] if node.value else None,
            )
        *srcs, dest = node.value
        by_name = {doc.name: doc for doc in node.heredocs}
        if not node.json and _HEREDOC_WORD.match(dest):
            raise self.error(node, f"{name} cannot accept a heredoc as a destination", near=dest,
                             hint=f"a heredoc is a source: {name} <<EOF /path/in/image")
        paths: list[str] = []
        contents: list[c.SourceContent] = []
        for src in srcs:
            match = _HEREDOC_WORD.match(src) if not node.json else None
            doc = by_name.get(match[3].replace('"', "").replace("'", "")) if match else None
            if doc is None:
                paths.append(src)
            else:
                contents.append(c.SourceContent(path=doc.name, data=doc.chomped_content(), expand=doc.expand))
        return tuple(paths), tuple(contents), dest


_DURATIONS = ("interval", "timeout", "start-period", "start-interval")
_HANDLERS: Mapping[str, Callable[[_Parser, Instruction, Flags], c.Command]] = {
    "from": _Parser.from_, "run": _Parser.run, "cmd": _Parser.cmd, "entrypoint": _Parser.entrypoint,
    "env": _Parser.env, "label": _Parser.label, "maintainer": _Parser.maintainer, "expose": _Parser.expose,
    "add": _Parser.add, "copy": _Parser.copy, "volume": _Parser.volume, "user": _Parser.user,
    "workdir": _Parser.workdir, "arg": _Parser.arg, "onbuild": _Parser.onbuild,
    "stopsignal": _Parser.stopsignal, "healthcheck": _Parser.healthcheck, "shell": _Parser.shell,
}  # fmt: skip


def _cmdline(node: Instruction) -> tuple[tuple[str, ...], bool]:
    if node.json:
        return node.value, False
    joined = " ".join(node.value)
    return ((joined,) if joined else ()), True


def parse_command(dockerfile: Dockerfile, node: Instruction) -> c.Command:
    """One instruction of `dockerfile` as a typed command; DockerfileSyntaxError if BuildKit would refuse it."""
    return _Parser(dockerfile).command(node)


def parse_stages(dockerfile: Dockerfile) -> tuple[tuple[c.Arg, ...], tuple[c.Stage, ...]]:
    """The global ARGs (before the first FROM) and the stages of `dockerfile`, in order."""
    parser = _Parser(dockerfile)
    meta_args: list[c.Arg] = []
    stages: list[c.Stage] = []
    current: list[c.Command] = []
    names: dict[str, int] = {}
    for node in dockerfile.instructions:
        command = parser.command(node)
        if isinstance(command, c.From):
            if stages:
                stages[-1] = c.Stage(index=stages[-1].index, from_=stages[-1].from_, commands=tuple(current))
            name = command.stage_name
            if name is not None and name in names:
                raise parser.error(
                    node, f"duplicate stage name {name!r}", near=node.value[2],
                    hint=f"the stage on line {names[name]} already has this name",
                )  # fmt: skip
            if name is not None:
                names[name] = node.start_line
            stages.append(c.Stage(index=len(stages), from_=command))
            current = []
        elif not stages:
            if isinstance(command, c.Arg):
                meta_args.append(command)
                continue
            raise parser.error(
                node, f"{node.keyword or node.cmd.upper()} before the first FROM: no build stage in current context",
                hint="only ARG may come before the first FROM; start a stage with FROM <image>",
            )  # fmt: skip
        else:
            current.append(command)
    if stages:
        stages[-1] = c.Stage(index=stages[-1].index, from_=stages[-1].from_, commands=tuple(current))
    return tuple(meta_args), tuple(stages)


def allowed_flags(keyword: str) -> str:
    """A sentence naming the flags `keyword` takes (for messages elsewhere)."""
    return describe(keyword.upper(), _FLAGS.get(keyword.lower(), {}))
