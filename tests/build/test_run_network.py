"""RUN steps' networks in real builds: the default reaches outside but not the host's loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import layerbuild
from layerbuild.errors import StepError
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.runtime.network import GATEWAY
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE, REPO
from tests.runtime.netkit import descendants, gone, outside_address, probe, reached, tcp_server

pytestmark = pytest.mark.integration


@pytest.fixture
def outside() -> Iterator[str]:
    with outside_address() as address:
        yield address


def files(root: Path, ref: str) -> Path:
    dest = root.parent / f"out-{ref.replace(':', '-')}"
    with Store.open(root) as store:
        export_local(store, resolve_image(store, ref), dest)
    return dest


def test_run_steps_per_network_mode(bb_ctx: Path, root: Path, outside: str) -> None:
    with tcp_server(outside) as far, tcp_server("127.0.0.1") as near:
        script = probe(far, near, replace(near, host=GATEWAY))
        write(bb_ctx, {"probe.sh": script + "\n", "Dockerfile": BUSYBOX_BASE + """\
COPY probe.sh /
RUN sh /probe.sh > /default
RUN --network=none sh /probe.sh > /none
RUN --network=host sh /probe.sh > /host
"""})
        layerbuild.build(bb_ctx, root=root, tags=["net:1"], allow=["network.host"])
        # With `build --network none` that is the steps' default; a RUN --network says otherwise.
        write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "COPY probe.sh /\nRUN sh /probe.sh > /none\n"
                                     "RUN --network=default sh /probe.sh > /default\n"})
        layerbuild.build(bb_ctx, root=root, tags=["net:2"], network="none")
    out = files(root, "net:1")
    default, none, host = ((out / name).read_text() for name in ("default", "none", "host"))
    assert reached(default, far) and not reached(default, near) and not reached(default, near, GATEWAY)
    assert not reached(none, far) and not reached(none, near)
    assert reached(host, far) and reached(host, near)
    out = files(root, "net:2")
    assert not reached((out / "none").read_text(), far) and reached((out / "default").read_text(), far)


def test_run_network_host_needs_the_entitlement(bb_ctx: Path, root: Path) -> None:
    """BuildKit: `RUN --network=host` needs `--allow network.host`; `build --network host` grants it."""
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "RUN --network=host hostname > /name\n"})
    with pytest.raises(StepError, match=r"RUN --network=host needs the network\.host entitlement") as info:
        layerbuild.build(bb_ctx, root=root, tags=["h:1"])
    assert info.value.line == BUSYBOX_BASE.count("\n") + 1
    layerbuild.build(bb_ctx, root=root, tags=["h:1"], allow=["network.host"])
    result = layerbuild.build(bb_ctx, root=root, tags=["h:2"], allow=["network.host"])
    assert all(s.cached for s in result.steps)
    with pytest.raises(StepError, match=r"network\.host entitlement"):  # a cached step needs it too
        layerbuild.build(bb_ctx, root=root, tags=["h:3"])
    layerbuild.build(bb_ctx, root=root, tags=["h:4"], network="host")  # every step on the host's network


def test_killed_build_leaves_no_network_helper(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "RUN echo started && sleep 60\n"})
    build = subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(root), "build", "--progress", "plain",
                              str(bb_ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert build.stdout is not None
    for line in build.stdout:  # the step runs: its container and network exist
        if b"started" in line:
            break
    deadline = time.monotonic() + 30
    # the helper, the step and its network, all seen in one scan of the process tree
    while not ("slirp4netns" in (tree := descendants(build.pid)).values() and len(tree) >= 3) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "slirp4netns" in tree.values() and len(tree) >= 3, tree  # the helper, the step, its network
    build.kill()
    build.wait()
    build.stdout.close()
    assert gone(list(tree))
