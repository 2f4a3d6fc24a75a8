"""Each instruction parsed into its typed command, and every rejection with its place and hint."""

from __future__ import annotations

import pytest

from layerbuild.errors import DockerfileSyntaxError
from layerbuild.instructions import (
    Add,
    Arg,
    ArgDef,
    BindMount,
    CacheMount,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    KeyValue,
    Label,
    Maintainer,
    Onbuild,
    Run,
    SecretMount,
    Shell,
    SourceContent,
    StopSignal,
    User,
    Volume,
    Workdir,
    parse_command,
)
from tests.instructions.helpers import dockerfile, stages


def only(text: str) -> object:
    """The single command of a one-stage Dockerfile `FROM scratch` + `text`."""
    _, _, parsed = stages("FROM scratch\n" + text)
    (command,) = parsed[0].commands
    return command


def rejected(text: str) -> DockerfileSyntaxError:
    with pytest.raises(DockerfileSyntaxError) as info:
        stages(text)
    return info.value


def test_stages_and_meta_args() -> None:
    _, meta, parsed = stages(
        """
        ARG BASE=alpine
        ARG TAG
        FROM ${BASE}:${TAG} AS Builder
        RUN make
        FROM --platform=$BUILDPLATFORM builder as final
        COPY --from=builder /out /out
        FROM scratch
        """
    )
    assert [a.args for a in meta] == [(ArgDef(key="BASE", default="alpine"),), (ArgDef(key="TAG"),)]
    assert [(s.index, s.name, s.base_name, s.platform) for s in parsed] == [
        (0, "builder", "${BASE}:${TAG}", None),
        (1, "final", "builder", "$BUILDPLATFORM"),
        (2, None, "scratch", None),
    ]
    assert [type(cmd) for cmd in parsed[0].commands] == [Run]
    assert parsed[1].commands[0].node.start_line == 6
    assert parsed[2].commands == ()


def test_commands_keep_their_source_instruction() -> None:
    df, _, parsed = stages("FROM a\n  WORKDIR /app\n")
    workdir = parsed[0].commands[0]
    assert workdir.node is df.instructions[1]
    assert (workdir.name, workdir.line) == ("workdir", 2)


def test_run_forms() -> None:
    assert only("RUN echo  hi\n") == Run(node=None, command=("echo  hi",), prepend_shell=True)  # type: ignore[arg-type]
    run = only('RUN ["echo", "hi"]\n')
    assert isinstance(run, Run) and run.command == ("echo", "hi") and not run.prepend_shell
    heredoc = only("RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(heredoc, Run) and heredoc.heredocs[0].content == "echo hi\n"


def test_run_flags_and_mounts() -> None:
    run = only(
        "RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip "
        "--mount=type=secret,id=tok --mount=target=/src,rw --network=none --security=insecure make\n"
    )
    assert isinstance(run, Run)
    cache, secret, bind = run.mounts
    assert isinstance(cache, CacheMount) and (cache.target, cache.id, cache.sharing) == (
        "/root/.cache",
        "pip",
        "locked",
    )
    assert isinstance(secret, SecretMount) and (secret.id, secret.target) == ("tok", "/run/secrets/tok")
    assert isinstance(bind, BindMount) and bind.target == "/src" and not bind.readonly
    assert (run.network, run.security) == ("none", "insecure")


def test_cmd_entrypoint_shell() -> None:
    assert only('CMD ["a", "b"]\n') == Cmd(node=None, command=("a", "b"), prepend_shell=False)  # type: ignore[arg-type]
    assert only("ENTRYPOINT exec app\n") == Entrypoint(node=None, command=("exec app",), prepend_shell=True)  # type: ignore[arg-type]
    assert only('SHELL ["/bin/bash", "-c"]\n') == Shell(node=None, shell=("/bin/bash", "-c"))  # type: ignore[arg-type]


def test_env_label_keep_quotes_until_expansion() -> None:
    env = only('ENV A="x y" B=2\n')
    assert isinstance(env, Env)
    assert env.pairs == (KeyValue(key="A", value='"x y"'), KeyValue(key="B", value="2"))
    legacy = only("ENV C d e\n")
    assert isinstance(legacy, Env) and legacy.pairs == (KeyValue(key="C", value="d e"),)
    label = only('LABEL "com.example"="v" x=y\n')
    assert isinstance(label, Label) and [p.value for p in label.pairs] == ['"v"', "y"]


def test_simple_commands() -> None:
    assert only("MAINTAINER Jo <jo@x>\n") == Maintainer(node=None, maintainer="Jo <jo@x>")  # type: ignore[arg-type]
    assert only("EXPOSE 80/tcp 443\n") == Expose(node=None, ports=("80/tcp", "443"))  # type: ignore[arg-type]
    assert only('VOLUME ["/a", "/b"]\n') == Volume(node=None, paths=("/a", "/b"))  # type: ignore[arg-type]
    assert only("USER app:app\n") == User(node=None, user="app:app")  # type: ignore[arg-type]
    assert only("WORKDIR /srv/my app\n") == Workdir(node=None, path="/srv/my app")  # type: ignore[arg-type]
    assert only("STOPSIGNAL SIGKILL\n") == StopSignal(node=None, signal="SIGKILL")  # type: ignore[arg-type]
    assert only("ARG A=1 B\n") == Arg(node=None, args=(ArgDef(key="A", default="1"), ArgDef(key="B")))  # type: ignore[arg-type]
    assert only("ARG E=\n") == Arg(node=None, args=(ArgDef(key="E", default=""),))  # type: ignore[arg-type]


def test_copy_and_add() -> None:
    copy = only("COPY --from=build --chown=app:app --chmod=644 --link --parents --exclude=*.md a b /dst/\n")
    assert copy == Copy(
        node=None,  # type: ignore[arg-type]
        sources=("a", "b"),
        dest="/dst/",
        from_stage="build",
        chown="app:app",
        chmod="644",
        link=True,
        parents=True,
        excludes=("*.md",),
    )
    add = only("ADD --checksum=sha256:abc --keep-git-dir=true --link=false https://x/y.tar /y\n")
    assert isinstance(add, Add)
    assert (add.checksum, add.keep_git_dir, add.link, add.sources, add.dest) == (
        "sha256:abc", True, False, ("https://x/y.tar",), "/y",
    )  # fmt: skip
    json_form = only('COPY ["a b", "/c d/"]\n')
    assert isinstance(json_form, Copy) and (json_form.sources, json_form.dest) == (("a b",), "/c d/")


def test_copy_heredoc_sources() -> None:
    copy = only("COPY <<one <<'two' /dst/\nA $X\none\n\tB\ntwo\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ()
    assert copy.contents == (
        SourceContent(path="one", data="A $X\n", expand=True),
        SourceContent(path="two", data="\tB\n", expand=False),
    )
    chomped = only("COPY <<-EOF /x\n\tindented\n\tEOF\n")
    assert isinstance(chomped, Copy) and chomped.contents[0].data == "indented\n"


def test_onbuild_keeps_trigger_text() -> None:
    assert only("ONBUILD RUN echo $HOME\n") == Onbuild(node=None, expression="RUN echo $HOME")  # type: ignore[arg-type]


def test_healthcheck() -> None:
    check = only("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0 --start-interval=2s --retries=3 "
                 "CMD curl -f http://localhost/\n")  # fmt: skip
    assert check == Healthcheck(
        node=None,  # type: ignore[arg-type]
        test=("CMD-SHELL", "curl -f http://localhost/"),
        interval_ns=90_000_000_000,
        timeout_ns=500_000_000,
        start_period_ns=0,
        start_interval_ns=2_000_000_000,
        retries=3,
    )
    exec_form = only('HEALTHCHECK CMD ["/bin/check", "-q"]\n')
    assert isinstance(exec_form, Healthcheck) and exec_form.test == ("CMD", "/bin/check", "-q")
    none = only("HEALTHCHECK NONE\n")
    assert isinstance(none, Healthcheck) and none.test == ("NONE",) and none.interval_ns is None


def test_from_forms() -> None:
    _, _, parsed = stages("FROM --platform=linux/arm64 alpine:3 AS Base\n")
    assert parsed[0].from_ == From(node=None, base_name="alpine:3", stage_name="base", platform="linux/arm64")  # type: ignore[arg-type]


def test_parse_command_directly() -> None:
    df = dockerfile("FROM a\nUSER x\n")
    assert parse_command(df, df.instructions[1]) == User(node=None, user="x")  # type: ignore[arg-type]


# -- errors: message, place, hint -----------------------------------------------------------------


def where(err: DockerfileSyntaxError) -> tuple[int, int]:
    return err.line, err.column


def test_unknown_instruction_suggests() -> None:
    err = rejected("FROM a\n  COPPY a b\n")
    assert "unknown instruction: COPPY" in err.message
    assert err.hint == "did you mean COPY?"
    assert where(err) == (2, 3)
    assert err.source_line == "  COPPY a b"


@pytest.mark.parametrize(
    ("text", "message", "column", "hint_part"),
    [
        ("FROM a\nCOPY --foo a b\n", "unknown flag: foo", 6, "COPY takes --chmod, --chown"),
        ("FROM a\nRUN --from=x ls\n", "unknown flag: from", 5, "RUN takes --mount, --network, --security"),
        ("FROM a\nCOPY --form=x a b\n", "unknown flag: form", 6, "did you mean --from?"),
        ("FROM a\nENV --x A=1\n", "unknown flag: x", 5, "ENV takes no flags"),
        ("FROM a\nCOPY --from a b\n", "missing a value on flag: from", 6, "--from=<value>"),
        ("FROM a\nCOPY --link=maybe a b\n", "expecting boolean value for flag link", 6, None),
        ("FROM a\nCOPY --chown=a --chown=b a b\n", "duplicate flag specified: chown", 16, None),
    ],
)
def test_flag_errors(text: str, message: str, column: int, hint_part: str | None) -> None:
    err = rejected(text)
    assert message in err.message
    assert where(err) == (2, column)
    if hint_part:
        assert err.hint is not None and hint_part in err.hint


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("FROM a\nCOPY a\n", "COPY requires at least two arguments", 6),
        ("FROM a\nADD a\n", "Destination could not be determined", 5),
        ("FROM a\nEXPOSE\n", "EXPOSE requires at least one argument", 1),
        ("FROM a\nSHELL /bin/sh -c\n", "SHELL requires the arguments to be in JSON form", 1),
        ("FROM a\nARG =x\n", "ARG names can not be blank", 1),
        ("FROM a\nRUN\n", "RUN requires at least one argument", 1),
        ("FROM a\nWORKDIR\n", "WORKDIR requires exactly one argument", 1),
        ("FROM a\nVOLUME []\n", "VOLUME requires at least one argument", 1),
        ("FROM a\nHEALTHCHECK CMD\n", "Missing command after HEALTHCHECK CMD", 1),
        ("FROM a\nHEALTHCHECK NONE x\n", "HEALTHCHECK NONE takes no arguments", 1),
        ("FROM a\nHEALTHCHECK WHAT x\n", 'Unknown type "WHAT" in HEALTHCHECK', 13),
        ("FROM a\nCOPY a <<EOF\nx\nEOF\n", "COPY cannot accept a heredoc as a destination", 8),
        ("FROM a b\n", "FROM requires either one or three arguments", 1),
        ("FROM a AS 1x\n", "invalid name for build stage", 11),
    ],
)
def test_argument_errors(text: str, message: str, column: int) -> None:
    err = rejected(text)
    assert message in err.message
    assert where(err)[1] == column


def test_usage_hints() -> None:
    assert rejected("FROM a\nCOPY a\n").hint == "usage: COPY [--from=<stage>] <src>... <dest>"
    assert 'SHELL ["executable"' in (rejected("FROM a\nSHELL sh\n").hint or "")


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed as an ONBUILD trigger", 9),
        ("FROM a\nONBUILD MAINTAINER me\n", "MAINTAINER isn't allowed as an ONBUILD trigger", 9),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", 9),
    ],
)
def test_onbuild_forbidden(text: str, message: str, column: int) -> None:
    err = rejected(text)
    assert err.message == message
    assert where(err) == (2, column)


def test_instruction_before_first_from() -> None:
    err = rejected("ARG A\nENV B=1\nFROM a\n")
    assert "ENV before the first FROM" in err.message
    assert where(err) == (2, 1)
    assert err.hint is not None and "only ARG" in err.hint


def test_duplicate_stage_name() -> None:
    err = rejected("FROM a AS x\nFROM b AS X\n")
    assert "duplicate stage name 'x'" in err.message
    assert where(err) == (2, 11)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--interval=5", "invalid duration '5'"),
        ("--timeout=1x", "invalid duration '1x'"),
        ("--interval=10us", 'Interval "interval" cannot be less than 1ms'),
        ("--retries=-1", "--retries cannot be negative (-1)"),
        ("--retries=three", "invalid --retries value"),
    ],
)
def test_healthcheck_bad_values(flag: str, message: str) -> None:
    err = rejected(f"FROM a\nHEALTHCHECK {flag} CMD true\n")
    assert message in err.message
    assert where(err) == (2, 13)


@pytest.mark.parametrize(
    ("spec", "message", "near"),
    [
        ("type=cache,taget=/x", "unexpected key 'taget'", "taget"),
        ("type=volume,target=/x", "unsupported mount type 'volume'", "type=volume"),
        ("type=cache", "mount target is required", "type=cache"),
        ("type=bind,target=/x,mode=0700", "mode not allowed for 'bind' type mounts", "type=bind"),
        ("type=tmpfs,target=/x,sharing=locked", "invalid cache sharing set for tmpfs mount", "type=tmpfs"),
        ("type=cache,target=/x,sharing=sometimes", "unrecognized sharing parameter", "type=cache"),
        ("type=cache,target=/x,uid=me", "invalid value for uid", "type=cache"),
        ("type=secret,id=a,src=b", "both source and id can't be set", "type=secret"),
        ("type=secret,from=x,id=a", "secret mount should not have a from", "type=secret"),
        ("type=bind,target=/x,from=$STAGE", "'from' doesn't support variable expansion", "type=bind"),
    ],
)
def test_bad_mounts(spec: str, message: str, near: str) -> None:
    line = f"RUN --mount={spec} true"
    err = rejected(f"FROM a\n{line}\n")
    assert message in err.message
    assert err.message.startswith("invalid --mount: ")
    assert where(err) == (2, line.index(near) + 1)


def test_bad_network_and_security() -> None:
    err = rejected("FROM a\nRUN --network=bridge true\n")
    assert "unsupported network mode 'bridge'" in err.message and where(err) == (2, 5)
    assert "none" in (err.hint or "")
    err = rejected("FROM a\nRUN --security=privileged true\n")
    assert "unsupported security mode" in err.message


def test_copy_from_variable_is_refused() -> None:
    err = rejected("FROM a\nCOPY --from=${STAGE} /a /b\n")
    assert "variable expansion is not supported for --from" in err.message
    assert where(err) == (2, 6)
    assert err.hint is not None and "FROM" in err.hint


def test_error_on_continuation_line_points_there() -> None:
    err = rejected("FROM a\nRUN --network=none \\\n    --bogus=1 true\n")
    assert where(err) == (3, 5)
    assert err.source_line == "    --bogus=1 true"


def test_render_shows_caret() -> None:
    err = rejected("FROM a\nCOPY --foo a b\n")
    assert err.render().splitlines()[1:3] == ["    2 | COPY --foo a b", "             ^"]
