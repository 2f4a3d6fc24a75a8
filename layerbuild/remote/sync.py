"""The build context sent to a host: a manifest of (path, type, mode, size, mtime, content digest) for the
files `.dockerignore` leaves in, then a tar of only the files whose content the host lacks.

Client side: `scan` walks the context through the same ignore rules as a local build, with a stat cache of
its own (a file whose (device, inode, size, mtime, ctime, mode) is unchanged is not read again).
Host side: `Mirror` keeps one directory per context, changes only what the manifest says changed (so the
host's own stat cache keeps hitting on the files left alone) and reuses content it has under other names.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xxhash

from layerbuild.errors import UsageError

# (path, kind "f"/"d"/"l", mode & 0o7777, size, mtime_ns, sha256 of a file / target of a link / "")
Item = tuple[str, str, int, int, int, str]
RACY_MARGIN_NS = 50_000_000


@dataclass
class Scan:
    context_id: str
    items: list[Item]
    digest: str
    paths: dict[str, str]  # path → absolute path here, for the files sent

    @property
    def total_bytes(self) -> int:
        return sum(item[3] for item in self.items if item[1] == "f")

    def manifest(self) -> bytes:
        return json.dumps(self.items, separators=(",", ":")).encode()


def _cache_file(context_id: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "layerbuild" / "remote-contexts" / f"{context_id}.json"


def scan(context: str, dockerfile: str | None) -> Scan:
    """The manifest of `context` as a build of `dockerfile` would see it (its .dockerignore rules)."""
    from layerbuild.context.contenthash import hash_file
    from layerbuild.context.tree import BuildContext

    root = os.path.realpath(context)
    if not os.path.isdir(root):
        raise UsageError(f"build context {context!r} is not a directory")
    context_id = xxhash.xxh3_128_hexdigest(f"{socket.gethostname()}\0{root}\0{dockerfile or ''}".encode())
    tree = BuildContext.open(root, dockerfile=dockerfile)
    cache_path = _cache_file(context_id)
    try:
        cache: dict[str, list[Any]] = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list[Any]] = {}
    started = time.time_ns()
    items: list[Item] = []
    paths: dict[str, str] = {}
    entries = tree.walk("") if tree.matcher is not None else _walk(root, "")
    for entry in entries:
        rel, path, st = entry.rel, entry.path, entry.st
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode]
            row = cache.get(rel)
            if row is not None and row[:6] == key:
                content = str(row[6])
            else:
                content, _ = hash_file(path)
            if st.st_ctime_ns + RACY_MARGIN_NS < started:
                fresh[rel] = [*key, content]
            items.append((rel, "f", mode & 0o7777, st.st_size, st.st_mtime_ns, content))
            paths[rel] = path
        elif stat.S_ISDIR(mode):
            items.append((rel, "d", mode & 0o7777, 0, st.st_mtime_ns, ""))
        elif stat.S_ISLNK(mode):
            items.append((rel, "l", mode & 0o7777, 0, st.st_mtime_ns, os.readlink(path)))
        # devices, fifos and sockets are not sent (a context of sources has none; docker skips sockets)
    if fresh != cache:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(fresh, separators=(",", ":")))
            os.replace(tmp, cache_path)
        except OSError:
            pass  # only a cache
    digest = xxhash.xxh3_128_hexdigest(json.dumps(items, separators=(",", ":")).encode())
    return Scan(context_id, items, digest, paths)


class _Entry:
    __slots__ = ("path", "rel", "st")

    def __init__(self, rel: str, path: str, st: os.stat_result) -> None:
        self.rel, self.path, self.st = rel, path, st


def _walk(root: str, rel: str) -> Iterator[_Entry]:
    """Every entry below `root/rel`, parents first, names in byte order (the walk without ignore rules)."""
    prefix = rel + "/" if rel else ""
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        items = sorted((de.name.encode("utf-8", "surrogateescape"), de) for de in it)
    for _, de in items:
        st = de.stat(follow_symlinks=False)
        entry = _Entry(prefix + de.name, de.path, st)
        yield entry
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, entry.rel)


def write_tar(scan_: Scan, wanted: Iterable[str], out: IO[bytes]) -> int:
    """A tar stream of the `wanted` files; the bytes of content it carries."""
    import tarfile

    sent = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in wanted:
            path = scan_.paths[rel]
            info = tarfile.TarInfo(rel)
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                info.size = st.st_size
                info.mode = st.st_mode & 0o7777
                tar.addfile(info, f)
            sent += info.size
    return sent


class Mirror:
    """The host's copy of one client context: `dir/ctx` (the files), `dir/state.json` (the manifest applied)."""

    def __init__(self, base: Path, context_id: str) -> None:
        if not all(c in "0123456789abcdef" for c in context_id) or len(context_id) != 32:
            raise UsageError(f"invalid context id {context_id!r}")
        self.dir = base / context_id
        self.ctx = self.dir / "ctx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ctx.mkdir(exist_ok=True)
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any]:
        """The manifest applied last (read on first use: a no-op rebuild only needs its digest)."""
        if self._state is None:
            try:
                self._state = json.loads((self.dir / "state.json").read_text())
            except (OSError, ValueError):
                self._state = {}
        return self._state

    @property
    def digest(self) -> str | None:
        try:
            return (self.dir / "digest").read_text() or None
        except OSError:
            return None

    def _intact(self, rel: str, item: Item) -> bool:
        try:
            st = os.lstat(self.ctx / rel)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == item[3] and st.st_mtime_ns == item[4]

    def needed(self, items: list[Item]) -> list[str]:
        """The files whose content is not here (not at that path, nor under another name)."""
        old = {row[0]: row for row in self.state.get("items", [])}
        have = {row[5]: row[0] for row in old.values() if row[1] == "f" and self._intact(row[0], row)}
        out = []
        for item in items:
            if item[1] != "f":
                continue
            known = old.get(item[0])
            if known is not None and known[5] == item[5] and self._intact(item[0], tuple(known)):
                continue
            if item[5] in have:
                continue
            out.append(item[0])
        return out

    def apply(self, digest: str, items: list[Item], tar_stream: IO[bytes] | None) -> None:
        """Make the directory what `items` says: the files of `tar_stream`, reused content, links, dirs,
        modes and mtimes; anything else is removed. The state is written last (a crash re-sends)."""
        old = {row[0]: row for row in self.state.get("items", [])}
        have = {row[5]: row[0] for row in old.values() if row[1] == "f" and self._intact(row[0], row)}
        (self.dir / "digest").unlink(missing_ok=True)
        import tarfile

        staging = Path(tempfile.mkdtemp(dir=self.dir, prefix="in-"))
        received: dict[str, Path] = {}
        try:
            if tar_stream is not None:
                with tarfile.open(fileobj=tar_stream, mode="r|") as tar:
                    for n, member in enumerate(tar):
                        if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                            raise UsageError(f"bad context member {member.name!r}")
                        src = tar.extractfile(member)
                        assert src is not None
                        dest = staging / str(n)
                        with src, open(dest, "wb") as f:
                            shutil.copyfileobj(src, f, 1 << 20)
                        received[member.name] = dest
            for item in items:  # copies of content that moved, before anything is overwritten
                rel, kind = item[0], item[1]
                if kind == "f" and rel not in received:
                    known = old.get(rel)
                    if known is not None and known[5] == item[5] and self._intact(rel, tuple(known)):
                        continue
                    dest = staging / f"copy-{len(received)}"
                    shutil.copyfile(self.ctx / have[item[5]], dest)
                    received[rel] = dest
            self._prune({item[0]: item[1] for item in items})
            for item in items:
                rel, kind, mode, _size, mtime, extra = item
                path = self.ctx / rel
                if kind == "d":
                    if path.is_symlink() or (path.exists() and not path.is_dir()):
                        path.unlink()
                    path.mkdir(exist_ok=True)
                elif kind == "l":
                    if path.is_symlink() and os.readlink(path) == extra:
                        continue
                    _remove(path)
                    os.symlink(extra, path)
                elif rel in received:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    os.replace(received[rel], path)
                if kind != "l":
                    os.chmod(path, mode)
                    if kind == "f":
                        os.utime(path, ns=(mtime, mtime))
            for item in reversed(items):  # directories last: writing inside them moved their mtimes
                if item[1] == "d":
                    os.utime(self.ctx / item[0], ns=(item[4], item[4]))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._state = {"digest": digest, "items": items}
        tmp = self.dir / "state.tmp"
        tmp.write_text(json.dumps(self._state, separators=(",", ":")))
        os.replace(tmp, self.dir / "state.json")
        (self.dir / "digest.tmp").write_text(digest)
        os.replace(self.dir / "digest.tmp", self.dir / "digest")

    def _prune(self, wanted: dict[str, str]) -> None:
        """Remove what the manifest does not list (or lists as another type)."""
        for dirpath, dirnames, filenames in os.walk(self.ctx, topdown=True):
            rel_dir = os.path.relpath(dirpath, self.ctx)
            prefix = "" if rel_dir == "." else rel_dir + "/"
            for name in list(dirnames):
                rel = prefix + name
                full = Path(dirpath) / name
                if full.is_symlink():
                    if wanted.get(rel) != "l":
                        full.unlink()
                    dirnames.remove(name)
                elif wanted.get(rel) != "d":
                    shutil.rmtree(full)
                    dirnames.remove(name)
            for name in filenames:
                rel = prefix + name
                full = Path(dirpath) / name
                kind = wanted.get(rel)
                if kind is None or (kind == "d") or (kind == "f" and full.is_symlink()):
                    full.unlink()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
