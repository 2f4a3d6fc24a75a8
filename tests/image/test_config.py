"""Image config values: canonical JSON as BuildKit writes it, Docker's dialect read, edits that return copies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.errors import UsageError
from layerbuild.image import (
    ContainerConfig,
    Healthcheck,
    HistoryEntry,
    ImageConfig,
    ImageFormatError,
    format_created,
    normalize_port,
    parse_created,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
S = 1_000_000_000  # one second in ns


def test_empty_image_is_minimal() -> None:
    assert ImageConfig("amd64", "linux").to_json() == (
        b'{"architecture":"amd64","config":{},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}'
    )


def test_every_instruction_field_as_docker_writes_it() -> None:
    # FROM scratch / ENV A=1 B=2 / EXPOSE 80 53/UDP / VOLUME /data /data / WORKDIR /app / USER app
    # LABEL version=1.0 / STOPSIGNAL SIGTERM / HEALTHCHECK --interval=5s --timeout=3s CMD curl -f http://x/
    # SHELL ["/bin/bash","-c"] / ONBUILD RUN echo hi / ENTRYPOINT ["/app/run"] / CMD ["--help"]
    cfg = ContainerConfig(
        user="app",
        exposed_ports=("80", "53/UDP"),
        env=("A=1", "B=2"),
        entrypoint=("/app/run",),
        cmd=("--help",),
        volumes=("/data", "/data"),
        working_dir="/app",
        labels=(("version", "1.0"),),
        stop_signal="SIGTERM",
        healthcheck=Healthcheck(("CMD", "curl", "-f", "http://x/"), interval=5 * S, timeout=3 * S),
        shell=("/bin/bash", "-c"),
        on_build=("RUN echo hi",),
    )
    img = ImageConfig(
        "amd64",
        "linux",
        cfg,
        history=(HistoryEntry("2024-01-02T03:04:05Z", "ENV A=1 B=2", empty_layer=True),),
        created="2024-01-02T03:04:05Z",
    )
    doc = json.loads(img.to_json())
    assert doc["config"] == {
        "User": "app",
        "ExposedPorts": {"53/udp": {}, "80/tcp": {}},
        "Env": ["A=1", "B=2"],
        "Entrypoint": ["/app/run"],
        "Cmd": ["--help"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/app",
        "Labels": {"version": "1.0"},
        "StopSignal": "SIGTERM",
        "Healthcheck": {"Test": ["CMD", "curl", "-f", "http://x/"], "Interval": 5 * S, "Timeout": 3 * S},
        "Shell": ["/bin/bash", "-c"],
        "OnBuild": ["RUN echo hi"],
    }
    assert doc["history"] == [{"created": "2024-01-02T03:04:05Z", "created_by": "ENV A=1 B=2", "empty_layer": True}]
    assert doc["created"] == "2024-01-02T03:04:05Z"
    assert b'"ExposedPorts":{"53/udp":{},"80/tcp":{}}' in img.to_json()


def test_omitted_fields() -> None:
    # Cmd set to [] and Cmd never set are both absent (Go's omitempty); empty_layer only when true.
    for cmd in (None, ()):
        cfg = ImageConfig("arm64", "linux", ContainerConfig(cmd=cmd), history=(HistoryEntry(created_by="x"),))
        doc = json.loads(cfg.to_json())
        assert doc["config"] == {}
        assert doc["history"] == [{"created_by": "x"}]
    assert ContainerConfig(cmd=()) == ContainerConfig()
    doc = json.loads(ImageConfig("amd64", "linux", ContainerConfig(healthcheck=Healthcheck(("NONE",)))).to_json())
    assert doc["config"] == {"Healthcheck": {"Test": ["NONE"]}}
    assert json.loads(ImageConfig("arm", "linux", variant="v7").to_json())["variant"] == "v7"


def test_canonical_bytes_do_not_depend_on_input_order() -> None:
    a = ContainerConfig(exposed_ports=("443", "80/tcp", "80"), volumes=("/b", "/a"), labels=(("z", "1"), ("a", "2")))
    b = ContainerConfig(exposed_ports=("80/TCP", "443/tcp"), volumes=("/a", "/b"), labels=(("a", "2"), ("z", "1")))
    assert a == b
    assert ImageConfig("amd64", "linux", a).to_json() == ImageConfig("amd64", "linux", b).to_json()
    assert a.exposed_ports == ("80/tcp", "443/tcp")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", ("80/tcp",)),
        ("80/UDP", ("80/udp",)),
        ("53/sctp", ("53/sctp",)),
        ("8000-8002", ("8000/tcp", "8001/tcp", "8002/tcp")),
        ("127.0.0.1:8080:80/tcp", ("80/tcp",)),
    ],
)
def test_normalize_port(spec: str, expected: tuple[str, ...]) -> None:
    assert normalize_port(spec) == expected


@pytest.mark.parametrize("spec", ["", "http", "80/icmp", "0", "70000", "90-80"])
def test_invalid_ports(spec: str) -> None:
    with pytest.raises(UsageError):
        normalize_port(spec)


def test_env_edits_keep_dockers_order() -> None:
    cfg = ContainerConfig(env=("PATH=/bin", "A=1", "B=2"))
    edited = cfg.with_env("A", "3").with_env("C", "4")
    assert edited.env == ("PATH=/bin", "A=3", "B=2", "C=4")
    assert cfg.env == ("PATH=/bin", "A=1", "B=2")  # the original is untouched
    assert edited.env_dict() == {"PATH": "/bin", "A": "3", "B": "2", "C": "4"}
    img = ImageConfig("amd64", "linux", cfg).with_env("PATH", "/usr/bin:/bin")
    assert img.config.env[0] == "PATH=/usr/bin:/bin"
    assert img.env_dict()["A"] == "1"


def test_other_edits() -> None:
    cfg = ContainerConfig().with_labels({"b": "1"}).with_labels({"a": "2", "b": "3"})
    assert cfg.labels == (("a", "2"), ("b", "3")) and cfg.labels_dict() == {"a": "2", "b": "3"}
    cfg = cfg.with_exposed_ports("80").with_exposed_ports("80/tcp", "81").with_volumes("/v", "/v")
    assert cfg.exposed_ports == ("80/tcp", "81/tcp") and cfg.volumes == ("/v",)
    assert cfg.with_on_build("RUN a").with_on_build("RUN b").on_build == ("RUN a", "RUN b")
    img = ImageConfig("amd64", "linux").with_config(cmd=["sh"], working_dir="/w")
    assert img.config.cmd == ("sh",) and img.config.working_dir == "/w"


def test_layers_and_history() -> None:
    img = (
        ImageConfig("amd64", "linux")
        .with_layer(D1, HistoryEntry(created_by="COPY a /", empty_layer=True))
        .with_history(HistoryEntry(created_by="ENV X=1"))
        .with_layer(D2, HistoryEntry(created_by="COPY b /"))
    )
    assert img.diff_ids == (D1, D2)
    assert [h.empty_layer for h in img.history] == [False, True, False]
    assert [(h.created_by, d) for h, d in img.layer_history()] == [
        ("COPY a /", D1),
        ("ENV X=1", None),
        ("COPY b /", D2),
    ]
    # A config without history still pairs every layer with an (empty) entry.
    assert ImageConfig("amd64", "linux", diff_ids=(D1,)).layer_history() == ((HistoryEntry(), D1),)


# Written down from `docker image inspect`-era config blobs made by the classic builder: nulls,
# Docker-only fields, container_config, fractional-nanosecond times.
DOCKER_CONFIG = (
    '{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,'
    '"AttachStdout":false,"AttachStderr":false,"ExposedPorts":{"80/tcp":{}},"Tty":false,"OpenStdin":false,'
    '"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",'
    '"NGINX_VERSION=1.25.3"],"Cmd":["nginx","-g","daemon off;"],"ArgsEscaped":true,"Image":'
    '"sha256:5e4e5e2cbd8bbc1d7d7f8e0e8c1b0a4d1d5d7d0d2c3f6e8b0a1c2d3e4f5a6b7c","Volumes":null,'
    '"WorkingDir":"","Entrypoint":["/docker-entrypoint.sh"],"OnBuild":null,"Labels":{"maintainer":'
    '"NGINX Docker Maintainers <docker-maint@nginx.com>"},"StopSignal":"SIGQUIT"},"container":'
    '"0a1b2c3d4e5f","container_config":{"Hostname":"0a1b2c3d4e5f","Cmd":["/bin/sh","-c","#(nop) ",'
    '"CMD [\\"nginx\\" \\"-g\\" \\"daemon off;\\"]"]},"created":"2023-11-01T03:15:46.283224593Z",'
    '"docker_version":"20.10.23","history":[{"created":"2023-11-01T00:20:25.165379497Z","created_by":'
    '"/bin/sh -c #(nop) ADD file:5bd53bfff1c6b2c5b3b5e5 in / "},{"created":"2023-11-01T00:20:25.5Z",'
    '"created_by":"/bin/sh -c #(nop)  CMD [\\"bash\\"]","empty_layer":true}],"os":"linux","rootfs":'
    '{"type":"layers","diff_ids":["' + D1 + '"]}}'
)


def test_reads_a_docker_engine_config() -> None:
    img = ImageConfig.from_json(DOCKER_CONFIG.encode())
    assert img.architecture == "amd64" and img.os == "linux"
    assert img.config == ContainerConfig(
        exposed_ports=("80/tcp",),
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.25.3"),
        cmd=("nginx", "-g", "daemon off;"),
        entrypoint=("/docker-entrypoint.sh",),
        labels=(("maintainer", "NGINX Docker Maintainers <docker-maint@nginx.com>"),),
        stop_signal="SIGQUIT",
        args_escaped=True,
    )
    assert img.diff_ids == (D1,)
    assert [h.empty_layer for h in img.history] == [False, True]
    assert img.created == "2023-11-01T03:15:46.283224593Z"
    created = parse_created(img.created)
    assert created is not None and created.year == 2023 and created.microsecond == 283224
    # Re-written, Docker's nulls and private fields are gone and what is left reads back the same.
    again = img.to_json()
    assert b"null" not in again and b"Hostname" not in again and b"container_config" not in again
    assert ImageConfig.from_json(again) == img


# What BuildKit writes for HEALTHCHECK --interval=30s --timeout=5s --start-period=10s
# --start-interval=2s --retries=4 CMD-SHELL ... (durations in ns), with the OCI platform fields.
BUILDKIT_CONFIG = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "created": "2024-05-06T07:08:09.123Z",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Healthcheck": {
            "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
            "Interval": 30 * S,
            "Timeout": 5 * S,
            "StartPeriod": 10 * S,
            "StartInterval": 2 * S,
            "Retries": 4,
        },
        "Shell": ["/bin/ash", "-eo", "pipefail", "-c"],
        "Volumes": {"/var/lib/data": {}},
        "WorkingDir": "/srv",
    },
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
    "history": [
        {"created": "2024-05-06T07:08:09Z", "created_by": "COPY . /srv # buildkit", "comment": "buildkit.dockerfile.v0"},
        {"created": "2024-05-06T07:08:09Z", "created_by": "RUN make", "comment": "buildkit.dockerfile.v0"},
    ],
    "moby.buildkit.buildinfo.v1": "e30=",
}


def test_reads_a_buildkit_config_and_keeps_every_known_field() -> None:
    img = ImageConfig.from_json(json.dumps(BUILDKIT_CONFIG))
    assert img.config.healthcheck == Healthcheck(
        ("CMD-SHELL", "curl -f http://localhost/ || exit 1"), 30 * S, 5 * S, 10 * S, 2 * S, 4
    )
    assert img.variant == "v8" and img.config.shell == ("/bin/ash", "-eo", "pipefail", "-c")
    expected = {k: v for k, v in BUILDKIT_CONFIG.items() if k != "moby.buildkit.buildinfo.v1"}
    assert img.to_dict() == expected


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[]",
        b'{"architecture":"amd64","os":"linux","config":{"Env":"A=1"}}',
        b'{"architecture":"amd64","os":"linux","config":{"ExposedPorts":{"http":{}}}}',
        b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:xyz"]}}',
        b'{"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Retries":true}}}',
        b'{"architecture":"amd64","os":"linux","history":{}}',
    ],
)
def test_malformed_configs_are_refused(text: bytes) -> None:
    with pytest.raises(ImageFormatError):
        ImageConfig.from_json(text)


def test_created_helpers() -> None:
    assert format_created(0) == "1970-01-01T00:00:00Z"
    assert parse_created("1970-01-01T00:00:00Z") == parse_created("1970-01-01T00:00:00+00:00")
    assert parse_created("yesterday") is None and parse_created(None) is None


# --- property: any config survives the round trip, and its bytes are a fixed point ---------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
strs = st.lists(text, max_size=4).map(tuple)
ports = st.lists(
    st.tuples(st.integers(1, 65535), st.sampled_from(["tcp", "udp", "sctp", "TCP", ""])).map(
        lambda p: f"{p[0]}/{p[1]}" if p[1] else str(p[0])
    ),
    max_size=4,
).map(tuple)
digests = st.lists(st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()), max_size=3).map(tuple)
durations = st.integers(0, 10**12)
healthchecks = st.builds(Healthcheck, strs, durations, durations, durations, durations, st.integers(0, 10))
containers = st.builds(
    ContainerConfig,
    user=text,
    exposed_ports=ports,
    env=strs,
    entrypoint=st.none() | strs,
    cmd=st.none() | strs,
    volumes=strs,
    working_dir=text,
    labels=st.dictionaries(text, text, max_size=3).map(lambda d: tuple(d.items())),
    stop_signal=text,
    healthcheck=st.none() | healthchecks,
    shell=st.none() | strs,
    on_build=strs,
    args_escaped=st.booleans(),
)
histories = st.builds(HistoryEntry, st.none() | text, text, st.booleans(), text, text)
images = st.builds(
    ImageConfig,
    architecture=text,
    os=text,
    config=containers,
    diff_ids=digests,
    history=st.lists(histories, max_size=3).map(tuple),
    created=st.none() | text,
    variant=st.none() | text,
    author=st.none() | text,
    os_version=st.none() | text,
    os_features=strs,
)


@settings(max_examples=200, deadline=None)
@given(images)
def test_json_round_trip(img: ImageConfig) -> None:
    data = img.to_json()
    back = ImageConfig.from_json(data)
    assert back == img
    assert back.to_json() == data
    assert data.isascii()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


def test_layerbuild_fields_survive_a_round_trip_and_others_are_dropped() -> None:
    raw = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                      "layerbuild.cache.v1": {"version": 1, "records": []}, "moby.buildkit.cache.v0": "e30="})
    config = ImageConfig.from_json(raw)
    assert config.extensions == (("layerbuild.cache.v1", '{"records":[],"version":1}'),)
    again = json.loads(config.to_json())
    assert again["layerbuild.cache.v1"] == {"version": 1, "records": []}
    assert "moby.buildkit.cache.v0" not in again  # another builder's field is not ours to carry
    assert ImageConfig.from_json(config.to_json()) == config
