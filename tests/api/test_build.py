"""`layerbuild.build()` takes every option the CLI has, checks them, and reports what the CLI reports."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.solve import BuildEvent
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

BASE = BUSYBOX_BASE
COPY_ONLY = "FROM scratch\nCOPY a.txt /a.txt\nLABEL x=1\nCOPY dir/ /dir/\n"



def timeless(report: dict[str, Any]) -> dict[str, Any]:
    """A report without its durations, the one thing two runs of one build may differ in."""
    out = dict(report, steps=[dict(s, duration_s=0) for s in report["steps"]])
    out["summary"] = dict(report["summary"], duration_s=0)
    return out


@pytest.mark.integration
def test_network_secrets_and_outputs_through_the_library(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value")
    md5 = hashlib.md5(b"s3cr3t-value").hexdigest()
    write(bb_ctx, {"Dockerfile": BASE + (
        f"RUN --mount=type=secret,id=tok test \"$(md5sum /run/secrets/tok | cut -c1-32)\" = {md5} && echo ok > /used\n"
        "RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /nets\n")})
    dest = tmp_path / "out"
    result = layerbuild.build(bb_ctx, root=root, tags=["lib:1"], network="none", secrets={"tok": str(secret)},
                              outputs=[("local", str(dest))])
    assert result.summary.executed == 4
    assert (dest / "used").read_text() == "ok\n"  # the secret was readable in the RUN step
    assert (dest / "nets").read_text().split() == ["lo"]  # network none: loopback only
    assert not (dest / "run" / "secrets" / "tok").exists()
    for path in [*dest.rglob("*"), *root.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert b"s3cr3t-value" not in path.read_bytes(), path
    assert "s3cr3t" not in json.dumps(result.to_json())


@pytest.mark.parametrize(("kwargs", "message", "hint"), [
    ({"outputs": [("zip", "out.zip")]}, "unknown --output type=zip", "use type=local, tar, oci or docker"),
    ({"outputs": [("local", "")]}, "--output type=local needs dest=PATH", None),
    ({"outputs": [{"type": "zip", "dest": "x"}]}, "unknown --output type=zip", "use type=local, tar, oci or docker"),
    ({"secrets": {"tok": "no/such/file"}}, "--secret id=tok: cannot read 'no/such/file'", "src= must name"),
    ({"network": "bridge"}, "unknown --network 'bridge'", "use default, none or host"),
    ({"jobs": -1}, "invalid --jobs -1", "0 for one per CPU"),
])
def test_bad_arguments_raise_usage_errors_with_hints(ctx: Path, root: Path, kwargs: dict[str, Any], message: str,
                                                     hint: str | None) -> None:
    write(ctx, {"Dockerfile": COPY_ONLY, "a.txt": "a", "dir/b": "b"})
    with pytest.raises(layerbuild.UsageError) as info:
        layerbuild.build(ctx, root=root, **kwargs)
    assert info.value.message == message
    assert (hint is None and info.value.hint is None) or (hint is not None and hint in (info.value.hint or ""))
    assert not root.exists()  # checked before anything is written


@pytest.mark.parametrize(("argv", "shown"), [
    (["--output", "type=zip,dest=x"], "error: unknown --output type=zip\nhint: use type=local, tar, oci or docker"),
    (["--secret", "id=tok,src=no/such/file"], "error: --secret id=tok: cannot read 'no/such/file'\nhint: src="),
])
def test_the_cli_prints_the_library_s_errors(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                             argv: list[str], shown: str) -> None:
    write(ctx, {"Dockerfile": COPY_ONLY, "a.txt": "a", "dir/b": "b"})
    assert main(["--root", str(root), "build", *argv, str(ctx)]) == 2
    assert shown in capsys.readouterr().err


def cli_build(ctx: Path, root: Path, report: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["--root", str(root), "build", "--progress", "json", "--report", str(report), "-t", "same:1",
                 str(ctx)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("rebuild", [False, True], ids=["full", "no-op rebuild"])
def test_cli_and_library_report_the_same(ctx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, rebuild: bool) -> None:
    write(ctx, {"Dockerfile": COPY_ONLY, "a.txt": "a", "dir/b": "b"})
    lib_root, cli_root = tmp_path / "lib", tmp_path / "cli"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the same image id, whenever each one ran
    if rebuild:  # the second build of each is answered by the fast path
        layerbuild.build(ctx, root=lib_root, tags=["same:1"], source_date_epoch=1700000000)
        cli_build(ctx, cli_root, tmp_path / "first.json", capsys)
    events: list[BuildEvent] = []
    result = layerbuild.build(ctx, root=lib_root, tags=["same:1"], on_event=events.append,
                              source_date_epoch=1700000000)
    lines = cli_build(ctx, cli_root, tmp_path / "report.json", capsys)
    report = json.loads((tmp_path / "report.json").read_text())
    assert timeless(report) == timeless(result.to_json())
    assert report["summary"]["hit_rate"] == (1.0 if rebuild else 0.0)
    # --progress json is the library's events, the contract's ones, and ends with the report.
    expected = [e.to_json() for e in events if e.type not in ("build.planned", "step.log")]
    assert [timeless_event(e) for e in lines] == [timeless_event(e) for e in expected]
    assert lines[-1]["event"] == "build.finished" and timeless(lines[-1] | {"event": None}) == timeless(
        report | {"event": None})


def timeless_event(event: dict[str, Any]) -> dict[str, Any]:
    return timeless(event) if "summary" in event else dict(event, duration_s=0)


def test_report_file_is_the_contract_s_format(ctx: Path, root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    write(ctx, {"Dockerfile": COPY_ONLY, "a.txt": "a", "dir/b": "b"})
    cli_build(ctx, root, tmp_path / "r.json", capsys)
    text = (tmp_path / "r.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert list(data) == ["image", "steps", "summary"]
    assert list(data["steps"][1]) == ["stage", "index", "instruction", "kind", "cached", "reason", "duration_s",
                                      "layer", "size"]
    assert list(data["summary"]) == ["steps", "cached", "executed", "hit_rate", "duration_s"]


NOOP = """
import sys
{call}
heavy = [m for m in ('lark', 'zstandard', 'rich', 'layerbuild.worker.build', 'layerbuild.solve.solver')
         if m in sys.modules]
print('heavy=' + ','.join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("call", [
    "import layerbuild; assert layerbuild.build(sys.argv[1], root=sys.argv[2], tags=['n:1']).summary.hit_rate == 1",
    *(f"from layerbuild.cli.main import main; assert main(['--root', sys.argv[2], 'build', '--progress', '{mode}', "
      f"'-t', 'n:1', sys.argv[1]]) == 0" for mode in ("plain", "tty", "json", "quiet")),
], ids=["library", "cli plain", "cli tty", "cli json", "cli quiet"])
def test_a_noop_rebuild_stays_light(ctx: Path, root: Path, call: str) -> None:
    write(ctx, {"Dockerfile": COPY_ONLY, "a.txt": "a", "dir/b": "b"})
    layerbuild.build(ctx, root=root, tags=["n:1"])
    err = subprocess.run([sys.executable, "-c", NOOP.format(call=call), str(ctx), str(root)],
                         capture_output=True, text=True, check=True).stderr
    assert err.splitlines()[-1] == "heavy=", f"imported on the fast path: {err}"


@pytest.mark.integration
def test_streams_labels_and_hosts_through_the_library(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    """What `build -`, `-f -`, `--label` and `--add-host` do, as keyword options and stream arguments."""
    import io
    import tarfile

    write(bb_ctx, {"Dockerfile": BASE, "note.txt": "from-dir\n"})
    layerbuild.build(bb_ctx, root=root, tags=["bb:1"])
    # -f -: the Dockerfile's text (bytes, or a binary stream), the context a directory
    df = b"FROM bb:1\nCOPY note.txt /\nRUN grep db /etc/hosts > /hosts\nLABEL a=1\n"
    result = layerbuild.build(bb_ctx, dockerfile=io.BytesIO(df), root=root, tags=["lib:2"], labels={"a": "2"},
                              add_hosts=["DB:10.1.1.1"])
    assert result.summary.executed == 2
    again = layerbuild.build(bb_ctx, dockerfile=df, root=root, tags=["lib:2"], labels={"a": "3"},
                             add_hosts=["DB:10.1.1.1"])
    assert again.summary.executed == 0
    from tests.build.kit import config_snapshot, export

    assert config_snapshot(root, "lib:2")["labels"] == (("a", "3"),)
    out = export(root, "lib:2", tmp_path / "out")
    assert (out / "note.txt").read_text() == "from-dir\n" and (out / "hosts").read_text() == "10.1.1.1\tdb\n"
    # build -: a tar archive of the context as a binary stream
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("Dockerfile", b"FROM bb:1\nCOPY note.txt /\n"), ("note.txt", b"from-tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    layerbuild.build(buf, root=root, tags=["lib:3"])
    assert (export(root, "lib:3", tmp_path / "out") / "note.txt").read_text() == "from-tar\n"
    with pytest.raises(layerbuild.UsageError, match="can't use stdin for both"):
        layerbuild.build(io.BytesIO(b"FROM scratch\n"), dockerfile=io.BytesIO(b"FROM scratch\n"), root=root)
    with pytest.raises(layerbuild.UsageError, match="invalid label '=x': empty name"):
        layerbuild.build(bb_ctx, root=root, labels={"": "x"})
