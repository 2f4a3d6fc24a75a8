"""The renderer of transfer progress (push), in docker's words: a live view with a bar per layer on a
terminal, one line per layer's outcome in plain mode, docker's JSON messages one per line, or nothing.

Events are anything with docker's stream fields: `status`, `id` (a layer), `current`/`total` (bytes,
while moving), `final` (a layer's last word or a line of its own) and `to_json()`.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Protocol, TextIO

from layerbuild.cli.common import human_size


class TransferEvent(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def current(self) -> int | None: ...
    @property
    def total(self) -> int | None: ...
    @property
    def final(self) -> bool: ...

    def to_json(self) -> dict[str, Any]: ...


class TransferProgress:
    """Called with each event (from several threads: calls are serialised), then closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: TransferEvent) -> None:
        with self._lock:
            self.show(event)

    def show(self, event: TransferEvent) -> None:
        return None

    def close(self) -> None:
        return None


class PlainTransfer(TransferProgress):
    """`ID: STATUS` for every word of a layer but its byte counts, and the push's own lines, as docker
    prints them to a pipe (a CI log)."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = out or sys.stdout

    def show(self, event: TransferEvent) -> None:
        if event.current is not None:
            return
        print(f"{event.id}: {event.status}" if event.id else event.status, file=self.out, flush=True)


class JsonTransfer(TransferProgress):
    """docker's JSON messages (`{"status", "id", "progressDetail"}`, the last with `aux`), one a line."""

    def __init__(self, out: TextIO | None = None) -> None:
        super().__init__()
        self.out = out or sys.stdout

    def show(self, event: TransferEvent) -> None:
        self.out.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
        self.out.flush()


class QuietTransfer(TransferProgress):
    """Nothing (`-q`)."""


class TtyTransfer(TransferProgress):
    """A rich live view: one row per layer with its status and, while it moves, a bar; the push's own
    lines are printed above it."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(highlight=False)
        self.rows: dict[str, TransferEvent] = {}
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.started = False

    def show(self, event: TransferEvent) -> None:
        from rich.text import Text

        if not event.id:
            if self.started:  # the closing line: the layers are done
                self.live.update(self._render())
                self.live.stop()
                self.started = False
            self.console.print(Text(event.status), soft_wrap=True)
            return
        if not self.started:
            self.live.start()
            self.started = True
        self.rows[event.id] = event
        self.live.update(self._render())

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        for ident, event in self.rows.items():
            if event.status == "Pushing" and event.total:
                bar: Any = ProgressBar(total=event.total, completed=event.current or 0, width=40)
                amount = Text(f"{human_size(event.current or 0)}/{human_size(event.total)}")
                table.add_row(Text(f"{ident}:"), Text(event.status, style="yellow"), bar, amount)
            else:
                style = "green" if event.final else "dim"
                table.add_row(Text(f"{ident}:"), Text(event.status, style=style), Text(""), Text(""))
        return table

    def close(self) -> None:
        if self.started:
            self.live.update(self._render())
            self.live.stop()
            self.started = False


def make_transfer_progress(mode: str) -> TransferProgress:
    """`auto` (the live view on a terminal, else plain lines), `tty`, `plain`, `json` or `quiet`."""
    if mode == "auto":
        mode = "tty" if sys.stdout.isatty() else "plain"
    if mode == "tty":
        return TtyTransfer()
    if mode == "json":
        return JsonTransfer()
    if mode == "quiet":
        return QuietTransfer()
    return PlainTransfer()
