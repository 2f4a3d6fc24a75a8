"""Image configs of real builds, field by field, as Docker writes them for the same Dockerfiles."""

from __future__ import annotations

import json
from pathlib import Path

import layerbuild
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write

META = """\
FROM scratch
ENV A=1 B="two words"
ENV A=3
LABEL maintainer="me" version=1.0
EXPOSE 80 443/udp
VOLUME /data
WORKDIR /srv
WORKDIR app
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=3 CMD ["true"]
SHELL ["/bin/bash", "-c"]
ENTRYPOINT ["/entry"]
CMD run now
ONBUILD RUN echo hi
"""

# Written down from the Dockerfile reference, and checked against the config Docker 20.10's BuildKit
# wrote for this very file (`docker save`).
EXPECTED = {
    "ArgsEscaped": True,
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=3", "B=two words"],
    "Labels": {"maintainer": "me", "version": "1.0"},
    "ExposedPorts": {"443/udp": {}, "80/tcp": {}},
    "Volumes": {"/data": {}},
    "WorkingDir": "/srv/app",
    "User": "1000:1000",
    "StopSignal": "SIGINT",
    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Timeout": 2_000_000_000, "Retries": 3},
    "Shell": ["/bin/bash", "-c"],
    "Entrypoint": ["/entry"],
    "Cmd": ["/bin/bash", "-c", "run now"],
    "OnBuild": ["RUN echo hi"],
}


def config_of(root: Path, ref: str) -> dict[str, object]:
    with Store.open(root) as store:
        image = resolve_image(store, ref)
        return json.loads(image.config.to_json())  # type: ignore[no-any-return]


def test_metadata_instructions_match_docker(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": META})
    result = layerbuild.build(ctx, root=tmp_path / "s", tags=["meta:1"])
    data = config_of(tmp_path / "s", "meta:1")
    assert data["architecture"] and data["os"] == "linux"
    config = data["config"]
    assert isinstance(config, dict)
    for key, value in EXPECTED.items():
        assert config.get(key) == value, key
    assert set(config) == set(EXPECTED)
    history = data["history"]
    assert isinstance(history, list)
    made = [h["created_by"] for h in history if not h.get("empty_layer")]
    assert made == ["WORKDIR /srv", "WORKDIR /srv/app"]
    rootfs = data["rootfs"]
    assert isinstance(rootfs, dict) and len(rootfs["diff_ids"]) == 2
    assert result.image.id.startswith("sha256:")


def test_entrypoint_resets_an_inherited_cmd(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": 'FROM scratch AS base\nCMD ["a"]\nFROM base\nENTRYPOINT ["e"]\n'})
    layerbuild.build(ctx, root=tmp_path / "s", tags=["ep:1"])
    config = config_of(tmp_path / "s", "ep:1")["config"]
    assert isinstance(config, dict)
    assert config["Entrypoint"] == ["e"] and "Cmd" not in config


def test_scratch_defaults_match_buildkit(tmp_path: Path) -> None:
    """BuildKit's FROM scratch config: the default PATH, WorkingDir `/`; CMD sets ArgsEscaped."""
    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": 'FROM scratch\nCOPY x /x\nCMD ["a"]\n', "x": "x"})
    layerbuild.build(ctx, root=tmp_path / "s", tags=["sd:1"])
    data = config_of(tmp_path / "s", "sd:1")
    assert data["config"] == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["a"], "WorkingDir": "/", "ArgsEscaped": True,
    }
    history = data["history"]
    assert isinstance(history, list)
    assert [h.get("empty_layer", False) for h in history] == [False, True]


def test_cmd_set_before_entrypoint_in_the_same_stage_is_kept(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": 'FROM scratch\nCMD ["a"]\nENTRYPOINT ["e"]\n'})
    layerbuild.build(ctx, root=tmp_path / "s", tags=["ep:2"])
    config = config_of(tmp_path / "s", "ep:2")["config"]
    assert isinstance(config, dict)
    assert config["Entrypoint"] == ["e"] and config["Cmd"] == ["a"]


def _created(history: object) -> list[float]:
    from datetime import datetime

    assert isinstance(history, list)
    return [datetime.fromisoformat(h["created"].replace("Z", "+00:00")).timestamp() for h in history]


def test_config_only_steps_record_when_they_were_made(tmp_path: Path) -> None:
    """A config-only step's history entry carries the build's time, not 1970 (`history` said "56 years
    ago"). BuildKit: `dispatchers` call `commitToHistory(img, msg, false, nil, d.epoch)` for metadata
    commands (convert.go), so `Created` is SOURCE_DATE_EPOCH when set and otherwise nil, which the image
    exporter fills with the build's time. Here the time is the step's result in the cache, so a fully
    cached rebuild still gives the same image id."""
    import time

    ctx = tmp_path / "ctx"
    write(ctx, {"Dockerfile": "FROM scratch\nENV A=1\nLABEL b=2\n"})
    before = time.time()
    first = layerbuild.build(ctx, root=tmp_path / "s", tags=["cfg:1"])
    data = config_of(tmp_path / "s", "cfg:1")
    times = _created(data["history"])
    assert len(times) == 2 and all(t >= int(before) for t in times)
    assert _created([{"created": data["created"]}]) == [max(times)]
    again = layerbuild.build(ctx, root=tmp_path / "s", tags=["cfg:1"])
    assert again.image.id == first.image.id

    pinned = layerbuild.build(ctx, root=tmp_path / "s", tags=["cfg:2"], source_date_epoch=1_000_000_000)
    assert _created(config_of(tmp_path / "s", "cfg:2")["history"]) == [1_000_000_000.0] * 2
    assert pinned.image.id != first.image.id
