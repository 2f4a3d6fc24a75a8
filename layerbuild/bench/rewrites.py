"""Rewrites of a Dockerfile that may raise its hit rate, as pure functions of its text (and of which
files the context has). Each keeps what the image is made of; whether it really does is checked by
building it (whatif), never assumed here.

- split-copy: `COPY . DEST` followed by a dependency install → the manifests copied first, the
  install run, then the sources copied (the install then hits whenever the manifests did not change);
- move-later: an ARG/ENV/LABEL whose text changes from commit to commit moved down to the first
  step that uses it (or the end of its stage), so the steps between stop depending on it;
- move-earlier: a RUN that reads nothing of what the COPY/ADD before it bring moved above them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.parser import Instruction, parse

# Dependency manifests of the usual package managers, in the order they are listed in a COPY.
MANIFESTS = (
    "requirements.txt", "requirements-dev.txt", "constraints.txt", "Pipfile", "Pipfile.lock", "pyproject.toml",
    "poetry.lock", "uv.lock", "setup.cfg", "package.json", "package-lock.json", "npm-shrinkwrap.json",
    "yarn.lock", "pnpm-lock.yaml", ".yarnrc.yml", "go.mod", "go.sum", "Gemfile", "Gemfile.lock", "composer.json",
    "composer.lock", "Cargo.toml", "Cargo.lock", "mix.exs", "mix.lock", "pom.xml", "build.gradle",
    "settings.gradle", "gradle.properties", "packages.config", "deps.edn", "project.clj", "cpanfile",
)
INSTALLERS = re.compile(
    r"\b(pip3?|uv pip|pipenv|poetry|npm|yarn|pnpm|go mod|bundle|gem|composer|cargo|mix deps\.get|mvn|gradle|"
    r"dotnet restore|cpanm)\b.*\b(install|ci|sync|download|fetch|restore|get|dependency:go-offline|deps)\b"
)
META = ("arg", "env", "label")
# Steps a move may cross without changing what a RUN sees of its stage (not WORKDIR, USER, SHELL).
CROSSABLE = ("copy", "add", "arg", "env", "label", "expose", "cmd", "entrypoint", "volume", "stopsignal",
             "healthcheck", "onbuild", "maintainer")


@dataclass(frozen=True)
class Block:
    """One instruction with the comment and blank lines above it, as written."""

    ins: Instruction
    text: str
    stage: int


def blocks(text: str) -> tuple[list[str], list[Block]] | None:
    """The Dockerfile as a head (directives, comments before the first instruction) and one block per
    instruction; None if it does not parse (a commit with a broken Dockerfile is left as it is)."""
    try:
        df = parse(text.encode("utf-8", "surrogateescape"))
    except LayerbuildError:
        return None
    lines = text.splitlines(keepends=True)
    out: list[Block] = []
    start = 0
    stage = -1
    head: list[str] = []
    for n, ins in enumerate(df.instructions):
        if ins.cmd == "from":
            stage += 1
        first = ins.start_line - 1
        if n == 0:
            head, start = lines[:first], first
        end = ins.end_line
        # Heredoc bodies end after the instruction's last line: take lines up to the next instruction.
        nxt = df.instructions[n + 1].start_line - 1 if n + 1 < len(df.instructions) else len(lines)
        body = lines[start:end] if not ins.heredocs else lines[start:nxt]
        taken = end if not ins.heredocs else nxt
        # Comments and blank lines between this instruction and the next go with the next one.
        out.append(Block(ins, "".join(body), stage))
        start = taken
    if out and start < len(lines):
        last = out[-1]
        out[-1] = Block(last.ins, last.text + "".join(lines[start:]), last.stage)
    return head, out


def join(head: Sequence[str], items: Sequence[Block]) -> str:
    text = "".join(head)
    for b in items:
        piece = b.text if b.text.endswith("\n") else b.text + "\n"
        text += piece
    return text


def _has_from(ins: Instruction) -> bool:
    return any(f.startswith("--from") for f in ins.flags)


def _sources_dest(ins: Instruction) -> tuple[list[str], str] | None:
    if ins.heredocs or len(ins.value) < 2:
        return None
    return list(ins.value[:-1]), ins.value[-1]


def _whole_context(ins: Instruction) -> str | None:
    """DEST of a `COPY . DEST` (or `ADD ./ DEST`) from the context; else None."""
    if ins.cmd not in ("copy", "add") or _has_from(ins):
        return None
    sd = _sources_dest(ins)
    if sd is None:
        return None
    sources, dest = sd
    return dest if any(s.rstrip("/") in (".", "") for s in sources) and len(sources) == 1 else None


def _run_text(ins: Instruction) -> str:
    return " ".join(ins.value)


def _names(ins: Instruction) -> set[str]:
    """The variable names an ARG or ENV defines."""
    if ins.cmd == "arg":
        return {v.split("=", 1)[0] for v in ins.value}
    if ins.cmd == "env":
        vals = list(ins.value)
        return {vals[i] for i in range(0, len(vals), 2)} if vals else set()
    return set()


def _uses(ins: Instruction, names: set[str]) -> bool:
    text = ins.original + "".join(h.content for h in ins.heredocs)
    return any(re.search(rf"\$(\{{{re.escape(n)}\b|{re.escape(n)}\b)", text) for n in names)


def identity(ins: Instruction) -> tuple[str, ...]:
    """How a meta instruction is recognised from one commit to the next: its keyword and names."""
    if ins.cmd == "label":
        keys = [ins.value[i] for i in range(0, len(ins.value), 2)]
        return ("label", *sorted(keys))
    return (ins.cmd, *sorted(_names(ins)))


# -- split-copy ------------------------------------------------------------------------------------

def split_copy(text: str, context: Path) -> str | None:
    """`COPY . DEST` then a dependency install → COPY the manifests, the install, then `COPY . DEST`."""
    parsed = blocks(text)
    if parsed is None:
        return None
    head, items = parsed
    for i, b in enumerate(items):
        dest = _whole_context(b.ins)
        if dest is None:
            continue
        j = i + 1
        while j < len(items) and items[j].stage == b.stage and items[j].ins.cmd in META:
            j += 1
        if j >= len(items) or items[j].stage != b.stage or items[j].ins.cmd != "run":
            continue
        run = _run_text(items[j].ins)
        manifests = [m for m in MANIFESTS if (context / m).is_file() and m in run]
        if not manifests and INSTALLERS.search(run):
            manifests = [m for m in MANIFESTS if (context / m).is_file()]
        if not manifests:
            continue
        flags = " ".join(f for f in b.ins.flags if not f.startswith("--parents"))
        into = dest if dest.endswith("/") else dest + "/"
        keyword = "COPY"
        first = f"{keyword} {flags + ' ' if flags else ''}{' '.join(manifests)} {into}\n"
        moved = items[i + 1:j + 1]
        new = [*items[:i], Block(b.ins, first, b.stage), *moved, b, *items[j + 1:]]
        return join(head, new)
    return None


def split_copy_applies(text: str, context: Path) -> str | None:
    """A sentence describing what split_copy does to `text`, or None when it does not apply."""
    parsed = blocks(text)
    new = split_copy(text, context)
    if parsed is None or new is None:
        return None
    after = blocks(new)
    assert after is not None
    first = after[1][next(i for i, b in enumerate(parsed[1]) if b.text != after[1][i].text)]
    return f"copy the dependency manifests first (`{first.ins.original}`), install, then `COPY` the sources"


# -- move-later ------------------------------------------------------------------------------------

def move_later(ident: tuple[str, ...]) -> Callable[[str, Path], str | None]:
    """A rewrite that moves the ARG/ENV/LABEL recognised by `ident` down to just before the first step of
    its stage that uses what it defines (a LABEL: to the end of its stage)."""

    def rewrite(text: str, context: Path) -> str | None:
        parsed = blocks(text)
        if parsed is None:
            return None
        head, items = parsed
        for i, b in enumerate(items):
            if b.ins.cmd not in META or identity(b.ins) != ident:
                continue
            names = _names(b.ins)
            j = i + 1
            while j < len(items) and items[j].stage == b.stage and not (names and _uses(items[j].ins, names)):
                j += 1
            between = items[i + 1:j]
            if not any(x.ins.cmd in ("run", "copy", "add", "workdir") for x in between):
                return None  # nothing cacheable to gain
            if b.ins.cmd in ("env", "arg") and any(x.ins.cmd in ("onbuild",) for x in between):
                return None
            return join(head, [*items[:i], *between, b, *items[j:]])
        return None

    return rewrite


def changing_meta(texts: Sequence[str]) -> list[tuple[str, ...]]:
    """The ARG/ENV/LABEL instructions (by identity) whose text differs between the given Dockerfiles."""
    seen: dict[tuple[int, tuple[str, ...]], set[str]] = {}
    for text in texts:
        parsed = blocks(text)
        if parsed is None:
            continue
        for b in parsed[1]:
            if b.ins.cmd in META:
                seen.setdefault((b.stage, identity(b.ins)), set()).add(b.ins.original)
    return list(dict.fromkeys(ident for (_, ident), versions in seen.items() if len(versions) > 1))


# -- move-earlier ----------------------------------------------------------------------------------

def move_earlier(run_text: str) -> Callable[[str, Path], str | None]:
    """A rewrite that moves the RUN written `run_text` above the COPY/ADD (and config-only steps) right
    before it in its stage, when it uses no variable they define."""

    def rewrite(text: str, context: Path) -> str | None:
        parsed = blocks(text)
        if parsed is None:
            return None
        head, items = parsed
        for j, b in enumerate(items):
            if b.ins.cmd != "run" or b.ins.original != run_text:
                continue
            i = j
            while i - 1 >= 0 and items[i - 1].stage == b.stage and items[i - 1].ins.cmd in CROSSABLE:
                crossed = items[i - 1].ins
                if _uses(b.ins, _names(crossed)):
                    break
                i -= 1
            copies = [x.ins for x in items[i:j] if x.ins.cmd in ("copy", "add") and not _has_from(x.ins)]
            if not copies or _reads_copied(b.ins, copies, context):
                return None
            # The copies from the context are what it moves above; stop at the first one of them.
            while i < j and not (items[i].ins.cmd in ("copy", "add") and not _has_from(items[i].ins)):
                i += 1
            return join(head, [*items[:i], b, *items[i:j], *items[j + 1:]])
        return None

    return rewrite


def _reads_copied(run: Instruction, copies: Sequence[Instruction], context: Path) -> bool:
    """Whether the RUN names what the copies bring: a path under a destination, a source, or a file at
    the top of the context (a whole-context copy brings them all)."""
    text = _run_text(run) + "".join(h.content for h in run.heredocs)
    words = set(re.findall(r"[\w.\-/]+", text))
    parts = {p for w in words for p in w.split("/") if p not in ("", ".", "..")}
    dests: set[str] = set()
    names: set[str] = set()
    for ins in copies:
        sd = _sources_dest(ins)
        if sd is None:
            return True
        sources, dest = sd
        dests.add(dest.rstrip("/") or "/")
        names |= {s.rstrip("/").split("/")[-1] for s in sources if s.rstrip("/") not in (".", "")}
        if any(s.rstrip("/") in (".", "") for s in sources):
            try:
                names |= {p.name for p in context.iterdir()}
            except OSError:
                return True
    under = any(w == d or w.startswith(d.rstrip("/") + "/") for w in words for d in dests if d.startswith("/"))
    return under or bool(names & parts)


def earlier_candidates(text: str, context: Path) -> list[str]:
    """RUN steps (as written) that come right after COPY/ADD from the context, read nothing they bring,
    and could move above them."""
    parsed = blocks(text)
    if parsed is None:
        return []
    out = []
    for run in [b for b in parsed[1] if b.ins.cmd == "run"]:
        if move_earlier(run.ins.original)(text, context) is not None:
            out.append(run.ins.original)
    return out
