"""What a resolved COPY/ADD holds: its sources, destination, flags, key, and the downloads it owns."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from layerbuild.context.tree import Entry, SourceTree
from layerbuild.store.layout import system_scratch
from layerbuild.worker.copyowner import ModeFn
from layerbuild.worker.fetch import Fetched, HttpFetch, check_checksum, http_fetch


@dataclass(frozen=True)
class CopySource:
    """One resolved source.

    kind: `contents` (a directory: its `members`, paths relative to the destination directory, go
    below the destination; `root` gives the destination's metadata when the copy creates it),
    `single` (a file, symlink or special file named `name`), `archive` (a local tar that ADD unpacks
    into the destination), `heredoc` (inline `data`), `url` (a download named `name`).
    """

    kind: str
    name: str
    root: Entry | None = None
    members: tuple[tuple[str, Entry], ...] = ()
    data: bytes | None = None
    url: str | None = None
    archive: str | None = None


@dataclass
class CopySelection:
    """What a COPY/ADD will copy, resolved; close it (or use `with`) to drop downloads."""

    tree: SourceTree | None
    dest: str  # absolute, cleaned
    dest_is_dir: bool  # trailing slash, '.', or several sources
    sources: tuple[CopySource, ...]
    content_key: str
    fingerprints: Mapping[str, str]
    chown: str | None = None
    chmod: ModeFn | None = None
    link: bool = False
    is_add: bool = False
    checksum: str | None = None
    http_fetch: HttpFetch = http_fetch
    _tmp: Path | None = None
    _fetched: dict[str, Fetched] = field(default_factory=dict)

    @property
    def dest_paths(self) -> list[str]:
        """Where the sources go, assuming no destination directory exists yet (for display)."""
        out = []
        for src in self.sources:
            if src.kind in ("contents", "archive") or not self.dest_is_dir:
                out.append(self.dest)
            else:
                out.append(self.dest.rstrip("/") + "/" + src.name)
        return out

    def tmpdir(self) -> Path:
        if self._tmp is None:
            self._tmp = system_scratch("layerbuild-copy-")
        return self._tmp

    def fetch(self, url: str) -> Fetched:
        """The download of `url` (made once), verified against --checksum when one was given."""
        got = self._fetched.get(url)
        if got is None:
            got = self.http_fetch(url, self.tmpdir())
            if self.checksum is not None:
                check_checksum(url, self.checksum, got.digest)
            self._fetched[url] = got
        return got

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._fetched.clear()

    def __enter__(self) -> CopySelection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
