"""A layer's first MiB goes through the sink in the caller's thread; a bigger one starts the sink's
threads on the way. Either way the blob, its digest, diff_id and frames are the same bytes."""

from __future__ import annotations

import hashlib
import io
import random
import threading

import pytest

from layerbuild.layer import sink as sinkmod
from layerbuild.layer.sink import Compression, LayerSink, drive


def _write(data: bytes, compression: Compression, inline: int, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[bytes, object, set[str]]:
    monkeypatch.setattr(sinkmod, "_INLINE_BYTES", inline)
    out = io.BytesIO()
    seen: set[str] = set()
    sink = LayerSink(out, compression)

    def produce(s: LayerSink) -> None:
        for i in range(0, len(data), 300_000):
            s.write(data[i:i + 300_000], [(0, f"f{i}".encode())])
            seen.update(t.name for t in threading.enumerate())

    info = drive(sink, produce)
    return out.getvalue(), info, seen


@pytest.mark.parametrize("compression", [Compression.ZSTD, Compression.GZIP, Compression.NONE])
@pytest.mark.parametrize("size", [2_000, 900_000, 3_000_000])
def test_inline_and_threaded_sinks_write_the_same_layer(compression: Compression, size: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(size).randbytes(size // 2) + b"text " * (size // 10)
    inline, info_inline, threads_inline = _write(data, compression, 1 << 40, monkeypatch)
    threaded, info_threaded, threads_threaded = _write(data, compression, 0, monkeypatch)
    default, info_default, threads_default = _write(data, compression, 1 << 20, monkeypatch)
    assert inline == threaded == default
    assert info_inline == info_threaded == info_default
    assert info_inline.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert info_inline.digest == "sha256:" + hashlib.sha256(inline).hexdigest()  # type: ignore[attr-defined]
    assert "layer-sink" not in threads_inline and "layer-sink" in threads_threaded
    # The default: a small layer never starts the threads, a big one does.
    assert ("layer-sink" in threads_default) == (len(data) > 1 << 20)


def test_a_failure_in_the_callers_thread_is_raised_and_nothing_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.BytesIO):
        def write(self, data: object) -> int:  # type: ignore[override]
            raise OSError(28, "No space left on device")

    sink = LayerSink(Broken(), Compression.GZIP)  # gzip: its first compressed bytes come at once

    def produce(s: LayerSink) -> None:
        s.write(b"x" * 100_000)
        s.write(b"y" * 100_000)

    with pytest.raises(Exception, match="No space left"):
        drive(sink, produce)
