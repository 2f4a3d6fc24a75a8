"""Variable expansion and ARG/ENV scoping across a stage, FROM lines and stages built on stages."""

from __future__ import annotations

import pytest

from layerbuild.errors import DockerfileSyntaxError, ExpansionError
from layerbuild.instructions import (
    Add,
    Arg,
    CacheMount,
    Copy,
    Env,
    ExpandedStep,
    Expose,
    Label,
    Run,
    StageExpander,
    StopSignal,
    User,
    Volume,
    Workdir,
    expand_from,
    resolve_meta_args,
)
from tests.instructions.helpers import stages


def walk(
    text: str,
    build_args: dict[str, str] | None = None,
    base_env: dict[str, str] | None = None,
    stage: int = 0,
) -> list[ExpandedStep]:
    df, meta, parsed = stages(text)
    meta_values = resolve_meta_args(df, meta, build_args)
    expander = StageExpander(df, meta_args=meta_values, build_args=build_args, base_env=base_env or {})
    return list(expander.walk(parsed[stage].commands))


def workdirs(steps: list[ExpandedStep]) -> list[str]:
    return [s.command.path for s in steps if isinstance(s.command, Workdir)]


def test_global_arg_not_visible_in_stage_unless_redeclared() -> None:
    steps = walk("ARG V=1\nFROM a\nWORKDIR /w$V\nARG V\nWORKDIR /w$V\n")
    assert workdirs(steps) == ["/w", "/w1"]
    assert steps[0].used_args == frozenset()
    assert steps[2].used_args == {"V"}


def test_redeclared_global_gets_build_arg_override() -> None:
    steps = walk("ARG V=1\nFROM a\nARG V\nWORKDIR /w$V\n", build_args={"V": "9"})
    assert workdirs(steps) == ["/w9"]


def test_redeclared_global_without_any_value_stays_unset() -> None:
    steps = walk("ARG V\nFROM a\nARG V\nWORKDIR /w${V:-none}\n")
    assert workdirs(steps) == ["/wnone"]
    with pytest.raises(ExpansionError, match="V: is not allowed to be unset"):
        walk("ARG V\nFROM a\nARG V\nWORKDIR /w${V?}\n")


def test_stage_arg_default_uses_earlier_vars() -> None:
    steps = walk("FROM a\nENV BASE=/opt\nARG DIR=$BASE/app\nWORKDIR $DIR\n")
    assert workdirs(steps) == ["/opt/app"]
    arg = steps[1].command
    assert isinstance(arg, Arg) and arg.args[0].default == "/opt/app"


def test_args_of_one_instruction_expand_before_any_applies() -> None:
    steps = walk("FROM a\nARG A=1 B=x$A\nWORKDIR /$A/$B\n")
    assert workdirs(steps) == ["/1/x"]


def test_build_arg_overrides_default_only_for_declared_args() -> None:
    steps = walk("FROM a\nARG A=1\nWORKDIR /$A/$B\n", build_args={"A": "2", "B": "3"})
    assert workdirs(steps) == ["/2/"]


def test_env_takes_effect_from_next_instruction() -> None:
    steps = walk("FROM a\nENV A=1\nENV A=2 B=$A\nWORKDIR /$A$B\n")
    env = steps[1].command
    assert isinstance(env, Env) and [(p.key, p.value) for p in env.pairs] == [("A", "2"), ("B", "1")]
    assert workdirs(steps) == ["/21"]


def test_env_overrides_arg_and_stops_counting_as_arg() -> None:
    steps = walk("FROM a\nARG V=arg\nENV V=env\nWORKDIR /$V\nRUN true\n", build_args={"V": "cli"})
    assert workdirs(steps) == ["/env"]
    assert steps[2].used_args == frozenset()
    assert steps[3].used_args == frozenset()


def test_later_arg_wins_over_earlier_env_like_buildkit() -> None:
    steps = walk("FROM a\nENV V=env\nARG V=arg\nWORKDIR /$V\n")
    assert workdirs(steps) == ["/arg"]
    assert steps[2].used_args == {"V"}


def test_env_persists_into_stage_built_from_stage() -> None:
    df, _, parsed = stages("FROM a AS base\nENV P=/base\nFROM base\nWORKDIR $P/sub\n")
    parent = StageExpander(df)
    list(parent.walk(parsed[0].commands))
    assert parent.env == (("P", "/base"),)
    child = StageExpander(df, base_env=parent.env)
    (step,) = child.walk(parsed[1].commands)
    assert isinstance(step.command, Workdir) and step.command.path == "/base/sub"


def test_base_env_visible_and_shadowed() -> None:
    steps = walk("FROM a\nWORKDIR $HOME\nENV HOME=/root2\nWORKDIR $HOME\n", base_env={"HOME": "/root"})
    assert workdirs(steps) == ["/root", "/root2"]


def test_run_uses_every_arg_in_scope_but_is_not_expanded() -> None:
    steps = walk("FROM a\nARG A=1\nARG B=2\nRUN echo $A ${C:-x}\n")
    run = steps[2].command
    assert isinstance(run, Run) and run.command == ("echo $A ${C:-x}",)
    assert steps[2].used_args == {"A", "B"}
    assert dict(steps[2].variables) == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    "text",
    ['CMD echo $A\n', 'ENTRYPOINT ["$A"]\n', 'SHELL ["/bin/$A"]\n', "HEALTHCHECK CMD $A\n", "ONBUILD COPY $A /\n",
     "MAINTAINER $A\n"],
)  # fmt: skip
def test_shell_text_is_left_to_the_shell(text: str) -> None:
    (step,) = walk("FROM a\n" + text, base_env={"A": "x"})
    assert "$A" in repr(step.command)
    assert step.used_args == frozenset()


def test_default_forms_in_copy_env_workdir() -> None:
    steps = walk(
        "FROM a\nARG SET=s\nARG EMPTY=\n"
        "COPY ${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${SET:+p} ${UNSET:+p} /dst/\n"
        'ENV X="${UNSET:-a b}" Y=${SET:+y}\n'
        "WORKDIR /${EMPTY:-e}/${SET}\n"
    )
    copy = steps[2].command
    assert isinstance(copy, Copy) and copy.sources == ("s", "d", "d", "p", "") and copy.dest == "/dst/"
    assert steps[2].used_args == {"SET", "EMPTY"}
    env = steps[3].command
    assert isinstance(env, Env) and [(p.key, p.value) for p in env.pairs] == [("X", "a b"), ("Y", "y")]
    assert workdirs(steps) == ["/e/s"]


def test_from_expansion_with_global_args_only() -> None:
    df, meta, parsed = stages("ARG TAG=3\nARG REG\nFROM ${REG:-docker.io}/alpine:${TAG} AS x\n")
    values = resolve_meta_args(df, meta, {"TAG": "3.19"})
    expanded = expand_from(df, parsed[0].from_, values)
    assert expanded.command.base_name == "docker.io/alpine:3.19"
    assert expanded.command.stage_name == "x"
    assert expanded.used_args == {"TAG", "REG"}


def test_from_platform_and_predefined_args() -> None:
    df, meta, parsed = stages("FROM --platform=$BUILDPLATFORM a\n")
    values = resolve_meta_args(df, meta, predefined={"BUILDPLATFORM": "linux/amd64"})
    assert expand_from(df, parsed[0].from_, values).command.platform == "linux/amd64"


def test_meta_arg_defaults_chain_and_override() -> None:
    df, meta, _ = stages("ARG A=1\nARG B=$A-x\nARG C\nFROM a\n")
    assert resolve_meta_args(df, meta) == {"A": "1", "B": "1-x", "C": None}
    assert resolve_meta_args(df, meta, {"A": "2", "C": "c"}) == {"A": "2", "B": "2-x", "C": "c"}


def test_blank_base_name() -> None:
    df, meta, parsed = stages("ARG IMG\nFROM $IMG\n")
    with pytest.raises(DockerfileSyntaxError, match=r"base name .* should not be blank") as info:
        expand_from(df, parsed[0].from_, resolve_meta_args(df, meta))
    assert (info.value.line, info.value.column) == (2, 6)


def test_escaped_dollar_stays_literal() -> None:
    steps = walk("FROM a\nENV A=1\nCOPY \\$A /x/$A\nENV B=\\$A\n")
    copy = steps[1].command
    assert isinstance(copy, Copy) and (copy.sources, copy.dest) == (("$A",), "/x/1")
    env = steps[2].command
    assert isinstance(env, Env) and env.pairs[0].value == "$A"


def test_backtick_escape_directive() -> None:
    text = "# escape=`\nFROM a\nENV A=1\nWORKDIR C:\\dir\\$A\nCOPY `$A C:\\x\\\n"
    steps = walk(text)
    assert workdirs(steps) == ["C:\\dir\\1"]
    copy = steps[2].command
    assert isinstance(copy, Copy) and copy.sources == ("$A",) and copy.dest == "C:\\x\\"


def test_expansions_of_each_instruction() -> None:
    steps = walk(
        "FROM a\nARG P=80 U=app S=SIGTERM V=/v\n"
        'EXPOSE $P ${P}/udp\nUSER $U\nSTOPSIGNAL $S\nVOLUME $V ${V}2\nLABEL k$U="v $U"\n'
        "ADD --chown=$U --chmod=$P --checksum=sha256:$P $V /d\n"
        "RUN --mount=type=cache,target=$V,id=c-$U true\n"
    )
    kinds = [type(s.command) for s in steps[1:]]
    assert kinds == [Expose, User, StopSignal, Volume, Label, Add, Run]
    expose, user, signal, volume, label, add, run = (s.command for s in steps[1:])
    assert isinstance(expose, Expose) and expose.ports == ("80", "80/udp")
    assert isinstance(user, User) and user.user == "app"
    assert isinstance(signal, StopSignal) and signal.signal == "SIGTERM"
    assert isinstance(volume, Volume) and volume.paths == ("/v", "/v2")
    assert isinstance(label, Label) and (label.pairs[0].key, label.pairs[0].value) == ("kapp", "v app")
    assert isinstance(add, Add) and (add.chown, add.chmod, add.checksum, add.sources) == (
        "app",
        "80",
        "sha256:80",
        ("/v",),
    )
    assert isinstance(run, Run)
    (mount,) = run.mounts
    assert isinstance(mount, CacheMount) and (mount.target, mount.id) == ("/v", "c-app")


def test_expose_word_may_split() -> None:
    steps = walk('FROM a\nARG PORTS="80 443"\nEXPOSE $PORTS\n')
    expose = steps[1].command
    assert isinstance(expose, Expose) and expose.ports == ("80", "443")


def test_mount_values_checked_after_expansion() -> None:
    df, _, parsed = stages("FROM a\nARG T=weird\nRUN --mount=type=$T,target=/x true\n")
    expander = StageExpander(df, meta_args={}, build_args={})
    expander.step(parsed[0].commands[0])
    with pytest.raises(DockerfileSyntaxError, match="unsupported mount type 'weird'"):
        expander.step(parsed[0].commands[1])


def test_copy_heredoc_expansion_follows_quoting_of_the_name() -> None:
    steps = walk("FROM a\nARG A=x\nCOPY <<E1 <<'E2' /d/\nv=$A '$A'\nE1\nv=$A\nE2\n")
    copy = steps[1].command
    assert isinstance(copy, Copy)
    assert [c.data for c in copy.contents] == ["v=x 'x'\n", "v=$A\n"]
    assert steps[1].used_args == {"A"}


def test_expansion_error_is_located() -> None:
    df, _, parsed = stages("FROM a\nWORKDIR /x\n  COPY ${A:?must_be_set} /b\n")
    expander = StageExpander(df)
    list(expander.walk(parsed[0].commands[:1]))
    with pytest.raises(ExpansionError, match="A: must_be_set") as info:
        expander.step(parsed[0].commands[1])
    assert (info.value.line, info.value.column, info.value.filename) == (3, 8, "Dockerfile")
    assert info.value.hint


def test_bad_substitution_in_meta_arg_is_located() -> None:
    df, meta, _ = stages("ARG A=${\nFROM a\n")
    with pytest.raises(ExpansionError, match="missing '}'") as info:
        resolve_meta_args(df, meta)
    assert info.value.line == 1


def test_args_property_tracks_arg_values() -> None:
    df, _, parsed = stages("FROM a\nARG A=1 B=2\nENV B=3\n")
    expander = StageExpander(df)
    list(expander.walk(parsed[0].commands))
    assert expander.args == (("A", "1"),)
    assert expander.env == (("B", "3"),)
