"""Whiteouts and opaque directories: change sets, overlay upper dirs, and stacks of layers applied in order."""

from __future__ import annotations

import io
import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.errors import UsageError
from layerbuild.layer import ChangeSet, Compression, apply_layer, write_changes, write_overlay_upper

from .trees import fresh
from .treeutil import apply_bytes, snapshot, tar_members

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts and trusted xattrs need root")


def changes_bytes(root: Path, changes: ChangeSet, **kw: object) -> bytes:
    buf = io.BytesIO()
    write_changes(root, changes, buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


def upper_bytes(upper: Path) -> bytes:
    buf = io.BytesIO()
    write_overlay_upper(upper, buf, compression=Compression.NONE)
    return buf.getvalue()


def _paths(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class _LayerBuilder:
    """Mutates a `truth` tree and records the change set that describes each layer's mutations."""

    def __init__(self, truth: Path) -> None:
        self.truth = truth
        self.changed: set[str] = set()
        self.deleted: set[str] = set()
        self.opaque: set[str] = set()

    def _forget_below(self, path: str) -> None:
        for group in (self.changed, self.opaque):
            group -= {p for p in group if _under(p, path)}

    def add_file(self, path: str, content: bytes) -> None:
        p = self.truth / path
        if p.is_dir() and not p.is_symlink():
            return
        p.write_bytes(content)
        self.changed.add(path)

    def add_dir(self, path: str) -> None:
        p = self.truth / path
        if not p.exists():
            p.mkdir()
            self.changed.add(path)

    def delete(self, path: str) -> None:
        p = self.truth / path
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self._forget_below(path)
        self.deleted.add(path)

    def make_opaque(self, path: str, new_child: str, content: bytes) -> None:
        p = self.truth / path
        for child in p.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self._forget_below(path)
        self.deleted -= {d for d in self.deleted if d.startswith(path + "/")}
        (p / new_child).write_bytes(content)
        self.opaque.add(path)
        self.changed |= {path, f"{path}/{new_child}"}

    def change_set(self) -> ChangeSet:
        return ChangeSet(tuple(sorted(self.changed)), tuple(sorted(self.deleted)), tuple(sorted(self.opaque)))


SMALL_NAMES = st.sampled_from(["a", "b", "c", "dir x", "ü"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stack_of_layers_gives_the_expected_tree(tmp_path: Path, data: st.DataObject) -> None:
    truth, applied = fresh(tmp_path / "truth"), fresh(tmp_path / "applied")
    for _ in range(data.draw(st.integers(1, 4), label="layers")):
        layer = _LayerBuilder(truth)
        for _ in range(data.draw(st.integers(1, 7), label="ops")):
            existing = _paths(truth)
            dirs = [""] + [p for p in existing if (truth / p).is_dir()]
            op = data.draw(st.sampled_from(["file", "file", "dir", "delete", "opaque", "replace"]))
            parent = data.draw(st.sampled_from(dirs))
            path = f"{parent}/{data.draw(SMALL_NAMES)}" if parent else data.draw(SMALL_NAMES)
            if op == "file":
                layer.add_file(path, data.draw(st.binary(max_size=50)))
            elif op == "dir":
                layer.add_dir(path)
            elif op == "delete" and existing:
                layer.delete(data.draw(st.sampled_from(existing)))
            elif op == "opaque" and dirs[1:]:
                layer.make_opaque(data.draw(st.sampled_from(dirs[1:])), data.draw(SMALL_NAMES), b"new")
            elif op == "replace" and existing:
                victim = data.draw(st.sampled_from(existing))
                layer.delete(victim)
                (truth / victim).mkdir()
                layer.changed.add(victim)
        blob = changes_bytes(truth, layer.change_set())
        apply_bytes(blob, applied)
        assert snapshot(applied) == snapshot(truth)


def test_change_set_entries_and_order(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "conf.d" / "new.conf").write_text("x")
    (root / "var").mkdir()
    changes = ChangeSet(
        changed=("etc/conf.d/new.conf",), deleted=("etc/old", "var/cache", "gone"), opaque=("var",)
    )
    data = changes_bytes(root, changes, compression=Compression.NONE)
    names = [m.name for m in tar_members(data)]
    # Whiteouts come before their siblings; the opaque marker first of all in its directory.
    assert names == [
        ".wh.gone",
        "etc",
        "etc/.wh.old",
        "etc/conf.d",
        "etc/conf.d/new.conf",
        "var",
        "var/.wh..wh..opq",
        "var/.wh.cache",
    ]


def test_change_set_errors(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="does not exist"):
        changes_bytes(tmp_path, ChangeSet(changed=("missing",)))
    with pytest.raises(UsageError, match="below the root"):
        changes_bytes(tmp_path, ChangeSet(changed=("../x",)))
    with pytest.raises(UsageError, match="not a directory"):
        changes_bytes(tmp_path, ChangeSet(changed=("f/g",)))


def _make_upper(upper: Path) -> None:
    (upper / "opq").mkdir(parents=True)
    (upper / "opq" / "new").write_text("new")
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    os.setxattr(upper / "opq", "user.kept", b"1")
    os.mknod(upper / "gone", stat.S_IFCHR | 0o600, 0)
    (upper / "keep").mkdir()
    os.setxattr(upper / "keep", "trusted.overlay.origin", b"\0\1")
    os.mknod(upper / "keep" / "gone2", stat.S_IFCHR | 0o600, 0)
    (upper / "keep" / "f").write_text("f")


def test_overlay_upper_dir_becomes_oci_whiteouts(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper)
    members = {m.name: m for m in tar_members(upper_bytes(upper))}
    assert list(members) == [
        ".wh.gone",
        "keep",
        "keep/.wh.gone2",
        "keep/f",
        "opq",
        "opq/.wh..wh..opq",
        "opq/new",
    ]
    assert members["opq"].pax_headers == {"SCHILY.xattr.user.kept": "1"}  # overlay's own xattrs dropped
    assert members["keep"].pax_headers == {}

    lower = tmp_path / "lower"
    for p in ("gone", "opq/old", "opq/sub/deep", "keep/gone2", "keep/other"):
        (lower / p).parent.mkdir(parents=True, exist_ok=True)
        (lower / p).write_text("lower")
    buf = io.BytesIO(upper_bytes(upper))
    apply_layer(buf, lower)
    assert _paths(lower) == ["keep", "keep/f", "keep/other", "opq", "opq/new"]


def test_overlay_mode_extraction_round_trips(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    _make_upper(upper)
    blob = upper_bytes(upper)
    unpacked = fresh(tmp_path / "unpacked")
    apply_bytes(blob, unpacked, whiteouts="overlay")
    gone = os.lstat(unpacked / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(unpacked / "opq", "trusted.overlay.opaque") == b"y"
    assert upper_bytes(unpacked) == blob


def test_whiteout_spares_entries_of_its_own_layer(tmp_path: Path) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("d/new", "d/.wh.new", "d/.wh..wh..opq"):  # markers after the entries, as some tools do
            tf.addfile(tarfile.TarInfo(name), io.BytesIO())
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "lower").write_text("x")
    apply_bytes(buf.getvalue(), dest)
    assert _paths(dest) == ["d", "d/new"]
