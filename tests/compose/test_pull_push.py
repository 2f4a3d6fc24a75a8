"""`compose pull` and `compose push` against Debian's docker-registry on loopback, as docker compose
v2 does them: pull every service that names an image (a buildable one whose image is not there is
only told to be built; `--ignore-buildable`, `--ignore-pull-failures`), push the images of the
services that are built and name one (the others skipped), exit 1 on a failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from tests.cli.kit import busybox_root
from tests.compose.kit import write
from tests.registry.kit import Registry
from tests.registry.test_pull import skopeo_push

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(plain_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox in the registry, for the services to pull and build FROM."""
    tmp = tmp_path_factory.mktemp("compose-pull-base")
    with busybox_root("lb-compose-pull-") as source:
        archive = tmp / "busybox.tar"
        done = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(source), "save", "busybox",
                               "-o", str(archive)], cwd=REPO, capture_output=True)
        assert done.returncode == 0, done.stderr
    skopeo_push(f"docker-archive:{archive}", plain_registry, "compose/busybox:1")
    return f"{plain_registry.host}/compose/busybox:1"


def _lb(root: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--root", str(root), *argv])
    out, err = capfd.readouterr()
    return code, out, err


def _images(root: Path, capfd: pytest.CaptureFixture[str]) -> set[str]:
    code, out, err = _lb(root, capfd, "images", "--json")
    assert code == 0, err
    return {f"{r['name']}:{r['tag']}" for r in json.loads(out)}


def test_pull_takes_named_images_and_tells_buildable_ones_to_build(
        plain_registry: Registry, base: str, tmp_path: Path, cli_env: None, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = f"{plain_registry.host}/compose/app:1"
    write(tmp_path, {
        "compose.yaml": (f"services:\n  db:\n    image: {base}\n"
                         f"  web:\n    build: ./web\n    image: {app}\n"
                         "  tool:\n    build: ./web\n"),
        "web/Dockerfile": f"FROM {base}\nRUN echo built > /built\n",
    })
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "store"
    code, _, err = _lb(root, capfd, "compose", "pull")
    assert code == 0, err
    assert "db Pulled" in err and "web Warning" in err and "tool Skipped" in err, err
    assert "must be built from source" in err and "layerbuild compose build web" in err, err
    assert base in _images(root, capfd)

    code, _, err = _lb(root, capfd, "compose", "pull", "--ignore-buildable", "-q")
    assert (code, err) == (0, ""), err

    # Built and pushed, the buildable service's image is there to pull into another store.
    code, _, err = _lb(root, capfd, "compose", "build", "web")
    assert code == 0, err
    code, _, err = _lb(root, capfd, "compose", "push")
    assert code == 0, err
    assert f"Pushing web: {app}" in err and "db Skipped" in err and "tool Skipped" in err, err
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{app}"], capture_output=True,
                               text=True)
    assert inspected.returncode == 0, inspected.stderr
    other = tmp_path / "other"
    code, _, err = _lb(other, capfd, "compose", "pull", "web")
    assert code == 0 and "web Pulled" in err, err
    code, out, err = _lb(other, capfd, "run", "--rm", app, "cat", "/built")
    assert (code, out) == (0, "built\n"), err


def test_a_failed_pull_exits_1_unless_told_to_go_on(plain_registry: Registry, base: str, tmp_path: Path,
                                                    cli_env: None, capfd: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"{plain_registry.host}/compose/missing:1"
    write(tmp_path, {"compose.yaml": f"services:\n  gone:\n    image: {missing}\n  db:\n    image: {base}\n"})
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "store"
    code, _, err = _lb(root, capfd, "compose", "pull")
    assert code == 1 and "compose/missing" in err and "Traceback" not in err, err
    code, _, err = _lb(root, capfd, "compose", "pull", "--ignore-pull-failures")
    assert code == 0 and "warning: gone:" in err and "db Pulled" in err, err

    write(tmp_path, {"compose.yaml": ("services:\n  web:\n    build: .\n    image: 127.0.0.1:9/nowhere/app:1\n"),
                     "Dockerfile": f"FROM {base}\n"})
    code, _, err = _lb(root, capfd, "compose", "build")
    assert code == 0, err
    code, _, err = _lb(root, capfd, "compose", "push")
    assert code == 1 and "127.0.0.1:9" in err and "Traceback" not in err, err
    code, _, err = _lb(root, capfd, "compose", "push", "--ignore-push-failures")
    assert code == 0 and "warning: web:" in err, err
