"""Builds with RUN steps on a busybox base made FROM scratch, run in the real sandbox."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

import layerbuild
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration

BASE = BUSYBOX_BASE



def layer_names(root: Path, ref: str) -> list[list[str]]:
    """The entry names of each layer of image `ref`."""
    out = []
    with Store.open(root) as store:
        image = resolve_image(store, ref)
        for record in image.layers:
            data = store.blobs.path(record.digest).read_bytes()
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                out.append(tar.getnames())
    return out


def test_run_output_env_workdir_user_and_cache(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + """\
ENV GREETING=hi
WORKDIR /work
RUN echo "$GREETING from $(pwd) as $(id -u)" > /out.txt && touch /work/made && mkdir -m 1777 /tmp
USER 1000
RUN id -u > /tmp/uid
"""})
    first = layerbuild.build(bb_ctx, root=root, tags=["t:1"])
    assert first.summary.executed == 4
    again = layerbuild.build(bb_ctx, root=root, tags=["t:1"])
    assert again.summary.hit_rate == 1.0
    names = layer_names(root, "t:1")
    assert "out.txt" in names[-2] and "work/made" in names[-2]
    assert "tmp/uid" in names[-1]
    from layerbuild.image.export import export_local

    with Store.open(root) as store:
        export_local(store, resolve_image(store, "t:1"), root.parent / "fs")
    assert (root.parent / "fs" / "out.txt").read_text() == "hi from /work as 0\n"
    assert (root.parent / "fs" / "tmp" / "uid").read_text() == "1000\n"


def test_deletions_become_whiteouts(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + """\
RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b
RUN rm /d/a && rm -r /d/sub
RUN test ! -e /d/a && test ! -e /d/sub && echo ok > /checked
"""})
    layerbuild.build(bb_ctx, root=root, tags=["wh:1"])
    names = layer_names(root, "wh:1")
    assert "d/.wh.a" in names[-2] and "d/.wh.sub" in names[-2]


def test_failing_run_reports_code_output_and_line(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + "RUN echo before && echo boom >&2 && exit 7\n"})
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(bb_ctx, root=root)
    message = info.value.message
    assert "exit code 7" in message and "Dockerfile:4: RUN echo before" in message and "boom" in message
    # Nothing cached for the failed step; the steps before it are.
    write(bb_ctx, {"Dockerfile": BASE + "RUN echo fixed\n"})
    result = layerbuild.build(bb_ctx, root=root)
    assert [s.cached for s in result.steps if s.kind in ("copy", "exec")] == [True, True, False]
    with Store.open(root) as store:
        assert store.fsck().ok


def test_cache_mount_persists_between_builds_and_stays_out_of_layers(bb_ctx: Path, root: Path) -> None:
    dockerfile = BASE + "ARG N\nRUN --mount=type=cache,target=/cache echo run-$N >> /cache/log && cp /cache/log /seen\n"
    write(bb_ctx, {"Dockerfile": dockerfile})
    layerbuild.build(bb_ctx, root=root, tags=["c:1"], build_args={"N": "1"})
    layerbuild.build(bb_ctx, root=root, tags=["c:1"], build_args={"N": "2"})
    names = layer_names(root, "c:1")
    assert names[-1] == ["seen"] or "seen" in names[-1]
    assert not any("cache/log" in n for layer in names for n in layer)
    logs = list((root / "cache-mounts").glob("*/log"))
    assert logs and logs[0].read_text() == "run-1\nrun-2\n"


def test_secret_is_readable_but_nowhere_else(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value")
    # The Dockerfile names only the secret's md5, so the value can appear nowhere but in the secret file.
    md5 = hashlib.md5(b"s3cr3t-value").hexdigest()
    write(bb_ctx, {"Dockerfile": BASE + f"RUN --mount=type=secret,id=tok test \"$(md5sum /run/secrets/tok | cut -c1-32)\""
                                        f" = {md5} && echo used > /used\n"})
    from layerbuild.worker.build import run_build
    from layerbuild.worker.request import BuildRequest

    with Store.open(root) as store:
        result = run_build(BuildRequest(context=bb_ctx, tags=("sec:1",), secrets={"tok": secret}), store)
    assert result.summary.executed == 3
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix != ".zst" and not data.startswith(b"\x28\xb5\x2f\xfd"):
                assert b"s3cr3t-value" not in data, path
    names = layer_names(root, "sec:1")
    assert not any("secrets" in n for layer in names for n in layer)
    import zstandard

    with Store.open(root) as store:
        for record in resolve_image(store, "sec:1").layers:
            raw = zstandard.ZstdDecompressor().stream_reader(
                io.BytesIO(store.blobs.path(record.digest).read_bytes()), read_across_frames=True).read()
            assert b"s3cr3t-value" not in raw
    assert "s3cr3t" not in json.dumps(result.to_json())


def test_network_none_has_only_loopback(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + "RUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /nets\n"})
    layerbuild.build(bb_ctx, root=root, tags=["n:1"])
    from layerbuild.image.export import export_local

    with Store.open(root) as store:
        export_local(store, resolve_image(store, "n:1"), root.parent / "out")
    assert (root.parent / "out" / "nets").read_text().split() == ["lo"]


def test_multistage_copy_from(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + """\
FROM base AS left
RUN echo left > /left.txt
FROM base AS right
RUN echo right > /right.txt
FROM scratch
COPY --from=left /left.txt /out/
COPY --from=right /right.txt /out/
"""})
    first = layerbuild.build(bb_ctx, root=root, tags=["m:1"], jobs=2)
    assert first.summary.executed == 6
    names = layer_names(root, "m:1")
    # /out exists after the first COPY: the second layer carries it as it is below (as BuildKit's does).
    assert names == [["out", "out/left.txt"], ["out", "out/right.txt"]]


def test_opaque_dirs_hardlinks_and_metadata_only_changes(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + """\
RUN mkdir -p /d/old && echo 1 > /d/old/f && echo keep > /meta && echo a > /h1
RUN rm -rf /d && mkdir /d && echo new > /d/x
RUN ln /h1 /h2
RUN chmod 600 /meta && chown 5:6 /meta
"""})
    layerbuild.build(bb_ctx, root=root, tags=["o:1"])
    names = layer_names(root, "o:1")
    assert names[-1] == ["meta"]  # chmod/chown alone: the entry again, with its new metadata
    from layerbuild.image.export import export_local

    out = root.parent / "fs"
    with Store.open(root) as store:
        export_local(store, resolve_image(store, "o:1"), out)
    assert sorted(p.name for p in (out / "d").iterdir()) == ["x"]
    assert (out / "h1").stat().st_ino == (out / "h2").stat().st_ino
    st = (out / "meta").stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, 5, 6)


def test_run_output_streams_as_log_events(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + "RUN echo first && echo second >&2 && printf 'no newline'\n"})
    events: list[layerbuild.BuildEvent] = []
    layerbuild.build(bb_ctx, root=root, on_event=events.append)
    lines = [e.message for e in events if e.type == "step.log"]
    assert lines == ["first", "second", "no newline"]
    logged = [e for e in events if e.type == "step.log"]
    assert all(e.step is not None and e.step.instruction.startswith("RUN echo first") for e in logged)
    # The report (and so --report and --progress json) carries no output.
    assert all(e.type != "step.log" for e in events[-1:])
