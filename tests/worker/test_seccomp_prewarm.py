"""The default seccomp program of RUN steps is compiled once per process, early, in the background."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from layerbuild.runtime import seccomp
from layerbuild.runtime.spec import DEFAULT_CAPABILITIES
from layerbuild.worker.runop import prewarm_seccomp


def test_parallel_callers_share_one_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stages starting their RUN steps at once: the second waits for the first's program (from
    memory or the cache file) instead of compiling the same one alongside it."""
    real = seccomp._compile.__wrapped__  # past the per-process memo, so each compile is real
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # nothing compiled there yet
    calls: list[int] = []

    def counted(text: str, caps: frozenset[int]) -> bytes:
        calls.append(1)
        time.sleep(0.2)  # long enough for the other caller to arrive meanwhile
        return real(text, caps)

    monkeypatch.setattr(seccomp, "_compile", counted)
    got: list[bytes] = []
    start = threading.Barrier(2)

    def call() -> None:
        start.wait()
        got.append(seccomp.compile_profile(None, DEFAULT_CAPABILITIES, tmp_path / "seccomp"))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert got[0] == got[1] and len(got[0]) % 8 == 0 and len(got[0]) > 8 * 100


def test_prewarm_leaves_the_program_a_run_step_reads(tmp_path: Path) -> None:
    cache = tmp_path / "seccomp"
    prewarm_seccomp(cache).join()
    (path,) = cache.iterdir()
    assert path.suffix == ".bpf"
    assert path.read_bytes() == seccomp.compile_profile(None, DEFAULT_CAPABILITIES, cache)
    assert path.read_bytes() == seccomp._compile.__wrapped__(
        json.dumps(seccomp.DEFAULT_PROFILE, sort_keys=True), frozenset(DEFAULT_CAPABILITIES))


def test_a_new_store_reads_the_program_from_the_users_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CI job's store is new: the program compiled for an earlier store comes from the user's
    own cache, not from another compile."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    first = seccomp.compile_profile(None, DEFAULT_CAPABILITIES, tmp_path / "store-a" / "seccomp")
    (kept,) = (tmp_path / "user-cache" / "layerbuild" / "seccomp").iterdir()
    assert kept.read_bytes() == first and (kept.parent.stat().st_mode & 0o777) == 0o700

    def no_compile(text: str, caps: frozenset[int]) -> bytes:
        raise AssertionError("compiled again")

    monkeypatch.setattr(seccomp, "_compile", no_compile)
    assert seccomp.compile_profile(None, DEFAULT_CAPABILITIES, tmp_path / "store-b" / "seccomp") == first
    # A cache directory others may write to is not read (nor written).
    os.chmod(kept.parent, 0o777)
    with pytest.raises(AssertionError, match="compiled again"):
        seccomp.compile_profile(None, DEFAULT_CAPABILITIES, tmp_path / "store-c" / "seccomp")
