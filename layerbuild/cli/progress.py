"""The one renderer of build events and reports: plain lines, JSON lines, a live terminal view, or quiet.

Every build the CLI runs, fast path or full, reaches the terminal through `make_progress(mode)` and
`write_report`; the library only emits `BuildEvent`s and returns the `BuildResult`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from layerbuild.cli.common import human_size

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from typing import Any, TextIO

    from layerbuild.solve import BuildEvent, BuildResult, StepReport


def _step_name(step: StepReport) -> str:
    return f"[{step.stage} {step.index}]"


def summary_line(result: BuildResult) -> str:
    s = result.summary
    tags = f" ({', '.join(result.image.tags)})" if result.image.tags else ""
    return (f"built {result.image.id[:19]}{tags}: {s.steps} steps, {s.cached} cached, {s.executed} executed, "
            f"hit rate {s.hit_rate:.0%}, {s.duration_s:.2f}s")


def report_json(result: BuildResult) -> str:
    """The `--report` file's text (DESIGN.md's report format)."""
    return json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"


def write_report(result: BuildResult, path: str | Path) -> None:
    Path(path).write_text(report_json(result), encoding="utf-8")


class Progress:
    """A renderer: called with each event of one build, then closed (also when the build failed)."""

    def __call__(self, event: BuildEvent) -> None:
        return None

    def close(self) -> None:
        return None


class PlainProgress(Progress):
    """One line per event, for CI logs."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr

    def __call__(self, event: BuildEvent) -> None:
        step = event.step
        if event.type in ("build.planned", "build.pulled", "build.cache") and event.message:
            print(event.message.rstrip("\n"), file=self.out)
            return
        if event.type == "build.pushed" and event.message:
            print(event.message, file=self.out, flush=True)
            return
        if event.type == "build.finished" and event.result is not None:
            for warning in event.result.warnings:
                print(f"warning: {warning}", file=self.out)
            print(summary_line(event.result), file=self.out)
            return
        if step is None:
            return
        name = _step_name(step)
        if event.type == "step.log":
            print(f"{name} | {event.message}", file=self.out)
        elif event.type == "step.started":
            why = f"  ({step.reason})" if step.reason else ""
            print(f"{name} {step.instruction}{why}", file=self.out)
        elif event.type == "step.cached":
            if step.kind in ("copy", "exec"):
                print(f"{name} {step.instruction}  CACHED", file=self.out)
        elif event.type == "step.finished":
            size = f" {human_size(step.size)}" if step.size is not None else ""
            print(f"{name} DONE {step.duration_s:.2f}s{size}", file=self.out)
        elif event.type == "step.failed":
            print(f"{name} FAILED {step.instruction}", file=self.out)
        self.out.flush()


class JsonProgress(Progress):
    """One JSON object per line per event; the last is the report."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: BuildEvent) -> None:
        if event.type in ("build.planned", "build.pulled", "step.log"):
            return  # the contract's stream is steps and the final report
        self.out.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
        self.out.flush()


class QuietProgress(Progress):
    """Nothing at all (`--progress quiet`, `-q`)."""


class TtyProgress(Progress):
    """A rich live view: one line per step (cached / running / done), then a summary line.

    The view (and rich) starts with the first event of a build that runs: a build answered by the
    fast path replays only cached steps and the end, which are printed as plain lines, so a no-op
    rebuild never imports rich.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], tuple[str, StepReport]] = {}
        self.live: Any = None
        self.console: Any = None
        self.plain = PlainProgress()

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True, highlight=False)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        marks = {"cached": ("✔ cached", "green"), "running": ("… running", "yellow"),
                 "done": ("✔ done", "cyan"), "failed": ("✘ failed", "red")}
        for status, step in self.rows.values():
            if step.kind == "base":
                continue
            label, style = marks[status]
            if step.kind == "meta" and step.layer is None:
                label, style = "· config", "dim"
            info = Text()
            if status in ("done", "failed"):
                info.append(f"{step.duration_s:.2f}s")
                if step.size is not None:
                    info.append(f" {human_size(step.size)}")
            if step.reason and status != "cached":
                info.append(f"  {step.reason}", style="dim")
            # Plain Text, never markup: instructions are full of brackets.
            table.add_row(Text(label, style=style), Text(_step_name(step), style="bold"),
                          Text(step.instruction[:70]), info)
        return table

    def __call__(self, event: BuildEvent) -> None:
        if event.type == "build.pulled":
            if self.live is None:
                self.plain(event)
            else:
                from rich.text import Text

                self.console.print(Text(event.message or ""))
            return
        if self.live is None:
            if event.type in ("step.cached", "build.finished"):
                self.plain(event)
                return
            self._start()
        if event.type == "build.finished" and event.result is not None:
            self.live.update(self._render())
            self.live.stop()
            for warning in event.result.warnings:
                from rich.text import Text

                self.console.print(Text.assemble(("warning:", "yellow"), " ", warning))
            self.console.print(summary_line(event.result))
            return
        if event.type in ("build.pushed", "build.cache") and event.message:
            from rich.text import Text

            self.console.print(Text(event.message), soft_wrap=True)
            return
        step = event.step
        if step is None or event.type == "build.planned":
            return
        if event.type == "step.log":
            key = (step.stage, step.index)
            if key in self.rows and self.rows[key][0] == "running" and event.message:
                self.rows[key] = ("running", replace(self.rows[key][1], reason=event.message[-80:]))
                self.live.update(self._render())
            return
        status = {"step.started": "running", "step.cached": "cached", "step.finished": "done",
                  "step.failed": "failed"}[event.type]
        self.rows[step.stage, step.index] = (status, step)
        self.live.update(self._render())
        if event.type == "step.failed":
            self.live.stop()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def make_progress(mode: str) -> Progress:
    """The renderer for `--progress MODE` (`auto`: the live view on a terminal, else plain lines)."""
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "tty":
        return TtyProgress()
    if mode == "json":
        return JsonProgress()
    if mode == "quiet":
        return QuietProgress()
    return PlainProgress()


# --- pull: per-layer lines, JSON events or bars, as `docker pull` shows them -----------------------

_PULL_WORDS = {"exists": "Already exists", "waiting": "Pulling fs layer", "retrying": "Retrying (the bytes did "
               "not match)", "done": "Pull complete"}


class PullLines:
    """`docker pull`'s lines without a terminal: one per layer as it starts and ends."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __call__(self, event: Any) -> None:
        if event.type == "layer" and event.status in _PULL_WORDS:
            self.line(f"{event.layer}: {_PULL_WORDS[event.status]}")

    def close(self) -> None:
        return None


class PullJson(PullLines):
    """One JSON object per line per event (`pull.resolved`, `pull.layer`, `pull.finished`); byte counts
    at most every MiB per layer, so a large layer is not thousands of lines."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__(out)
        self._shown: dict[str, int] = {}

    def line(self, text: str) -> None:
        return None  # the JSON stream carries events only

    def __call__(self, event: Any) -> None:
        if event.type == "layer" and event.status == "reading":
            if event.current - self._shown.get(event.layer, 0) < (1 << 20) and event.current < event.total:
                return
            self._shown[event.layer] = event.current
        self.out.write(json.dumps(event.to_json()) + "\n")
        self.out.flush()


class PullQuiet(PullLines):
    def line(self, text: str) -> None:
        return None

    def __call__(self, event: Any) -> None:
        return None


class PullBars(PullLines):
    """A live view on the terminal: a bar per layer (bytes received of its size), as docker's."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        super().__init__()
        self.console = Console(highlight=False)
        self.bars = Progress(TextColumn("{task.fields[layer]}:"), TextColumn("{task.description}"), BarColumn(),
                             DownloadColumn(), console=self.console, transient=False)
        self.tasks: dict[str, Any] = {}
        self.started = False

    def line(self, text: str) -> None:
        if self.started:
            self.bars.console.print(text, markup=False)
        else:
            super().line(text)

    def __call__(self, event: Any) -> None:
        if event.type != "layer":
            return
        if not self.started:
            self.bars.start()
            self.started = True
        task = self.tasks.get(event.layer)
        if task is None:
            task = self.tasks[event.layer] = self.bars.add_task("", layer=event.layer, total=event.total or None)
        words = {"reading": "Downloading", **_PULL_WORDS}
        completed = event.total if event.status in ("exists", "done") else event.current
        self.bars.update(task, description=words.get(event.status, event.status), completed=completed)

    def close(self) -> None:
        if self.started:
            self.bars.stop()
            self.started = False


def make_pull_progress(mode: str) -> PullLines:
    """The renderer of a pull's events for `--progress MODE` (`auto`: bars on a terminal, else lines)."""
    if mode == "auto":
        mode = "tty" if sys.stdout.isatty() else "plain"
    if mode == "tty":
        return PullBars()
    if mode == "json":
        return PullJson()
    if mode == "quiet":
        return PullQuiet()
    return PullLines()
