"""`--chown` and `--chmod` of COPY/ADD: user and group names through the image's /etc/passwd and /etc/group."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from layerbuild.errors import BuildError

ModeFn = Callable[[int, bool], int]  # (current permission bits, is a directory) -> new bits


class UserDB(Protocol):
    """Name lookups in the destination image; the caller reads them from its rootfs."""

    def user(self, name: str) -> tuple[int, int] | None:
        """(uid, primary gid) of the user `name`, or None if unknown."""
        ...

    def group(self, name: str) -> int | None:
        """The gid of the group `name`, or None if unknown."""
        ...


@dataclass(frozen=True)
class StaticUserDB:
    """A UserDB from fixed tables (tests, and images without /etc/passwd: an empty one)."""

    users: dict[str, tuple[int, int]] | None = None
    groups: dict[str, int] | None = None

    def user(self, name: str) -> tuple[int, int] | None:
        return (self.users or {}).get(name)

    def group(self, name: str) -> int | None:
        return (self.groups or {}).get(name)


NO_USERS = StaticUserDB()


def _read_in_root(root: Path, rel: str) -> str:
    # Resolve inside the rootfs, so an /etc symlink cannot make us read the host's files.
    from layerbuild.context.tree import StageTree

    entry = StageTree(root).resolve(rel)
    if entry is None or not entry.is_file:
        return ""
    with open(entry.path, encoding="utf-8", errors="replace") as f:
        return f.read()


class RootfsUserDB:
    """Parses /etc/passwd and /etc/group of a materialized rootfs, resolving symlinks inside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = Path(root)
        self._users: dict[str, tuple[int, int]] = {}
        self._groups: dict[str, int] = {}
        for line in _read_in_root(root, "etc/passwd").splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] and fields[2].isdigit() and fields[3].isdigit():
                self._users.setdefault(fields[0], (int(fields[2]), int(fields[3])))
        for line in _read_in_root(root, "etc/group").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] and fields[2].isdigit():
                self._groups.setdefault(fields[0], int(fields[2]))

    def user(self, name: str) -> tuple[int, int] | None:
        return self._users.get(name)

    def group(self, name: str) -> int | None:
        return self._groups.get(name)


def check_chown(spec: str) -> None:
    """Refuse a malformed `--chown` value early (before any name lookup)."""
    user, _, group = spec.partition(":")
    if not user or (":" in spec and not group):
        raise BuildError(f"invalid --chown value {spec!r}", hint="use USER, USER:GROUP, UID or UID:GID")


def resolve_chown(spec: str, db: UserDB) -> tuple[int, int]:
    """`USER[:GROUP]` → (uid, gid) as BuildKit's file op reads them (solver/llbsolver/ops/user_linux.go):
    a numeric user alone means gid = uid, a named user alone its primary group from /etc/passwd; a
    name the image does not know leaves uid and gid at 0, a group it does not know the user's gid."""
    check_chown(spec)
    user, _, group = spec.partition(":")
    if user.isdigit():
        uid, gid = int(user), int(user)
    else:
        uid, gid = db.user(user) or (0, 0)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found_gid = db.group(group)
            gid = gid if found_gid is None else found_gid
    return uid, gid


_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")
_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


def parse_chmod(spec: str) -> ModeFn:
    """`--chmod`: octal (0-7777) sets the permission bits; a symbolic mode (`u+x,go-w`, `a=rX`) edits them."""
    if re.fullmatch(r"[0-7]+", spec):
        value = int(spec, 8)
        if value > 0o7777:
            raise BuildError(f"invalid --chmod value {spec!r}: it should be octal and between 0 and 07777")
        return lambda _mode, _is_dir: value
    if spec.isdigit() or not spec:
        raise BuildError(f"invalid --chmod value {spec!r}: it should be octal and between 0 and 07777")
    clauses = spec.split(",")
    for clause in clauses:
        if not _SYMBOLIC.match(clause):
            raise BuildError(
                f"invalid --chmod value {spec!r}", hint="use octal (0755) or symbolic (u+x,go-w)"
            )

    def apply(mode: int, is_dir: bool) -> int:
        for clause in clauses:
            mode = _apply_clause(clause, mode, is_dir)
        return mode

    return apply


def _apply_clause(clause: str, mode: int, is_dir: bool) -> int:
    i = 0
    while i < len(clause) and clause[i] in "ugoa":
        i += 1
    who = clause[:i] or "a"
    mask = 0
    for w in "ugo" if "a" in who else who:
        mask |= _WHO_BITS[w]
    for op, perms in re.findall(r"([-+=])([rwxXstugo]*)", clause[i:]):
        bits = 0
        if perms in ("u", "g", "o"):  # copy another class's bits
            shift = {"u": 6, "g": 3, "o": 0}[perms]
            rwx = (mode >> shift) & 0o7
            bits = rwx << 6 | rwx << 3 | rwx
        else:
            for p in perms:
                if p == "r":
                    bits |= 0o444
                elif p == "w":
                    bits |= 0o222
                elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                    bits |= 0o111
                elif p == "s":
                    bits |= 0o6000
                elif p == "t":
                    bits |= 0o1000
        bits &= mask
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mode = (mode & ~mask) | bits
    return mode & 0o7777
