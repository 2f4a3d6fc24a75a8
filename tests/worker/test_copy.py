"""COPY corner cases on a real context: select, write the layer, extract it, check the tree."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.context.tree import BuildContext, StageTree
from layerbuild.errors import BuildError
from layerbuild.instructions.commands import SourceContent
from layerbuild.worker.copy import normalize_dest, select_copy
from layerbuild.worker.copyowner import RootfsUserDB, StaticUserDB, parse_chmod
from layerbuild.worker.copywrite import rootfs_dirs, rootfs_parents
from tests.worker.helpers import extract, layer_bytes, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks owners, which needs root to extract")


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    root = tmp_path / "ctx"
    write(
        root,
        {
            "a.txt": "A",
            "b.txt": "B",
            "c.md": "C",
            "src/app.py": "app",
            "src/lib/util.py": "util",
            "src/lib/data.txt": "data",
            "docs/x/readme.md": "r",
        },
    )
    os.chmod(root / "src", 0o750)
    os.chmod(root / "src/app.py", 0o755)
    return BuildContext.open(root)


def test_file_to_new_name_and_into_directory(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["a.txt"], "/etc/renamed"), tmp_path / "o1")
    assert t["etc/renamed"] == ("f", 0o644, 0, 0, "A")
    assert t["etc"] == ("d", 0o755, 0, 0, "")
    t = extract(select_copy(ctx, ["a.txt"], "/etc/"), tmp_path / "o2")
    assert t["etc/a.txt"][4] == "A"


def test_file_into_existing_directory_without_slash(ctx: BuildContext, tmp_path: Path) -> None:
    sel = select_copy(ctx, ["a.txt"], "/opt")
    t = extract(sel, tmp_path / "o", existing=lambda p: p == "/opt")
    assert t == {"opt": ("d", 0o755, 0, 0, ""), "opt/a.txt": ("f", 0o644, 0, 0, "A")}


def test_directory_copies_its_contents(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["src"], "/app"), tmp_path / "o")
    assert "app/src" not in t
    assert t["app/app.py"] == ("f", 0o755, 0, 0, "app")
    assert t["app/lib/util.py"][4] == "util"
    assert t["app"][1] == 0o750  # created by the copy: the source directory's mode
    t = extract(select_copy(ctx, ["src/"], "/app2/"), tmp_path / "o2")
    assert t["app2"][1] == 0o755  # dest spelled as a directory: made like mkdir -p


def test_existing_directories_carry_their_metadata_from_below(ctx: BuildContext, tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "usr/local").mkdir(parents=True)
    os.chmod(lower / "usr/local", 0o700)
    os.chown(lower / "usr/local", 7, 8)
    os.utime(lower / "usr/local", (1000, 1000))
    (lower / "lnk").symlink_to("usr")
    sel = select_copy(ctx, ["a.txt"], "/usr/local/bin/", chown="5:6")
    data = layer_bytes(sel, existing=rootfs_dirs(lower), below=rootfs_parents(lower))
    raw = __import__("zstandard").ZstdDecompressor().decompress(data, max_output_size=1 << 20)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        got = {m.name: (m.mode, m.uid, m.gid) for m in tf.getmembers()}
        assert tf.getmember("usr/local").mtime == 1000
    usr = os.stat(lower / "usr")
    assert got == {
        "usr": (0o755, 0, 0),
        "usr/local": (0o700, 7, 8),  # as below, not the --chown owner
        "usr/local/bin": (0o755, 5, 6),  # created: the --chown owner
        "usr/local/bin/a.txt": (0o644, 5, 6),
    }
    assert usr.st_uid == 0
    # Through a symlink, nothing is emitted for the link (an entry there would replace it).
    sel = select_copy(ctx, ["src"], "/lnk/local/")
    data = layer_bytes(sel, existing=rootfs_dirs(lower), below=rootfs_parents(lower))
    raw = __import__("zstandard").ZstdDecompressor().decompress(data, max_output_size=1 << 20)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        assert "lnk" not in tf.getnames() and "lnk/local/app.py" in tf.getnames()


def test_several_sources_make_dest_a_directory(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["a.txt", "b.txt"], "/d"), tmp_path / "o")
    assert t["d/a.txt"][4] == "A" and t["d/b.txt"][4] == "B"


def test_wildcards(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["*.txt"], "/w/"), tmp_path / "o")
    assert sorted(t) == ["w", "w/a.txt", "w/b.txt"]
    t = extract(select_copy(ctx, ["src/*/*.py"], "/w/"), tmp_path / "o2")
    assert sorted(t) == ["w", "w/util.py"]
    t = extract(select_copy(ctx, ["[ab].txt", "nomatch*"], "/w/"), tmp_path / "o3")
    assert sorted(t) == ["w", "w/a.txt", "w/b.txt"]  # one empty wildcard among matches is fine
    # a wildcard matching one file and a destination without a slash: that file's new name
    t = extract(select_copy(ctx, ["c.*"], "/single"), tmp_path / "o4")
    assert t["single"][4] == "C"


def test_no_source_files(ctx: BuildContext) -> None:
    with pytest.raises(BuildError, match="no source files were specified"):
        select_copy(ctx, ["*.nothing"], "/d/")
    sel = select_copy(ctx, ["*.nothing"], "/d/", allow_empty_wildcard=True)
    assert sel.sources == ()


def test_missing_source_is_named(ctx: BuildContext) -> None:
    with pytest.raises(BuildError, match=r"'missing\.txt': not found in the build context"):
        select_copy(ctx, ["a.txt", "missing.txt"], "/d/")


def test_source_outside_context(ctx: BuildContext) -> None:
    with pytest.raises(BuildError, match="outside the build context"):
        select_copy(ctx, ["../secret"], "/d/")


def test_workdir_relative_dest() -> None:
    assert normalize_dest("x", "/work") == ("/work/x", False)
    assert normalize_dest("x/", "/work") == ("/work/x", True)
    assert normalize_dest(".", "/work") == ("/work", True)
    assert normalize_dest("/abs/../y", "/work") == ("/y", False)


def test_relative_dest_lands_in_workdir(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["a.txt"], ".", workdir="/srv/app"), tmp_path / "o")
    assert t["srv/app/a.txt"][4] == "A"


def test_exclude(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["src/"], "/app/", excludes=["**/*.txt", "app.py"]), tmp_path / "o")
    assert sorted(t) == ["app", "app/lib", "app/lib/util.py"]
    t = extract(select_copy(ctx, ["*"], "/all/", excludes=["*.txt", "docs"]), tmp_path / "o2")
    assert "all/a.txt" not in t and "all/c.md" in t and "all/x/readme.md" not in t


def test_parents(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(
        select_copy(ctx, ["src/lib/util.py", "docs/x/readme.md"], "/p/", parents=True), tmp_path / "o"
    )
    assert t["p/src/lib/util.py"][4] == "util" and t["p/docs/x/readme.md"][4] == "r"
    assert t["p/src"][1] == 0o750  # parents keep their own metadata
    t = extract(select_copy(ctx, ["./src/./lib/*.py"], "/q/", parents=True), tmp_path / "o2")
    assert sorted(t) == ["q", "q/lib", "q/lib/util.py"]
    t = extract(select_copy(ctx, ["**/*.md"], "/r/", parents=True), tmp_path / "o3")
    assert sorted(k for k in t if t[k][0] == "f") == ["r/c.md", "r/docs/x/readme.md"]
    with pytest.raises(BuildError, match="not found"):
        select_copy(ctx, ["src/nope.py"], "/p/", parents=True)


def test_chown_names_and_numbers(ctx: BuildContext, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    write(
        rootfs,
        {
            "etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            "etc/group": "root:x:0:\nstaff:x:50:\n",
        },
    )
    db = RootfsUserDB(rootfs)
    t = extract(select_copy(ctx, ["src"], "/deep/app/", chown="app"), tmp_path / "o1", user_db=db)
    assert {v[2:4] for v in t.values()} == {(1000, 1001)}  # created parents too, like BuildKit
    t = extract(select_copy(ctx, ["a.txt"], "/x", chown="app:staff"), tmp_path / "o2", user_db=db)
    assert t["x"][2:4] == (1000, 50)
    t = extract(select_copy(ctx, ["a.txt"], "/x", chown="42"), tmp_path / "o3")
    assert t["x"][2:4] == (42, 42)
    t = extract(select_copy(ctx, ["a.txt"], "/x", chown="42:7"), tmp_path / "o4")
    assert t["x"][2:4] == (42, 7)
    # Names the image does not know: BuildKit's file op leaves the ids at 0 (a group: the user's gid).
    t = extract(select_copy(ctx, ["a.txt"], "/x", chown="nobody"), tmp_path / "o5", user_db=db)
    assert t["x"][2:4] == (0, 0)
    t = extract(select_copy(ctx, ["a.txt"], "/x", chown="app:wheel"), tmp_path / "o6", user_db=db)
    assert t["x"][2:4] == (1000, 1001)
    with pytest.raises(BuildError, match="invalid --chown"):
        select_copy(ctx, ["a.txt"], "/x", chown="app:")


def test_passwd_lookup_stays_in_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink("/../../../../etc", rootfs / "etc")  # would be the host's /etc if followed naively
    with pytest.raises(BuildError, match="outside"):
        RootfsUserDB(rootfs)
    assert StaticUserDB().user("root") is None


def test_chmod(ctx: BuildContext, tmp_path: Path) -> None:
    t = extract(select_copy(ctx, ["src/"], "/m/", chmod="640"), tmp_path / "o")
    assert t["m/app.py"][1] == 0o640 and t["m/lib"][1] == 0o640 and t["m"][1] == 0o755
    assert parse_chmod("u+x,go-w")(0o666, False) == 0o744
    assert parse_chmod("a=rX")(0o644, True) == 0o555
    assert parse_chmod("a=rX")(0o644, False) == 0o444
    assert parse_chmod("g=u")(0o640, False) == 0o660
    for bad in ("8", "77777", "u+q", ""):
        with pytest.raises(BuildError):
            parse_chmod(bad)


def test_link_ignores_what_exists_below(ctx: BuildContext, tmp_path: Path) -> None:
    sel = select_copy(ctx, ["a.txt"], "/opt", link=True)
    t = extract(sel, tmp_path / "o", existing=lambda p: True)
    assert t["opt"][0] == "f"  # with --link, /opt without a slash is the file itself


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write(root, {"dir/real.txt": "real", "target.txt": "T"})
    os.symlink("real.txt", root / "dir/alias")
    os.symlink("target.txt", root / "top")
    os.symlink("/dir", root / "dirlink")
    os.symlink("../../../etc/passwd", root / "evil")
    ctx = BuildContext.open(root)
    t = extract(select_copy(ctx, ["dir/"], "/d/"), tmp_path / "o1")
    assert t["d/alias"] == ("l", 0o777, 0, 0, "real.txt")  # inside a copied directory: the link itself
    t = extract(select_copy(ctx, ["top"], "/e/"), tmp_path / "o2")
    assert t["e/top"] == ("f", 0o644, 0, 0, "T")  # a top-level source link is followed, keeps its name
    t = extract(select_copy(ctx, ["dirlink/real.txt"], "/f"), tmp_path / "o3")
    assert t["f"][4] == "real"
    with pytest.raises(BuildError, match="outside"):
        select_copy(ctx, ["evil"], "/g")
    with pytest.raises(BuildError, match="outside"):
        select_copy(ctx, ["*"], "/h/")  # a wildcard match is followed too, so the same refusal


def test_wildcard_through_escaping_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write(root, {"a": "a"})
    os.symlink("../..", root / "up")
    with pytest.raises(BuildError, match="outside"):
        select_copy(BuildContext.open(root), ["up/*"], "/x/")


def test_heredoc_sources(ctx: BuildContext, tmp_path: Path) -> None:
    docs = [SourceContent(path="EOF", data="hello\n", expand=False)]
    t = extract(select_copy(ctx, [], "/etc/motd", heredocs=docs), tmp_path / "o1")
    assert t["etc/motd"] == ("f", 0o644, 0, 0, "hello\n")
    two = [*docs, SourceContent(path="conf", data="x=1\n", expand=False)]
    sel = select_copy(ctx, [], "/etc/app", heredocs=two)
    t = extract(sel, tmp_path / "o2")
    assert t["etc/app/EOF"][4] == "hello\n" and t["etc/app/conf"][4] == "x=1\n"
    assert sel.fingerprints.keys() == {"<<EOF", "<<conf"}


def test_layer_is_deterministic(ctx: BuildContext, tmp_path: Path) -> None:
    sel = select_copy(ctx, ["src", "a.txt", "c.md"], "/app/")
    assert layer_bytes(sel) == layer_bytes(
        select_copy(BuildContext.open(ctx.root), ["src", "a.txt", "c.md"], "/app/")
    )


def test_key_depends_on_destination_and_flags(ctx: BuildContext) -> None:
    base = select_copy(ctx, ["src"], "/app").content_key
    assert select_copy(ctx, ["src"], "/app").content_key == base
    assert select_copy(ctx, ["src"], "/other").content_key != base
    assert select_copy(ctx, ["src"], "/app", chmod="755").content_key != base
    assert select_copy(ctx, ["src"], "/app", excludes=["*.txt"]).content_key != base


def test_copy_from_stage_keeps_owners(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    write(stage, {"opt/bin/tool": "t"})
    os.chown(stage / "opt/bin/tool", 5, 6)
    os.symlink("/opt/bin", stage / "bin")
    t = extract(select_copy(StageTree(stage), ["/bin/tool"], "/usr/local/bin/"), tmp_path / "o")
    assert t["usr/local/bin/tool"][2:4] == (5, 6)


def test_url_source_refused_for_copy(ctx: BuildContext) -> None:
    with pytest.raises(BuildError, match="URL for COPY"):
        select_copy(ctx, ["https://example.com/x"], "/x")
    with pytest.raises(BuildError, match="checksum can't be specified for COPY"):
        select_copy(ctx, ["a.txt"], "/x", checksum="sha256:" + "0" * 64)


def _members(data: bytes) -> list[tarfile.TarInfo]:
    raw = __import__("zstandard").ZstdDecompressor().decompress(data, max_output_size=1 << 20)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getmembers()


def test_hard_links_stay_links_and_count_in_the_key(tmp_path: Path) -> None:
    """fsutil's copy (BuildKit) writes a file once per inode and then hard links to it."""
    root = tmp_path / "ctx"
    write(root, {"d/b.txt": "shared", "d/solo.txt": "solo", "other.txt": "shared"})
    os.link(root / "d/b.txt", root / "d/a.txt")
    os.link(root / "d/b.txt", root / "d/sub.txt")
    os.link(root / "d/solo.txt", root / "outside")  # linked, but only one of them is copied
    sel = select_copy(BuildContext.open(root), ["d"], "/app/")
    got = {m.name: (m.type, m.linkname, m.size) for m in _members(layer_bytes(sel))}
    assert got == {
        "app": (tarfile.DIRTYPE, "", 0),
        "app/a.txt": (tarfile.REGTYPE, "", 6),  # the first in path order holds the content
        "app/b.txt": (tarfile.LNKTYPE, "app/a.txt", 0),
        "app/solo.txt": (tarfile.REGTYPE, "", 4),
        "app/sub.txt": (tarfile.LNKTYPE, "app/a.txt", 0),
    }
    t = extract(sel, tmp_path / "o")
    assert t["app/b.txt"][4] == "shared"
    inodes = {n: os.stat(tmp_path / "o/app" / n).st_ino for n in ("a.txt", "b.txt", "sub.txt", "solo.txt")}
    assert inodes["a.txt"] == inodes["b.txt"] == inodes["sub.txt"] != inodes["solo.txt"]
    # Separate sources are separate copies, as in BuildKit: no link between them.
    two = select_copy(BuildContext.open(root), ["d/a.txt", "d/b.txt"], "/x/")
    assert all(m.type == tarfile.REGTYPE for m in _members(layer_bytes(two)) if m.name != "x")

    # The same contents with another link structure is another key.
    key = sel.content_key
    os.unlink(root / "d/sub.txt")
    (root / "d/sub.txt").write_text("shared")
    os.utime(root / "d/sub.txt", ns=(os.stat(root / "d/b.txt").st_mtime_ns,) * 2)
    relinked = select_copy(BuildContext.open(root), ["d"], "/app/")
    assert relinked.content_key != key
    os.unlink(root / "d/sub.txt")
    os.link(root / "d/b.txt", root / "d/sub.txt")
    assert select_copy(BuildContext.open(root), ["d"], "/app/").content_key == key
