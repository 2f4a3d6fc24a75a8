"""`--mount` defaults, Go durations, and fuzzing: any parsable Dockerfile gives commands or a DockerfileError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from layerbuild.errors import DockerfileError
from layerbuild.instructions import (
    BindMount,
    CacheMount,
    SecretMount,
    SshMount,
    StageExpander,
    TmpfsMount,
    expand_from,
    parse_duration,
    parse_mount,
    parse_stages,
    resolve_meta_args,
)
from layerbuild.parser import parse
from tests.parser.strategies import dockerfile_text


def test_mount_defaults() -> None:
    assert parse_mount("target=/src") == BindMount(spec="target=/src", target="/src", readonly=True)
    cache = parse_mount("type=cache,dst=/c,ro,uid=1000,mode=0700")
    assert isinstance(cache, CacheMount) and (cache.id, cache.readonly, cache.uid, cache.mode) == (
        "/c",
        True,
        1000,
        0o700,
    )
    tmpfs = parse_mount("type=tmpfs,target=/t,size=64m")
    assert isinstance(tmpfs, TmpfsMount) and tmpfs.size == 64 * 1024 * 1024
    secret = parse_mount("type=secret,target=/run/token,required")
    assert isinstance(secret, SecretMount) and (secret.id, secret.required, secret.mode) == (
        "token",
        True,
        0o400,
    )
    ssh = parse_mount("type=ssh")
    assert isinstance(ssh, SshMount) and (ssh.id, ssh.mode) == ("default", 0o600)


def test_mount_values_with_variables_wait_for_expansion() -> None:
    deferred = parse_mount("type=cache,target=$DIR,uid=$UID")
    assert isinstance(deferred, CacheMount)
    env = {"DIR": "/d", "UID": "7"}
    expanded = parse_mount(
        deferred.spec, lambda word: word.replace("$DIR", env["DIR"]).replace("$UID", env["UID"])
    )
    assert isinstance(expanded, CacheMount) and (expanded.target, expanded.uid) == ("/d", 7)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0), ("1s", 10**9), ("1m30s", 90 * 10**9), ("1.5h", 5400 * 10**9), ("300ms", 300 * 10**6),
        ("2us", 2000), ("2µs", 2000), ("2μs", 2000), ("7ns", 7), ("-1s", -(10**9)), ("+.5s", 5 * 10**8),
    ],
)  # fmt: skip
def test_durations(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "1x", "s", "1s2", ".s", "3000000h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=dockerfile_text())
def test_fuzz_only_dockerfile_errors(text: str) -> None:
    try:
        df = parse(text)
        meta, stages = parse_stages(df)
        values = resolve_meta_args(df, meta, {"A": "1"})
        env: tuple[tuple[str, str], ...] = ()
        for stage in stages:
            expand_from(df, stage.from_, values)
            expander = StageExpander(df, meta_args=values, build_args={"A": "1"}, base_env=env)
            for _ in expander.walk(stage.commands):
                pass
            env = expander.env
    except DockerfileError:
        return
