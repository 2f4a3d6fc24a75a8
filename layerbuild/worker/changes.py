"""`import --change`: Dockerfile config instructions applied to an image config, as `docker import -c`.

The changes are read by the same parser, expander and config builder a build uses, so `--change
'ENV PATH=/opt/bin:$PATH'` or `--change 'CMD ["sh"]'` mean what they mean in a Dockerfile.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from layerbuild.errors import DockerfileError, UsageError
from layerbuild.image.config import ImageConfig
from layerbuild.instructions import commands as c
from layerbuild.instructions.expand import StageExpander
from layerbuild.instructions.parse import parse_stages
from layerbuild.parser import parse
from layerbuild.plan.planner import DEFAULT_SHELL
from layerbuild.worker.meta import ConfigBuilder

# What `docker import --change` accepts.
ALLOWED = {"CMD": c.Cmd, "ENTRYPOINT": c.Entrypoint, "ENV": c.Env, "EXPOSE": c.Expose, "LABEL": c.Label,
           "ONBUILD": c.Onbuild, "STOPSIGNAL": c.StopSignal, "USER": c.User, "VOLUME": c.Volume,
           "WORKDIR": c.Workdir}


def apply_changes(config: ImageConfig, changes: Sequence[str]) -> ImageConfig:
    """`config` with each change (one Dockerfile instruction) applied in order, or a UsageError."""
    if not changes:
        return config
    lines = [" ".join(change.split("\n")) for change in changes]
    try:
        df = parse(("FROM scratch\n" + "\n".join(lines) + "\n").encode(), filename="--change")
        _, stages = parse_stages(df)
    except DockerfileError as exc:
        raise UsageError(f"invalid --change: {exc.message}", hint=exc.hint) from None
    commands = stages[0].commands if stages else ()
    expander = StageExpander(df, base_env=config.config.env_dict())
    builder = ConfigBuilder(config)
    workdir = config.config.working_dir or "/"
    for line, command in zip(lines, commands, strict=False):
        if not isinstance(command, tuple(ALLOWED.values())):
            raise UsageError(f"--change {line!r}: {command.node.cmd.upper()} cannot be set by import",
                             hint="use " + ", ".join(ALLOWED))
        try:
            step = expander.step(command).command
        except DockerfileError as exc:
            raise UsageError(f"--change {line!r}: {exc.message}", hint=exc.hint) from None
        if isinstance(step, c.Workdir):
            workdir = posixpath.normpath(posixpath.join(workdir, step.path))
        builder.apply(step, workdir, DEFAULT_SHELL)
    return builder.result()
