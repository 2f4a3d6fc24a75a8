"""Torture the store: builds killed at random moments, builds beside `prune --all`, and a full disk.

Usage (as root, from the repository; PYTHONPATH picks the layerbuild under test):
    python benchmarks/torture.py [--kills 100] [--concurrent 32] [--disk-rounds 12] [--json OUT]
                                 [--only kill,prune,disk] [--seed 1]

- kill: builds of a two-stage Dockerfile (RUN steps writing a few MB, `COPY --from` of the first
  stage) are SIGKILLed at a random moment; after each kill it counts the mounts left in this mount
  namespace under the store root, the scratch entries left in the root's `tmp/` (and their bytes),
  and whether a read-only fsck finds problems; then it runs one next command (`prune`) and counts
  what is still left. Mounts left behind are unmounted afterwards.
- prune: `--concurrent` builds at once (cache hits on records and layers that no tag holds, kept
  older than prune's grace period all along) while `prune --all` runs in a loop; counts failed
  builds.
- disk: a small tmpfs (mounted here, unmounted at the end) holding a store; every round fills the
  disk (to the last byte, or nearly), runs `images`, `df`, `fsck` and `prune`, runs a build that
  writes more than fits, frees the filler and checks that fsck is clean and a build works again
  (otherwise the round is unrecoverable).
Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /out /etc && echo base > /etc/flavor
"""

# The first RUN of each stage is the same in every build (a cache hit once warmed); the ARG makes
# the rest run every time.
WORK_DOCKERFILE = """\
FROM base:1 AS gen
RUN echo common > /common && dd if=/dev/zero of=/common.bin bs=1M count=2 2>/dev/null
ARG N=0
RUN mkdir -p /data && for i in 1 2 3 4; do dd if=/dev/urandom of=/data/f$i bs=1M count=1 2>/dev/null; done && echo $N > /data/n
FROM base:1
RUN echo common2 > /common2
ARG N=0
COPY --from=gen /data /data
RUN cat /data/n > /out/n && sleep 0.$N
"""

DISK_DOCKERFILE = """\
FROM base:1
ARG N=0
ARG MB=1
RUN dd if=/dev/zero of=/big bs=1M count=$MB 2>/dev/null; echo $N > /n
"""


def busybox() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(candidate):
            return candidate
    found = shutil.which("busybox")
    if not found:
        sys.exit("torture: needs busybox-static")
    return found


# `--src DIR` runs the layerbuild of another source tree (e.g. a worktree of main, for a before/after
# comparison) with this interpreter's packages: its directory goes first on the path, and the
# editable install's finder, which would answer first, is left out.
_LAUNCH = (
    "import sys\n"
    "src = sys.argv.pop(1)\n"
    "if src:\n"
    "    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]\n"
    "    sys.path.insert(0, src)\n"
    "from layerbuild.cli.main import entry\n"
    "sys.argv[0] = 'layerbuild'\n"
    "entry()\n"
)
SRC = ""


def lb_argv(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", _LAUNCH, SRC, "--root", str(root), *args]


def lb(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lb_argv(root, *args), capture_output=True, text=True, timeout=timeout, check=False)


def lb_popen(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(lb_argv(root, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def make_contexts(work: Path) -> tuple[Path, Path, Path]:
    base, job, disk = work / "ctx-base", work / "ctx-work", work / "ctx-disk"
    for path in (base, job, disk):
        path.mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox(), base / "busybox")
    (base / "Dockerfile").write_text(BASE_DOCKERFILE)
    (job / "Dockerfile").write_text(WORK_DOCKERFILE)
    (disk / "Dockerfile").write_text(DISK_DOCKERFILE)
    return base, job, disk


def must(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        sys.exit(f"torture: {what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def new_store(root: Path, base_ctx: Path) -> None:
    must(lb(root, "build", "--progress", "quiet", "-t", "base:1", str(base_ctx)), "building the base")


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                out.append(point)
    return out


def unmount_all(points: list[str]) -> None:
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def scratch(root: Path) -> tuple[int, int]:
    """Entries in the root's tmp/ and the bytes under them."""
    tmp = root / "tmp"
    try:
        entries = list(os.scandir(tmp))
    except FileNotFoundError:
        return 0, 0
    size = 0
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            size += tree_bytes(Path(entry.path))
        else:
            try:
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                pass
    return len(entries), size


def fsck_problems(root: Path) -> list[str]:
    code = (
        "import sys, json\n"
        "if sys.argv[2]:\n"
        "    sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]\n"
        "    sys.path.insert(0, sys.argv[2])\n"
        "from layerbuild.store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    r = s.fsck(repair=False)\n"
        "print(json.dumps([f'{p.kind}: {p.subject}: {p.detail}' for p in r.problems]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(root), SRC], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return [f"fsck could not run: {done.stderr.strip()[-500:]}"]
    problems: list[str] = json.loads(done.stdout)
    return problems


def age_store(root: Path, seconds: float = 7200.0) -> None:
    """Make everything in the store look `seconds` old: blob mtimes, last-use and cache times."""
    then = time.time() - seconds
    blobs = root / "blobs" / "sha256"
    for entry in os.scandir(blobs):
        os.utime(entry.path, (then, then), follow_symlinks=False)
    conn = sqlite3.connect(root / "index.db", timeout=60)
    with conn:
        conn.execute("UPDATE last_use SET at = min(at, ?)", (then,))
        conn.execute("UPDATE cache SET last_used = min(last_used, ?), created = min(created, ?)", (then, then))
    conn.close()


# --- SIGKILL loop ------------------------------------------------------------------------------------

def kill_loop(work: Path, base_ctx: Path, job_ctx: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    per_store = 10
    figures: dict[str, Any] = {
        "kills": 0, "kills_leaving_mounts": 0, "mounts_left": 0, "kills_leaving_scratch": 0,
        "scratch_entries_left": 0, "scratch_bytes_left": 0, "largest_leftover_bytes": 0,
        "scratch_entries_after_next_command": 0, "scratch_bytes_after_next_command": 0,
        "corrupt_after_kill": 0, "corrupt_stores": 0, "build_seconds": 0.0,
    }
    root = work / "kill-0"
    for i in range(kills):
        if i % per_store == 0:
            root = work / f"kill-{i // per_store}"
            new_store(root, base_ctx)
            start = time.monotonic()
            must(lb(root, "build", "--progress", "quiet", "--build-arg", "N=0", str(job_ctx)), "warm build")
            figures["build_seconds"] = round(time.monotonic() - start, 2)
            store_corrupt = False
        span = max(figures["build_seconds"], 0.5)
        proc = lb_popen(root, "build", "--progress", "quiet", "--build-arg", f"N={i + 1}", str(job_ctx))
        time.sleep(rng.uniform(0.05, span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)  # whatever was meant to die with the build has had time to
        figures["kills"] += 1
        points = mounts_under(root)
        if points:
            figures["kills_leaving_mounts"] += 1
            figures["mounts_left"] += len(points)
            unmount_all(points)
        count, size = scratch(root)
        if count:
            figures["kills_leaving_scratch"] += 1
        figures["scratch_entries_left"] += count
        figures["scratch_bytes_left"] += size
        figures["largest_leftover_bytes"] = max(figures["largest_leftover_bytes"], size)
        if fsck_problems(root):
            figures["corrupt_after_kill"] += 1
            store_corrupt = True
        lb(root, "prune")  # the next command
        count, size = scratch(root)
        figures["scratch_entries_after_next_command"] += count
        figures["scratch_bytes_after_next_command"] += size
        if i % per_store == per_store - 1 or i == kills - 1:
            figures["corrupt_stores"] += int(store_corrupt)
            unmount_all(mounts_under(root))
            shutil.rmtree(root, ignore_errors=True)
    return figures


# --- builds beside prune --all ---------------------------------------------------------------------

def prune_race(work: Path, base_ctx: Path, job_ctx: Path, concurrent: int) -> dict[str, Any]:
    root = work / "race"
    new_store(root, base_ctx)
    must(lb(root, "build", "--progress", "quiet", "--build-arg", "N=0", str(job_ctx)), "warm build")
    age_store(root)
    env = dict(os.environ, LAYERBUILD_PRUNE_GRACE="0")
    stop = work / "stop-pruning"
    pruner = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         "while not os.path.exists(sys.argv[1]):\n"
         "    subprocess.run(sys.argv[2:], capture_output=True)\n",
         str(stop), *lb_argv(root, "prune", "--all")],
        env=env,
    )
    procs = [
        subprocess.Popen(lb_argv(root, "build", "--progress", "quiet", "--build-arg", f"N={n + 1}", str(job_ctx)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for n in range(concurrent)
    ]
    # Keep the whole store past the grace period while the builds run, also for a layerbuild that
    # has no knob for it: what they write is made to look old as soon as it is there.
    done = threading.Event()

    def ager() -> None:
        while not done.is_set():
            try:
                age_store(root)
            except (OSError, sqlite3.Error):
                pass
            done.wait(0.2)

    aging = threading.Thread(target=ager)
    aging.start()
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(err.strip().splitlines()[0] if err.strip() else f"exit {proc.returncode}")
    finally:
        done.set()
        aging.join()
    stop.touch()
    pruner.wait()
    problems = fsck_problems(root)
    unmount_all(mounts_under(root))
    shutil.rmtree(root, ignore_errors=True)
    return {"builds": concurrent, "failed_builds": len(errors), "errors": sorted(set(errors))[:5],
            "fsck_problems_after": len(problems), "fsck_problems": problems[:5]}


# --- a full disk -------------------------------------------------------------------------------------

def fill(path: Path, leave: int) -> None:
    """Fill the filesystem of `path` with one file until `leave` bytes remain (0: to the last byte)."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    chunk = b"\0" * (1 << 20)
    with open(path, "ab", buffering=0) as f:
        todo = max(free - leave, 0)
        try:
            while todo > 0:
                n = f.write(chunk[: min(len(chunk), todo)])
                todo -= n
            if leave == 0:
                while True:
                    f.write(chunk[:4096])
        except OSError:
            pass


def disk_full(work: Path, base_ctx: Path, disk_ctx: Path, rounds: int, rng: random.Random) -> dict[str, Any]:
    mnt = Path(tempfile.mkdtemp(prefix="torture-tmpfs-", dir=work))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    figures: dict[str, Any] = {
        "rounds": 0, "unrecoverable_rounds": 0, "verb_failures": {}, "build_no_space_message": 0,
        "build_other_message": 0, "build_succeeded": 0, "messages": [],
    }
    try:
        root = mnt / "store"
        new_store(root, base_ctx)
        filler = mnt / "filler"
        for r in range(rounds):
            figures["rounds"] += 1
            leave = 0 if r % 2 == 0 else rng.choice([64 << 10, 512 << 10, 2 << 20])
            fill(filler, leave)
            for verb in (["images"], ["df"], ["fsck"], ["prune"]):
                done = lb(root, *verb)
                if done.returncode != 0:
                    key = verb[0]
                    figures["verb_failures"][key] = figures["verb_failures"].get(key, 0) + 1
                    line = (done.stderr.strip().splitlines() or [""])[0]
                    if line not in figures["messages"]:
                        figures["messages"].append(line)
            done = lb(root, "build", "--progress", "quiet", "--build-arg", f"N={r}", "--build-arg", "MB=20",
                      str(disk_ctx))
            if done.returncode == 0:
                figures["build_succeeded"] += 1
            elif "no space left" in done.stderr.lower():
                figures["build_no_space_message"] += 1
            else:
                figures["build_other_message"] += 1
                line = (done.stderr.strip().splitlines() or [""])[0]
                if line not in figures["messages"]:
                    figures["messages"].append(line)
            filler.unlink()
            problems = fsck_problems(root)
            again = lb(root, "build", "--progress", "quiet", "--build-arg", f"N=ok{r}", str(disk_ctx))
            if problems or again.returncode != 0:
                figures["unrecoverable_rounds"] += 1
                detail = problems[:2] if problems else [again.stderr.strip()[-300:]]
                figures["messages"].append(f"round {r} unrecoverable: {detail}")
                lb(root, "fsck")  # repair, so later rounds test the disk again and not this damage
            lb(root, "prune", "--all")
    finally:
        unmount_all(mounts_under(mnt))
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--disk-rounds", type=int, default=12)
    parser.add_argument("--only", default="kill,prune,disk")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", help="a directory for stores and contexts (default: a new temp dir)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--src", help="run the layerbuild of this source tree (default: the one installed)")
    args = parser.parse_args(argv)
    global SRC
    SRC = str(Path(args.src).resolve()) if args.src else ""
    if os.geteuid() != 0:
        sys.exit("torture: run as root (it mounts a tmpfs and counts overlay mounts)")
    rng = random.Random(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lb-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    base_ctx, job_ctx, disk_ctx = make_contexts(work)
    only = set(args.only.split(","))
    out: dict[str, Any] = {}
    try:
        if "kill" in only and args.kills:
            out["kill"] = kill_loop(work, base_ctx, job_ctx, args.kills, rng)
        if "prune" in only and args.concurrent:
            out["prune"] = prune_race(work, base_ctx, job_ctx, args.concurrent)
        if "disk" in only and args.disk_rounds:
            out["disk"] = disk_full(work, base_ctx, disk_ctx, args.disk_rounds, rng)
    finally:
        unmount_all(mounts_under(work))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
