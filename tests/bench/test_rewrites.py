"""The what-if rewrites as text functions: when each applies, and what it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.bench import rewrites

NODE = """\
# syntax=docker/dockerfile:1
FROM node:20 AS build
ARG COMMIT=abc
WORKDIR /src
# everything
COPY --chown=node . /src
ENV NODE_ENV=production
RUN npm ci
RUN apt-get update && apt-get install -y jq
LABEL commit=$COMMIT
CMD ["node", "server.js"]
"""


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    for name in ("package.json", "package-lock.json", "server.js"):
        (tmp_path / name).write_text("{}")
    return tmp_path


def test_split_copy_copies_the_manifests_then_installs_then_copies_the_sources(ctx: Path) -> None:
    new = rewrites.split_copy(NODE, ctx)
    assert new == """\
# syntax=docker/dockerfile:1
FROM node:20 AS build
ARG COMMIT=abc
WORKDIR /src
COPY --chown=node package.json package-lock.json /src/
ENV NODE_ENV=production
RUN npm ci
# everything
COPY --chown=node . /src
RUN apt-get update && apt-get install -y jq
LABEL commit=$COMMIT
CMD ["node", "server.js"]
"""
    assert rewrites.split_copy_applies(NODE, ctx) == ("copy the dependency manifests first (`COPY --chown=node "
                                                      "package.json package-lock.json /src/`), install, then `COPY` "
                                                      "the sources")


def test_split_copy_needs_an_install_right_after_and_a_manifest_in_the_context(ctx: Path, tmp_path: Path) -> None:
    assert rewrites.split_copy(NODE.replace("RUN npm ci\n", "RUN make\n"), ctx) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rewrites.split_copy(NODE, empty) is None
    assert rewrites.split_copy(NODE.replace("COPY --chown=node . /src", "COPY src/ /src"), ctx) is None
    assert rewrites.split_copy(NODE.replace("ENV NODE_ENV=production\n", "WORKDIR /x\n"), ctx) is None
    assert rewrites.split_copy("FROM a\nRUN [broken\n", ctx) is None


def test_move_later_puts_an_arg_just_before_its_first_use(ctx: Path) -> None:
    new = rewrites.move_later(("arg", "COMMIT"))(NODE, ctx)
    assert new is not None
    lines = new.splitlines()
    assert lines.index("ARG COMMIT=abc") == lines.index("LABEL commit=$COMMIT") - 1
    assert "ARG COMMIT=abc" not in lines[:5]


def test_move_later_of_a_used_env_or_with_nothing_to_gain_does_nothing(ctx: Path) -> None:
    text = "FROM a\nENV V=1\nRUN echo $V\n"
    assert rewrites.move_later(("env", "V"))(text, ctx) is None
    assert rewrites.move_later(("label", "x"))("FROM a\nRUN x\nLABEL x=1\nCMD y\n", ctx) is None
    moved = rewrites.move_later(("label", "x"))("FROM a\nLABEL x=1\nRUN x\n", ctx)
    assert moved == "FROM a\nRUN x\nLABEL x=1\n"


def test_changing_meta_finds_what_differs_between_commits() -> None:
    texts = [NODE, NODE.replace("COMMIT=abc", "COMMIT=def"), NODE.replace("COMMIT=abc", "COMMIT=xyz")]
    assert rewrites.changing_meta(texts) == [("arg", "COMMIT")]
    assert rewrites.changing_meta([NODE, NODE]) == []


def test_move_earlier_lifts_a_run_that_reads_nothing_copied(ctx: Path) -> None:
    text = "FROM a\nWORKDIR /src\nCOPY . /src\nRUN apt-get install -y jq\nRUN make\n"
    assert rewrites.earlier_candidates(text, ctx) == ["RUN apt-get install -y jq"]
    assert rewrites.move_earlier("RUN apt-get install -y jq")(text, ctx) == (
        "FROM a\nWORKDIR /src\nRUN apt-get install -y jq\nCOPY . /src\nRUN make\n")


def test_move_earlier_leaves_a_run_that_reads_the_copied_files_or_crosses_workdir(ctx: Path) -> None:
    reads = "FROM a\nCOPY . /src\nRUN node /src/server.js\n"
    assert rewrites.earlier_candidates(reads, ctx) == []
    by_name = "FROM a\nWORKDIR /src\nCOPY . .\nRUN cat package.json\n"
    assert rewrites.earlier_candidates(by_name, ctx) == []
    workdir = "FROM a\nCOPY . /src\nWORKDIR /src\nRUN apt-get install -y jq\n"
    assert rewrites.earlier_candidates(workdir, ctx) == []
    uses_env = "FROM a\nCOPY . /src\nENV V=1\nRUN echo $V\n"
    assert rewrites.earlier_candidates(uses_env, ctx) == []


def test_rewrites_keep_heredocs_whole(ctx: Path) -> None:
    text = "FROM a\nCOPY . /src\nRUN <<EOF\napt-get install jq\nEOF\nRUN make\n"
    new = rewrites.move_earlier(rewrites.earlier_candidates(text, ctx)[0])(text, ctx)
    assert new == "FROM a\nRUN <<EOF\napt-get install jq\nEOF\nCOPY . /src\nRUN make\n"
