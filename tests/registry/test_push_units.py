"""The pure parts of push: manifest formats and media types, the options, docker's JSON messages, the
`--output type=registry` spellings, and the renderers (the real pushes are in test_push.py)."""

from __future__ import annotations

import io
import json
import random
import threading
import time

import pytest

from layerbuild.api.build import _outputs
from layerbuild.cli.transfers import JsonTransfer, PlainTransfer, TtyTransfer
from layerbuild.errors import UsageError
from layerbuild.image.manifest import Manifest
from layerbuild.registry.push import PushEvent, check_options
from layerbuild.registry.sink import convert_manifest, run_all
from tests.image.kit import random_image
from tests.image.schemas import validate


@pytest.mark.parametrize("docker", [False, True])
@pytest.mark.parametrize("compression", ["gzip", "tar"])
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_manifests_in_either_format_validate(fmt: str, compression: str, docker: bool) -> None:
    image = random_image(random.Random(7), layers=3, compressions=[compression], docker=docker)
    data, media_type = convert_manifest(image, fmt)
    validate(data, media_type)
    manifest = Manifest.from_json(data)
    assert [d.digest for d in manifest.layers] == [la.digest for la in image.layers]
    assert manifest.config.digest == image.config_descriptor.digest
    again, _ = convert_manifest(image, fmt)
    assert again == data  # canonical: the same image always gives the same digest


def test_a_manifest_already_in_the_format_keeps_its_bytes() -> None:
    for docker, fmt in ((True, "docker"), (False, "oci")):
        image = random_image(random.Random(3), layers=2, compressions=["gzip"], docker=docker)
        assert convert_manifest(image, fmt) == (image.manifest_bytes, image.media_type)
    assert convert_manifest(image, None) == (image.manifest_bytes, image.media_type)


def test_zstd_layers_have_no_docker_form() -> None:
    image = random_image(random.Random(1), layers=1, compressions=["zstd"])
    with pytest.raises(UsageError, match="cannot be written in a docker manifest") as caught:
        convert_manifest(image, "docker")
    assert "--format oci" in (caught.value.hint or "")
    data, media_type = convert_manifest(image, "oci")
    validate(data, media_type)


def test_blob_uploads_run_side_by_side_up_to_the_job_limit() -> None:
    lock = threading.Lock()
    running, most, done = 0, 0, []

    def task(i: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
            done.append(i)

    run_all([lambda i=i: task(i) for i in range(7)], 3)
    assert sorted(done) == list(range(7)) and most == 3
    done.clear()
    run_all([lambda i=i: task(i) for i in range(4)], 1)
    assert done == [0, 1, 2, 3]  # one job: in order, on the caller's thread


def test_after_a_failed_upload_no_other_starts_and_the_first_failure_is_raised() -> None:
    started: list[object] = []
    second_started = threading.Event()

    def fail() -> None:
        second_started.wait(5)
        started.append(0)
        raise ValueError("upload 0 failed")

    def slow() -> None:
        started.append(1)
        second_started.set()
        time.sleep(0.1)  # still running when the first fails
        started.append("1 ended")

    tasks = [fail, slow, *(lambda i=i: started.append(i) for i in range(2, 9))]
    with pytest.raises(ValueError, match="upload 0 failed"):
        run_all(tasks, 2)
    # the running one was waited for; none queued behind the failure started
    assert started == [1, 0, "1 ended"]


def test_options() -> None:
    assert check_options(None, "gzip") == "docker"
    assert check_options("oci", "gzip") == "oci"
    assert check_options(None, "zstd") == "oci"  # as BuildKit does: zstd means OCI types
    with pytest.raises(UsageError, match="no zstd layers"):
        check_options("docker", "zstd")
    with pytest.raises(UsageError, match="unknown --compression"):
        check_options(None, "xz")


def test_docker_json_messages() -> None:
    assert PushEvent("The push refers to repository [h/app]").to_json() == {
        "status": "The push refers to repository [h/app]"}
    assert PushEvent("Pushing", "0123456789ab", 10, 20).to_json() == {
        "status": "Pushing", "id": "0123456789ab", "progressDetail": {"current": 10, "total": 20}}
    assert PushEvent("Pushed", "0123456789ab").to_json() == {"status": "Pushed", "id": "0123456789ab",
                                                             "progressDetail": {}}
    last = PushEvent("1: digest: sha256:ab size: 5", aux={"Tag": "1", "Digest": "sha256:ab", "Size": 5})
    assert last.to_json()["aux"] == {"Tag": "1", "Digest": "sha256:ab", "Size": 5}
    assert not PushEvent("Pushing", "x", 1, 2).final and PushEvent("Pushed", "x").final


def test_output_spellings() -> None:
    [spec] = _outputs([{"type": "registry"}])
    assert (spec.push, spec.names, spec.oci, spec.compression) == (True, (), False, "gzip")
    [spec] = _outputs([{"type": "image", "push": "true", "name": "h:5000/a:1", "oci-mediatypes": "true"}])
    assert (spec.push, spec.names, spec.oci) == (True, ("h:5000/a:1",), True)
    [spec] = _outputs([{"type": "image"}])
    assert not spec.push  # stored only, which every build does
    [spec] = _outputs([{"type": "registry", "compression": "zstd"}])
    assert spec.oci and spec.compression == "zstd"
    for bad, words in (({"type": "registry", "push": "maybe"}, "invalid --output push"),
                       ({"type": "registry", "dest": "x"}, "unknown key 'dest'"),
                       ({"type": "registry", "compression": "xz"}, "not supported")):
        with pytest.raises(UsageError, match=words):
            _outputs([bad])


def _events() -> list[PushEvent]:
    return [PushEvent("The push refers to repository [h/app]"), PushEvent("Preparing", "aaaaaaaaaaaa"),
            PushEvent("Pushing", "aaaaaaaaaaaa", 512, 1024), PushEvent("Pushed", "aaaaaaaaaaaa"),
            PushEvent("Layer already exists", "bbbbbbbbbbbb"),
            PushEvent("1: digest: sha256:ab size: 5", aux={"Tag": "1", "Digest": "sha256:ab", "Size": 5})]


def test_renderers() -> None:
    out = io.StringIO()
    plain = PlainTransfer(out)
    for event in _events():
        plain(event)
    assert out.getvalue().splitlines() == ["The push refers to repository [h/app]", "aaaaaaaaaaaa: Preparing",
                                           "aaaaaaaaaaaa: Pushed",
                                           "bbbbbbbbbbbb: Layer already exists", "1: digest: sha256:ab size: 5"]
    out = io.StringIO()
    as_json = JsonTransfer(out)
    for event in _events():
        as_json(event)
    assert [json.loads(line)["status"] for line in out.getvalue().splitlines()][2] == "Pushing"

    from rich.console import Console

    tty = TtyTransfer()
    tty.console = Console(file=io.StringIO(), force_terminal=True, width=100)
    tty.live.console = tty.console
    for event in _events():
        tty(event)
    tty.close()
    shown = tty.console.file.getvalue()  # type: ignore[attr-defined]
    assert "Pushed" in shown and "Layer already exists" in shown and "digest: sha256:ab" in shown
