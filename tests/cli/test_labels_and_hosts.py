"""`build --label` (on the image after the Dockerfile's LABELs, no history entry, no step re-runs, as
BuildKit's `label:KEY` attributes) and `--add-host` for `build` (every RUN step's /etc/hosts, part of
the RUN steps' keys as BuildKit's ExecOp extra hosts) and `run` (the container's /etc/hosts)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.image.store_io import resolve_image
from layerbuild.runtime.network import host_gateway_address
from layerbuild.store import Store
from tests.build.kit import export, make_base
from tests.cli.kit import busybox_root, lb

BASE = "base:1"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("labels-hosts")
    make_base(base / "basectx", base / "store", BASE)
    return base / "store"


def build(root: Path, ctx: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    """`layerbuild build` in-process: (exit code, the report or {}, stderr)."""
    report = ctx.parent / "report.json"
    report.unlink(missing_ok=True)
    code, _, err = lb(root, capfd, "build", "--progress", "quiet", "--report", str(report),
                      "--allow", "network.host", *argv, str(ctx))  # the app's RUN --network=host
    return code, json.loads(report.read_text()) if report.exists() else {}, err


def config(root: Path, tag: str) -> Any:
    with Store.open(root) as store:
        return resolve_image(store, tag).config


def by_step(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["instruction"]: s for s in report["steps"]}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE}\nLABEL a=1 b=2\nCOPY a.txt /a.txt\nRUN cat /etc/hosts > /hosts\n"
        "RUN --network=none cat /etc/hosts > /hosts-none\nRUN --network=host cat /etc/hosts > /hosts-host\n"
        "LABEL d=4\n")
    return ctx


@pytest.mark.integration
def test_labels_override_the_dockerfile_s_and_add_no_history(root: Path, app: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = build(root, app, capfd, "-t", "plain:1")
    assert code == 0, err
    code, report, err = build(root, app, capfd, "-t", "labelled:1", "--label", "b=3", "--label", "c",
                              "--label", "e=x=y", "--label", "d=")
    assert code == 0, err
    assert report["summary"]["executed"] == 0  # labels change no step
    labelled, plain = config(root, "labelled:1"), config(root, "plain:1")
    assert labelled.config.labels_dict() == {"a": "1", "b": "3", "c": "", "d": "", "e": "x=y"}
    assert plain.config.labels_dict() == {"a": "1", "b": "2", "d": "4"}
    # BuildKit sets them on the final config: no history entry of their own, the same layers.
    assert [h.created_by for h in labelled.history] == [h.created_by for h in plain.history]
    assert labelled.diff_ids == plain.diff_ids
    code, out, _ = lb(root, capfd, "inspect", "labelled:1")
    assert code == 0 and json.loads(out)["config"]["config"]["Labels"]["b"] == "3"


@pytest.mark.integration
def test_a_changed_label_reruns_nothing_and_is_not_answered_from_the_last_build(
        root: Path, app: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, report, err = build(root, app, capfd, "-t", "relabel:1", "--label", "v=1")
    assert code == 0, err
    for value in ("2", "3"):
        code, report, err = build(root, app, capfd, "-t", "relabel:1", "--label", f"v={value}")
        assert code == 0, err
        assert report["summary"]["executed"] == 0
        assert all(s["cached"] for s in report["steps"] if s["kind"] == "exec")
        assert config(root, "relabel:1").config.labels_dict()["v"] == value


@pytest.mark.parametrize(("label", "message"), [
    ("=x", "invalid label '=x': empty name"),
    ("", "invalid label '': empty name"),
    ("a b=c", "label 'a b' contains whitespaces"),
])
def test_bad_labels_in_docker_s_words(tmp_path: Path, capfd: pytest.CaptureFixture[str], label: str,
                                      message: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    code, _, err = lb(tmp_path / "store", capfd, "build", "--label", label, str(ctx))
    assert code == 2 and f"error: {message}" in err, err
    assert not (tmp_path / "store").exists()


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.integration
def test_build_add_host_in_every_run_step_and_its_key(root: Path, app: Path, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    hosts = ("--add-host", "Db:10.0.0.5", "--add-host", "v6=[2001:DB8::1]", "--add-host", "m:::ffff:1.2.3.4")
    code, report, err = build(root, app, capfd, "-t", "hosts:1", *hosts)
    assert code == 0, err
    out = export(root, "hosts:1", tmp_path / "out")
    # BuildKit's form: the name lower-cased, the address as Go prints it, after localhost.
    added = ["10.0.0.5\tdb", "2001:db8::1\tv6", "1.2.3.4\tm"]
    default = lines((out / "hosts").read_text())
    assert default[2:5] == added and default[-1].endswith("\tlayerbuild"), default
    assert lines((out / "hosts-none").read_text())[2:5] == added
    assert [x for x in lines((out / "hosts-host").read_text()) if x in added] == added
    code, report, err = build(root, app, capfd, "-t", "hosts:1", *hosts)
    assert code == 0 and report["summary"]["executed"] == 0, err
    # Another address: the RUN steps miss and say why; the COPY before them stays cached.
    changed = tuple(h.replace("10.0.0.5", "10.0.0.6") for h in hosts)
    code, report, err = build(root, app, capfd, "-t", "hosts:1", *changed)
    assert code == 0, err
    steps = by_step(report)
    assert steps["COPY a.txt /a.txt"]["cached"]
    run = steps["RUN cat /etc/hosts > /hosts"]
    assert not run["cached"] and "--add-host db:10.0.0.5" in run["reason"] and "db:10.0.0.6" in run["reason"], run
    assert report["summary"]["executed"] == 3
    assert lines(export(root, "hosts:1", tmp_path / "out").joinpath("hosts").read_text())[2] == "10.0.0.6\tdb"
    # Without extra hosts again: the first build's steps, from the cache.
    code, report, err = build(root, app, capfd, "-t", "hosts:2")
    assert code == 0 and report["summary"]["executed"] == 0, err


def assert_local_address(address: str) -> None:
    """`address` is one of this machine's own (a socket binds to it); nothing is sent anywhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
    assert not address.startswith("127.")


@pytest.mark.integration
def test_build_host_gateway_is_the_host_s_address(root: Path, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "gw"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN grep host.docker.internal /etc/hosts > /gw\n")
    code, _, err = build(root, ctx, capfd, "-t", "gw:1", "--add-host", "host.docker.internal:host-gateway")
    assert code == 0, err
    address, name = (export(root, "gw:1", tmp_path / "out") / "gw").read_text().split()
    assert name == "host.docker.internal" and address == host_gateway_address()
    assert_local_address(address)


@pytest.mark.parametrize(("entry", "message"), [
    ("nocolon", 'bad format for add-host: "nocolon"'),
    (":1.2.3.4", 'bad format for add-host: ":1.2.3.4"'),
    ("a b:1.2.3.4", 'bad format for add-host: "a b:1.2.3.4"'),
    ("h:1.2", 'invalid IP address in add-host: "1.2"'),
    ("h:300.1.1.1", 'invalid IP address in add-host: "300.1.1.1"'),
    ("h=[::1", 'invalid IP address in add-host: "[::1"'),
    ("h:fe80::1%eth0", 'invalid IP address in add-host: "fe80::1%eth0"'),
])
def test_bad_add_host_in_docker_s_words(tmp_path: Path, capfd: pytest.CaptureFixture[str], entry: str,
                                        message: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    code, _, err = lb(tmp_path / "store", capfd, "build", "--add-host", entry, str(ctx))
    assert code == 2 and f"error: {message}" in err, err
    code, _, err = lb(tmp_path / "store", capfd, "run", "--add-host", entry, "busybox", "true")
    assert code == 125 and f"error: {message}" in err, err
    with pytest.raises(layerbuild.UsageError, match="add-host"):
        layerbuild.build(ctx, root=tmp_path / "store", add_hosts=[entry])


@pytest.fixture(scope="module")
def bb_root() -> Iterator[Path]:
    with busybox_root("lb-add-host-", skip_rootless="runs containers as root") as path:
        yield path


@pytest.mark.integration
@pytest.mark.parametrize("network", ["default", "none", "host"])
def test_run_add_host(bb_root: Path, capfd: pytest.CaptureFixture[str], network: str) -> None:
    code, out, err = lb(bb_root, capfd, "run", "--rm", "--network", network, "-h", "box",
                        "--add-host", "Db:10.0.0.5", "--add-host", "v6=[2001:DB8::1]", "--add-host", "gw:host-gateway",
                        "busybox", "cat", "/etc/hosts")
    assert code == 0, err
    got = lines(out)
    # docker run writes names and addresses as given (brackets removed); the hostname comes last.
    expected = ["10.0.0.5\tDb", "2001:DB8::1\tv6", f"{host_gateway_address()}\tgw"]
    assert got[-4:-1] == expected, got
    assert got[-1].endswith("\tbox") or network == "host"
    assert_local_address(host_gateway_address())


def test_run_usage_does_not_require_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from layerbuild.cli.main import main

    assert main(["run", "--help"]) == 0
    assert "usage: layerbuild run [OPTIONS] IMAGE [COMMAND] [ARG...]" in capsys.readouterr().out
