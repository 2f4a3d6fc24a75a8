"""Layer blobs kept as recipes: a blob that is the concatenation of frames stored in other blobs (packs).

A zstd layer is a sequence of independent frames (see layer.frames). When a rebuild of a step reuses
most frames of its previous layer, writing the whole blob again would cost as much as the first
build; instead the store writes only the new frames, as one ordinary blob (a pack), and a small
recipe under `recipes/<hex>` that lists, for the layer blob `sha256:<hex>`, where each of its frames
lies (pack digest, offset, size) with its uncompressed size, its content key and the sha256 states of
the tar and the blob streams where it starts (what lets the next edit continue both digests from
there instead of hashing the unchanged part again).

The blob store answers for a recipe's digest as for any blob (`stat`, `open`, `list`, `delete`): a
reader gets the concatenated frames, which hash to the digest, checked at EOF as for a file. A layer
written in one piece gets a recipe too (its frames all in its own blob) so that the next edit can
build on it. Crash safety as for blobs: a recipe is written to a temp file, fsynced and renamed only
after its packs are durable blobs and while the gc lock keeps prune from taking them; prune keeps
every pack a surviving recipe names (`packs_in_use`); fsck checks that a recipe's packs are there
and that its frames hash to its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.digest import is_sha256_digest
from layerbuild.errors import StoreError
from layerbuild.store.layout import Layout, create_locked_temp, flocked, fsync_dir

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
RECIPE_VERSION = 1


class RecipeError(StoreError):
    """A recipe file that cannot be read or names frames that are not there."""


@dataclass(frozen=True)
class RecipeFrame:
    """One frame of a recipe's blob: where its bytes are and what it holds."""

    pack: str  # digest of the blob holding the frame's bytes
    offset: int  # where in the pack
    size: int  # compressed bytes
    raw: int  # uncompressed (tar) bytes
    key: str  # content key (xxh3-128) of the uncompressed bytes
    tar_state: str = ""  # hex sha256 state of the tar stream where the frame starts ("" unknown)
    blob_state: str = ""  # the same for the blob stream
    mkey: str = ""  # the group's key by its headers and files' content keys ("" none)

    def to_json(self) -> list[object]:
        return [self.pack, self.offset, self.size, self.raw, self.key, self.tar_state, self.blob_state, self.mkey]

    @staticmethod
    def from_json(data: object) -> RecipeFrame:
        if not isinstance(data, list) or len(data) != 8:
            raise ValueError("a frame is a list of eight fields")
        pack, offset, size, raw, key, tar_state, blob_state, mkey = data
        if not (isinstance(pack, str) and is_sha256_digest(pack)):
            raise ValueError(f"bad pack digest {pack!r}")
        ints = (offset, size, raw)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise ValueError("offset, size and raw are non-negative integers")
        if not all(isinstance(v, str) for v in (key, tar_state, blob_state, mkey)):
            raise ValueError("keys and states are strings")
        return RecipeFrame(pack, offset, size, raw, key, tar_state, blob_state, mkey)


@dataclass(frozen=True)
class Recipe:
    """The layer blob `digest` as frames; `end_*_state` are the streams' states after the last frame."""

    digest: str
    diff_id: str
    size: int
    diff_size: int
    media_type: str
    frames: tuple[RecipeFrame, ...]
    end_tar_state: str = ""
    end_blob_state: str = ""

    @property
    def packs(self) -> set[str]:
        return {f.pack for f in self.frames}

    @property
    def self_contained(self) -> bool:
        """Whether the frames are the blob's own file, front to back (a layer written in one piece)."""
        offset = 0
        for f in self.frames:
            if f.pack != self.digest or f.offset != offset:
                return False
            offset += f.size
        return offset == self.size

    def to_bytes(self) -> bytes:
        body = _canonical({
            "version": RECIPE_VERSION, "digest": self.digest, "diff_id": self.diff_id, "size": self.size,
            "diff_size": self.diff_size, "media_type": self.media_type,
            "frames": [f.to_json() for f in self.frames], "end": [self.end_tar_state, self.end_blob_state],
        })
        # The states are trusted by the next edit (they make its diff_id): a damaged byte must not pass.
        return body[:-1] + b',"check":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'

    @staticmethod
    def from_bytes(data: bytes, digest: str) -> Recipe:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != RECIPE_VERSION:
                raise ValueError("not a recipe of a known version")
            check = doc.pop("check", None)
            if check != hashlib.sha256(_canonical(doc)).hexdigest():
                raise ValueError("its checksum does not match its content")
            if doc.get("digest") != digest:
                raise ValueError(f"it describes {doc.get('digest')!r}")
            frames = tuple(RecipeFrame.from_json(f) for f in doc["frames"])
            end = doc.get("end") or ["", ""]
            recipe = Recipe(digest, str(doc["diff_id"]), int(doc["size"]), int(doc["diff_size"]),
                            str(doc["media_type"]), frames, str(end[0]), str(end[1]))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise RecipeError(f"the recipe of {digest} cannot be read: {exc}") from None
        if sum(f.size for f in frames) != recipe.size or sum(f.raw for f in frames) != recipe.diff_size:
            raise RecipeError(f"the recipe of {digest}: its frames do not add up to its sizes")
        return recipe


def _canonical(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def recipe_path(layout: Layout, digest: str) -> Path:
    return layout.recipes / digest.split(":", 1)[1]


def has_recipe(layout: Layout, digest: str) -> bool:
    return os.path.exists(recipe_path(layout, digest))


def read_recipe(layout: Layout, digest: str) -> Recipe | None:
    """The recipe of `digest`, or None if it has none; RecipeError if the file is damaged."""
    try:
        data = recipe_path(layout, digest).read_bytes()
    except FileNotFoundError:
        return None
    return Recipe.from_bytes(data, digest)


def recipe_digests(layout: Layout) -> Iterator[str]:
    try:
        entries = list(os.scandir(layout.recipes))
    except FileNotFoundError:
        return
    for entry in entries:
        if _HEX_RE.match(entry.name):
            yield "sha256:" + entry.name


def write_recipe(layout: Layout, recipe: Recipe) -> None:
    """Store `recipe` durably. Its packs must already be durable blobs: checked under the gc lock
    (shared), so no prune can take one between the check and the rename (RecipeError if one is gone)."""
    fd, tmp = create_locked_temp(layout.tmp, "blob-", ".recipe")
    try:
        data = recipe.to_bytes()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.fchmod(fd, 0o444)
        final = recipe_path(layout, recipe.digest)
        with flocked(layout.gc_lock, shared=True):
            missing = [p for p in sorted(recipe.packs) if not os.path.exists(layout.blob_path(p))]
            if missing:
                raise RecipeError(f"the frames of {recipe.digest} are not all stored: {missing[0]} is missing")
            os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def recipe_packs(layout: Layout) -> dict[str, set[str]]:
    """Each recipe's digest with the packs it names besides its own blob. A recipe that cannot be
    read names nothing: fsck reports it."""
    named: dict[str, set[str]] = {}
    for digest in recipe_digests(layout):
        try:
            recipe = read_recipe(layout, digest)
        except RecipeError:
            continue
        if recipe is not None:
            named[digest] = recipe.packs - {digest}
    return named


def packs_in_use(named: dict[str, set[str]], doomed: set[str]) -> set[str]:
    """The packs that the recipes of `named` (recipe_packs) other than those of `doomed` digests
    name: prune must keep them."""
    keep: set[str] = set()
    for digest, packs in named.items():
        if digest not in doomed:
            keep |= packs
    return keep


class RecipeReader(io.RawIOBase):
    """The concatenated frames of a recipe, read from their packs."""

    def __init__(self, layout: Layout, recipe: Recipe) -> None:
        super().__init__()
        self._layout = layout
        self._frames = list(recipe.frames)
        self._fds: dict[str, int] = {}
        self._index = 0
        self._at = 0  # bytes of the current frame already read
        for pack in recipe.packs:  # all opened now: a missing pack fails the open, not a read
            try:
                self._fds[pack] = os.open(layout.blob_path(pack), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self.close()
                raise RecipeError(f"blob {recipe.digest} is missing its frames in {pack}",
                                  hint="run `layerbuild fsck`") from None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while self._index < len(self._frames):
            frame = self._frames[self._index]
            left = frame.size - self._at
            if left <= 0:
                self._index += 1
                self._at = 0
                continue
            n = os.preadv(self._fds[frame.pack], [view[: min(left, len(view))]], frame.offset + self._at)
            if n <= 0:
                raise RecipeError(f"pack {frame.pack} is shorter than its recipe says", hint="run `layerbuild fsck`")
            self._at += n
            return n
        return 0

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        super().close()


def open_recipe(layout: Layout, recipe: Recipe) -> BinaryIO:
    return io.BufferedReader(RecipeReader(layout, recipe), buffer_size=1 << 20)
