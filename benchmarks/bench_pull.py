"""Pull speed: a ~500 MB image of 5 gzip layers from a local docker-registry, `layerbuild pull` into a
fresh store against `skopeo copy docker://… oci:DIR` of the same image, alternating whole processes in
the same run; and `layerbuild pull` of the image once it is up to date.

Run: pytest benchmarks/bench_pull.py -s   (needs docker-registry and skopeo: scripts/setup --test)
Prints the medians, the ratio (layerbuild / skopeo) and MB/s of the compressed bytes moved. skopeo
copies the blobs as they are (hashing them); layerbuild also inflates each layer to check its diff_id
and the archive door rules (it keeps the blob as it came). `podman pull` into a fresh storage root,
which unpacks and checks the layers too (the same work as layerbuild's), is timed beside them when
podman is installed.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.image.config import HistoryEntry, ImageConfig
from layerbuild.image.ocilayout import OciLayoutWriter
from tests.image.kit import MemoryImage, MemoryLayer
from tests.registry.kit import Registry, start_registry

sys.path.insert(0, str(Path(__file__).parent))
from installed import daemon_of_its_own, installed_python

REPO = Path(__file__).resolve().parents[1]
LAYERS = 5
LAYER_BYTES = 100 << 20
ROUNDS = int(os.environ.get("LB_BENCH_ROUNDS", "3"))


def _layer(rng: random.Random, i: int) -> MemoryLayer:
    """A tar of files that are half random bytes, half text: gzip makes them about 60% of their size."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for j in range(LAYER_BYTES // (4 << 20)):
            data = rng.randbytes(2 << 20) + (f"layer {i} file {j} line\n" * 80_000)[: 2 << 20].encode()
            info = tarfile.TarInfo(f"l{i}/f{j}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    return MemoryLayer(gz.compress(raw) + gz.flush(), raw, "application/vnd.oci.image.layer.v1.tar+gzip")


@pytest.fixture(scope="module")
def pushed() -> Iterator[tuple[Registry, str, int, Path]]:
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo")
    base = Path(tempfile.mkdtemp(prefix="lb-bench-pull-"))
    registry = start_registry("plain", base / "registry")
    try:
        rng = random.Random(0)
        layers = tuple(_layer(rng, i) for i in range(LAYERS))
        config = ImageConfig("amd64", "linux")
        for i, layer in enumerate(layers):
            config = config.with_layer(layer.diff_id, HistoryEntry(created="2024-01-01T00:00:00Z",
                                                                   created_by=f"COPY {i}"))
        image = MemoryImage(layers, config.to_json())
        OciLayoutWriter(base / "layout", directory=True).write(image, ["bench:1"])
        del layers, image
        name = f"{registry.host}/bench/big:1"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base / 'layout'}:1",
                        f"docker://{name}"], check=True, capture_output=True)
        moved = sum(f.stat().st_size for f in (base / "layout" / "blobs" / "sha256").iterdir())
        shutil.rmtree(base / "layout")
        yield registry, name, moved, base
    finally:
        registry.stop()
        shutil.rmtree(base, ignore_errors=True)


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - started


def test_pull_against_skopeo(pushed: tuple[Registry, str, int, Path], benchmark: Any) -> None:
    _registry, name, moved, base = pushed
    layerbuild = [installed_python(), "-m", "layerbuild"]
    # As a user runs it: the first command starts the daemon (in a runtime directory of this
    # benchmark's own, stopped at the end), which runs the rest; `own` keeps each in its own process.
    with daemon_of_its_own(layerbuild[0], base) as env:
        _pull_rounds(layerbuild, env, {**env, "LAYERBUILD_DAEMON": "0"}, name, moved, base, benchmark)


def _pull_rounds(layerbuild: list[str], env: dict[str, str], own: dict[str, str], name: str, moved: int,
                 base: Path, benchmark: Any) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    podmans: list[float] = []
    podman = shutil.which("podman")
    for i in range(ROUNDS):  # alternating, each from nothing: a fresh store, a fresh layout directory
        store, layout = base / f"store-{i}", base / f"oci-{i}"
        proot = base / f"podman-{i}"
        podman_argv = [podman, "--root", str(proot / "root"), "--runroot", str(proot / "run"),
                       "--storage-driver", "overlay"] if podman is not None else []
        runs = [(ours, [*layerbuild, "--root", str(store), "pull", "-q", name]),
                (theirs, ["skopeo", "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:1"])]
        if podman_argv:
            runs.append((podmans, [*podman_argv, "pull", "-q", "--tls-verify=false", name]))
        for samples, argv in runs if i % 2 == 0 else runs[::-1]:
            os.sync()  # what the one before wrote (or removed) is on disk: no one pays another's writeback
            samples.append(_timed(argv, env))
        shutil.rmtree(layout)
        if podman_argv:
            subprocess.run([*podman_argv, "system", "reset", "-f"], capture_output=True)
            shutil.rmtree(proot, ignore_errors=True)
        if i < ROUNDS - 1:
            shutil.rmtree(store)
    os.sync()
    again = [*layerbuild, "--root", str(base / f"store-{ROUNDS - 1}"), "pull", "-q", name]
    noop, noop_own = [], []
    for _ in range(9):  # alternating: through the daemon, then in its own process
        noop.append(_timed(again, env))
        noop_own.append(_timed(again, own))
    a, b, n = statistics.median(ours), statistics.median(theirs), statistics.median(noop)
    n_own = statistics.median(noop_own)
    mb = moved / 1e6
    print(f"\npull of {mb:.0f} MB in {LAYERS} gzip layers ({ROUNDS} rounds, medians): layerbuild {a:.2f} s "
          f"({mb / a:.0f} MB/s), skopeo copy {b:.2f} s ({mb / b:.0f} MB/s), ratio {a / b:.2f}; "
          f"up-to-date pull {n:.3f} s (min {min(noop):.3f} s), with LAYERBUILD_DAEMON=0 {n_own:.3f} s")
    benchmark.extra_info.update(layerbuild_s=a, skopeo_s=b, ratio=a / b, mb=mb, up_to_date_s=n,
                                up_to_date_own_process_s=n_own)
    if podmans:
        p = statistics.median(podmans)
        print(f"podman pull (unpacks and checks the layers, as layerbuild does) {p:.2f} s ({mb / p:.0f} MB/s); "
              f"layerbuild / podman {a / p:.2f}")
        benchmark.extra_info.update(podman_s=p, podman_ratio=a / p)
    benchmark.pedantic(lambda: None, rounds=1)
