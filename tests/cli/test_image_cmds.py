"""`layerbuild images`, `inspect`, `history`, `tag` and `rmi`, run in-process against a temp store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from layerbuild.cli.images_cmd import columns, since
from layerbuild.cli.main import main
from layerbuild.image import HistoryEntry, ImageConfig, StoredImage, format_created, write_image
from layerbuild.layer import write_layer
from layerbuild.store import Store

CREATED = "2024-01-01T00:00:00Z"


def build_image(root: Path, tmp_path: Path, tags: list[str]) -> StoredImage:
    """A two-layer image with a config-only step between the layers, as a build would make it."""
    with Store(root) as store:
        config = ImageConfig("amd64", "linux", created=CREATED)
        for i, step in enumerate(("COPY rootfs /", "COPY app /app")):
            tree = tmp_path / f"tree{i}"
            (tree / f"dir{i}").mkdir(parents=True)
            (tree / f"dir{i}" / "file").write_bytes(b"x" * (1000 * (i + 1)))
            with store.blobs.writer() as w:
                info = write_layer(tree, w)  # type: ignore[arg-type]
            store.index.put_layer(info.digest, info.diff_id, info.size, info.uncompressed_size, info.media_type)
            config = config.with_layer(info.diff_id, HistoryEntry(CREATED, step, comment="buildkit.dockerfile.v0"))
            if i == 0:
                config = config.with_history(HistoryEntry(CREATED, "ENV A=1")).with_env("A", "1")
        return write_image(store, config.with_config(cmd=["/app/run"]), tags)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def run(root: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--root", str(root), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_images(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_image(root, tmp_path, ["app:1.0", "registry.local:5000/app"])
    code, out, _ = run(root, capsys, "images", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"name": "app", "tag": "1.0", "id": image.id, "created": CREATED, "size": image.size},
        {"name": "registry.local:5000/app", "tag": "latest", "id": image.id, "created": CREATED,
         "size": image.size},
    ]
    assert image.id.startswith("sha256:") and image.size > 3000
    code, out, _ = run(root, capsys, "images")
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split()[:3] == ["app", "1.0", image.short_id]
    assert "ago" in lines[1]


def test_images_empty_store(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(root, capsys, "images", "--json") == (0, "[]\n", "")


def test_inspect(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_image(root, tmp_path, ["app"])
    for ref in ("app", "app:latest", image.short_id, image.id, image.manifest_digest):
        code, out, _ = run(root, capsys, "inspect", ref)
        assert code == 0, ref
        doc = json.loads(out)
        assert doc["id"] == image.id and doc["manifest"] == image.manifest_digest and doc["tags"] == ["app:latest"]
        assert doc["config"]["config"] == {"Env": ["A=1"], "Cmd": ["/app/run"]}
        assert doc["config"]["rootfs"]["diff_ids"] == [layer["diff_id"] for layer in doc["layers"]]
        assert [set(layer) for layer in doc["layers"]] == [
            {"digest", "diff_id", "size", "diff_size", "media_type"}
        ] * 2
        assert doc["size"] == image.size


def test_history(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_image(root, tmp_path, ["app"])
    code, out, _ = run(root, capsys, "history", "app")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert len(lines) == 4
    assert lines[1].startswith(image.short_id) and "COPY app /app" in lines[1]
    assert lines[2].startswith("<missing>") and "ENV A=1" in lines[2] and " 0B " in lines[2] + " "
    assert "COPY rootfs /" in lines[3] and "buildkit.dockerfile.v0" in lines[3]

    code, out, _ = run(root, capsys, "history", "--json", image.short_id)
    steps = json.loads(out)
    assert [s["created_by"] for s in steps] == ["COPY app /app", "ENV A=1", "COPY rootfs /"]
    assert [s["empty_layer"] for s in steps] == [False, True, False]
    assert steps[0]["id"] == image.id and steps[1]["size"] == 0
    assert steps[0]["layer"] == image.layers[1].diff_id and steps[0]["size"] == image.layers[1].diff_size


def test_tag_and_rmi(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = build_image(root, tmp_path, ["app"])
    assert run(root, capsys, "tag", "app", "app:2") == (0, "", "")
    assert run(root, capsys, "tag", image.short_id, "mirror/app:v1") == (0, "", "")
    code, out, _ = run(root, capsys, "images", "--json")
    assert sorted((e["name"], e["tag"]) for e in json.loads(out)) == [
        ("app", "2"), ("app", "latest"), ("mirror/app", "v1")
    ]
    assert run(root, capsys, "rmi", "app:2", "mirror/app:v1") == (
        0, "Untagged: app:2\nUntagged: mirror/app:v1\n", ""
    )
    code, out, _ = run(root, capsys, "images", "--json")
    assert [(e["name"], e["tag"]) for e in json.loads(out)] == [("app", "latest")]
    # The blobs stay for prune: the untagged image can still be inspected by id.
    code, out, _ = run(root, capsys, "inspect", image.id)
    assert code == 0 and json.loads(out)["tags"] == ["app:latest"]
    assert run(root, capsys, "rmi", image.short_id)[0] == 0
    code, out, _ = run(root, capsys, "inspect", image.id)
    assert code == 0 and json.loads(out)["tags"] == []


def test_unknown_images_are_usage_errors(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_image(root, tmp_path, ["webapp:1.0"])
    for argv in (("inspect", "webap:1.0"), ("history", "webap:1.0"), ("tag", "webap:1.0", "x"),
                 ("rmi", "webap:1.0")):
        code, _, err = run(root, capsys, *argv)
        assert code == 2, argv
        assert "no such image: webap:1.0" in err and "did you mean webapp:1.0" in err
    code, _, err = run(root, capsys, "tag", "webapp:1.0", "bad name")
    assert code == 2 and "invalid image name" in err


def test_since_and_columns() -> None:
    now = time.time()
    assert since(format_created(now - 2 * 3600), now) == "2 hours ago"
    assert since(format_created(now - 3600), now) == "An hour ago"
    assert since(format_created(now - 3 * 86400 * 7), now) == "3 weeks ago"
    assert since(None) == "N/A" and since("garbage") == "N/A"
    assert columns([["A", "BB"], ["ccc", "d"]]) == "A     BB\nccc   d\n"
