"""The official parser as a differential oracle, in a process of its own.

The PyPI package `dockerfile` 3.4.0 embeds BuildKit v0.12.5's parser. It cannot share a process
with another Go runtime, so tests talk to it through this script over pipes: one JSON string (a
Dockerfile's text) per line in, one JSON answer per line out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def _answer(text: str) -> Any:
    import dockerfile

    from layerbuild.parser.gotext import lower  # the official parser lower-cases the Go way

    try:
        commands = dockerfile.parse_string(text)
    except Exception as exc:
        return {"error": str(exc)}
    out = []
    for c in commands:
        out.append({
            # The package hands an empty string back as None.
            "cmd": lower(c.cmd or ""),
            "sub_cmd": lower(c.sub_cmd) if c.sub_cmd else None,
            "json": c.json,
            "original": c.original or "",
            "start_line": c.start_line,
            "end_line": c.end_line,
            "flags": list(c.flags),
            "value": list(c.value),
            "heredocs": [
                {"name": h.name, "file_descriptor": h.file_descriptor, "content": h.content}
                for h in c.heredocs
            ],
        })
    return out


def serve() -> None:
    for line in sys.stdin:
        print(json.dumps(_answer(json.loads(line))), flush=True)


class Oracle:
    """A client for the worker; restarts it if the official parser crashes."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    @staticmethod
    def available() -> bool:
        probe = subprocess.run([sys.executable, "-c", "import dockerfile"], capture_output=True)
        return probe.returncode == 0

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            encoding="utf-8",
        )

    def parse(self, text: str) -> Any:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(text) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            self.proc = None
            return {"error": "oracle crashed"}
        return json.loads(reply)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)


if __name__ == "__main__":
    serve()
