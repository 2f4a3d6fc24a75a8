"""`deploy.replicas`, `scale:` and `up --scale SERVICE=N`: containers `<project>-<service>-<n>`, each in
`ps --json`, scaled up and down without recreating the others; `exec --index`."""

from __future__ import annotations

import json

import pytest

from layerbuild.runtime import containers
from tests.compose.test_up import IMAGE, WEB, Project

pytestmark = [pytest.mark.integration]


def _names(project: Project) -> list[str]:
    code, out, err = project("ps", "--json")
    assert code == 0, err
    return sorted(e["Name"] for e in json.loads(out))


@pytest.mark.slow
def test_replicas_scale_and_up_scale(project: Project) -> None:
    project.write(WEB + f"""\
    deploy: {{replicas: 2}}
    stop_grace_period: 1s
  worker:
    image: {IMAGE}
    command: ["sleep", "60"]
    scale: 2
    stop_grace_period: 1s
""")
    code, _, err = project("up", "-d")
    assert code == 0, err
    n = project.name
    assert _names(project) == [f"{n}-web-1", f"{n}-web-2", f"{n}-worker-1", f"{n}-worker-2"]
    web1 = containers.find(project.root, f"{n}-web-1")
    web2 = containers.find(project.root, f"{n}-web-2")
    assert web2.config["labels"]["com.docker.compose.container-number"] == "2"
    code, out, _ = project("exec", "--index", "2", "web", "hostname")
    assert code == 0 and out == f"{web2.short_id}\n"
    code, out, _ = project("exec", "worker", "wget", "-q", "-O-", f"http://{n}-web-2/")
    assert code == 0 and out == f"{web2.short_id}\n"  # each replica answers to its own name
    code, out, _ = project("exec", "worker", "wget", "-q", "-O-", "http://web/")
    assert code == 0 and out in (f"{web1.short_id}\n", f"{web2.short_id}\n")  # and to the service's
    code, _, err = project("up", "-d", "--scale", "web=3")
    assert code == 0, err
    assert _names(project) == [f"{n}-web-1", f"{n}-web-2", f"{n}-web-3", f"{n}-worker-1", f"{n}-worker-2"]
    assert containers.find(project.root, f"{n}-web-1").id == web1.id  # not recreated
    code, _, err = project("up", "-d", "--scale", "web=1", "--scale", "worker=0")
    assert code == 0, err
    assert _names(project) == [f"{n}-web-1"]
    assert f"Container {n}-web-3  Removed" in err and f"Container {n}-worker-1  Removed" in err
    code, _, err = project("exec", "--index", "2", "web", "true")
    assert code == 1 and "service 'web' is not running" in err


def test_scale_errors_are_clear(project: Project) -> None:
    project.write(f"  web: {{image: {IMAGE}, container_name: only, scale: 2}}\n")
    code, _, err = project("up", "-d")
    assert code == 1 and "cannot run 2 containers" in err and "Traceback" not in err
    project.write(f"  web: {{image: {IMAGE}}}\n")
    code, _, err = project("up", "-d", "--scale", "web=two")
    assert code == 1 and "invalid --scale 'web=two'" in err
    code, _, err = project("up", "-d", "--scale", "nosuch=2")
    assert code == 1 and "no such service: nosuch" in err
