"""Platform names and matching, as containerd's `platforms` package normalises and orders them."""

from __future__ import annotations

import pytest

from layerbuild.platforms import (
    best_platform,
    compatible_platforms,
    format_platform,
    normalize_platform,
    parse_platform,
    runnable,
)


@pytest.mark.parametrize(("text", "spec"), [
    ("linux/amd64", ("linux", "amd64", "")), ("linux/x86_64", ("linux", "amd64", "")),
    ("linux/amd64/v1", ("linux", "amd64", "")), ("linux/amd64/v3", ("linux", "amd64", "v3")),
    ("linux/arm64", ("linux", "arm64", "")), ("linux/arm64/v8", ("linux", "arm64", "")),
    ("linux/aarch64", ("linux", "arm64", "")), ("linux/arm", ("linux", "arm", "v7")),
    ("linux/arm/7", ("linux", "arm", "v7")), ("linux/armhf", ("linux", "arm", "v7")),
    ("linux/armel", ("linux", "arm", "v6")), ("arm64", ("linux", "arm64", "")), ("Linux/386", ("linux", "386", "")),
])
def test_parse_and_normalise(text: str, spec: tuple[str, str, str]) -> None:
    assert parse_platform(text) == spec


@pytest.mark.parametrize("text", ["", "linux/", "a/b/c/d", "/amd64"])
def test_bad_platforms(text: str) -> None:
    with pytest.raises(ValueError, match="OS/ARCH"):
        parse_platform(text)


def test_compatible_platforms_best_first() -> None:
    assert compatible_platforms(("linux", "arm", "v7")) == [("linux", "arm", "v7"), ("linux", "arm", "v6"),
                                                            ("linux", "arm", "v5")]
    assert compatible_platforms(("linux", "arm64", "v8")) == [("linux", "arm64", ""), ("linux", "arm", "v8"),
                                                              ("linux", "arm", "v7"), ("linux", "arm", "v6"),
                                                              ("linux", "arm", "v5")]
    assert compatible_platforms(("linux", "amd64", "v3")) == [("linux", "amd64", "v3"), ("linux", "amd64", "v2"),
                                                              ("linux", "amd64", ""), ("linux", "386", "")]
    assert compatible_platforms(("linux", "arm", "v5")) == [("linux", "arm", "v5")]


def test_best_platform() -> None:
    offered = [("linux", "amd64", ""), ("linux", "arm64", "v8"), ("linux", "arm", "v6"), ("linux", "arm", "v7")]
    assert best_platform(("linux", "arm64", ""), offered) == 1  # arm64 ↔ arm64/v8
    assert best_platform(("linux", "arm", "v7"), offered) == 3  # v7 before v6
    assert best_platform(("linux", "arm", "v6"), offered) == 2
    assert best_platform(("linux", "arm", "v5"), offered) is None  # v5 cannot run v6
    assert best_platform(("linux", "arm64", ""), [("linux", "arm", "v5"), ("linux", "arm", "v7")]) == 1
    assert best_platform(("linux", "amd64", ""), [("linux", "386", ""), ("linux", "amd64", "")]) == 1
    assert best_platform(("linux", "amd64", ""), [("windows", "amd64", "")]) is None
    assert best_platform(("linux", "amd64", ""), [("linux", "amd64", "v2")]) is None  # v1 cannot run v2


def test_runnable_here() -> None:
    from layerbuild.platforms import host_platform

    host = host_platform()
    assert runnable(host)
    assert not runnable(("linux", "s390x" if host[1] != "s390x" else "amd64", ""))
    assert format_platform(normalize_platform("linux", "arm", "")) == "linux/arm/v7"
