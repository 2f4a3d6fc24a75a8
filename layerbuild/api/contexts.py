"""`build_contexts=` (`--build-context NAME=VALUE`) and `ssh=` (`--ssh ID=...`) checked as buildx checks them.

Light to import: the no-op fast path runs after these checks.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from layerbuild.errors import UsageError
from layerbuild.reference import context_name, normalize_tag, split_digest_ref
from layerbuild.worker.request import NamedContext

IMAGE_SCHEME = "docker-image://"
OCI_SCHEME = "oci-layout://"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_FORMS = "a directory, or docker-image://REF"

PathLike = str | os.PathLike[str]


def named_contexts(items: Mapping[str, PathLike] | None) -> dict[str, NamedContext]:
    """Each `NAME=VALUE` as a NamedContext under the name it answers to; UsageError for a bad one."""
    out: dict[str, NamedContext] = {}
    for name, raw in (items or {}).items():
        value = os.fspath(raw)
        what = f"--build-context {name}={value}"
        if not name:
            raise UsageError(f"invalid {what}: the name is empty", hint="write --build-context NAME=VALUE")
        try:
            normalize_tag(name)
        except UsageError as exc:
            raise UsageError(f"invalid context name {name!r}: {exc.message}",
                             hint="a context name is an image or stage name: lowercase letters, digits, "
                                  "and . _ - between them") from None
        out[context_name(name)] = _context(what, value)
    return out


def _context(what: str, value: str) -> NamedContext:
    if value.startswith(IMAGE_SCHEME):
        ref = value[len(IMAGE_SCHEME):]
        pinned = split_digest_ref(ref)
        try:
            normalize_tag(pinned[0] if pinned is not None else ref)
        except UsageError as exc:
            raise UsageError(f"{what}: {exc.message}", hint="write docker-image://NAME[:TAG][@DIGEST]") from None
        if pinned is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", pinned[1]):
            raise UsageError(f"{what}: invalid digest {pinned[1]!r}", hint="a digest is sha256: and 64 hex digits")
        return NamedContext("image", ref)
    if value.startswith(OCI_SCHEME):
        raise UsageError(f"{what}: OCI layout directories are not supported as named contexts yet",
                         hint="put the layout in a tar (tar -C DIR -cf image.tar .), `layerbuild load -i image.tar` "
                              "and name the image with docker-image://REF")
    if _URL.match(value) or value.startswith("git@"):
        raise UsageError(f"{what}: remote contexts (git repositories, URLs) are not supported: a build fetches "
                         "nothing from the network yet",
                         hint=f"clone or download it and pass the directory; a named context is {_FORMS}")
    path = Path(value)
    if not path.exists():
        raise UsageError(f"{what}: no such directory {value!r}", hint=f"a named context is {_FORMS}")
    if not path.is_dir():
        raise UsageError(f"{what}: {value!r} is not a directory", hint=f"a named context is {_FORMS}")
    return NamedContext("local", str(path.resolve()))


def ssh_sources(items: Mapping[str, PathLike | Iterable[PathLike]] | None) -> dict[str, tuple[Path, ...]]:
    """Each id with the agent socket or private key files it stands for (none given: $SSH_AUTH_SOCK),
    checked as BuildKit's ssh provider checks them: one socket, or keys, never both."""
    out: dict[str, tuple[Path, ...]] = {}
    for ident, given in (items or {}).items():
        if not ident or "," in ident or "=" in ident:
            raise UsageError(f"invalid --ssh id {ident!r}", hint="write --ssh default or --ssh ID=SOCKET|KEY[,KEY]")
        paths = [Path(given)] if isinstance(given, str | os.PathLike) else [Path(p) for p in given]
        if not paths:
            sock = os.environ.get("SSH_AUTH_SOCK", "")
            if not sock:
                raise UsageError(f"--ssh {ident}: invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set",
                                 hint=f"start an agent (eval $(ssh-agent); ssh-add KEY) or give --ssh {ident}=SOCKET|KEY")
            paths = [Path(sock)]
        sockets, keys = [], []
        for path in paths:
            try:
                st = path.stat()
            except OSError as exc:
                raise UsageError(f"--ssh {ident}: cannot use {str(path)!r}: {exc.strerror or exc}",
                                 hint="give an ssh agent's socket or private key files") from None
            if stat.S_ISSOCK(st.st_mode):
                sockets.append(path)
            elif stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
                keys.append(path)
            else:
                raise UsageError(f"--ssh {ident}: {str(path)!r} is neither an agent socket nor a readable key file")
        if len(sockets) > 1:
            raise UsageError(f"--ssh {ident}: only single socket allowed")
        if sockets and keys:
            raise UsageError(f"--ssh {ident}: mixing keys and socket not supported")
        out[ident] = tuple(p.absolute() for p in paths)
    return out
