"""Decompression bombs built by streaming (never held in memory or stored in the repository).

`gzip_zeros_layer` writes a gzip'd tar holding one file of `size` zero bytes: 1 GiB of zeros is about
1 MB of gzip. Deflate output after a full flush repeats for repeated input, so one compressed MiB is
written over and over and only the CRC is computed over the real bytes. As a script it loads such an
archive in a child process and prints the child's peak memory (`ru_maxrss`), for before/after figures:

    PYTHONPATH=<checkout> python tests/malformed/bombs.py [GiB]
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

_MIB = 1 << 20


def gzip_zeros_layer(out: BinaryIO, size: int) -> str:
    """Write to `out` a gzip stream of a tar with one file of `size` zeros (a multiple of 1 MiB);
    returns the tar's diff_id."""
    assert size % _MIB == 0
    info = tarfile.TarInfo("zeros")
    info.size, info.mtime = size, 0
    head = info.tobuf(format=tarfile.GNU_FORMAT)
    tail = b"\0" * 1024
    zero = bytes(_MIB)
    diff = hashlib.sha256(head)
    crc = zlib.crc32(head)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header: deflate, no name, mtime 0
    out.write(comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH))
    pieces = size // _MIB
    for n in range(pieces):
        if n < 2:  # the first two MiB are compressed for real; from then on the output repeats
            piece = comp.compress(zero) + comp.flush(zlib.Z_FULL_FLUSH)
        out.write(piece)
        crc = zlib.crc32(zero, crc)
        diff.update(zero)
    out.write(comp.compress(tail) + comp.flush(zlib.Z_FINISH))
    crc = zlib.crc32(tail, crc)
    diff.update(tail)
    total = len(head) + size + len(tail)
    out.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))
    return "sha256:" + diff.hexdigest()


def docker_archive(path: Path, layer: Path, diff_id: str, tag: str = "bomb:1") -> None:
    """A `docker save` archive at `path` with the one (compressed) layer file `layer`."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        tar.add(layer, "layer/layer.tar")
        for name, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# Run in a fresh process of its own, so RUSAGE_CHILDREN (a maximum over every child ever waited for)
# sees only the one `load`, whatever else the calling process has started.
_MEASURE = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def load_in_child(root: Path, archive: Path, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """`layerbuild load` in a child process: (exit code, stderr, the child's peak RSS in bytes)."""
    import os
    import subprocess

    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "load", "-i", str(archive)]
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True,
                          env={**os.environ, **(env or {})}, check=True)
    code, peak_kib = (int(x) for x in proc.stdout.split())
    return code, proc.stderr.decode(errors="replace"), peak_kib * 1024


if __name__ == "__main__":
    import tempfile

    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "layer.gz"
        with open(layer, "wb") as f:
            diff_id = gzip_zeros_layer(f, int(gib * 1024) * _MIB)
        archive = Path(tmp) / "bomb.tar"
        docker_archive(archive, layer, diff_id)
        code, err, peak = load_in_child(Path(tmp) / "store", archive)
        print(f"archive {archive.stat().st_size / 1e6:.1f} MB holding {gib:g} GiB of zeros: exit {code}, "
              f"peak RSS {peak / 2**20:.0f} MiB {err.strip()[:200]}")
