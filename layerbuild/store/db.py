"""The SQLite connection under a store root: WAL, busy handling, write transactions, schema migrations."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from layerbuild.errors import StoreError

# Each migration takes the schema from version i to i+1 inside one write transaction. Append only:
# never edit a migration that has shipped, add a new one.
_SCHEMA_V1 = """
CREATE TABLE layers (
    digest     TEXT PRIMARY KEY,      -- the stored (usually zstd) blob
    diff_id    TEXT NOT NULL,         -- sha256 of the uncompressed tar: the layer's identity
    size       INTEGER NOT NULL,      -- compressed bytes
    diff_size  INTEGER NOT NULL,      -- uncompressed bytes
    media_type TEXT NOT NULL,
    created    REAL NOT NULL
);
CREATE INDEX layers_diff_id ON layers(diff_id);
CREATE TABLE images (
    digest     TEXT PRIMARY KEY,      -- a manifest, an image index or a config blob
    kind       TEXT NOT NULL CHECK (kind IN ('manifest', 'index', 'config')),
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    REAL NOT NULL
);
CREATE TABLE refs (                   -- parent references child: a blob digest or a layer diff_id
    parent TEXT NOT NULL,
    child  TEXT NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX refs_child ON refs(child);
CREATE TABLE tags (
    name    TEXT PRIMARY KEY,         -- name:tag
    digest  TEXT NOT NULL,            -- the manifest
    updated REAL NOT NULL
);
CREATE TABLE cache (
    key       TEXT PRIMARY KEY,       -- xxh3-128 hex
    kind      TEXT NOT NULL,
    result    TEXT NOT NULL,          -- a layer diff_id or a blob digest
    metadata  TEXT NOT NULL,          -- JSON
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX cache_result ON cache(result);
CREATE TABLE history (
    dockerfile_id TEXT NOT NULL,
    target        TEXT NOT NULL,
    steps         TEXT NOT NULL,      -- JSON
    updated       REAL NOT NULL,
    PRIMARY KEY (dockerfile_id, target)
);
CREATE TABLE last_use (               -- recent reads of blobs and snapshots, for LRU pruning
    subject TEXT PRIMARY KEY,
    at      REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE leases (
    id      TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE TABLE lease_refs (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    subject  TEXT NOT NULL,
    PRIMARY KEY (lease_id, subject)
) WITHOUT ROWID;
"""

Migration = Callable[[sqlite3.Connection], None]


def _v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2_context_stat(conn: sqlite3.Connection) -> None:
    # The build context's stat cache (see layerbuild.store.statcache): a hint, keyed by file path,
    # that lets a rebuild skip reading files whose (dev, ino, size, mtime_ns, ctime_ns, mode) is unchanged.
    conn.execute(
        """CREATE TABLE context_stat (
            context     TEXT NOT NULL,    -- which tree: xxh3 of its real path (and kind)
            path        BLOB NOT NULL,    -- relative, '/'-separated, as the filesystem spells it
            dev         INTEGER NOT NULL,
            ino         INTEGER NOT NULL,
            size        INTEGER NOT NULL,
            mtime_ns    INTEGER NOT NULL,
            ctime_ns    INTEGER NOT NULL,
            mode        INTEGER NOT NULL,
            hash        TEXT NOT NULL,    -- xxh3-128 of the content (or of the link target)
            fingerprint TEXT NOT NULL,    -- xxh3-128 of what the build keys on (see worker.contenthash)
            PRIMARY KEY (context, path)
        ) WITHOUT ROWID"""
    )


def _v3_repo_digests(conn: sqlite3.Connection) -> None:
    # What a registry called an image that was pulled (or pushed): the repo digest `images --digests`
    # shows and `NAME@sha256:…` finds, and how `pull` knows an image is up to date. Metadata only:
    # a row keeps nothing alive (prune follows tags and leases), and a row whose manifest is gone
    # is ignored.
    conn.execute(
        """CREATE TABLE repo_digests (
            name     TEXT NOT NULL,    -- the repository, normalised: docker.io/library/busybox
            digest   TEXT NOT NULL,    -- the manifest or index digest the registry has
            platform TEXT NOT NULL,    -- the platform chosen from an index ('' for a plain manifest)
            manifest TEXT NOT NULL,    -- the store's manifest of the image
            updated  REAL NOT NULL,
            PRIMARY KEY (name, digest, platform)
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX repo_digests_manifest ON repo_digests(manifest)")


MIGRATIONS: list[Migration] = [_v1, _v2_context_stat, _v3_repo_digests]
SCHEMA_VERSION = len(MIGRATIONS)

_BUSY_TIMEOUT_S = 30.0


# Below this much free space, SQLite's "disk I/O error" (it could not grow its shared-memory index
# or its log) is taken for what it is: a full disk.
LOW_SPACE = 1 << 20


def out_of_space(exc: sqlite3.Error, path: Path | None) -> bool:
    """True if `exc` is SQLite failing for want of space (SQLITE_FULL, or an I/O error on a full disk)."""
    text = str(exc).lower()
    if "disk is full" in text:
        return True
    if "disk i/o error" not in text or path is None:
        return False
    return free_space(path.parent) < LOW_SPACE


def free_space(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return LOW_SPACE
    return st.f_bavail * st.f_frsize


def no_space_error(path: Path | None, exc: BaseException | None = None) -> StoreError:
    where = f" (the store index at {path})" if path is not None else ""
    detail = f": {exc}" if exc is not None else ""
    return StoreError(
        f"no space left on device{where}: cannot write{detail}",
        hint="free space on that filesystem; `layerbuild prune` frees what the store no longer needs",
    )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """One SQLite connection, shared by the threads of one process, opened lazily per process.

    WAL lets readers run while one writer writes; every write goes through `write()`, which takes
    the write lock up front (BEGIN IMMEDIATE) so a transaction never fails half way on a lock, and
    retries the BEGIN with backoff when another process holds it longer than the busy timeout.
    """

    def __init__(self, path: Path, migrations: list[Migration] | None = None) -> None:
        self.path = path
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self.full = False  # opened read-only because the disk is full: see `_open`

    @property
    def conn(self) -> sqlite3.Connection:
        # A connection must not cross a fork; a child opens its own.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """`_connect`, or on a full disk, where opening fails (SQLite cannot make its shared-memory
        index), a read-only connection: reading commands keep working and writes say why not."""
        self.full = False
        try:
            return self._connect()
        except StoreError as exc:
            if not (isinstance(exc.__cause__, sqlite3.Error) and out_of_space(exc.__cause__, self.path)):
                raise
            conn = self._connect_readonly()
            if conn is None:
                raise no_space_error(self.path, exc.__cause__) from exc.__cause__
            self.full = True
            return conn

    def _connect_readonly(self) -> sqlite3.Connection | None:
        uri = "file:" + urllib.parse.quote(str(self.path))
        wal = Path(f"{self.path}-wal")
        modes = ["?mode=ro"]
        # immutable skips the WAL: only sound when no commit waits in it (a clean last close).
        if not wal.exists() or wal.stat().st_size == 0:
            modes.append("?immutable=1")
        for mode in modes:
            conn = sqlite3.connect(uri + mode, uri=True, isolation_level=None, check_same_thread=False,
                                   timeout=_BUSY_TIMEOUT_S)
            try:
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) == len(self._migrations):
                    return conn
            except sqlite3.Error:
                pass
            conn.close()
        return None

    def reopen(self) -> None:
        """Close and open again (e.g. once space was freed, to leave read-only mode)."""
        self.close()
        _ = self.conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:  # e.g. index.db is a directory, or unreadable
            raise self.damaged(exc) from exc
        try:
            _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            # NORMAL in WAL mode keeps the database consistent through any crash; a power cut may
            # lose the last commits, which only costs cache hits since blobs are fsynced first.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError):  # not a database at all, or damaged past reading
                raise self.damaged(exc) from exc
            raise
        return conn

    def damaged(self, exc: sqlite3.Error) -> StoreError:
        """The error for an index that cannot be opened or queried (see `is_damage`)."""
        return StoreError(
            f"the store index at {self.path} cannot be read: {exc}",
            hint="the store is damaged: `layerbuild fsck` says what it finds; move the store root aside, "
                 "or use another --root",
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == len(self._migrations):
            return
        with _immediate(conn):
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(self._migrations):
                raise StoreError(
                    f"the store index at {self.path} has schema version {version}, newer than this "
                    f"layerbuild understands ({len(self._migrations)})",
                    hint="upgrade layerbuild or use another --root",
                )
            for migration in self._migrations[version:]:
                migration(conn)
            conn.execute(f"PRAGMA user_version={len(self._migrations)}")

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock, self._damage_is_store_error():
            conn = self.conn
            if self.full:
                raise no_space_error(self.path)
            try:
                with _immediate(conn):
                    yield conn
            except sqlite3.OperationalError as exc:
                if out_of_space(exc, self.path):
                    raise no_space_error(self.path, exc) from exc
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read snapshot across several queries."""
        with self._lock, self._damage_is_store_error():
            conn = self.conn
            if conn.in_transaction:  # nested inside write(): already consistent
                yield conn
                return
            conn.execute("BEGIN DEFERRED")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextlib.contextmanager
    def _damage_is_store_error(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise self.damaged(exc) from exc
            raise

    def schema_version(self) -> int:
        with self._lock:
            return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


# What SQLite says of an index that is damaged (as opposed to busy, full or merely constrained).
_DAMAGE = ("malformed", "not a database", "no such table", "no such column", "unable to open", "corrupt")


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether `exc` says the index file is damaged or is not the schema it should be."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or any(word in text for word in _DAMAGE)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    if conn.in_transaction:  # nested write: join the outer transaction
        yield
        return
    _retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    _retry(lambda: conn.execute("COMMIT"))


def _retry(op: Callable[[], object]) -> None:
    deadline = time.monotonic() + 4 * _BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as exc:
            if out_of_space(exc, None):
                raise no_space_error(None, exc) from exc
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise StoreError(f"store index: {exc}", hint="another layerbuild may be stuck") from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
