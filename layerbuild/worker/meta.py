"""Config-only instructions applied to the image config, exactly as Docker/BuildKit apply them."""

from __future__ import annotations

import dataclasses
import json

from layerbuild.image.config import ContainerConfig, Healthcheck, ImageConfig
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


def created_by(command: c.Command, shell: tuple[str, ...], workdir: str) -> str:
    """The history text of a step, in the style `docker history` shows for BuildKit images."""
    node = command.node
    if isinstance(command, c.Run):
        words = _shell_form(command, shell)
        return "RUN " + " ".join(words)
    if isinstance(command, c.Cmd | c.Entrypoint):
        return f"{node.cmd.upper()} {json.dumps(list(_shell_form(command, shell)))}"
    if isinstance(command, c.Env | c.Label):
        return f"{node.cmd.upper()} " + " ".join(f"{p.key}={p.value}" for p in command.pairs)
    if isinstance(command, c.Workdir):
        return f"WORKDIR {workdir}"  # the directory it resolved to, as BuildKit records it
    if isinstance(command, c.Arg):
        return "ARG " + " ".join(a.key if a.default is None else f"{a.key}={a.default}" for a in command.args)
    text = node.original
    if node.inner is None and node.keyword:
        text = node.cmd.upper() + text[len(node.keyword) :]
    return text


class ConfigBuilder:
    """Applies a stage's config-only steps in order; knows whether CMD was set in this stage."""

    def __init__(self, config: ImageConfig) -> None:
        self.config = config
        self.cmd_set = False

    def apply(self, command: c.Command, workdir: str, shell: tuple[str, ...]) -> None:
        cfg = self.config
        if isinstance(command, c.Env):
            for pair in command.pairs:
                cfg = cfg.with_env(pair.key, pair.value)
        elif isinstance(command, c.Label):
            labels = dict(cfg.config.labels) | {p.key: p.value for p in command.pairs}
            cfg = cfg.with_config(labels=tuple(labels.items()))
        elif isinstance(command, c.Cmd):
            # BuildKit marks every CMD ArgsEscaped (a Docker-compatibility field), whatever its form.
            cfg = cfg.with_config(cmd=_shell_form(command, shell), args_escaped=True)
            self.cmd_set = True
        elif isinstance(command, c.Entrypoint):
            changes: dict[str, object] = {"entrypoint": _shell_form(command, shell)}
            if not self.cmd_set:
                changes["cmd"] = None  # ENTRYPOINT resets a CMD inherited from the base
            cfg = cfg.with_config(**changes)
        elif isinstance(command, c.Expose):
            cfg = cfg.with_config(exposed_ports=(*cfg.config.exposed_ports, *command.ports))
        elif isinstance(command, c.Volume):
            cfg = cfg.with_config(volumes=(*cfg.config.volumes, *command.paths))
        elif isinstance(command, c.User):
            cfg = cfg.with_config(user=command.user)
        elif isinstance(command, c.Workdir):
            cfg = cfg.with_config(working_dir=workdir)
        elif isinstance(command, c.StopSignal):
            cfg = cfg.with_config(stop_signal=command.signal)
        elif isinstance(command, c.Healthcheck):
            old = cfg.config.healthcheck
            if command.test == ("NONE",):
                check = Healthcheck(test=("NONE",))
            else:
                check = Healthcheck(
                    test=command.test,
                    interval=command.interval_ns if command.interval_ns is not None else 0,
                    timeout=command.timeout_ns if command.timeout_ns is not None else 0,
                    start_period=command.start_period_ns if command.start_period_ns is not None else 0,
                    start_interval=command.start_interval_ns if command.start_interval_ns is not None else 0,
                    retries=command.retries if command.retries is not None else 0,
                )
            del old
            cfg = cfg.with_config(healthcheck=check)
        elif isinstance(command, c.Shell):
            cfg = cfg.with_config(shell=command.shell)
        elif isinstance(command, c.Onbuild):
            cfg = cfg.with_config(on_build=(*cfg.config.on_build, command.expression))
        elif isinstance(command, c.Maintainer):
            cfg = dataclasses.replace(cfg, author=command.maintainer)
        self.config = cfg
