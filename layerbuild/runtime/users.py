"""`USER` values (`name`, `uid`, `name:group`, `uid:gid`) resolved through the image's /etc/passwd and /etc/group."""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.runtime.merged import MergedView
from layerbuild.runtime.spec import SandboxError

MAX_ID = 2**31 - 1  # moby/sys/user's bound on uids and gids (larger ones are refused there too)


@dataclass(frozen=True)
class ExecUser:
    """The ids and home a process runs with, as the image's passwd and group files resolve USER."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _rows(data: bytes | None, width: int) -> list[list[str]]:
    rows = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        rows.append(fields + [""] * (width - len(fields)))
    return rows


def resolve_user(view: MergedView, user: str) -> ExecUser:
    """The ids a process runs as, following Docker (moby/sys/user GetExecUser): a name must exist in
    the image; a number is always a uid (it need not exist: then its group is 0), a numeric group
    always a gid. Supplementary groups: the primary gid (moby's getUser and BuildKit's
    ensureAdditionalGids both put it first), then, for the `user` form only, the groups of
    /etc/group that list the user's name; an explicit group adds none."""
    name, _, group = (user or "0").partition(":")
    passwd = _rows(view.read("/etc/passwd"), 7)
    if name.isdigit():
        entry = next((r for r in passwd if r[2] == name), None)
    else:
        entry = next((r for r in passwd if r[0] == name), None)
    if entry is not None:
        uid, gid, home, login = _int(entry[2]), _int(entry[3]), entry[5] or "/", entry[0]
    elif name.isdigit():
        uid, gid, home, login = int(name), 0, "/", ""
    else:
        raise SandboxError(f"unable to find user {name}: no matching entries in passwd file")
    groups_file = _rows(view.read("/etc/group"), 4)
    if group:
        if group.isdigit():
            found = next((r for r in groups_file if r[2] == group), None)
        else:
            found = next((r for r in groups_file if r[0] == group), None)
        if found is not None:
            gid = _int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SandboxError(f"unable to find group {group}: no matching entries in group file")
    extra: list[int] = []
    if login and not group:
        extra = [_int(r[2]) for r in groups_file if login in r[3].split(",")]
    if not (0 <= uid <= MAX_ID and 0 <= gid <= MAX_ID):
        raise SandboxError(f"user {user!r}: uids and gids must be in range 0-{MAX_ID}",
                           hint="give USER (or run -u) ids between 0 and 2147483647")
    groups = tuple(dict.fromkeys([gid, *extra]))
    return ExecUser(uid, gid, groups, home)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SandboxError(f"invalid id {text!r} in the image's passwd or group file") from None
