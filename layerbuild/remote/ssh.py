"""SSH through the system's OpenSSH client: targets (`ssh://USER@HOST[:PORT]`), one shared master
connection per target (ControlMaster), and ssh's failures turned into errors with a hint."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from layerbuild.errors import LayerbuildError, UsageError

# How long the shared connection outlives the last command (the next command reuses it: no handshake).
CONTROL_PERSIST = "120"
CONNECT_TIMEOUT = "15"


class SshError(LayerbuildError):
    """ssh could not reach or log into the host."""


@dataclass(frozen=True)
class SshTarget:
    """Where a host is and how to log in: user, host, port, an identity file, `-o KEY=VALUE` options."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{user}{host}{port}"

    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


_SPEC = re.compile(r"^(?:(?P<user>[^@/\s]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@/\s\[\]]+))(?::(?P<port>\d+))?/?$")


def parse_target(text: str, *, identity: str | None = None, options: Mapping[str, str] | None = None) -> SshTarget:
    """`ssh://USER@HOST[:PORT]` or `USER@HOST[:PORT]` as a target; UsageError for anything else."""
    spec = text[len("ssh://"):] if text.startswith("ssh://") else text
    if "://" in spec:
        raise UsageError(f"unsupported host {text!r}", hint="give ssh://USER@HOST[:PORT]")
    match = _SPEC.match(spec)
    if match is None:
        raise UsageError(f"invalid ssh host {text!r}", hint="give ssh://USER@HOST[:PORT] (or USER@HOST[:PORT])")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"invalid port in {text!r}")
    return SshTarget(match["host"] or match["v6"], match["user"], port, identity, dict(options or {}))


def parse_options(items: Sequence[str]) -> dict[str, str]:
    """`--ssh-opt KEY=VALUE` items as ssh's `-o KEY=VALUE` options."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise UsageError(f"invalid --ssh-opt {item!r}", hint="write --ssh-opt KEY=VALUE, e.g. "
                             "--ssh-opt StrictHostKeyChecking=accept-new")
        out[key.strip()] = value
    return out


def _control_dir() -> str:
    """A private directory for the master sockets; short (a socket path has ~100 bytes at most)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "layerbuild-ssh") if base and len(base) < 40 else os.path.join(
        tempfile.gettempdir(), f"layerbuild-ssh-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SshError(f"{path!r} is not a private directory of this user", hint="remove it and try again")
    return path


def ssh_argv(target: SshTarget, command: str | None, *, tty: bool = False, master: bool = True) -> list[str]:
    """The ssh command line that runs `command` (a shell command line) on the target."""
    exe = shutil.which("ssh")
    if exe is None:
        raise SshError("the OpenSSH client (ssh) is not installed", hint="install it: apt-get install openssh-client")
    argv = [exe]
    # ssh takes the first value it is given for an option: the machine's own options come first.
    for key, value in target.options.items():
        argv += ["-o", f"{key}={value}"]
    argv += ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=15"]
    if not tty:
        argv += ["-o", "BatchMode=yes", "-T"]
    else:
        argv += ["-t"]
    if master:
        argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir()}/%C",
                 "-o", f"ControlPersist={CONTROL_PERSIST}"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.identity:
        argv += ["-i", target.identity, "-o", "IdentitiesOnly=yes"]
    argv += ["--", target.destination()]
    if command is not None:
        argv.append(command)
    return argv


def run(target: SshTarget, command: str, *, input: bytes | None = None, check: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `command` on the target; SshError (with ssh's reason and a hint) when ssh itself fails."""
    proc = subprocess.run(ssh_argv(target, command), input=input, capture_output=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if proc.returncode == 255:
        raise connection_error(target, proc.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        text = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise SshError(f"on {target.url}: `{command[:80]}` failed (exit {proc.returncode}): {text[-800:]}")
    return proc


def connection_error(target: SshTarget, stderr: str) -> SshError:
    """ssh's exit 255 explained: what went wrong, and what to do about it."""
    text = stderr.strip()
    where = target.url
    opt_hint = "pass options with --ssh-opt KEY=VALUE (remembered for the machine), or set them in ~/.ssh/config"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return SshError(f"the host key of {where} has changed since it was recorded in known_hosts",
                        hint="if the host was reinstalled, remove the old key (ssh-keygen -R HOST) and connect "
                             "again; otherwise someone may be intercepting the connection")
    if "Host key verification failed" in text or "No ED25519 host key is known" in text or (
            "host key" in text.lower() and "known" in text.lower()):
        return SshError(f"the host key of {where} is not known (not in known_hosts)",
                        hint="connect once with `ssh` to check and accept the key, add it with ssh-keyscan, or "
                             "pass --ssh-opt StrictHostKeyChecking=accept-new")
    if "Permission denied" in text:
        return SshError(f"{where} refused the login ({_last_line(text)})",
                        hint="check the user and the key: --identity KEY (or ssh-add KEY), and that its public "
                             "key is in the host's ~/.ssh/authorized_keys")
    if "Connection refused" in text:
        return SshError(f"{where} refused the connection: no ssh server on that port",
                        hint="check the host and port (ssh://USER@HOST:PORT) and that sshd runs there")
    if "Could not resolve hostname" in text:
        return SshError(f"cannot resolve the host name of {where}", hint="check the name, or give an address")
    if "timed out" in text:
        return SshError(f"connecting to {where} timed out", hint="check that the host is up and reachable")
    return SshError(f"ssh to {where} failed: {_last_line(text) or 'no reason given'}", hint=opt_hint)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("Warning:")]
    return lines[-1].strip() if lines else ""


def close_master(target: SshTarget) -> None:
    """Stop the shared connection to the target, if one runs."""
    argv = ssh_argv(target, None)
    dest = argv.pop()
    subprocess.run([*argv[:-1], "-O", "exit", dest], capture_output=True, stdin=subprocess.DEVNULL)


def quote(text: str) -> str:
    return shlex.quote(text)
