"""Source trees for COPY/ADD: the build context (with .dockerignore and a persistent stat cache) or a stage's rootfs.

Both are read-only views of a directory. Paths are relative, '/'-separated, '' for the root. Lookups
resolve symlinks the way BuildKit's `fs.RootPath` does — an absolute target starts again at the tree's
root — except that a target climbing above the root with `..` is refused instead of clamped, so no
lookup ever leaves the tree. Walks never follow symlinks: a symlink inside a copied directory is copied
as a symlink.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from layerbuild.context.contenthash import fingerprint, hash_file, read_capability
from layerbuild.context.ignore import Matcher, MatchInfo, load_matcher
from layerbuild.digest import key_hash
from layerbuild.errors import BuildError
from layerbuild.store.idmap import view_owner

if TYPE_CHECKING:
    from layerbuild.store import Store
    from layerbuild.store.statcache import StatRow

_MAX_LINKS = 40
# A file whose ctime is this close to the scan is not remembered: a second write within the same
# timestamp tick would leave its stat unchanged ("racy git"). Coarse kernel clocks tick every 1-10 ms.
RACY_MARGIN_NS = 50_000_000
# Files at least this big are hashed on several threads ahead of the fingerprint loop (`prefetch`).
PREFETCH_MIN_BYTES = 1 << 20


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    """What says a file is unchanged since it was looked at: device, inode, size, mtime, ctime, mode
    (the stat cache's first six columns)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class Entry:
    """One file, directory or link of a tree, as lstat saw it."""

    __slots__ = ("path", "rel", "st")

    def __init__(self, rel: str, path: str, st: os.stat_result) -> None:
        self.rel = rel
        self.path = path
        self.st = st

    @property
    def name(self) -> str:
        return self.rel.rpartition("/")[2]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    def __repr__(self) -> str:
        return f"Entry({self.rel!r}, mode={self.st.st_mode:o})"


@dataclass
class ScanStats:
    """What computing fingerprints cost: files read (cache misses), bytes read, stat-cache hits."""

    hashed_files: int = 0
    hashed_bytes: int = 0
    cache_hits: int = 0


def _name_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _real_root(root: str) -> str:
    """`root` with symlinks resolved, except a view in another mount namespace (a stage's filesystem
    read through `/proc/<pid>/root/...`, see worker/rootfs.py): resolving that magic link would
    leave the namespace, so it is only made absolute."""
    if re.match(r"/proc/\d+/root/", root):
        return os.path.normpath(root)
    return os.path.realpath(root)


class SourceTree:
    """A directory seen as a COPY source. Subclasses decide ignore rules and whether owners are kept."""

    keep_owner = False
    kind = "tree"

    def __init__(
        self, root: str | os.PathLike[str], *, matcher: Matcher | None = None, store: Store | None = None
    ) -> None:
        real = _real_root(os.fspath(root))
        if not os.path.isdir(real):
            raise BuildError(f"{os.fspath(root)!r} is not a directory")
        self.root = Path(real)
        self._root = real
        self.matcher = matcher if matcher is not None and not matcher.empty else None
        self._store = store
        # "sha256:": rows of the xxh3 fingerprints of older versions are not read as today's.
        self.cache_id = self.kind + ":sha256:" + xxhash.xxh3_128_hexdigest(os.fsencode(real))
        self._cache: dict[str, StatRow] = {}
        if store is not None:
            from layerbuild.store.statcache import load_stat_cache

            rows = load_stat_cache(store.db, self.cache_id)
            self._cache = {bytes(k).decode("utf-8", "surrogateescape"): v for k, v in rows.items()}
        self._dirty: dict[str, StatRow] = {}
        self._children: dict[str, dict[str, Entry]] = {}
        self._hiding: set[str] = set()  # directories whose listing left an entry out
        self._info: dict[str, MatchInfo] = {"": ()}
        self._fps: dict[str, str] = {}
        self._caps: dict[str, bytes] = {}  # a hashed file's capability, as its fingerprint took it
        self._hashed: dict[str, tuple[str, os.stat_result]] = {}  # content hashes taken ahead (prefetch)
        self._started_ns = time.time_ns()
        self.stats = ScanStats()

    # --- lookups --------------------------------------------------------------------------------------

    def abspath(self, rel: str) -> str:
        return self._root + "/" + rel if rel else self._root

    def children(self, rel: str) -> dict[str, Entry]:
        """The visible entries of the real directory `rel`, by name (memoized)."""
        known = self._children.get(rel)
        if known is not None:
            return known
        out: dict[str, Entry] = {}
        prefix = rel + "/" if rel else ""
        matcher = self.matcher
        info = self._info.get(rel, ())
        try:
            scan = os.scandir(self.abspath(rel))
        except OSError as exc:
            raise BuildError(f"cannot read directory {rel or '.'!r} of the {self.kind}: {exc}") from exc
        with scan as it:
            items = [(de.name, de) for de in it]
        if all(name.isascii() for name, _ in items):
            items.sort()
        else:
            items.sort(key=lambda item: _name_key(item[0]))
        isdir, issock = stat.S_ISDIR, stat.S_ISSOCK
        for name, de in items:
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            if issock(mode):
                self._hiding.add(rel)
                continue  # tar cannot hold sockets; Docker skips them too
            crel = prefix + name
            if matcher is not None:
                excluded, cinfo = matcher.matches(crel, info)
                if isdir(mode):
                    self._info[crel] = cinfo
                # An excluded directory stays visible only to hold what an exception re-includes.
                if excluded and not (
                    isdir(mode) and matcher.may_reinclude_below(crel) and self.children(crel)
                ):
                    self._hiding.add(rel)
                    continue
            out[name] = Entry(crel, de.path, st)
        self._children[rel] = out
        return out

    def hides(self, rel: str) -> bool:
        """Whether the real directory `rel` holds entries the tree does not show (ignored, sockets)."""
        self.children(rel)
        return rel in self._hiding

    def lookup(self, rel: str) -> Entry | None:
        """The visible entry at the real path `rel` (its parents must be real directories), or None."""
        if not rel:
            return Entry("", self._root, os.lstat(self._root))
        parent, _, name = rel.rpartition("/")
        return self.children(parent).get(name)

    def resolve(self, rel: str, *, follow: bool = True, what: str | None = None) -> Entry | None:
        """The entry at `rel` with every symlink on the way resolved inside the tree; None if missing.

        With `follow` a final symlink is resolved too. Raises BuildError when a symlink leads above
        the root, or links loop."""
        todo = [p for p in reversed(rel.split("/")) if p not in ("", ".")]
        done: list[str] = []
        links = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if not done:
                    raise BuildError(
                        f"{what or rel!r} leads outside the {self.kind}",
                        hint="COPY and ADD only see files inside the build context",
                    )
                done.pop()
                continue
            entry = self.lookup("/".join((*done, part)))
            if entry is None:
                return None
            if entry.is_link and (todo or follow):
                links += 1
                if links > _MAX_LINKS:
                    raise BuildError(f"{what or rel!r}: too many levels of symbolic links")
                target = os.readlink(entry.path)
                if target.startswith("/"):
                    done = []
                todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
                continue
            if todo and not entry.is_dir:
                return None
            done.append(part)
        return self.lookup("/".join(done))

    def walk(self, rel: str) -> Iterator[Entry]:
        """Every visible entry below the real directory `rel`, parents first, names in byte order."""
        for entry in self.children(rel).values():
            yield entry
            if stat.S_ISDIR(entry.st.st_mode):
                yield from self.walk(entry.rel)

    # --- fingerprints ---------------------------------------------------------------------------------

    def owner(self, entry: Entry) -> tuple[int, int] | None:
        """The (uid, gid) a COPY of `entry` keeps; None where owners are reset to 0:0."""
        return (entry.st.st_uid, entry.st.st_gid) if self.keep_owner else None

    def _vouched(self, entry: Entry) -> bool:
        """Whether the stat cache has this entry's fingerprint for its current stat."""
        row = self._cache.get(entry.rel)
        return row is not None and row[:6] == stat_key(entry.st)

    def prefetch(self, entries: Iterable[Entry]) -> None:
        """Hash the big regular files among `entries` whose stat the cache cannot vouch for, several
        at once (hashlib lets go of the GIL), so that `fingerprint` taking them one by one finds their
        content hashes ready. A file that fails here is left to `fingerprint`, which reports it."""
        todo = [e for e in entries if e.is_file and e.st.st_size >= PREFETCH_MIN_BYTES
                and e.rel not in self._fps and e.rel not in self._hashed and not self._vouched(e)]
        workers = min(len(todo), os.cpu_count() or 1)
        if workers < 2:
            return
        from concurrent.futures import ThreadPoolExecutor

        def take(entry: Entry) -> tuple[str, os.stat_result] | None:
            try:
                return hash_file(entry.path)
            except (OSError, BuildError):
                return None

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash") as pool:
            for entry, got in zip(todo, pool.map(take, todo), strict=True):
                if got is not None:
                    self._hashed[entry.rel] = got

    def capability(self, entry: Entry) -> bytes:
        """The security.capability xattr of the regular file `entry` (b'' for none): as its
        fingerprint took it when this build hashed the file (so a cold COPY reads it once), else
        read now."""
        known = self._caps.get(entry.rel)
        return known if known is not None else read_capability(entry.path)

    def taken_fingerprint(self, entry: Entry) -> str | None:
        """The entry's fingerprint if this build has taken it already (never reads the file)."""
        return self._fps.get(entry.rel)

    def fingerprint(self, entry: Entry) -> str:
        """The entry's fingerprint (see contenthash), from the stat cache when its stat is unchanged."""
        known = self._fps.get(entry.rel)
        if known is not None:
            return known
        st = entry.st
        if not stat.S_ISDIR(st.st_mode) and self._vouched(entry):
            row = self._cache[entry.rel]
            self.stats.cache_hits += 1
            self._fps[entry.rel] = row[7]
            return row[7]
        owner = self.owner(entry)
        relb = entry.rel.encode("utf-8", "surrogateescape")
        if stat.S_ISDIR(st.st_mode) or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            dev = b"%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) if st.st_rdev else b""
            fp = fingerprint(relb, st.st_mode, 0, "", link=dev, owner=owner)
            self._fps[entry.rel] = fp
            return fp
        key = stat_key(st)
        if stat.S_ISLNK(st.st_mode):
            target = os.fsencode(os.readlink(entry.path))
            content = key_hash(target)
            fp = fingerprint(relb, st.st_mode, 0, content, link=target, owner=owner)
        else:
            try:
                ahead = self._hashed.pop(entry.rel, None)
                content, st2 = ahead if ahead is not None else hash_file(entry.path)
            except OSError as exc:
                raise BuildError(f"cannot read {entry.rel!r} in the {self.kind}: {exc}") from exc
            if (st2.st_ino, st2.st_size, st2.st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
                raise BuildError(f"{entry.rel!r} changed while the {self.kind} was being read")
            self.stats.hashed_files += 1
            self.stats.hashed_bytes += st.st_size
            capability = self._caps[entry.rel] = read_capability(entry.path)
            fp = fingerprint(relb, st.st_mode, st.st_size, content, capability=capability, owner=owner)
        if st.st_ctime_ns + RACY_MARGIN_NS < self._started_ns:
            self._dirty[entry.rel] = (*key, content, fp)
        self._fps[entry.rel] = fp
        return fp

    def known_fingerprint(self, rel: str, key: tuple[int, ...]) -> str | None:
        """The fingerprint this tree computed of the file at `rel`, if it did and the file's stat was
        then `key` (device, inode, size, mtime_ns, ctime_ns, mode); else None. Reads nothing."""
        fp = self._fps.get(rel)
        if fp is None:
            return None
        parent, _, name = rel.rpartition("/")
        entry = self._children.get(parent, {}).get(name)
        if entry is None:
            return None
        return fp if stat_key(entry.st) == key else None

    def save(self) -> None:
        """Persist what this build learned about file stats (one transaction); a no-op without a store."""
        if self._store is None:
            return
        from layerbuild.store.statcache import save_stat_cache

        gone: list[str] = []
        if self._children and self._cache:
            listed = self._children
            for path in self._cache:
                parent, _, name = path.rpartition("/")
                children = listed.get(parent)
                if children is not None and name not in children:
                    gone.append(path)
        enc = "utf-8", "surrogateescape"
        save_stat_cache(
            self._store.db,
            self.cache_id,
            [(k.encode(*enc), v) for k, v in self._dirty.items()],
            [k.encode(*enc) for k in gone],
        )
        self._cache.update(self._dirty)
        for path in gone:
            self._cache.pop(path, None)
        self._dirty.clear()


class BuildContext(SourceTree):
    """The build context directory: .dockerignore applies, owners read as 0:0 like BuildKit's transfer.

    `note` is the hint for a source that is not found in it (an empty context says why it is empty)."""

    kind = "build context"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        matcher: Matcher | None = None,
        store: Store | None = None,
        ignore_file: Path | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(root, matcher=matcher, store=store)
        self.ignore_file = ignore_file
        self.note = note

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        dockerfile: str | os.PathLike[str] | None = None,
        store: Store | None = None,
    ) -> BuildContext:
        """The context at `root` with the ignore rules for `dockerfile` and the store's stat cache."""
        root_path = Path(root)
        if not root_path.is_dir():
            raise BuildError(f"build context {os.fspath(root)!r} is not a directory")
        matcher, ignore_file = load_matcher(root_path, None if dockerfile is None else Path(dockerfile))
        return cls(root_path, matcher=matcher, store=store, ignore_file=ignore_file)

    def excluded(self, rel: str) -> bool:
        """Whether .dockerignore excludes the context path `rel` (for hints in "not found" errors)."""
        return self.matcher is not None and self.matcher.matches_path(rel)


class StageTree(SourceTree):
    """Another stage's or image's materialized filesystem (`COPY --from`): no ignore rules, owners kept."""

    keep_owner = True
    kind = "stage filesystem"

    def __init__(self, root: str | os.PathLike[str], *, store: Store | None = None) -> None:
        super().__init__(root, matcher=None, store=store)

    def excluded(self, rel: str) -> bool:
        return False

    def owner(self, entry: Entry) -> tuple[int, int] | None:
        if not self.keep_owner:
            return None
        if os.geteuid() == 0:
            return entry.st.st_uid, entry.st.st_gid
        # Rootless, the view was unpacked without chown: the layer's owners are kept in an xattr.
        return view_owner(entry.path, entry.st)
