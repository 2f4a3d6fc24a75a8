"""Push speed: whole-process `layerbuild push` of a ~500 MB, 5-layer image to a local registry against
`skopeo copy` of the same image (gzip layers, the same blobs) from an OCI layout to a registry,
alternating in the same run; and the time of a push whose blobs all exist already.

Run: python benchmarks/bench_push.py [--size-mb 500] [--rounds 3]
(Debian's docker-registry and skopeo, as `scripts/setup --test` installs them; prints a table.)

Each measured push goes to a registry started fresh for it (on a new port), so nothing exists there
and nothing can be mounted from elsewhere: both tools send every byte. The layers are random bytes
(incompressible), so compression is no one's shortcut; layerbuild's gzip variants are made once
before the rounds (the store keeps them), as the OCI layout skopeo reads is written once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).parent))
from installed import installed_python  # noqa: E402

from tests.registry.kit import start_registry  # noqa: E402

LAYERBUILD = [installed_python(), "-m", "layerbuild"]


def make_image(work: Path, size_mb: int, layers: int = 5) -> tuple[Path, str]:
    """A FROM-scratch image of `layers` COPY steps of random files, built into a store; (root, tag)."""
    ctx = work / "ctx"
    ctx.mkdir()
    per = size_mb * (1 << 20) // layers
    lines = ["FROM scratch"]
    for i in range(layers):
        with open(ctx / f"blob{i}", "wb") as f:
            left = per
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
        lines.append(f"COPY blob{i} /data/blob{i}")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    root = work / "store"
    subprocess.run([*LAYERBUILD, "--root", str(root), "build", "-q", "-t", "bench/push:1", str(ctx)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(ctx)
    return root, "bench/push:1"


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lb-bench-push-"))
    try:
        root, tag = make_image(work, args.size_mb)
        layout = work / "layout.tar"
        # the OCI archive's layers are the store's gzip variants: the same blobs either tool sends
        subprocess.run([*LAYERBUILD, "--root", str(root), "save", tag, "--format", "oci", "-o", str(layout)], check=True)
        (work / "oci-layout").mkdir()
        subprocess.run(["tar", "-xf", str(layout), "-C", str(work / "oci-layout")], check=True)
        layout.unlink()
        size = sum(p.stat().st_size for p in (work / "oci-layout" / "blobs" / "sha256").iterdir())
        again: list[float] = []
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(args.rounds):
            for who in ("layerbuild", "skopeo") if i % 2 == 0 else ("skopeo", "layerbuild"):
                reg = start_registry("plain", work / f"registry-{i}-{who}")
                try:
                    target = f"{reg.host}/bench/push:1"
                    if who == "layerbuild":
                        subprocess.run([*LAYERBUILD, "--root", str(root), "tag", tag, target], check=True)
                        ours.append(timed([*LAYERBUILD, "--root", str(root), "push", "-q", target]))
                    else:
                        theirs.append(timed(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                             f"oci:{work / 'oci-layout'}", f"docker://{target}"]))
                    if who == "layerbuild" and i == args.rounds - 1:
                        again = [timed([*LAYERBUILD, "--root", str(root), "push", "-q", target]) for _ in range(7)]
                finally:
                    reg.stop()
                    shutil.rmtree(reg.root, ignore_errors=True)
        mb = size / (1 << 20)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"image: {mb:.0f} MiB in 5 gzip layers; {args.rounds} rounds, alternating; medians")
        print(f"{'':24} {'seconds':>8} {'MiB/s':>8}")
        print(f"{'layerbuild push':24} {a:8.2f} {mb / a:8.1f}")
        print(f"{'skopeo copy oci: → docker://':24} {b:8.2f} {mb / b:8.1f}")
        print(f"ratio layerbuild/skopeo: {a / b:.2f}")
        print(f"push with every blob present (whole process, median of 7): {statistics.median(again):.3f} s "
              f"(min {min(again):.3f})")
        print("all rounds:", "layerbuild", [round(x, 2) for x in ours], "skopeo", [round(x, 2) for x in theirs])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
