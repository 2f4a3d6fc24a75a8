"""The HTML report opened in a real headless chromium: no console error, nothing fetched, and the plots
drawn (the screenshot holds the plots' colours)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from layerbuild.bench.html import to_html
from layerbuild.bench.ideal import ideal
from layerbuild.bench.model import CommitOutcome, Comparison, HistoryReport, StepOutcome, WhatIf

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")


def _report() -> HistoryReport:
    commits = []
    for n in range(6):
        hit = n % 3 != 0
        steps = (StepOutcome("0", 0, "FROM busybox", "base", True, None, 0.0, None),
                 StepOutcome("0", 1, "COPY . /app", "copy", hit, None if hit else "app.txt changed", 0.01, 100,
                             key=f"c{n // 3}"),
                 StepOutcome("0", 2, "RUN make <all> & \"quoted\"", "exec", hit and n != 4,
                             None if hit and n != 4 else "upstream step changed", 0.5, 2000, key=f"r{n}"))
        commits.append(CommitOutcome(f"{n:x}" * 40, f"commit {n} <b>", n != 5, 0.6 + n / 10, ("app.txt",), steps,
                                     error="Dockerfile:3: boom" if n == 5 else None))
    whatif = (WhatIf("split-copy", "copy the manifests first", "FROM busybox\n", 0.8, 1.25, 2.0),
              WhatIf("move-later", "move `ARG V` down", "FROM busybox\n", 0.6, -0.1, 2.2),
              WhatIf("move-earlier", "move `RUN x` up", "FROM busybox\n", 0.0, 0.0, 0.0, accepted=False,
                     rejected="the image differs: /x differs"))
    docker = Comparison("docker", True, "docker engine 24", tuple(commits))
    return HistoryReport("/src/app", "Dockerfile", ".", "warm", None, tuple(commits), ideal(commits), whatif,
                         (docker,))


def test_the_html_is_one_file_that_fetches_nothing() -> None:
    html = to_html(_report())
    assert "<script" not in html
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", html))
    assert urls <= {"http://www.w3.org"}  # the SVG namespace, never fetched
    assert html.count("<svg") == 4  # hit rate, build time, cost per step, what-if savings
    assert "commit 0 &lt;b&gt;" in html and "RUN make &lt;all&gt; &amp;" in html
    assert "rejected: the image differs: /x differs" in html


def _pixels(png: bytes) -> set[tuple[int, int, int]]:
    """The RGB colours of an 8-bit RGB or RGBA PNG (what chromium writes), decoded with zlib alone."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour in (2, 6)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(len(raw) // (stride + 1)):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp))
        prev = line
    return colours


@needs_chromium
@pytest.mark.slow
def test_chromium_opens_the_report_without_console_errors_and_draws_the_plots(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    page = tmp_path / "index.html"
    page.write_text(to_html(_report()))
    shot = tmp_path / "shot.png"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1600", f"--screenshot={shot}",
            "--host-resolver-rules=MAP * ~NOTFOUND", page.as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    colours = _pixels(shot.read_bytes())
    assert (0x4A, 0x7F, 0xB5) in colours  # the hit-rate line and the bars
    assert (0xD9, 0x82, 0x2B) in colours  # the second series (docker)
    dom = subprocess.run([*argv[:-2], "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, check=False).stdout
    assert dom.count("<polyline") == 4 and dom.count("<rect") >= 3


@pytest.mark.slow
def test_the_console_check_can_fail(tmp_path: Path) -> None:
    """The check above sees a console error when a page has one (so it is not vacuous)."""
    if CHROMIUM is None:
        pytest.skip("needs chromium")
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script>console.error("broken")</script></body></html>')
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert any(":CONSOLE" in line and "broken" in line for line in proc.stderr.splitlines())
