"""The loader over the fixture files of compose-go (`loader/testdata`, `cli/testdata`) and docker/compose
(`pkg/e2e/fixtures`), in local runs only: LAYERBUILD_FIXTURE_MIRRORS names checkouts of those
repositories (paths separated by `:`); without it the test is skipped. The fixtures themselves are
never committed here.

Every file either loads, or fails with a LayerbuildError (never a traceback); the ones that fail are
exactly those listed below, each for the reason docker compose fails it (with its words where it
has them); and every project that loads prints a `config` that loads back to the same model."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.compose import Options, Project, load_project
from layerbuild.compose.render import to_json, to_yaml
from layerbuild.errors import LayerbuildError

ENV = "LAYERBUILD_FIXTURE_MIRRORS"
FIXTURE_DIRS = ("loader/testdata", "cli/testdata", "pkg/e2e/fixtures")
# Files that do not load, and a piece of the reason. Kubernetes manifests and Helm charts are
# docker/compose's expected `bridge` outputs, no compose files.
EXPECTED_ERRORS = {
    "loader/testdata/compose-depends-on-cycle.yaml": "dependency cycle detected: service1 -> service2",
    "loader/testdata/compose-depends-on-profile-no-cycle.yaml": "dependency cycle detected",
    "loader/testdata/compose-depends-on-self.yaml": "dependency cycle detected: service1 -> service1",
    "loader/testdata/compose-include-cycle.yaml": "include cycle detected",
    "loader/testdata/include/dir/compose.yaml": "env file extra.env not found",  # only loads through include
    "loader/testdata/remote/cycle/compose-cycle.yaml": "not found",  # remote: includes need compose-go's loader
    "loader/testdata/remote/cycle/compose.yaml": "not found",
    "loader/testdata/remote/nested/compose.yaml": "not found",
    "pkg/e2e/fixtures/env_file/compose.yaml": "env file /doesnotexist/.env not found",
    "pkg/e2e/fixtures/wrong-composefile/compose.yaml": "additional property 'wrongField' is not allowed",
}
NOT_COMPOSE = ("pkg/e2e/fixtures/bridge/expected-helm/", "pkg/e2e/fixtures/bridge/expected-kubernetes/")


def _files() -> Iterator[tuple[str, Path]]:
    for checkout in (Path(p) for p in os.environ.get(ENV, "").split(":") if p):
        for sub in FIXTURE_DIRS:
            base = checkout / sub
            if base.is_dir():
                for path in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
                    yield path.relative_to(checkout).as_posix(), path


def _load(path: Path, **kw: object) -> Project:
    return load_project(Options(files=(str(path),), cwd=path.parent, environ={"HOME": "/root"}, **kw),  # type: ignore[arg-type]
                        warn=lambda m: None)


@pytest.mark.skipif(not os.environ.get(ENV), reason=f"local runs only: set {ENV} to checkouts of "
                    "compose-spec/compose-go and docker/compose (paths separated by ':')")
def test_the_loader_over_compose_go_and_docker_compose_fixtures() -> None:
    found = list(_files())
    assert found, f"no fixture files under {os.environ[ENV]}"
    problems, loaded = [], 0
    for name, path in found:
        try:
            project = _load(path)
        except LayerbuildError as exc:
            reason = EXPECTED_ERRORS.get(name)
            if name.startswith(NOT_COMPOSE):
                continue
            if reason is None or reason not in str(exc):
                problems.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # a traceback: always a bug
            problems.append(f"{name}: crashed with {type(exc).__name__}: {exc}")
            continue
        if name in EXPECTED_ERRORS or name.startswith(NOT_COMPOSE):
            problems.append(f"{name}: loaded, but docker compose refuses it")
            continue
        loaded += 1
        model = project.to_dict()
        to_json(model)
        with tempfile.TemporaryDirectory() as scratch:
            again = Path(scratch) / "compose.yaml"
            again.write_text(to_yaml(model))
            try:
                reloaded = load_project(Options(files=(str(again),), cwd=path.parent, environ={"HOME": "/root"},
                                                project_name=project.name), warn=lambda m: None).to_dict()
            except LayerbuildError as exc:
                problems.append(f"{name}: its config does not load again: {exc}")
                continue
        if reloaded != model:
            problems.append(f"{name}: its config loads back to another model")
    assert not problems, "\n".join(problems)
    assert loaded > 0
