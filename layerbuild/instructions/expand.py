"""Variable expansion and ARG/ENV scoping, as BuildKit's dockerfile2llb dispatch applies them (pure)."""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from layerbuild.errors import ExpansionError
from layerbuild.instructions import commands as c
from layerbuild.instructions.locate import expansion_error, syntax_error
from layerbuild.instructions.mounts import MountError, parse_mount
from layerbuild.parser.ast import Dockerfile, Instruction
from layerbuild.parser.shell import MAX_EXPANSION_BYTES, ExpansionBudget, ShellLex

__all__ = ["ExpandedFrom", "ExpandedStep", "Scope", "StageExpander", "expand_from", "resolve_meta_args"]

MetaArgs = Mapping[str, "str | None"]


@dataclass(frozen=True)
class ExpandedFrom:
    """A FROM line with its base name and platform expanded from the global ARGs it used."""

    command: c.From
    used_args: frozenset[str]


class _ScopeHistory:
    """Every value each variable of one stage has had, so that the scope at any step can be read
    later without a copy per step (copying it at each step was quadratic in the number of names).

    Names keep the position of their first assignment, as a dict's keys do; `version` counts the
    assignments so far, and the scope at version v is every name's last value set before it.
    """

    def __init__(self, start: Mapping[str, str]) -> None:
        self.version = 0
        self._names: list[str] = []
        self._born: list[int] = []  # the version at which each name of `_names` first got a value
        self._values: dict[str, list[tuple[int, str]]] = {}
        self._items: tuple[int, tuple[tuple[str, str], ...]] | None = None
        for name, value in start.items():
            self.set(name, value)

    def set(self, name: str, value: str) -> None:
        self.version += 1
        history = self._values.get(name)
        if history is None:
            self._values[name] = [(self.version, value)]
            self._names.append(name)
            self._born.append(self.version)
        else:
            history.append((self.version, value))

    def get(self, name: str, version: int) -> str | None:
        history = self._values.get(name)
        if not history or history[0][0] > version:
            return None
        if history[-1][0] <= version:
            return history[-1][1]
        return history[bisect.bisect_right(history, version, key=lambda entry: entry[0]) - 1][1]

    def items(self, version: int) -> tuple[tuple[str, str], ...]:
        if self._items is not None and self._items[0] == version:
            return self._items[1]  # steps with no assignment between them share one tuple
        count = bisect.bisect_right(self._born, version)
        items = tuple((name, self.get(name, version) or "") for name in self._names[:count])
        self._items = (version, items)
        return items


@dataclass(frozen=True)
class Scope:
    """The variables one step sees, read from its stage's history on demand."""

    history: _ScopeHistory
    version: int

    def items(self) -> tuple[tuple[str, str], ...]:
        return self.history.items(self.version)

    def get(self, name: str, default: str = "") -> str:
        value = self.history.get(name, self.version)
        return default if value is None else value


@dataclass(frozen=True)
class ExpandedStep:
    """One command after expansion.

    `used_args` names the ARGs whose values this step depends on: those its words referenced,
    and for RUN every ARG in scope (BuildKit puts them all in the command's environment).
    `variables` is what the step sees: base env, ENV and ARG values, the last assignment winning;
    `scope` gives single values without building that tuple.
    """

    command: c.Command
    used_args: frozenset[str]
    scope: Scope

    @property
    def variables(self) -> tuple[tuple[str, str], ...]:
        return self.scope.items()


class _Expander:
    """Expands words of one instruction against a variable mapping, collecting the names found."""

    def __init__(
        self, dockerfile: Dockerfile, node: Instruction, variables: Mapping[str, str],
        budget: ExpansionBudget | None = None,
    ) -> None:
        self.df = dockerfile
        self.node = node
        self.vars = variables
        # One instruction may substitute up to MAX_EXPANSION_BYTES, charged also to the build's
        # `budget` when the planner gives one.
        self.budget = ExpansionBudget(MAX_EXPANSION_BYTES, parent=budget)
        self.lex = ShellLex(dockerfile.escape, budget=self.budget)
        self.matches: set[str] = set()

    def word(self, word: str) -> str:
        try:
            result, found = self.lex.process_word_with_matches(word, self.vars)
        except ExpansionError as exc:
            raise expansion_error(self.df, self.node, exc, near=_first_dollar(word)) from None
        self.matches |= found
        return result

    def optional(self, word: str | None) -> str | None:
        return None if word is None else self.word(word)

    def words(self, word: str) -> list[str]:
        try:
            result, found = self.lex.process_word_with_matches(word, self.vars)
            words = self.lex.process_words(word, self.vars)
        except ExpansionError as exc:
            raise expansion_error(self.df, self.node, exc, near=_first_dollar(word)) from None
        del result
        self.matches |= found
        return words

    def heredoc(self, data: str) -> str:
        # BuildKit expands heredoc bodies with a fixed `\` escape and leaves quotes alone.
        lex = ShellLex("\\", skip_process_quotes=True, budget=self.budget)
        try:
            result, found = lex.process_word_with_matches(data, self.vars)
        except ExpansionError as exc:
            raise expansion_error(self.df, self.node, exc) from None
        self.matches |= found
        return result


def _first_dollar(word: str) -> str | None:
    index = word.find("$")
    return word[index:] if index >= 0 else word or None


def resolve_meta_args(
    dockerfile: Dockerfile,
    meta_args: Sequence[c.Arg],
    build_args: Mapping[str, str] | None = None,
    predefined: Mapping[str, str] | None = None,
    budget: ExpansionBudget | None = None,
) -> dict[str, str | None]:
    """The values of the global ARGs: defaults expanded with the earlier ones, `--build-arg` overriding.

    `predefined` holds automatic ARGs such as TARGETPLATFORM (overridable by build args too). A
    name declared without a default and not given is present with the value None.
    """
    build_args = build_args or {}
    values: dict[str, str | None] = {k: build_args.get(k, v) for k, v in (predefined or {}).items()}
    for command in meta_args:
        for arg in command.args:
            default = arg.default
            if default is not None:
                scope = {k: v or "" for k, v in values.items()}
                default = _Expander(dockerfile, command.node, scope, budget).word(default)
            values[arg.key] = build_args.get(arg.key, default)
    return values


def expand_from(
    dockerfile: Dockerfile, command: c.From, meta_args: MetaArgs, budget: ExpansionBudget | None = None
) -> ExpandedFrom:
    """FROM's image and `--platform` expanded with the global ARGs only (a declared ARG without value is "")."""
    scope = {k: v or "" for k, v in meta_args.items()}
    expander = _Expander(dockerfile, command.node, scope, budget)
    base = expander.word(command.base_name)
    if not base:
        raise syntax_error(
            dockerfile, command.node, f"base name ({command.base_name}) should not be blank",
            near=command.base_name, hint="give the ARG a default or pass --build-arg",
        )  # fmt: skip
    platform = expander.optional(command.platform)
    expanded = dataclasses.replace(command, base_name=base, platform=platform)
    return ExpandedFrom(command=expanded, used_args=frozenset(expander.matches))


class StageExpander:
    """Walks one stage's commands in order, expanding each with the variables in scope at that point.

    `meta_args` are the global ARG values (`resolve_meta_args`): a stage sees one only after
    re-declaring it with `ARG NAME`. `build_args` override the defaults of declared ARGs. `base_env`
    is the environment the stage starts from: the base image's config env, or for `FROM <stage>` the
    parent stage's `env` after its walk; `base_args` the parent stage's `args`. ENV and ARG write the same scope, the later one winning
    (BuildKit's rule: `ARG X` then `ENV X=...` gives the ENV value, and the reverse gives the ARG's).
    """

    def __init__(
        self,
        dockerfile: Dockerfile,
        *,
        meta_args: MetaArgs | None = None,
        build_args: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        budget: ExpansionBudget | None = None,
        base_args: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._df = dockerfile
        self._budget = budget
        self._meta = dict(meta_args or {})
        self._build_args = dict(build_args or {})
        start = dict(base_env.items() if isinstance(base_env, Mapping) else base_env)
        self._env: dict[str, str] = dict(start)
        # `FROM <stage>` starts from that stage's ARG values too (its `args`): in scope and in RUN's
        # environment, never in the image config (BuildKit: the child's state is the parent's).
        self._from_arg: dict[str, str] = dict(base_args)
        start.update(self._from_arg)
        self._vars: dict[str, str] = dict(start)
        self._history = _ScopeHistory(start)

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        """The image environment so far (base env plus ENV), to hand to stages built FROM this one."""
        return tuple(self._env.items())

    @property
    def args(self) -> tuple[tuple[str, str], ...]:
        """The ARGs in scope with a value that no later ENV has replaced."""
        return tuple(self._from_arg.items())

    def walk(self, commands: Iterable[c.Command]) -> Iterator[ExpandedStep]:
        """Each command expanded, in order; the scope advances as it goes."""
        for command in commands:
            yield self.step(command)

    def step(self, command: c.Command) -> ExpandedStep:
        """Expand one command with the current scope, then apply its ARG/ENV effects."""
        seen = Scope(self._history, self._history.version)
        # The expander only reads the variables, and they change only after it is done.
        ex = _Expander(self._df, command.node, self._vars, self._budget)
        expanded = self._expand(command, ex)
        used = {name for name in ex.matches if name in self._from_arg}
        if isinstance(command, c.Run):
            used = set(self._from_arg)
        if isinstance(expanded, c.Env):
            for pair in expanded.pairs:
                self._vars[pair.key] = self._env[pair.key] = pair.value
                self._history.set(pair.key, pair.value)
                self._from_arg.pop(pair.key, None)
        elif isinstance(expanded, c.Arg):
            self._declare(expanded)
        return ExpandedStep(command=expanded, used_args=frozenset(used), scope=seen)

    def arg_value(self, arg: c.ArgDef) -> str | None:
        """The value a declared ARG takes: the build arg, else its (expanded) default, else the global
        ARG's value; None for a bare ARG with none of them."""
        value = self._build_args.get(arg.key, arg.default)
        if value is None and arg.key in self._meta:
            value = self._meta[arg.key]
        return value

    def _declare(self, command: c.Arg) -> None:
        for arg in command.args:
            value = self.arg_value(arg)
            if value is not None:
                self._vars[arg.key] = self._from_arg[arg.key] = value
                self._history.set(arg.key, value)

    def _expand(self, command: c.Command, ex: _Expander) -> c.Command:
        replace = dataclasses.replace
        if isinstance(command, c.Env | c.Label):
            pairs = tuple(c.KeyValue(key=ex.word(p.key), value=ex.word(p.value)) for p in command.pairs)
            return replace(command, pairs=pairs)
        if isinstance(command, c.Arg):
            args = tuple(c.ArgDef(key=ex.word(a.key), default=ex.optional(a.default)) for a in command.args)
            return replace(command, args=args)
        if isinstance(command, c.Expose):
            ports: list[str] = []
            for word in command.ports:
                for port in ex.words(word):
                    problem = _port_problem(port)
                    if problem is not None:
                        raise syntax_error(self._df, command.node, f"{problem} {port!r}", near=word,
                                           hint="write PORT[/tcp|udp|sctp] or START-END[/PROTO], ports 1 to 65535")
                    ports.append(port)
            return replace(command, ports=tuple(ports))
        if isinstance(command, c.Volume):
            paths = tuple(ex.word(p) for p in command.paths)
            if any(not p for p in paths):
                raise syntax_error(self._df, command.node, "VOLUME specified can not be an empty string")
            return replace(command, paths=paths)
        if isinstance(command, c.User):
            return replace(command, user=ex.word(command.user))
        if isinstance(command, c.Workdir):
            return replace(command, path=ex.word(command.path))
        if isinstance(command, c.StopSignal):
            return replace(command, signal=ex.word(command.signal))
        if isinstance(command, c.SourcesAndDest):
            return self._expand_copy(command, ex)
        if isinstance(command, c.Run):
            return self._expand_run(command, ex)
        # RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK text is the shell's business; MAINTAINER and ONBUILD stay as written.
        return command

    def _expand_copy(self, command: c.SourcesAndDest, ex: _Expander) -> c.Command:
        contents = tuple(
            dataclasses.replace(item, data=ex.heredoc(item.data)) if item.expand else item
            for item in command.contents
        )
        changes: dict[str, object] = {
            "sources": tuple(ex.word(s) for s in command.sources),
            "dest": ex.word(command.dest),
            "contents": contents,
            "chown": ex.optional(command.chown),
            "chmod": ex.optional(command.chmod),
        }
        if isinstance(command, c.Add):
            changes["checksum"] = ex.optional(command.checksum)
        return dataclasses.replace(command, **changes)  # type: ignore[arg-type]

    def _expand_run(self, command: c.Run, ex: _Expander) -> c.Run:
        mounts = []
        for mount in command.mounts:
            try:
                mounts.append(parse_mount(mount.spec, ex.word))
            except MountError as exc:
                raise syntax_error(
                    self._df,
                    command.node,
                    f"invalid --mount: {exc.message}",
                    hint=exc.hint,
                    near=exc.near or mount.spec,
                ) from None
        return dataclasses.replace(command, mounts=tuple(mounts))


_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _port_problem(spec: str) -> str | None:
    """What is wrong with one EXPOSE port (Docker's `[ip:[host:]]port[-end][/proto]`), or None."""
    text = spec.strip()
    port, sep, proto = text.rpartition("/") if "/" in text else (text, "", "tcp")
    match = _PORT_RE.match(port.rsplit(":", 1)[-1])
    if (proto.lower() if sep else "tcp") not in ("tcp", "udp", "sctp") or match is None:
        return "invalid port"
    first = int(match.group(1))
    if not 0 < first <= int(match.group(2) or first) <= 65535:
        return "invalid port range"
    return None

