"""A replay's report as files: `history.json` (the contract), `history.csv` (one row per commit and step)
and `index.html` (html)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from layerbuild.bench.model import HistoryReport
from layerbuild.errors import UsageError

CSV_COLUMNS = ("commit", "subject", "ok", "commit_duration_s", "stage", "index", "instruction", "kind", "cached",
               "reason", "duration_s", "size", "bytes_written")


def to_csv(report: HistoryReport) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for c in report.commits:
        if not c.steps:
            out.writerow([c.commit, c.subject, c.ok, round(c.duration_s, 3), "", "", "", "", "", c.error or "",
                          "", "", ""])
        for s in c.steps:
            out.writerow([c.commit, c.subject, c.ok, round(c.duration_s, 3), s.stage, s.index, s.instruction, s.kind,
                          s.cached, s.reason or "", round(s.duration_s, 3), "" if s.size is None else s.size,
                          s.bytes_written])
    return buf.getvalue()


def write_report(report: HistoryReport, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the three files into `directory` (made if missing); their paths by kind."""
    from layerbuild.bench.html import to_html

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "history.json", "csv": out / "history.csv", "html": out / "index.html"}
        _atomic(paths["json"], json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
        _atomic(paths["csv"], to_csv(report))
        _atomic(paths["html"], to_html(report))
    except OSError as exc:
        raise UsageError(f"cannot write the report to {str(out)!r}: {exc.strerror or exc}") from None
    return paths


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_report_dir(directory: str | os.PathLike[str]) -> None:
    """Refuse, before any replay, a report directory that cannot be made."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--report {str(path)!r} is a file", hint="give a directory for history.json, "
                         "history.csv and index.html")
    parent = path.parent if not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--report {str(path)!r}: {str(parent)!r} is not writable")
