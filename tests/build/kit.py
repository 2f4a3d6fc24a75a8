"""Helpers for the cache soundness tests: busybox bases, builds (library, or CLI for `--network`),
and comparable snapshots of an image's files and config."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import layerbuild
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.solve import BuildResult
from layerbuild.store import Store
from tests.conftest import busybox_binary

busybox = busybox_binary


def base_dockerfile(flavor: str = "0", trigger: str | None = None, env: str = "0") -> str:
    """A busybox base with a world-writable /out (so non-root RUN steps can write results) and /etc/flavor."""
    text = (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"RUN mkdir -p -m 1777 /tmp /out && mkdir -p /etc /w1 /w2 && echo {flavor} > /etc/flavor\n"
        f"ENV BASE_ENV={env}\n"  # config only: the same layers whatever its value
    )
    if trigger is not None:
        text += f"ONBUILD RUN echo {trigger} > /out/onbuild\n"
    return text


def make_base(ctx: Path, root: Path, tag: str = "base:1", *, flavor: str = "0", trigger: str | None = None,
              env: str = "0", no_cache: bool = False) -> BuildResult:
    """Build the busybox base in `ctx` (created) into the store at `root` and tag it `tag`."""
    ctx.mkdir(parents=True, exist_ok=True)
    if not (ctx / "busybox").exists():
        shutil.copy(busybox(), ctx / "busybox")
    (ctx / "Dockerfile").write_text(base_dockerfile(flavor, trigger, env))
    return layerbuild.build(ctx, root=root, tags=[tag], no_cache=no_cache)


LIBRARY_HAS_NETWORK = "network" in inspect.signature(layerbuild.build).parameters


def build(ctx: Path, root: Path, *, tag: str = "sut:latest", network: str = "default",
          build_args: Mapping[str, str] | None = None, target: str | None = None,
          no_cache: bool = False) -> BuildResult:
    """One build; through the library, or the CLI when `--network` is needed and the library lacks it."""
    if network == "default" or LIBRARY_HAS_NETWORK:
        extra: dict[str, Any] = {"network": network} if network != "default" else {}
        return layerbuild.build(ctx, root=root, tags=[tag], build_args=dict(build_args or {}), target=target,
                                no_cache=no_cache, **extra)
    from layerbuild.cli.main import main

    report = root.parent / f".report-{os.getpid()}.json"
    argv = ["--root", str(root), "build", "--progress", "quiet", "--network", network, "-t", tag,
            "--report", str(report)]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    if target:
        argv += ["--target", target]
    if no_cache:
        argv.append("--no-cache")
    code = main([*argv, str(ctx)])
    if code != 0:
        raise layerbuild.BuildError(f"layerbuild build {' '.join(argv)} exited {code}")
    try:
        return BuildResult.from_json(json.loads(report.read_text()))
    finally:
        report.unlink(missing_ok=True)


def export(root: Path, tag: str, dest: Path) -> Path:
    """The final filesystem of image `tag` in the store at `root`, written into `dest` (emptied first)."""
    if dest.exists():
        shutil.rmtree(dest)
    with Store.open(root) as store:
        export_local(store, resolve_image(store, tag), dest)
    return dest


def read(root: Path, tag: str, dest: Path, path: str) -> str:
    return (export(root, tag, dest) / path.lstrip("/")).read_text()


def files_snapshot(top: Path) -> dict[str, Any]:
    """Every entry under `top`: type, permission bits, owner, content digest or link target; and the
    hard-link groups. Not times: a re-executed RUN writes new mtimes, that is no cache error."""
    entries: dict[str, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(top).as_posix()
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("symlink", mode, st.st_uid, st.st_gid, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", oct(mode), st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
                shown = data.decode() if len(data) < 400 and data.isascii() else hashlib.sha256(data).hexdigest()
                entries[rel] = ("file", oct(mode), st.st_uid, st.st_gid, shown)
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            else:
                entries[rel] = ("other", stat.S_IFMT(st.st_mode), oct(mode), st.st_uid, st.st_gid, st.st_rdev)
    links = sorted(tuple(sorted(group)) for group in inodes.values() if len(group) > 1)
    return {"entries": entries, "hardlinks": links}


CONFIG_FIELDS = ("env", "cmd", "entrypoint", "user", "working_dir", "labels", "exposed_ports", "volumes",
                 "stop_signal", "healthcheck", "on_build", "shell")


def config_snapshot(root: Path, tag: str) -> dict[str, Any]:
    """The run config fields of image `tag` that a build decides (not `created` or history times)."""
    with Store.open(root) as store:
        cfg = resolve_image(store, tag).config.config
    return {name: getattr(cfg, name) for name in CONFIG_FIELDS}


def image_snapshot(root: Path, tag: str, scratch: Path) -> dict[str, Any]:
    snap = files_snapshot(export(root, tag, scratch))
    snap["config"] = config_snapshot(root, tag)
    shutil.rmtree(scratch, ignore_errors=True)
    return snap


def differences(cached: Mapping[str, Any], fresh: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two image snapshots (cached build vs. no-cache build)."""
    out = []
    a, b = cached["entries"], fresh["entries"]
    for path in sorted(set(a) | set(b)):
        if a.get(path) != b.get(path):
            out.append(f"file /{path}: cached {a.get(path)!r} vs fresh {b.get(path)!r}")
    if cached["hardlinks"] != fresh["hardlinks"]:
        out.append(f"hard links: cached {cached['hardlinks']} vs fresh {fresh['hardlinks']}")
    for name in CONFIG_FIELDS:
        if cached["config"][name] != fresh["config"][name]:
            out.append(f"config {name}: cached {cached['config'][name]!r} vs fresh {fresh['config'][name]!r}")
    return out


def run_steps(result: BuildResult) -> list[Any]:
    return [s for s in result.steps if s.kind in ("exec", "copy")]


def step(result: BuildResult, prefix: str) -> Any:
    """The one step whose instruction starts with `prefix`."""
    found = [s for s in result.steps if s.instruction.startswith(prefix)]
    assert len(found) == 1, f"{len(found)} steps start with {prefix!r}: {[s.instruction for s in result.steps]}"
    return found[0]
