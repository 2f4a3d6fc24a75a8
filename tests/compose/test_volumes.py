"""Volumes as docker compose makes them: a new named volume filled from the image at its mount point
(and left alone once it exists, or with `nocopy`), anonymous volumes per container removed by
`run --rm` and `down -v`, tmpfs mounts with a size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.compose.services import ANONYMOUS, byte_size
from layerbuild.errors import ComposeFileError
from tests.compose.test_up import Project
from tests.conftest import BUSYBOX_BASE, busybox_binary

pytestmark = [pytest.mark.integration]
SEEDED = "lbtest/busybox:seeded"


@pytest.fixture(scope="module")
def seeded(root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    ctx = tmp_path_factory.mktemp("seeded")
    (ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN mkdir -p /seed/sub /data && echo hi > /seed/sub/f"
                                    " && chmod 0750 /seed/sub && chown 7:8 /seed/sub/f && echo top > /seed/t\n")
    shutil.copy(busybox_binary(), ctx / "busybox")
    assert main(["--root", str(root), "build", "-q", "-t", SEEDED, str(ctx)]) == 0
    return SEEDED


def _anonymous(project: Project) -> list[dict[str, str]]:
    vols = project.root / "volumes"
    return [json.loads((d / ANONYMOUS).read_text()) | {"dir": str(d)} for d in vols.iterdir()
            if (d / ANONYMOUS).exists() and json.loads((d / ANONYMOUS).read_text()).get(
                "com.docker.compose.project") == project.name] if vols.exists() else []


@pytest.mark.slow
def test_a_new_named_volume_is_filled_from_the_image(project: Project, seeded: str) -> None:
    project.write(f"""\
  app:
    image: {seeded}
    command: ["sleep", "60"]
    volumes: ["seed:/seed", "bare:/seed2/x:nocopy", "empty:/seed/sub:nocopy"]
  other:
    image: {seeded}
    command: ["sleep", "60"]
    volumes: ["plain:/seed:nocopy"]
""", "volumes:\n  seed: {}\n  bare: {}\n  empty: {}\n  plain: {}\n")
    assert project("up", "-d")[0] == 0
    data = project.root / "volumes" / f"{project.name}_seed" / "_data"
    assert (data / "sub" / "f").read_text() == "hi\n" and (data / "t").read_text() == "top\n"
    assert (data / "sub").stat().st_mode & 0o777 == 0o750
    assert ((data / "sub" / "f").stat().st_uid, (data / "sub" / "f").stat().st_gid) == (7, 8)
    assert not any((project.root / "volumes" / f"{project.name}_plain" / "_data").iterdir())
    # once it exists, what it holds stays: a removed file is not brought back by the next up
    code, _, err = project("exec", "app", "rm", "/seed/t")
    assert code == 0, err
    assert project("down", "-t", "1")[0] == 0
    assert project("up", "-d")[0] == 0
    code, out, _ = project("exec", "app", "ls", "/seed")
    assert out.split() == ["sub"]


@pytest.mark.slow
def test_anonymous_volumes_per_container_go_with_run_rm_and_down_v(project: Project, seeded: str) -> None:
    project.write(f"""\
  app:
    image: {seeded}
    command: ["sh", "-c", "echo kept > /data/f; sleep 60"]
    volumes:
      - /data
      - type: volume
        target: /seed
""")
    assert project("up", "-d")[0] == 0
    vols = _anonymous(project)
    assert sorted(v["target"] for v in vols) == ["/data", "/seed"]
    assert all(v["container"] == f"{project.name}-app-1" for v in vols)
    seed = next(Path(v["dir"]) for v in vols if v["target"] == "/seed")
    assert (seed / "_data" / "sub" / "f").read_text() == "hi\n"  # filled from the image too
    code, out, err = project("run", "--rm", "app", "sh", "-c", "ls /data | wc -l; ls /seed/sub")
    assert code == 0, err
    assert out.split() == ["0", "f"]  # a one-off container has fresh ones of its own
    assert len(_anonymous(project)) == 2  # and run --rm removed them
    assert project("down", "-t", "1")[0] == 0
    assert len(_anonymous(project)) == 2  # down keeps them, as docker compose does
    code, _, err = project("down", "-v", "-t", "1")
    assert code == 0, err
    assert _anonymous(project) == []


@pytest.mark.slow
def test_tmpfs_mounts_with_sizes(project: Project) -> None:
    project.write("""\
  app:
    image: lbtest/busybox:compose
    command: ["sleep", "60"]
    tmpfs: ["/run/a:size=1m,mode=0700"]
    volumes:
      - type: tmpfs
        target: /run/b
        tmpfs: {size: 2097152}
      - type: tmpfs
        target: /run/c
        tmpfs: {size: 3m}
""")
    code, _, err = project("up", "-d")
    assert code == 0, err
    code, out, _ = project("exec", "app", "cat", "/proc/mounts")
    mounts = {line.split()[1]: line.split()[3] for line in out.splitlines()}
    assert "size=1024k" in mounts["/run/a"] and "mode=700" in mounts["/run/a"]
    assert "size=2048k" in mounts["/run/b"] and "size=3072k" in mounts["/run/c"]


@pytest.mark.parametrize(("text", "size"), [("64m", 64 << 20), ("1g", 1 << 30), ("1gb", 1 << 30), ("512k", 512 << 10),
                                            ("1024", 1024), (2048, 2048), ("1.5k", 1536)])
def test_byte_sizes(text: object, size: int) -> None:
    assert byte_size(text) == size


def test_a_bad_size_is_refused() -> None:
    with pytest.raises(ComposeFileError, match="invalid size"):
        byte_size("lots")


@pytest.mark.slow
def test_secrets_and_configs_from_files_environment_and_content(project: Project,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (project.dir / "db_password.txt").write_text("s3cret\n")
    (project.dir / "app.conf").write_text("port=80\n")
    monkeypatch.setenv("API_TOKEN", "tok-123")
    project.write("""\
  app:
    image: lbtest/busybox:compose
    command: ["sleep", "60"]
    secrets:
      - db_password
      - source: token
        target: api_token
        uid: "7"
        gid: "8"
        mode: 0400
    configs:
      - app_conf
      - source: inline
        target: /etc/inline.conf
        mode: 0440
""", """\
secrets:
  db_password: {file: ./db_password.txt}
  token: {environment: API_TOKEN}
configs:
  app_conf: {file: ./app.conf}
  inline: {content: "hello $${USER}\\n"}
""")
    code, _, err = project("up", "-d")
    assert code == 0, err
    script = ("for f in /run/secrets/db_password /run/secrets/api_token /app_conf /etc/inline.conf; do "
              "echo \"$(cat $f)\"; done; "
              "stat -c '%n %u %g %a' /run/secrets/api_token /etc/inline.conf; echo x > /run/secrets/db_password")
    code, out, err = project("exec", "app", "sh", "-c", script)
    assert out.splitlines() == ["s3cret", "tok-123", "port=80", "hello ${USER}",
                                "/run/secrets/api_token 7 8 400", "/etc/inline.conf 0 0 440"]
    assert code != 0 and "Read-only file system" in err  # mounted read-only
    # a file bound as it is (no uid, gid or mode asked) shows a change, as docker compose's bind does
    (project.dir / "db_password.txt").write_text("changed\n")
    assert project("exec", "app", "cat", "/run/secrets/db_password")[1] == "changed\n"
    assert project("down", "-t", "1")[0] == 0
    assert not (project.root / "compose" / project.name).exists()  # the copies went with the project


def test_a_secret_without_its_variable_is_a_clear_error(project: Project) -> None:
    project.write("""\
  app:
    image: lbtest/busybox:compose
    secrets: [token]
""", "secrets:\n  token: {environment: LB_NO_SUCH_VARIABLE_SET}\n")
    code, _, err = project("up", "-d")
    assert code == 1 and "secret token: the environment variable LB_NO_SUCH_VARIABLE_SET is not set" in err
    assert "Traceback" not in err
