"""A hypothesis strategy for directory trees with every kind of entry a layer can hold, and a builder."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0")
names = st.text(NAME_CHARS, min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..") and not s.startswith(".wh.") and len(s.encode()) < 200
)
# Deep enough to push some paths past ustar's 100-byte name field.
long_names = st.text(st.sampled_from("abcdefghij"), min_size=60, max_size=120)
FILE_MODES = (0o644, 0o755, 0o600, 0o444, 0o4755, 0o2755, 0o1644)
DIR_MODES = (0o755, 0o700, 0o1777, 0o555, 0o2775)
OWNERS = ((0, 0), (1000, 1000), (65534, 65534), (3_000_000, 42))  # the last needs pax uid
MTIMES = (0, 1, 1_700_000_000, 2_000_000_000, 9_000_000_000)  # the last needs pax mtime


@dataclass(frozen=True)
class Spec:
    path: str
    kind: str  # file, empty, sparse, dir, symlink, hardlink, fifo, chardev
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    owner: tuple[int, int] = (0, 0)
    mtime: int = 1_700_000_000
    xattr: bytes | None = None


@st.composite
def trees(draw: st.DrawFn, max_entries: int = 18, sparse: bool = True) -> list[Spec]:
    dirs = [""]
    files: list[str] = []
    used: set[str] = set()
    specs: list[Spec] = []
    kinds = ["file", "file", "empty", "dir", "dir", "symlink", "hardlink", "fifo", "chardev"]
    if sparse:
        kinds.append("sparse")
    for _ in range(draw(st.integers(0, max_entries))):
        parent = draw(st.sampled_from(dirs))
        name = draw(st.one_of(names, names, names, long_names))
        path = f"{parent}/{name}" if parent else name
        if path in used:
            continue
        used.add(path)
        kind = draw(st.sampled_from(kinds))
        if kind == "hardlink" and not files:
            kind = "file"
        common = {
            "owner": draw(st.sampled_from(OWNERS)),
            "mtime": draw(st.sampled_from(MTIMES)),
            "xattr": draw(st.one_of(st.none(), st.binary(max_size=20))),
        }
        if kind == "file":
            spec = Spec(
                path, kind, draw(st.sampled_from(FILE_MODES)), draw(st.binary(max_size=3000)), **common
            )
            files.append(path)
        elif kind == "empty":
            spec = Spec(path, kind, draw(st.sampled_from(FILE_MODES)), **common)
            files.append(path)
        elif kind == "sparse":
            spec = Spec(path, kind, 0o644, draw(st.binary(min_size=1, max_size=10)), **common)
            files.append(path)
        elif kind == "dir":
            spec = Spec(path, kind, draw(st.sampled_from(DIR_MODES)), **common)
            dirs.append(path)
        elif kind == "symlink":
            target = draw(st.one_of(st.sampled_from(["../x", "/etc/passwd", "a b/ü", "."]), long_names))
            spec = Spec(path, kind, 0o777, target=target, owner=common["owner"], mtime=common["mtime"])
        elif kind == "hardlink":
            spec = Spec(path, kind, target=draw(st.sampled_from(files)))
        else:
            spec = Spec(path, kind, 0o640, **common)
        specs.append(spec)
    return specs


SPARSE_SIZE = 64 * 1024 * 1024 + 5


def build(root: Path, specs: list[Spec]) -> None:
    """Make the tree (as root: owners and device nodes included); mtimes are set last, deepest first."""
    root.mkdir(parents=True, exist_ok=True)
    for s in specs:
        p = root / s.path
        if s.kind in ("file", "empty"):
            p.write_bytes(s.data)
        elif s.kind == "sparse":
            with open(p, "wb") as f:
                f.seek(SPARSE_SIZE // 2)
                f.write(s.data)
                f.truncate(SPARSE_SIZE)
        elif s.kind == "dir":
            p.mkdir()
        elif s.kind == "symlink":
            os.symlink(s.target, p)
        elif s.kind == "hardlink":
            os.link(root / s.target, p)
            continue
        elif s.kind == "fifo":
            os.mkfifo(p)
        elif s.kind == "chardev":
            os.mknod(p, 0o020000 | 0o600, os.makedev(1, 3))
        os.chown(p, *s.owner, follow_symlinks=False)
        if s.kind != "symlink":
            os.chmod(p, s.mode)
            if s.xattr is not None and s.kind in ("file", "empty", "sparse", "dir"):
                os.setxattr(p, "user.test", s.xattr)
    for s in sorted(specs, key=lambda s: -s.path.count("/")):
        if s.kind != "hardlink":
            os.utime(root / s.path, (s.mtime, s.mtime), follow_symlinks=False)


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
