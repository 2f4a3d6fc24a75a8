"""Config-only instructions applied to the image config, exactly as Docker/BuildKit apply them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from layerbuild.image.config import ContainerConfig, Healthcheck, HistoryEntry, ImageConfig, normalize_port
from layerbuild.instructions import commands as c
from layerbuild.platforms import DEFAULT_PATH


def empty_config(architecture: str, os_name: str = "linux") -> ImageConfig:
    """The config BuildKit starts a FROM scratch image with: the default PATH, WorkingDir `/`."""
    return ImageConfig(
        architecture=architecture, os=os_name,
        config=ContainerConfig(env=(f"PATH={DEFAULT_PATH}",), working_dir="/"),
    )


def _shell_form(command: c.ShellDependent, shell: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(command.command) if not command.prepend_shell else (*shell, *command.command)


def go_quote(text: str) -> str:
    """`text` as Go's strconv.Quote writes it (BuildKit's `%q`): printable characters kept, `"` and `\\`
    escaped, control characters as `\\n`, `\\t`, `\\x00` or `\\u…`."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch == " " or (ch.isprintable() and ch != "\u00ad"):
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's time.Duration prints it: `0s`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`."""
    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{frac(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{frac(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = frac(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    return f"{sign}{minutes}m{seconds}" if minutes else f"{sign}{seconds}"


def _go_list(words: Iterable[str], quote: bool = False) -> str:
    """A []string as Go's `%v` (`[a b]`) or `%q` (`["a" "b"]`) prints it."""
    return "[" + " ".join(go_quote(w) if quote else w for w in words) + "]"


def created_by(command: c.Command, shell: tuple[str, ...], workdir: str,
               history_args: tuple[tuple[str, str | None], ...] = ()) -> str | None:
    """The history text of a step as current BuildKit's dockerfile2llb writes it (its Go formatting
    included), without the ` # buildkit` marker it appends to steps that made a layer; None for a
    step BuildKit records no history for (ONBUILD).

    `history_args` are, for RUN, the stage's ARGs in declaration order with the value the step sees
    (BuildKit's `|N KEY=value` prefix), and for ARG its own arguments with the values they took."""
    node = command.node
    if isinstance(command, c.Run):
        words = _shell_form(command, shell)
        prefix = [f"|{len(history_args)}", *(f"{k}={v or ''}" for k, v in history_args)] if history_args else []
        return "RUN " + " ".join([*prefix, *words])
    if isinstance(command, c.Cmd | c.Entrypoint):
        return f"{node.cmd.upper()} {_go_list(_shell_form(command, shell), quote=True)}"
    if isinstance(command, c.Env | c.Label):
        return f"{node.cmd.upper()} " + " ".join(f"{p.key}={p.value}" for p in command.pairs)
    if isinstance(command, c.Workdir):
        return f"WORKDIR {workdir}"  # the directory it resolved to, as BuildKit records it
    if isinstance(command, c.Arg):
        pairs = history_args or tuple((a.key, a.default) for a in command.args)
        return "ARG " + " ".join(k if v is None else f"{k}={v}" for k, v in pairs)
    if isinstance(command, c.Copy | c.Add):
        parts = ["ADD" if isinstance(command, c.Add) else "COPY"]
        if isinstance(command, c.Copy) and command.parents:
            parts.append("--parents")
        if command.chown:
            parts.append(f"--chown={command.chown}")
        if command.chmod:
            parts.append(f"--chmod={command.chmod}")
        parts.extend(command.sources)
        parts.extend(f"<<{content.path}" for content in command.contents)
        return " ".join([*parts, command.dest])
    if isinstance(command, c.Expose):
        return "EXPOSE " + _go_list(p for spec in command.ports for p in normalize_port(spec))
    if isinstance(command, c.Volume):
        return "VOLUME " + _go_list(command.paths)
    if isinstance(command, c.Shell):
        return "SHELL " + _go_list(command.shell)
    if isinstance(command, c.User):
        return f"USER {command.user}"
    if isinstance(command, c.StopSignal):
        return f"STOPSIGNAL {command.signal}"
    if isinstance(command, c.Maintainer):
        return f"MAINTAINER {command.maintainer}"
    if isinstance(command, c.Healthcheck):
        check = _healthcheck(command)
        return (f"HEALTHCHECK {{Test:{_go_list(check.test)} Interval:{go_duration(check.interval)} "
                f"Timeout:{go_duration(check.timeout)} StartPeriod:{go_duration(check.start_period)} "
                f"StartInterval:{go_duration(check.start_interval)} Retries:{check.retries}}}")
    if isinstance(command, c.Onbuild):
        return None
    text = node.original
    if node.inner is None and node.keyword:
        text = node.cmd.upper() + text[len(node.keyword) :]
    return text


def _healthcheck(command: c.Healthcheck) -> Healthcheck:
    if command.test == ("NONE",):
        return Healthcheck(test=("NONE",))
    return Healthcheck(
        test=command.test,
        interval=command.interval_ns if command.interval_ns is not None else 0,
        timeout=command.timeout_ns if command.timeout_ns is not None else 0,
        start_period=command.start_period_ns if command.start_period_ns is not None else 0,
        start_interval=command.start_interval_ns if command.start_interval_ns is not None else 0,
        retries=command.retries if command.retries is not None else 0,
    )


class ConfigBuilder:
    """Applies a stage's config-only steps in order; knows whether CMD was set in this stage.

    It keeps the parts that grow with every step (env, labels, ports, volumes, triggers, layers,
    history) as mutable lists and maps and makes the config once, in `result`: a Dockerfile of n
    steps costs O(n), where rebuilding a frozen config per step cost O(n) each."""

    def __init__(self, config: ImageConfig) -> None:
        self._base = config
        run = config.config
        if not any(entry.partition("=")[0] == "PATH" for entry in run.env):
            # BuildKit gives a stage whose base has no PATH (an imported rootfs) its default PATH.
            run = dataclasses.replace(run, env=(*run.env, f"PATH={DEFAULT_PATH}"))
        self._changes: dict[str, Any] = {}  # plain ContainerConfig fields set by the steps
        self._env = list(run.env)
        self._env_at: dict[str, int] = {}  # key -> index of its first entry, as with_env replaces it
        for i, entry in enumerate(self._env):
            self._env_at.setdefault(entry.partition("=")[0], i)
        self._labels = dict(run.labels)
        self._ports = list(run.exposed_ports)
        self._volumes = list(run.volumes)
        self._on_build = list(run.on_build)
        self._diff_ids = list(config.diff_ids)
        self._history = list(config.history)
        self._author = config.author
        self.cmd_set = False

    def _set_env(self, key: str, value: str) -> None:
        entry = f"{key}={value}"
        at = self._env_at.get(key)
        if at is None:
            self._env_at[key] = len(self._env)
            self._env.append(entry)
        else:
            self._env[at] = entry

    def apply(self, command: c.Command, workdir: str, shell: tuple[str, ...]) -> None:
        changes = self._changes
        if isinstance(command, c.Env):
            for pair in command.pairs:
                self._set_env(pair.key, pair.value)
        elif isinstance(command, c.Label):
            self._labels.update((p.key, p.value) for p in command.pairs)
        elif isinstance(command, c.Cmd):
            # BuildKit marks every CMD ArgsEscaped (a Docker-compatibility field), whatever its form.
            changes.update(cmd=_shell_form(command, shell), args_escaped=True)
            self.cmd_set = True
        elif isinstance(command, c.Entrypoint):
            changes["entrypoint"] = _shell_form(command, shell)
            if not self.cmd_set:
                changes["cmd"] = None  # ENTRYPOINT resets a CMD inherited from the base
        elif isinstance(command, c.Expose):
            self._ports.extend(command.ports)
        elif isinstance(command, c.Volume):
            self._volumes.extend(command.paths)
        elif isinstance(command, c.User):
            changes["user"] = command.user
        elif isinstance(command, c.Workdir):
            changes["working_dir"] = workdir
        elif isinstance(command, c.StopSignal):
            changes["stop_signal"] = command.signal
        elif isinstance(command, c.Healthcheck):
            check = _healthcheck(command)
            changes["healthcheck"] = check
        elif isinstance(command, c.Shell):
            changes["shell"] = command.shell
        elif isinstance(command, c.Onbuild):
            self._on_build.append(command.expression)
        elif isinstance(command, c.Maintainer):
            self._author = command.maintainer

    def add_layer(self, diff_id: str, entry: HistoryEntry) -> None:
        """One more layer on top, with its history entry (marked as adding a layer)."""
        self._diff_ids.append(diff_id)
        self._history.append(dataclasses.replace(entry, empty_layer=False))

    def add_history(self, entry: HistoryEntry) -> None:
        """A history entry for a config-only step (always recorded as `empty_layer`)."""
        self._history.append(dataclasses.replace(entry, empty_layer=True))

    def result(self) -> ImageConfig:
        """The config with every step applied."""
        run = dataclasses.replace(
            self._base.config, **self._changes, env=tuple(self._env), labels=tuple(self._labels.items()),
            exposed_ports=tuple(self._ports), volumes=tuple(self._volumes), on_build=tuple(self._on_build),
        )
        return dataclasses.replace(self._base, config=run, diff_ids=tuple(self._diff_ids),
                                   history=tuple(self._history), author=self._author)
