"""The one error tree of layerbuild: every error the library raises is a LayerbuildError.

    LayerbuildError
    ├── UsageError                 bad arguments to an API call or a CLI verb (exit 2)
    │   └── ComposeFileError       a compose file is wrong; carries file:line and the key
    ├── DockerfileError            the Dockerfile is wrong (exit 2); carries file:line:col
    │   ├── DockerfileSyntaxError  the parser rejected it
    │   └── ExpansionError         a `${...}` substitution failed
    ├── BuildError                 a build failed (exit 1)
    │   └── StepError              one step failed, with its Dockerfile line
    ├── StoreError                 the store is missing something or is damaged (exit 1)
    │   └── DigestMismatchError    content does not hash to its name
    ├── UnsafeArchiveError         an archive tried to write outside its destination (exit 1)
    └── RegistryError              a registry refused, failed or could not be reached (exit 1)
        └── RegistryAuthError      the registry wants credentials, or refused the ones given

Library code never prints or exits; the CLI turns these into messages and exit codes in one place.
"""

from __future__ import annotations


class LayerbuildError(Exception):
    """Root of every error layerbuild raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The full text for a terminal: message, then the hint if any."""
        text = self.message
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class UsageError(LayerbuildError):
    """Bad arguments to an API call or CLI verb."""

    exit_code = 2


class DockerfileError(LayerbuildError):
    """A Dockerfile that cannot be used, with the place it went wrong.

    `line` and `column` are 1-based; `source_line` is the physical line as written, so the
    message can show it with a caret under `column`.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        filename: str = "Dockerfile",
        line: int = 0,
        column: int = 1,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.filename = filename
        self.line = line
        self.column = max(column, 1)
        self.source_line = source_line

    @property
    def location(self) -> str:
        if self.line <= 0:
            return self.filename
        return f"{self.filename}:{self.line}:{self.column}"

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def render(self) -> str:
        text = _printable(f"{self.location}: {self.message}")
        if self.source_line is not None and self.line > 0:
            shown = _printable(self.source_line.replace("\t", " "))
            before = len(_printable(self.source_line[: self.column - 1]))
            if len(shown) > _SNIPPET:  # a window around the column of a long line
                start = max(0, min(before - _SNIPPET // 2, len(shown) - _SNIPPET))
                end = start + _SNIPPET
                shown = ("…" if start else "") + shown[start:end] + ("…" if end < len(shown) else "")
                before = before - start + (1 if start else 0)
            prefix = f"{self.line:>5} | "
            text += f"\n{prefix}{shown}\n{' ' * len(prefix)}{' ' * before}^"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


_SNIPPET = 160  # characters of a source line shown under an error


def _printable(text: str) -> str:
    """`text` with the bytes that were not UTF-8 (kept as surrogate escapes) shown as `\\xNN`."""
    if text.isascii() or not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class DockerfileSyntaxError(DockerfileError):
    """The Dockerfile could not be parsed."""


class BuildError(LayerbuildError):
    """A build step failed."""


class StepError(BuildError):
    """A build step failed; the message starts with its Dockerfile location and instruction."""

    def __init__(self, message: str, *, filename: str, line: int, instruction: str, hint: str | None = None) -> None:
        super().__init__(f"{filename}:{line}: {instruction}\n{message}", hint=hint)
        self.filename = filename
        self.line = line
        self.instruction = instruction


class StoreError(LayerbuildError):
    """The store lacks something it should have, or holds something damaged."""


class DigestMismatchError(StoreError):
    """Bytes did not hash to the digest they were stored or announced under."""


class UnsafeArchiveError(LayerbuildError):
    """An archive entry would write outside the destination or do something else forbidden."""


class ExpansionError(DockerfileError):
    """A variable substitution could not be carried out (`${x:?unset}`, a bad `${...}` form)."""


class RegistryError(LayerbuildError):
    """A registry answered with an error, or could not be reached; `code` is the registry's error code
    (`MANIFEST_UNKNOWN`, `DENIED`, …) when it sent one, `status` the HTTP status when there was one,
    `transient` whether the same request may work if tried again. Never carries credentials or tokens."""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 status: int | None = None, transient: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.status = status
        self.transient = transient


class RegistryAuthError(RegistryError):
    """The registry wants credentials, or refused the ones it was given."""


class ComposeFileError(UsageError):
    """A compose project that cannot be used: `compose.yaml:12: services.web.ports[0]: …`, or one of
    its files, names or services missing (exit 1, as docker compose exits for each of them).

    `filename` is the file as the user named it, `line` is 1-based (0: unknown), `key` the dotted
    path of the value in the model (`services.web.ports[0]`), empty for the file as a whole.
    """

    exit_code = 1

    def __init__(self, message: str, *, filename: str = "", line: int = 0, key: str = "",
                 hint: str | None = None) -> None:
        where = filename + (f":{line}" if filename and line > 0 else "")
        prefix = ": ".join(p for p in (where, key) if p)
        super().__init__(f"{prefix}: {message}" if prefix else message, hint=hint)
        self.filename = filename
        self.line = line
        self.key = key
        self.detail = message
