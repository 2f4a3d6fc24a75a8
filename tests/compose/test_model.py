"""The model: discovery, project names, short → long syntax, merge rules, include, extends, profiles,
schema errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.compose import Options, load_project
from layerbuild.errors import ComposeFileError, UsageError
from tests.compose.kit import load, write


def test_discovery_takes_compose_yaml_and_its_override_from_a_parent_directory(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a: {image: one}\n",
                     "compose.override.yaml": "services:\n  a: {image: two}\n", "sub/dir/x": ""})
    project = load(tmp_path / "sub" / "dir")
    assert project.services["a"]["image"] == "two"
    assert project.working_dir == tmp_path


def test_no_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no configuration file provided"):
        load(tmp_path)


@pytest.mark.parametrize(("dirname", "expected"), [("My App", "myapp"), ("_x.Y-z", "xy-z"), ("web_1", "web_1")])
def test_project_name_from_the_directory_is_normalised(tmp_path: Path, dirname: str, expected: str) -> None:
    write(tmp_path / dirname, {"compose.yaml": "services: {a: {image: x}}\n"})
    assert load(tmp_path / dirname).name == expected


def test_project_name_precedence(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "name: fromfile\nservices: {a: {image: x}}\n"})
    assert load(tmp_path).name == "fromfile"
    assert load(tmp_path, env={"COMPOSE_PROJECT_NAME": "fromenv"}).name == "fromenv"
    assert load(tmp_path, env={"COMPOSE_PROJECT_NAME": "fromenv"}, project_name="flag").name == "flag"
    with pytest.raises(UsageError, match="invalid project name 'Bad Name'"):
        load(tmp_path, project_name="Bad Name")


def test_dotenv_feeds_interpolation_and_the_environment_wins(tmp_path: Path) -> None:
    write(tmp_path, {".env": "TAG=1.0\nPORT=80\n", "other.env": "TAG=2.0\n",
                     "compose.yaml": "services:\n  a:\n    image: app:${TAG}\n    ports: ['${PORT:-1}:80']\n"})
    assert load(tmp_path).services["a"]["image"] == "app:1.0"
    assert load(tmp_path, env={"TAG": "env"}).services["a"]["image"] == "app:env"
    project = load(tmp_path, env_files=("other.env",))
    assert project.services["a"]["image"] == "app:2.0"
    assert project.services["a"]["ports"] == [{"mode": "ingress", "target": 80, "published": "1", "protocol": "tcp"}]


def test_yaml_1_2_keeps_port_pairs_and_no_as_strings(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a:\n    image: x\n    ports:\n      - 22:22\n    restart: no\n"})
    svc = load(tmp_path).services["a"]
    assert svc["ports"][0]["published"] == "22" and svc["ports"][0]["target"] == 22
    assert svc["restart"] == "no"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": (
        "x-common: &common\n  image: base\n  environment: {A: '1'}\n"
        "services:\n  a:\n    <<: *common\n    command: run a\n  b: *common\n")})
    project = load(tmp_path)
    assert project.services["a"]["image"] == "base" and project.services["a"]["command"] == ["run", "a"]
    assert project.services["b"]["environment"] == {"A": "1"}
    assert project.extensions["x-common"]["image"] == "base"


@pytest.mark.parametrize(("short", "long"), [
    ("80", [{"mode": "ingress", "target": 80, "protocol": "tcp"}]),
    ("127.0.0.1:8080:80/udp", [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080",
                                "protocol": "udp"}]),
    ("[::1]:53:53", [{"mode": "ingress", "host_ip": "::1", "target": 53, "published": "53", "protocol": "tcp"}]),
    ("9090-9091:8080-8081", [{"mode": "ingress", "target": 8080, "published": "9090", "protocol": "tcp"},
                             {"mode": "ingress", "target": 8081, "published": "9091", "protocol": "tcp"}]),
])
def test_port_short_syntax(tmp_path: Path, short: str, long: list[dict[str, object]]) -> None:
    write(tmp_path, {"compose.yaml": f"services:\n  a:\n    image: x\n    ports: ['{short}']\n"})
    assert load(tmp_path).services["a"]["ports"] == long


def test_volume_secret_depends_on_network_short_syntax(tmp_path: Path) -> None:
    write(tmp_path, {"s.txt": "x", "compose.yaml": (
        "services:\n  a:\n    image: x\n    volumes: [./data:/data:ro, db:/db, /anon, ~/h:/h]\n"
        "    secrets: [s]\n    depends_on: [b]\n    networks: [front]\n    tmpfs: /run\n"
        "    healthcheck: {test: [CMD, 'true'], interval: 1m30s, timeout: 500ms}\n"
        "    environment: [K=v, BARE]\n"
        "  b: {image: y, network_mode: host}\n"
        "volumes: {db: {}}\nsecrets: {s: {file: ./s.txt}, ext: {external: true}}\nnetworks: {front: {}}\n")})
    project = load(tmp_path, env={"BARE": "host-value", "HOME": "/home/u"})
    a = project.services["a"]
    assert a["volumes"] == [
        {"type": "bind", "source": str(tmp_path / "data"), "target": "/data", "read_only": True,
         "bind": {"create_host_path": True}},
        {"type": "volume", "source": "db", "target": "/db", "volume": {}},
        {"type": "volume", "target": "/anon", "volume": {}},
        {"type": "bind", "source": str(Path.home() / "h"), "target": "/h", "bind": {"create_host_path": True}},
    ]
    assert a["secrets"] == [{"source": "s"}] and a["tmpfs"] == ["/run"]
    assert a["depends_on"] == {"b": {"condition": "service_started", "required": True}}
    assert a["networks"] == {"front": None}
    assert a["healthcheck"] == {"test": ["CMD", "true"], "interval": "1m30s", "timeout": "500ms"}
    assert a["environment"] == {"K": "v", "BARE": "host-value"}
    assert "networks" not in project.services["b"]
    assert project.secrets["s"] == {"name": f"{project.name}_s", "file": str(tmp_path / "s.txt")}
    assert project.secrets["ext"] == {"name": "ext", "external": True}
    assert project.networks == {"front": {"name": f"{project.name}_front"}}


def test_build_string_and_mapping_forms(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": (
        "services:\n  a: {build: ./app}\n"
        "  b:\n    build:\n      context: ctx\n      dockerfile: other.Dockerfile\n      target: prod\n"
        "      args: [A=1, FROM_ENV, MISSING]\n      additional_contexts: [lib=../lib, base=service:a]\n"
        "      labels: {l: v}\n  c:\n    build: {dockerfile_inline: 'FROM scratch'}\n")})
    project = load(tmp_path, env={"FROM_ENV": "e"})
    assert project.services["a"]["build"] == {"context": str(tmp_path / "app"), "dockerfile": "Dockerfile"}
    b = project.services["b"]["build"]
    assert b["context"] == str(tmp_path / "ctx") and b["dockerfile"] == "other.Dockerfile"
    assert b["args"] == {"A": "1", "FROM_ENV": "e"}
    assert b["additional_contexts"] == {"lib": str(tmp_path.parent / "lib"), "base": "service:a"}
    assert project.services["c"]["build"] == {"context": str(tmp_path), "dockerfile_inline": "FROM scratch"}
    assert project.image_of("a") == f"{project.name}-a"


def test_override_files_merge_by_the_specifications_rules(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": (
            "services:\n  web:\n    image: web:1\n    command: [serve, --slow]\n"
            "    environment: {A: '1', B: '2'}\n    ports: ['8080:80', '9000:9000']\n"
            "    volumes: [a:/data, ./x:/x]\n    dns: [1.1.1.1]\n    expose: ['80']\n"
            "    healthcheck: {test: [CMD, a], interval: 5s}\n    labels: [one=1]\n"
            "volumes: {a: {}, b: {}}\n"),
        "override.yaml": (
            "services:\n  web:\n    command: serve --fast\n    environment: [B=3, C=4]\n"
            "    ports: ['8080:80', '127.0.0.1:9000:9000']\n    volumes: [b:/data]\n"
            "    dns: [8.8.8.8, 1.1.1.1]\n    expose: [80, 81]\n"
            "    healthcheck: {test: [CMD, b]}\n    labels: {two: '2'}\n"),
    })
    web = load(tmp_path, "compose.yaml", "override.yaml").services["web"]
    assert web["image"] == "web:1"
    assert web["command"] == ["serve", "--fast"]
    assert web["environment"] == {"A": "1", "B": "3", "C": "4"}
    assert [(p.get("host_ip"), p["published"]) for p in web["ports"]] == [
        (None, "8080"), (None, "9000"), ("127.0.0.1", "9000")]
    assert [(v["source"], v["target"]) for v in web["volumes"]] == [("b", "/data"), (str(tmp_path / "x"), "/x")]
    assert web["dns"] == ["1.1.1.1", "8.8.8.8"] and web["expose"] == ["80", "81"]
    assert web["healthcheck"] == {"test": ["CMD", "b"], "interval": "5s"}
    assert web["labels"] == {"one": "1", "two": "2"}


def test_reset_and_override_tags(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  a:\n    image: x\n    ports: ['1:1', '2:2']\n    environment: {A: '1', B: '2'}\n",
        "o.yaml": "services:\n  a:\n    ports: !override ['3:3']\n    environment:\n      A: !reset null\n",
        "r.yaml": "services:\n  a:\n    ports: !reset []\n",
    })
    a = load(tmp_path, "compose.yaml", "o.yaml").services["a"]
    assert [p["published"] for p in a["ports"]] == ["3"] and a["environment"] == {"B": "2"}
    assert "ports" not in load(tmp_path, "compose.yaml", "r.yaml").services["a"]


def test_override_paths_resolve_against_the_project_directory(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a: {image: x}\n",
                     "more/o.yaml": "services:\n  a: {volumes: ['./d:/d']}\n"})
    vol = load(tmp_path, "compose.yaml", "more/o.yaml").services["a"]["volumes"][0]
    assert vol["source"] == str(tmp_path / "d")


def test_extends_in_the_file_and_from_another_file(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": (
            "services:\n  base: {image: b, environment: {A: '1'}, ports: ['80']}\n"
            "  child:\n    extends: base\n    environment: {B: '2'}\n"
            "  far:\n    extends: {file: lib/common.yaml, service: common}\n    command: own\n"),
        "lib/common.yaml": "services:\n  common:\n    image: c\n    command: theirs\n    volumes: ['./conf:/conf']\n",
    })
    project = load(tmp_path)
    child = project.services["child"]
    assert child["image"] == "b" and child["environment"] == {"A": "1", "B": "2"} and "extends" not in child
    far = project.services["far"]
    assert far["image"] == "c" and far["command"] == ["own"]
    assert far["volumes"][0]["source"] == str(tmp_path / "lib" / "conf")  # against the file that names it


def test_extends_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  a: {extends: b}\n  b: {extends: a}\n"})
    with pytest.raises(ComposeFileError, match="circular reference with extends"):
        load(tmp_path)


def test_include_brings_another_projects_services_with_its_own_paths_and_env(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "include:\n  - db/compose.yaml\nservices:\n  web: {image: w, depends_on: [db]}\n",
        "db/compose.yaml": "services:\n  db:\n    image: 'db:${DB_TAG}'\n    volumes: ['./init:/init']\n",
        "db/.env": "DB_TAG=15\n",
    })
    project = load(tmp_path)
    assert project.services["db"]["image"] == "db:15"
    assert project.services["db"]["volumes"][0]["source"] == str(tmp_path / "db" / "init")
    write(tmp_path, {"compose.yaml": "include: [db/compose.yaml]\nservices:\n  db: {image: other}\n"})
    with pytest.raises(ComposeFileError, match="also defined by an included file"):
        load(tmp_path)


def test_profiles_and_depends_on(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": (
        "services:\n  app: {image: a}\n  debug: {image: d, profiles: [debug]}\n"
        "  tool: {image: t, profiles: [tools], depends_on: [app]}\n")})
    assert sorted(load(tmp_path).services) == ["app"]
    assert sorted(load(tmp_path, profiles=("debug",)).services) == ["app", "debug"]
    assert sorted(load(tmp_path, env={"COMPOSE_PROFILES": "debug,tools"}).services) == ["app", "debug", "tool"]
    assert sorted(load(tmp_path, profiles=("*",)).services) == ["app", "debug", "tool"]
    assert sorted(load(tmp_path, services=("debug",)).services) == ["app", "debug"]  # named: enabled
    write(tmp_path, {"compose.yaml": "services:\n  app: {image: a, depends_on: [debug]}\n"
                                     "  debug: {image: d, profiles: [debug]}\n"})
    with pytest.raises(ComposeFileError, match="not enabled by the active profiles"):
        load(tmp_path)


def test_env_file_forms_and_environment_precedence(tmp_path: Path) -> None:
    write(tmp_path, {"a.env": "A=from-file\nB=file\n", "compose.yaml": (
        "services:\n  s:\n    image: x\n    env_file: [a.env, {path: missing.env, required: false}]\n"
        "    environment: {B: own}\n")})
    svc = load(tmp_path).services["s"]
    assert svc["environment"] == {"A": "from-file", "B": "own"} and "env_file" not in svc
    write(tmp_path, {"compose.yaml": "services:\n  s: {image: x, env_file: gone.env}\n"})
    with pytest.raises(ComposeFileError, match=r"env file gone\.env not found"):
        load(tmp_path)


def test_stdin_file(tmp_path: Path) -> None:
    project = load_project(Options(files=("-",), cwd=tmp_path, environ={},
                                   stdin_text=lambda: "services: {a: {image: x}}\n"), warn=lambda m: None)
    assert project.services["a"]["image"] == "x" and project.working_dir == tmp_path


@pytest.mark.parametrize(("text", "expected"), [
    ("services:\n  web:\n    image: x\n    ports:\n      - {target: [1]}\n",
     "compose.yaml:5: services.web.ports[0]"),
    ("services:\n  web:\n    image: x\n    bogus: 1\n",
     "compose.yaml:4: services.web.bogus: additional property 'bogus' is not allowed"),
    ("services:\n  web:\n    image: x\n    environment: 3\n",
     "compose.yaml:4: services.web.environment: must be a list or a mapping"),
    ("services:\n  web:\n    image: [x]\n", "compose.yaml:3: services.web.image: must be a string, not a list"),
    ("services:\n  web:\n    depends_on: {db: {condition: whenever}}\n  db: {image: x}\n",
     "compose.yaml:3: services.web.depends_on.db.condition: must be one of service_started"),
    ("services:\n  web:\n    image: x\n    ports: ['80:80:80:80']\n",
     "compose.yaml:4: services.web.ports[0]: invalid port '80:80:80:80'"),
    ("services:\n  web:\n    image: x\n    restart: sometimes\n",
     "compose.yaml:4: services.web.restart: invalid restart policy 'sometimes'"),
    ("services:\n  web:\n    image: ${TAG:?set TAG}\n",
     "compose.yaml:3: services.web.image: required variable TAG is missing a value: set TAG"),
    ("services:\n  web:\n    image: x\n  web:\n    image: y\n", "compose.yaml:4: a key is given twice"),
    ("services:\n  web:\n    image: x\n     bad: indent\n", "compose.yaml:4:"),
    ("services:\n  web:\n    image: x\n    volumes: [data:/d]\n",
     "compose.yaml:4: services.web.volumes: service 'web' refers to undefined volume 'data'"),
    ("services:\n  web:\n    image: x\n    healthcheck: {interval: soon}\n",
     "compose.yaml:4: services.web.healthcheck: invalid duration 'soon'"),
    ("- just\n- a list\n", "compose.yaml:1: the top level must be a mapping"),
    ("x-ok: 1\nservices:\n  web:\n    image: x\n    x-also-ok: [1]\nvolumes:\n  v:\n    drivr: local\n",
     "compose.yaml:8: volumes.v.drivr: additional property 'drivr' is not allowed"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path, {"compose.yaml": text})
    with pytest.raises(UsageError) as info:
        load(tmp_path)
    assert str(info.value).startswith(expected) or info.value.message.startswith(expected), info.value.message
    assert info.value.exit_code == 1


def test_alias_bombs_are_refused_plainly(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi"))
    write(tmp_path, {"compose.yaml": "x-bomb:\n" + "".join("  " + line + "\n" for line in bomb.splitlines())})
    with pytest.raises(ComposeFileError, match="expands to more than"):
        load(tmp_path)


@pytest.mark.slow
def test_deep_nesting_is_refused_plainly(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "x-deep: " + "[" * 1200 + "]" * 1200 + "\n"})
    with pytest.raises(ComposeFileError, match="nested too deeply"):
        load(tmp_path)


def test_a_later_file_can_reset_or_replace_a_whole_service(tmp_path: Path) -> None:
    write(tmp_path, {
        "compose.yaml": "services:\n  a: {image: x, ports: ['1:1']}\n  b: {image: y}\n",
        "o.yaml": "services:\n  a: !override {image: z}\n  b: !reset {}\n",
    })
    project = load(tmp_path, "compose.yaml", "o.yaml")
    assert sorted(project.services) == ["a"] and "ports" not in project.services["a"]
    assert project.services["a"]["image"] == "z"


def test_a_bad_project_name_in_the_file_is_a_compose_error(tmp_path: Path) -> None:
    """Found by the mutation test: `name: we:app` is refused as a compose error, exit 1."""
    (tmp_path / "compose.yaml").write_text("name: we:app\nservices:\n  a: {image: x}\n")
    with pytest.raises(ComposeFileError, match="invalid project name 'we:app'") as info:
        load_project(Options(cwd=tmp_path, environ={}), warn=lambda m: None)
    assert info.value.exit_code == 1


def test_a_leading_zero_is_octal_as_docker_compose_reads_it() -> None:
    from layerbuild.compose.yamlsrc import load

    data, _ = load("a: 0440\nb: 0o440\nc: 440\nd: '0440'\ne: 0\n", "compose.yaml")
    assert data == {"a": 0o440, "b": 0o440, "c": 440, "d": "0440", "e": 0}


def test_config_prints_secrets_and_configs_as_docker_compose(tmp_path: Path) -> None:
    """compose-go's defaults and marshalling: a secret's target is /run/secrets/<source> unless given
    (a config gets none), and modes are octal strings in YAML and JSON; the output loads back the same."""
    from layerbuild.compose.render import to_json, to_yaml

    write(tmp_path, {"s.txt": "x\n", "compose.yaml": """\
name: refs
services:
  app:
    image: busybox
    secrets:
      - db
      - {source: tok, target: api, uid: "7", gid: "8", mode: 0400}
    configs:
      - conf
      - {source: conf, target: /etc/x, mode: 0440}
      - {source: conf, target: /etc/y, mode: "644"}
secrets:
  db: {file: ./s.txt}
  tok: {environment: TOK}
configs:
  conf: {file: ./s.txt}
"""})
    model = load(tmp_path).to_dict()
    app = model["services"]["app"]
    assert app["secrets"] == [{"source": "db", "target": "/run/secrets/db"},
                              {"source": "tok", "target": "api", "uid": "7", "gid": "8", "mode": "0400"}]
    assert app["configs"] == [{"source": "conf"}, {"source": "conf", "target": "/etc/x", "mode": "0440"},
                              {"source": "conf", "target": "/etc/y", "mode": "0644"}]
    import json

    assert json.loads(to_json(model))["services"]["app"]["secrets"][1]["mode"] == "0400"
    text = to_yaml(model)
    assert '        mode: "0400"\n' in text
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "compose.yaml").write_text(text)
    assert load(tmp_path / "again").to_dict() == model
