"""Helpers for COPY tests: build a layer from a selection, extract it, describe the resulting tree."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

from layerbuild.layer import apply_layer
from layerbuild.worker.copy import CopySelection, write_copy_layer


def extract(sel: CopySelection, dest: Path, **kw: Any) -> dict[str, tuple[str, int, int, int, str]]:
    """Write `sel`'s layer, apply it onto `dest`, and return {path: (type, mode, uid, gid, content)}."""
    buf = io.BytesIO()
    write_copy_layer(sel, buf, **kw)
    dest.mkdir(parents=True, exist_ok=True)
    apply_layer(io.BytesIO(buf.getvalue()), dest)
    return tree(dest)


def tree(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    out: dict[str, tuple[str, int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, "")
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0o777, st.st_uid, st.st_gid, os.readlink(p))
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, Path(p).read_text())
    return out


def layer_bytes(sel: CopySelection, **kw: Any) -> bytes:
    buf = io.BytesIO()
    write_copy_layer(sel, buf, **kw)
    return buf.getvalue()


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
