"""`USER` values (`name`, `uid`, `name:group`, `uid:gid`) resolved through the image's /etc/passwd and /etc/group."""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.runtime.merged import MergedView
from layerbuild.runtime.spec import SandboxError


@dataclass(frozen=True)
class ExecUser:
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
    """The ids a process runs as, following Docker (moby/sys/user): a name must exist in the image;
    a number need not (then its group is 0); supplementary groups are those listing the user's name."""
    name, _, group = (user or "0").partition(":")
    passwd = _rows(view.read("/etc/passwd"), 7)
    entry = next((r for r in passwd if r[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((r for r in passwd if r[2] == name), None)
    if entry is not None:
        uid, gid, home, login = _int(entry[2]), _int(entry[3]), entry[5] or "/", entry[0]
    elif name.isdigit():
        uid, gid, home, login = int(name), 0, "/", ""
    else:
        raise SandboxError(f"unable to find user {name}: no matching entries in passwd file")
    groups_file = _rows(view.read("/etc/group"), 4)
    if group:
        found = next((r for r in groups_file if r[0] == group), None)
        if found is None and group.isdigit():
            found = next((r for r in groups_file if r[2] == group), None)
        if found is not None:
            gid = _int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise SandboxError(f"unable to find group {group}: no matching entries in group file")
    extra: list[int] = []
    if login and not group:
        extra = [_int(r[2]) for r in groups_file if login in r[3].split(",")]
    groups = tuple(dict.fromkeys([gid, *extra]))
    return ExecUser(uid, gid, groups, home)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SandboxError(f"invalid id {text!r} in the image's passwd or group file") from None
