"""Shared test fixtures: where the conformance data lives, a busybox base, and an fsck of every store a test leaves behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# The registry fixtures (docker-registry in three kinds, a storage host), for every test package.
from tests.registry.fixtures import (  # noqa: F401
    any_registry,
    cli_env,
    plain_registry,
    storage,
    tls_registry,
    token_registry,
)

REPO = Path(__file__).resolve().parent.parent
# Every command the tests run starts its own process: a daemon the developer left running
# (`layerbuild daemon start`) must not answer them. tests/cli/test_daemon.py starts its own.
os.environ["LAYERBUILD_DAEMON"] = "0"


def conformance_root() -> Path | None:
    """`shared/conformance/` beside the repository (or inside it), found without fixed paths."""
    for base in (REPO, *REPO.parents):
        for candidate in (base / "shared" / "conformance", base / "conformance"):
            if (candidate / "index.json").is_file():
                return candidate
    return None


@pytest.fixture(scope="session")
def conformance() -> Path:
    root = conformance_root()
    if root is None:
        need_conformance()
    assert root is not None
    return root


def need_conformance() -> None:
    """Skip (with the reason) where the conformance data is not beside the repository, as in a fresh
    clone; CI lays it beside every clone, so there its absence is a failure."""
    if os.environ.get("CI"):
        pytest.fail("shared/conformance/ not found beside the repository")
    pytest.skip("shared/conformance/ is not beside this clone (it comes with the project's shared notes)")


# How deep under a test's tmp_path to look for store roots; tests put them at tmp_path/<name> or a
# level or two below, and a shallow walk keeps the check cheap next to large build contexts.
_STORE_SEARCH_DEPTH = 3


def store_roots(base: Path, depth: int = _STORE_SEARCH_DEPTH) -> list[Path]:
    """Directories under `base` (itself included) that hold a store: an `index.db` beside `blobs/`."""
    found: list[Path] = []
    todo = [(base, 0)]
    while todo:
        directory, level = todo.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            continue
        names = {e.name for e in entries}
        if "index.db" in names and "blobs" in names:
            found.append(directory)
            continue  # nothing of interest inside a store
        if level < depth:
            todo.extend((Path(e.path), level + 1) for e in entries if e.is_dir(follow_symlinks=False))
    return sorted(found)


def fsck_problems(root: Path) -> list[str]:
    """What a read-only fsck finds wrong with the store at `root`, one line per problem."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.store import Store

    try:
        with Store(root) as store:
            report = store.fsck(repair=False)
    except LayerbuildError as exc:
        return [f"{root}: cannot open the store: {exc}"]
    return [f"{root}: {p.kind}: {p.subject}: {p.detail}" for p in report.problems]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (`scripts/test &`) inherits SIGINT
    ignored, and so would every layerbuild it starts: the tests that press Ctrl-C on a build would
    see it ignored, as it should be there. They get the ordinary disposition back."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()

# Tests talk to loopback only: a build that names an image the store lacks pulls it, as docker does, so
# every registry but a loopback one is reached through a proxy on a loopback port where nothing
# listens (the connection is refused at once: nothing leaves the machine, not even a DNS query).
_NOWHERE = "http://127.0.0.1:9"


def layerbuild_daemons() -> set[int]:
    """The pids of every layerbuild daemon on the machine (any user, any copy of layerbuild), not
    the children a daemon forks for its commands, which have its command line too."""
    found: dict[int, int] = {}  # pid: parent's pid
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if b"from layerbuild.cli.daemon import main" not in f.read():
                        continue
                with open(f"/proc/{name}/stat", "rb") as f:
                    found[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return {pid for pid, parent in found.items() if parent not in found}


@pytest.fixture(autouse=True, scope="session")
def _no_daemon_outlives_the_tests() -> Iterator[None]:
    """A command that finds no daemon starts one (`cli.launch`): every test that lets it (by leaving
    LAYERBUILD_DAEMON out of a command's environment) must stop what it started."""
    before = layerbuild_daemons()
    yield
    left = layerbuild_daemons() - before
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"layerbuild daemons started by the tests outlived them (pids {sorted(left)}; killed)"


@pytest.fixture(autouse=True, scope="session")
def _registries_on_loopback_only() -> Iterator[None]:
    import os

    saved = {k: os.environ.get(k) for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")}
    os.environ.update(HTTP_PROXY=_NOWHERE, HTTPS_PROXY=_NOWHERE, ALL_PROXY=_NOWHERE,
                      NO_PROXY="127.0.0.1,localhost,::1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _fsck_stores_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every store a test built under its tmp_path must pass fsck afterwards (DESIGN: a store that
    fsck passes). Tests that damage a store on purpose opt out with `@pytest.mark.store_corrupted`."""
    if "tmp_path" not in request.fixturenames or request.node.get_closest_marker("store_corrupted"):
        yield
        return
    tmp_path: Path = request.getfixturevalue("tmp_path")  # now, so it is torn down after this check
    yield
    if request.node.stash.get(_CALL_FAILED, True):
        return  # the test itself failed (or never ran): that is the report that matters
    problems = [line for root in store_roots(tmp_path) for line in fsck_problems(root)]
    if problems:
        pytest.fail("fsck found problems in a store the test left behind:\n" + "\n".join(problems))


# A busybox base made FROM scratch (Debian's busybox-static): the RUN tests' base image.
BUSYBOX_BASE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def busybox_binary() -> Path:
    path = Path(shutil.which("busybox") or "/bin/busybox")
    if not path.exists():
        pytest.fail("busybox-static is not installed (scripts/setup installs it)")
    return path


@pytest.fixture
def bb_ctx(ctx: Path) -> Path:
    """The test's context directory with the busybox binary in it, for BUSYBOX_BASE."""
    shutil.copy(busybox_binary(), ctx / "busybox")
    return ctx


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of this test's own (`tmp_path/small-disk`), unmounted afterwards (lazily, in case
    a killed process still holds it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "layerbuild-test-small-disk", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
