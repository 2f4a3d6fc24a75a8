"""The HTML report: one static file, plots as inline SVG, no script and nothing fetched to open it."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from layerbuild.bench.model import HistoryReport

W, H, PAD = 720, 220, 44
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:60rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
.hit{background:#d7f5d7}.miss{background:#fbd9d3}.fail{background:#eee;color:#900}
svg text{font-size:11px;fill:#333}.bar{fill:#4a7fb5}.line{fill:none;stroke:#4a7fb5;stroke-width:2}
.line2{fill:none;stroke:#d9822b;stroke-width:2}.dot{fill:#4a7fb5}.neg{fill:#c44}
code{font-size:.85rem}
"""


def _axes(title: str, ymax: float, unit: str) -> list[str]:
    out = [f'<text x="{PAD}" y="14">{escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#999"/>',
           f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>']
    for frac in (0, 0.5, 1):
        y = H - PAD - frac * (H - PAD - 24)
        out.append(f'<text x="2" y="{y + 4:.1f}">{ymax * frac:.2f}{unit}</text>')
    return out


def line_plot(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
              ymax: float | None = None, unit: str = "") -> str:
    """A line per series over the commits (None: a commit that did not build, left as a gap)."""
    values = [v for _, vs in series for v in vs if v is not None]
    top = ymax if ymax is not None else max(values, default=1.0) or 1.0
    n = max(1, len(labels) - 1)
    parts = _axes(title, top, unit)

    def xy(i: int, v: float) -> tuple[float, float]:
        return PAD + i * (W - PAD - 60) / n, H - PAD - (v / top) * (H - PAD - 24)

    for k, (name, vs) in enumerate(series):
        cls = "line" if k == 0 else "line2"
        # A commit that did not build breaks the line: one polyline per run of built commits.
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(xy(i, v))
        for points in (r for r in runs if r):
            parts.append(f'<polyline class="{cls}" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                         + '"/>')
        colour = "#4a7fb5" if k == 0 else "#d9822b"
        parts.append(f'<text x="{W - 160}" y="{14 + 14 * k}" style="fill:{colour}">— {escape(name)}</text>')
        for i, v in enumerate(vs):
            if v is not None:
                x, y = xy(i, v)
                parts.append(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>{escape(labels[i])}: '
                             f'{v:.3f}{escape(unit)}</title></circle>')
    for i, label in enumerate(labels):
        x, _ = xy(i, 0)
        parts.append(f'<text x="{x:.1f}" y="{H - PAD + 14}" transform="rotate(40 {x:.1f} {H - PAD + 14})">'
                     f'{escape(label)}</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 30}" role="img">' + "".join(parts) \
        + "</svg>"


def bar_plot(title: str, bars: Sequence[tuple[str, float]], unit: str = "s") -> str:
    """Horizontal bars (negative values drawn red, to the left of zero)."""
    row = 18
    height = 30 + row * max(1, len(bars))
    top = max((abs(v) for _, v in bars), default=1.0) or 1.0
    label_w = 330
    zero = label_w + (W - label_w - 60) / 2 if any(v < 0 for _, v in bars) else label_w
    span = (W - 60 - zero) if zero == label_w else (W - label_w - 60) / 2
    parts = [f'<text x="0" y="14">{escape(title)}</text>']
    for i, (name, v) in enumerate(bars):
        y = 24 + i * row
        width = abs(v) / top * span
        x = zero if v >= 0 else zero - width
        parts.append(f'<text x="0" y="{y + 12}">{escape(name[:55])}</text>')
        parts.append(f'<rect class="{"bar" if v >= 0 else "neg"}" x="{x:.1f}" y="{y}" width="{max(width, 1):.1f}" '
                     f'height="{row - 4}"><title>{escape(name)}: {v:.3f}{unit}</title></rect>')
        parts.append(f'<text x="{x + width + 4 if v >= 0 else x - 50:.1f}" y="{y + 12}">{v:.2f}{unit}</text>')
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img">' + "".join(parts) \
        + "</svg>"


def to_html(report: HistoryReport) -> str:
    commits = report.commits
    labels = [c.commit[:7] for c in commits]
    hit = [c.summary.hit_rate if c.ok else None for c in commits]
    secs = [c.duration_s if c.ok else None for c in commits]
    series: list[tuple[str, Sequence[float | None]]] = [("layerbuild", hit)]
    time_series: list[tuple[str, Sequence[float | None]]] = [("layerbuild", secs)]
    for comp in report.compare:
        if comp.commits:
            series.append((comp.builder, [c.summary.hit_rate if c.ok else None for c in comp.commits]))
            time_series.append((comp.builder, [c.duration_s if c.ok else None for c in comp.commits]))
    cost: dict[str, float] = {}
    for c in commits:
        for s in c.steps:
            if s.counted:
                name = f"{s.stage}:{s.index} {s.instruction}"
                cost[name] = cost.get(name, 0.0) + (0.0 if s.cached else s.duration_s)
    costly = sorted(cost.items(), key=lambda kv: -kv[1])[:15]
    totals, ideal = report.totals, report.ideal
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>layerbuild bench history: {escape(report.repo)}</title><style>{CSS}</style></head><body>",
        f"<h1>Cache hit rates over {len(commits)} commits of <code>{escape(report.repo)}</code></h1>",
        f"<p>Dockerfile <code>{escape(report.dockerfile)}</code>, context <code>{escape(report.context)}</code>, "
        f"runner <b>{escape(report.runner)}</b>. Hit rate <b>{totals.hit_rate:.1%}</b> "
        f"({totals.cached} of {totals.steps} steps), ideal <b>{ideal.hit_rate:.1%}</b>; "
        f"{len(ideal.cache_misses)} miss(es) the cache should have avoided; "
        f"{totals.failed} commit(s) failed to build; {totals.duration_s:.2f}s of builds.</p>",
        "<h2>Per commit</h2>",
        line_plot("hit rate per commit", labels, series, ymax=1.0),
        line_plot("build time per commit (s)", labels, time_series, unit="s"),
        "<h2>Cost per step (seconds spent running it, over all commits)</h2>",
        bar_plot("seconds spent on misses", costly),
    ]
    if report.whatif:
        parts.append("<h2>What if the Dockerfile were rewritten</h2>")
        parts.append(bar_plot("seconds saved over the history",
                              [(w.description, w.saved_s) for w in report.whatif if w.accepted]))
        parts.append("<table><tr><th>rewrite</th><th>hit rate</th><th>saved</th><th>verdict</th></tr>")
        for w in report.whatif:
            verdict = "same image: suggested" if w.accepted else f"rejected: {escape(w.rejected or '')}"
            parts.append(f"<tr><td>{escape(w.description)}</td><td>{w.hit_rate:.1%}</td><td>{w.saved_s:.2f}s</td>"
                         f"<td>{verdict}</td></tr>")
        parts.append("</table>")
        best = next((w for w in report.whatif if w.accepted), None)
        if best is not None:
            parts.append(f"<h3>Suggested Dockerfile</h3><pre>{escape(best.dockerfile)}</pre>")
    if ideal.cache_misses:
        parts.append("<h2>Misses the cache should have avoided</h2><ul>")
        parts += [f"<li><code>{m.commit[:12]}</code> {escape(m.instruction)} (seen at {m.seen_at[:12]})</li>"
                  for m in ideal.cache_misses]
        parts.append("</ul>")
    for comp in report.compare:
        parts.append(f"<h2>Compared with {escape(comp.builder)}</h2><p>{escape(comp.message)}</p>")
    parts.append("<h2>Commits</h2><table><tr><th>commit</th><th>subject</th><th>hit rate</th><th>time</th>"
                 "<th>changed</th><th>misses</th></tr>")
    for c in commits:
        misses = "; ".join(f"{s.instruction[:40]}: {s.reason}" for s in c.steps if s.counted and not s.cached)
        cls = "fail" if not c.ok else ("hit" if c.summary.executed == 0 else "miss")
        rate = f"{c.summary.hit_rate:.0%}" if c.ok else "failed"
        changed = ", ".join(c.changed_files[:5]) + (" …" if len(c.changed_files) > 5 else "")
        parts.append(f'<tr class="{cls}"><td><code>{c.commit[:7]}</code></td><td>{escape(c.subject[:60])}</td>'
                     f"<td>{rate}</td><td>{c.duration_s:.2f}s</td><td>{escape(changed)}</td>"
                     f"<td>{escape(misses if c.ok else (c.error or '')[:200])}</td></tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
