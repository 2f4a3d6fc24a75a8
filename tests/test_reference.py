"""References named as docker names them: the cases of distribution/reference's normalize and reference tests."""

from __future__ import annotations

import pytest

from layerbuild.errors import UsageError
from layerbuild.reference import (
    DOCKER_HUB_API,
    normalize_tag,
    parse_reference,
    registry_host,
)

DIGEST = "sha256:" + "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"

# distribution/reference TestValidateReferenceName: valid names, and what ParseNormalizedNamed makes of them.
VALID = {
    "docker/docker": "docker.io/docker/docker",
    "library/debian": "docker.io/library/debian",
    "debian": "docker.io/library/debian",
    "localhost/library/debian": "localhost/library/debian",
    "localhost/debian": "localhost/debian",
    "docker.io/docker/docker": "docker.io/docker/docker",
    "docker.io/library/debian": "docker.io/library/debian",
    "docker.io/debian": "docker.io/library/debian",
    "index.docker.io/docker/docker": "docker.io/docker/docker",
    "index.docker.io/library/debian": "docker.io/library/debian",
    "index.docker.io/debian": "docker.io/library/debian",
    "127.0.0.1:5000/docker/docker": "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian": "127.0.0.1:5000/library/debian",
    "127.0.0.1:5000/debian": "127.0.0.1:5000/debian",
    "192.168.0.1": "docker.io/library/192.168.0.1",
    "192.168.0.1:8/debian": "192.168.0.1:8/debian",
    "192.168.0.2:25000/debian": "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev":
        "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker": "[fc00::1]:5000/docker",
    "[fc00::1]:5000/docker/docker": "[fc00::1]:5000/docker/docker",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a":
        "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
}

INVALID = [
    "https://github.com/docker/docker",
    "docker/Docker",
    "-docker",
    "-docker/docker",
    "-docker.io/docker/docker",
    "docker///docker",
    "docker.io/docker/Docker",
    "docker.io/docker///docker",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",  # an image id, not a name
    "",
    " ",
    "$$$",
    "::",
    "docker://quay.io/library/foo:bar",
    "ubuntu:-bad",
    "ubuntu@sha256:abc",
    "ubuntu@sha256:" + "A" * 64,
    "ubuntu@md5:" + "a" * 32,
    "a" * 256,
    # current distribution/reference takes an uppercase first component for a host; docker 20.10's
    # CLI, and layerbuild (the first component is a host only with `.`, `:` or as `localhost`), refuse it
    "LOCALDOMAIN/library/debian",
    "LOCALDOMAIN/debian",
]


@pytest.mark.parametrize(("given", "name"), sorted(VALID.items()))
def test_valid_names_normalize_as_docker(given: str, name: str) -> None:
    ref = parse_reference(given)
    assert ref.name == name


@pytest.mark.parametrize("given", INVALID)
def test_invalid_names_are_refused(given: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(given)


@pytest.mark.parametrize(("given", "full", "familiar"), [
    ("ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx:1.25"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80", "192.168.0.1:80"),  # one component: 80 is a tag
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"docker.io/library/busybox:latest@{DIGEST}", f"docker.io/library/busybox:latest@{DIGEST}",
     f"busybox:latest@{DIGEST}"),
])
def test_tags_digests_and_familiar_names(given: str, full: str, familiar: str) -> None:
    ref = parse_reference(given)
    assert str(ref) == full
    assert ref.familiar() == familiar


def test_a_digest_is_what_is_fetched_and_the_tag_is_kept_to_show() -> None:
    ref = parse_reference(f"busybox:1.36@{DIGEST}")
    assert (ref.tag, ref.digest, ref.identifier) == ("1.36", DIGEST, DIGEST)
    assert parse_reference(f"busybox@{DIGEST}").tag is None
    assert parse_reference("busybox", default_tag=False).tag is None
    assert parse_reference("busybox").identifier == "latest"


def test_docker_hub_is_reached_at_its_registry_endpoint() -> None:
    assert parse_reference("ubuntu").registry == DOCKER_HUB_API == "registry-1.docker.io"
    assert parse_reference("index.docker.io/u/a").registry == "registry-1.docker.io"
    assert parse_reference("localhost:5000/a").registry == "localhost:5000"
    assert parse_reference("ghcr.io/o/a").repository().name == "ghcr.io/o/a"


@pytest.mark.parametrize(("given", "host"), [
    (None, "docker.io"), ("", "docker.io"), ("docker.io", "docker.io"), ("index.docker.io", "docker.io"),
    ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"),
    ("localhost:5000", "localhost:5000"), ("https://registry.example.com/v2/", "registry.example.com"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
])
def test_registry_host_of_login_arguments(given: str | None, host: str) -> None:
    assert registry_host(given) == host


def test_local_tags_keep_their_behaviour() -> None:
    # normalize_tag names local images: no docker.io/library/ prefix is added.
    assert normalize_tag("app") == "app:latest"
    assert normalize_tag("localhost:5000/app") == "localhost:5000/app:latest"
    with pytest.raises(UsageError):
        normalize_tag(f"app@{DIGEST}")
