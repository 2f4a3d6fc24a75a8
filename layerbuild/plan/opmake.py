"""One expanded command and the state it runs in, turned into its op definition (see plan.ops)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Literal

from layerbuild.instructions import BindMount, CacheMount, SecretMount, SshMount, TmpfsMount
from layerbuild.instructions import commands as c
from layerbuild.plan.ops import (
    BindMountDef,
    CacheMountDef,
    ConfigEdit,
    Exec,
    FileCopy,
    InlineFile,
    MakeDir,
    MountDef,
    OpDef,
    ScriptFile,
    SecretMountDef,
    SshMountDef,
    TmpfsMountDef,
)
from layerbuild.platforms import DEFAULT_PATH

Network = Literal["default", "none", "host"]


def run_script(command: c.Run, shell: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...],
                                                            tuple[ScriptFile, ...]]:
    """(shell, script words, heredoc files) of a RUN, by BuildKit's rules.

    Exec form: no shell. A RUN whose whole line is one heredoc starting with `#!` runs the body as a
    file mounted at /dev/pipes/NAME; other heredocs are handed to the shell after the line."""
    if not command.prepend_shell:
        return (), tuple(command.command), ()
    text = command.command[0] if command.command else ""
    docs = command.heredocs
    if docs and len(docs) == 1 and text.strip() in (f"<<{docs[0].name}", f"<<-{docs[0].name}",
                                                     f"<<'{docs[0].name}'", f'<<"{docs[0].name}"'):
        body = docs[0].chomped_content()
        if body.startswith("#!"):
            return (), (f"/dev/pipes/{docs[0].name}",), (ScriptFile(docs[0].name, body),)
        return tuple(shell), (body,), ()
    if docs:
        text = text + "\n" + "".join(d.content + d.name + "\n" for d in docs)
    return tuple(shell), (text,), ()


def network_mode(mode: str | None) -> Network | None:
    """`mode` as a network mode, or None when it is none of them (or not given)."""
    for known in typing.get_args(Network):
        if mode == known:
            return known  # type: ignore[no-any-return]
    return None


def exec_env(variables: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The environment a RUN process gets: what is in scope, with BuildKit's PATH when there is none."""
    env = dict(variables)
    if "PATH" not in env:
        return (("PATH", DEFAULT_PATH), *env.items())
    return tuple(env.items())


def _mounts(command: c.Run, source_index: Callable[[str], int]) -> tuple[MountDef, ...]:
    out: list[MountDef] = []
    ssh_count = 0
    for m in command.mounts:
        if isinstance(m, BindMount):
            out.append(BindMountDef(target=m.target, source=m.source, readonly=m.readonly,
                                    from_input=source_index(m.from_stage) if m.from_stage else None))
        elif isinstance(m, CacheMount):
            out.append(CacheMountDef(target=m.target, id=m.id, sharing=m.sharing, readonly=m.readonly,
                                     mode=m.mode, uid=m.uid, gid=m.gid, source=m.source,
                                     from_input=source_index(m.from_stage) if m.from_stage else None))
        elif isinstance(m, TmpfsMount):
            out.append(TmpfsMountDef(target=m.target, size=m.size))
        elif isinstance(m, SecretMount):
            out.append(SecretMountDef(id=m.id, target=m.target, required=m.required, mode=m.mode,
                                      uid=m.uid, gid=m.gid))
        elif isinstance(m, SshMount):
            # BuildKit's default target: the mount's position among the step's ssh mounts.
            out.append(SshMountDef(id=m.id, target=m.target or f"/run/buildkit/ssh_agent.{ssh_count}",
                                   required=m.required, mode=m.mode, uid=m.uid, gid=m.gid))
            ssh_count += 1
    return tuple(out)


def make_op(
    command: c.Command,
    *,
    variables: Sequence[tuple[str, str]],
    workdir: str,
    user: str,
    shell: Sequence[str],
    network: Network,
    platform: str,
    source_index: Callable[[str], int],
    source_date_epoch: int | None = None,
    extra_hosts: tuple[tuple[str, str], ...] = (),
) -> OpDef:
    """The op of one expanded, non-FROM command. `source_index(ref)` is the input position of the
    stage or image that `--from=ref` names (the order of `Step.sources`); `extra_hosts` go to every
    RUN's /etc/hosts."""
    if isinstance(command, c.Run):
        sh, script, files = run_script(command, shell)
        mounts = _mounts(command, source_index)
        env = exec_env(variables)
        ssh = [m for m in mounts if isinstance(m, SshMountDef)]
        if ssh and not any(key == "SSH_AUTH_SOCK" for key, _ in env):
            env = (*env, ("SSH_AUTH_SOCK", ssh[0].target))  # as BuildKit: the first ssh mount's socket
        return Exec(
            shell=sh, args=script, env=env, user=user, workdir=workdir or "/",
            network=network_mode(command.network) or network, security=command.security or "sandbox",
            platform=platform, mounts=mounts, files=files,
            source_date_epoch=source_date_epoch, extra_hosts=extra_hosts,
        )  # fmt: skip
    if isinstance(command, c.SourcesAndDest):
        is_copy = isinstance(command, c.Copy)
        from_stage = command.from_stage if isinstance(command, c.Copy) else None
        return FileCopy(
            sources=tuple(command.sources), dest=command.dest, workdir=workdir, add=not is_copy,
            contents=tuple(InlineFile(item.path, item.data) for item in command.contents),
            chown=command.chown, chmod=command.chmod, link=command.link,
            parents=isinstance(command, c.Copy) and command.parents, excludes=tuple(command.excludes),
            checksum=command.checksum if isinstance(command, c.Add) else None,
            keep_git_dir=isinstance(command, c.Add) and command.keep_git_dir,
            from_input=source_index(from_stage) if from_stage else None,
            source_date_epoch=source_date_epoch,
        )  # fmt: skip
    if isinstance(command, c.Workdir):
        return MakeDir(path=workdir, source_date_epoch=source_date_epoch, user=user)
    return ConfigEdit(instruction=command.node.original)
