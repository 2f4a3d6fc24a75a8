"""The store beside builds: prune --all running while builds use cache hits, builds killed with
SIGKILL while COPY --from and RUN steps run, and a store on a full disk."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from layerbuild.solve.cache import StoreCache
from layerbuild.store import Store
from layerbuild.store.layout import SCRATCH_PREFIXES
from tests.build.kit import build, make_base

pytestmark = pytest.mark.integration

TWO_STAGES = """\
FROM base:1 AS gen
RUN echo one > /one
ARG N=0
RUN mkdir -p /data && dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null && echo $N > /data/n
FROM base:1
RUN echo two > /two
ARG N=0
COPY --from=gen /data /data
ARG PAUSE=0
RUN cat /data/n > /out/n && touch /started && sleep $PAUSE
"""


def cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), *args],
                          capture_output=True, text=True, check=False, env=env, timeout=300)


def cli_popen(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(root), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mount namespaces, overlay views and tmpfs mounts need root")


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [p for p in (line.split()[4] for line in f) if p.startswith(prefix) or p == str(path)]


def scratch_left(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root / "tmp") if e.name.startswith(SCRATCH_PREFIXES))


@pytest.fixture
def two_stages(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(TWO_STAGES)
    return root, ctx


# --- leases -------------------------------------------------------------------------------------------

def test_a_cache_hit_is_leased_the_moment_it_is_found(two_stages: tuple[Path, Path]) -> None:
    root, ctx = two_stages
    build(ctx, root, tag="warm:1")
    with Store(root) as store:
        store.index.delete_tag("warm:1")  # its layers are now held by cache records only
        records = [r for r in store.index.list_cache() if r.result.startswith("sha256:")]
        assert records
        lease = store.lease()
        hits = [StoreCache(store, lease).get(r.key) for r in records]
        assert all(h is not None and h.diff_id for h in hits)
        store.prune(all=True, grace=0)
        for hit in hits:
            assert hit is not None and hit.diff_id is not None
            assert store.index.layers_by_diff_id(hit.diff_id), f"prune took the leased hit {hit.diff_id}"
        lease.release()
        report = store.prune(all=True, grace=0)
        assert report.blobs, "once released, the same layers are pruned"


def test_builds_beside_prune_all_in_a_loop_never_fail(two_stages: tuple[Path, Path]) -> None:
    root, ctx = two_stages
    build(ctx, root, tag="warm:1")
    with Store(root) as store:
        store.index.delete_tag("warm:1")
    env = dict(os.environ, LAYERBUILD_PRUNE_GRACE="0")  # the whole store is past the grace period
    stop = threading.Event()
    prunes = []

    def pruner() -> None:
        while not stop.is_set():
            prunes.append(cli(root, "prune", "--all", env=env).returncode)

    thread = threading.Thread(target=pruner)
    thread.start()
    try:
        builds = [cli_popen(root, "build", "--progress", "quiet", "--build-arg", f"N={n}", str(ctx), env=env)
                  for n in range(1, 5)]
        results = [(p, p.communicate()[1]) for p in builds]
    finally:
        stop.set()
        thread.join()
    failed = [(p.returncode, err) for p, err in results if p.returncode != 0]
    assert not failed, failed
    assert prunes and all(code == 0 for code in prunes)


# --- SIGKILL ------------------------------------------------------------------------------------------

def _wait_for(predicate: object, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.02)
    return False


def _started(root: Path) -> bool:
    return any((Path(e.path) / "upper" / "started").exists()
               for e in os.scandir(root / "tmp") if e.name.startswith("run-"))


def test_a_build_killed_in_its_run_step_leaves_no_mount_and_the_next_command_removes_its_scratch(
    two_stages: tuple[Path, Path],
) -> None:
    need_root()
    root, ctx = two_stages
    env = dict(os.environ, PAUSE="30")
    proc = cli_popen(root, "build", "--progress", "quiet", "--build-arg", "N=1", "--build-arg", "PAUSE", str(ctx),
                     env=env)
    try:
        assert _wait_for(lambda: _started(root)), "the RUN step after COPY --from never started"
        # The COPY --from view exists now, in the build's own mount namespace only.
        assert not mounts_under(root)
        assert scratch_left(root)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _wait_for(lambda: not mounts_under(root))
    assert cli(root, "prune").returncode == 0
    assert scratch_left(root) == []
    assert not mounts_under(root)


def test_builds_killed_at_random_points_leave_no_mounts_and_no_scratch(two_stages: tuple[Path, Path]) -> None:
    need_root()
    root, ctx = two_stages
    rng = random.Random(9)
    started = time.monotonic()
    build(ctx, root, build_args={"N": "0"})
    span = time.monotonic() - started
    for n in range(1, 5):
        proc = cli_popen(root, "build", "--progress", "quiet", "--build-arg", f"N={n}", str(ctx))
        time.sleep(rng.uniform(0.05, max(span, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_for(lambda: not mounts_under(root), timeout=10), mounts_under(root)
    # The next build removes what the killed ones left, and works.
    build(ctx, root, build_args={"N": "9"})
    assert scratch_left(root) == []


# --- a full disk --------------------------------------------------------------------------------------

def fill(path: Path) -> None:
    """Fill the filesystem of `path` to the last byte with the file `path`."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_on_a_full_disk_images_df_fsck_and_prune_work_and_prune_frees_space(small_disk: Path) -> None:
    root = small_disk / "store"
    make_base(small_disk.parent / "base", root)
    ctx = small_disk.parent / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN dd if=/dev/urandom of=/junk bs=1M count=3 2>/dev/null\n")
    assert cli(root, "build", "--progress", "quiet", str(ctx)).returncode == 0  # untagged: prunable
    filler = small_disk / "filler"
    fill(filler)
    assert free(small_disk) == 0
    images = cli(root, "images")
    assert images.returncode == 0 and "base" in images.stdout, images.stderr
    df = cli(root, "df")
    assert df.returncode == 0 and "snapshots" in df.stdout, df.stderr
    fsck = cli(root, "fsck")
    assert fsck.returncode == 0, fsck.stderr
    prune = cli(root, "prune", "--all", env=dict(os.environ, LAYERBUILD_PRUNE_GRACE="0"))
    assert prune.returncode == 0, prune.stderr
    assert free(small_disk) > 3 << 20, prune.stdout
    assert "disk I/O error" not in prune.stderr + fsck.stderr + df.stderr + images.stderr
    filler.unlink()


def test_a_build_that_runs_out_of_space_says_so_and_the_store_stays_consistent(small_disk: Path) -> None:
    root = small_disk / "store"
    make_base(small_disk.parent / "base", root)
    ctx = small_disk.parent / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN dd if=/dev/urandom of=/big bs=1M count=40 2>/dev/null\n")
    done = cli(root, "build", "--progress", "quiet", "-t", "big:1", str(ctx))
    assert done.returncode == 1
    assert "no space left on device" in done.stderr.lower(), done.stderr
    assert "hint:" in done.stderr
    assert "disk I/O error" not in done.stderr and "internal error" not in done.stderr
    assert scratch_left(root) == []
    with Store(root) as store:
        assert store.fsck(repair=False).ok
    # Nearly full: the index itself cannot grow.
    filler = small_disk / "filler"
    fill(filler)
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN echo small > /small\n")
    done = cli(root, "build", "--progress", "quiet", "-t", "small:1", str(ctx))
    assert done.returncode != 0
    assert "no space left on device" in done.stderr.lower(), done.stderr
    assert "disk I/O error" not in done.stderr and "internal error" not in done.stderr
    filler.unlink()
    assert cli(root, "build", "--progress", "quiet", "-t", "small:1", str(ctx)).returncode == 0


# --- the torture script, short ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_short_torture_run_finds_nothing(tmp_path: Path) -> None:
    need_root()
    import json

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "torture.py"
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(script), "--kills", "4", "--concurrent", "4", "--disk-rounds", "2",
         "--work", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, check=False, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    kill, race, disk = figures["kill"], figures["prune"], figures["disk"]
    assert kill["kills"] == 4 and kill["mounts_left"] == 0 and kill["corrupt_stores"] == 0
    assert kill["scratch_entries_after_next_command"] == 0
    assert race["failed_builds"] == 0 and race["fsck_problems_after"] == 0, race
    assert disk["unrecoverable_rounds"] == 0 and not disk["verb_failures"], disk
