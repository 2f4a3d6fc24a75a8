"""A compose project loaded as docker compose loads it: files found (or given), `.env` read, each
file interpolated and checked against the schema, `include` and `extends` resolved, services put
in long syntax, the files merged, profiles applied and the model completed (names, networks, paths).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbuild.compose import syntax
from layerbuild.compose.dotenv import read_env_file
from layerbuild.compose.interpolate import InterpolationError, interpolate
from layerbuild.compose.merge import merge_resources, merge_service, merge_value, strip_tags
from layerbuild.compose.model import Project
from layerbuild.compose.resolve import (
    active_services,
    check_cycles,
    complete,
    implicit_dependencies,
    shown_name,
)
from layerbuild.compose.schema import validate
from layerbuild.compose.yamlsrc import Lines, Override, Reset, key_text, load
from layerbuild.errors import ComposeFileError

FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_NAMES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")
RESOURCES = ("networks", "volumes", "secrets", "configs")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
Warn = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """What `compose` is told on its command line and by its environment."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    # services named on the command line: enabled whatever their profiles, as docker compose does
    services: tuple[str, ...] = ()
    cwd: Path = field(default_factory=Path.cwd)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stdin_text: Callable[[], str] = field(default=lambda: sys.stdin.read())


def normalize_project_name(text: str) -> str:
    """A directory's name as a project name, as docker compose makes it (lowercase, [a-z0-9_-])."""
    name = re.sub(r"[^a-z0-9_-]", "", text.lower())
    return re.sub(r"^[^a-z0-9]+", "", name)


def check_project_name(text: str, where: str) -> str:
    if not _PROJECT_NAME.match(text):
        raise ComposeFileError(f"invalid project name {text!r} ({where})",
                         hint="a project name has only lowercase letters, digits, '-' and '_', "
                              "and starts with a letter or digit")
    return text


def find_files(options: Options) -> list[Path]:
    """The files of the project: `-f`, else COMPOSE_FILE, else compose.yaml (and its override)
    in the working directory or the nearest directory above it that has one."""
    given = list(options.files)
    if not given and options.environ.get("COMPOSE_FILE"):
        sep = options.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
        given = [f for f in options.environ["COMPOSE_FILE"].split(sep) if f]
    if given:
        return [Path("-") if f == "-" else (options.cwd / f) for f in given]
    directory = options.cwd
    while True:
        found = [directory / n for n in FILE_NAMES if (directory / n).is_file()]
        if found:
            overrides = [directory / n for n in OVERRIDE_NAMES if (directory / n).is_file()]
            return found[:1] + overrides[:1]
        if directory.parent == directory:
            raise ComposeFileError("no configuration file provided: not found",
                             hint=f"write a {FILE_NAMES[0]} here (or above), or name one with -f FILE")
        directory = directory.parent


class _Loader:
    def __init__(self, options: Options, warn: Warn) -> None:
        self.options = options
        self.warn = warn
        self.warned: set[str] = set()

    def _warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            self.warn(message)

    # -- one file ---------------------------------------------------------------------------------

    def read(self, path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], Lines]:
        """One file parsed, interpolated and checked against the schema."""
        shown = "-" if str(path) == "-" else shown_name(path, self.options.cwd)
        if str(path) == "-":
            text = self.options.stdin_text()
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ComposeFileError(f"compose file {shown} not found", hint="check the path given with -f") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ComposeFileError(f"cannot read compose file {shown}: {exc}") from None
        data, lines = load(text, shown)
        if "version" in data:
            self._warn_once(f"{shown}: the attribute `version` is obsolete, it will be ignored, "
                            "please remove it to avoid potential confusion")
        data = self._interpolate(data, (), env, lines)
        validate(strip_tags(data), lines)
        return data, lines

    def _interpolate(self, value: Any, path: tuple[str | int, ...], env: Mapping[str, str], lines: Lines) -> Any:
        if isinstance(value, str):
            try:
                return interpolate(value, env, self._warn_once)
            except InterpolationError as exc:
                raise ComposeFileError(str(exc), filename=lines.filename, line=lines.line(path),
                                       key=key_text(path)) from None
        if isinstance(value, dict):
            return {k: self._interpolate(v, (*path, k), env, lines) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, (*path, i), env, lines) for i, v in enumerate(value)]
        if isinstance(value, Override):
            return Override(self._interpolate(value.value, path, env, lines))
        return value

    # -- services -----------------------------------------------------------------------------------

    def service(self, raw: dict[str, Any], name: str, base: Path, env: Mapping[str, str], lines: Lines,
                services: dict[str, Any], file: Path, stack: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """One service in long syntax, with `extends` resolved (`stack` catches cycles)."""
        where = (str(file), name)
        if where in stack:
            chain = " -> ".join(n for _, n in (*stack, where))
            raise ComposeFileError(f"circular reference with extends: {chain}", filename=lines.filename,
                                   line=lines.line(("services", name, "extends")), key=f"services.{name}.extends")
        own = self.normalize(raw, name, base, env, lines)
        ext = raw.get("extends")
        if ext is None:
            return own
        own.pop("extends", None)
        ext = {"service": ext} if isinstance(ext, str) else ext
        key = f"services.{name}.extends"
        if "file" in ext:
            other = Path(syntax.resolve_path(str(ext["file"]), file.parent if str(file) != "-" else self.options.cwd))
            data, other_lines = self.read(other, env)
            other_services = _unwrap(data.get("services")) or {}
            other_base = other.parent
        else:
            other, other_lines, other_services, other_base = file, lines, services, base
        target = ext["service"]
        if target not in other_services:
            raise ComposeFileError(f"cannot extend service {target!r}: no such service in "
                                   f"{other_lines.filename}", filename=lines.filename,
                                   line=lines.line(("services", name, "extends")), key=key)
        parent = self.service(_unwrap(other_services[target]) or {}, target, other_base, env, other_lines, other_services,
                              other, (*stack, where))
        return merge_service(parent, own)

    def normalize(self, raw: dict[str, Any], name: str, base: Path, env: Mapping[str, str],
                  lines: Lines) -> dict[str, Any]:
        """A service's values in long syntax; paths absolute against `base`."""
        lookup = env.get
        out: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            path: tuple[str | int, ...] = ("services", name, key)
            wrap = None
            if isinstance(value, Override):
                wrap, value = Override, value.value
            if isinstance(value, Reset) or (value is None and key not in ("command", "entrypoint")):
                out[key] = value
                continue
            try:
                value = self._normal_value(key, value, base, lookup, path, lines)
            except syntax.SyntaxProblem as exc:
                raise ComposeFileError(str(exc), filename=lines.filename, line=lines.line(path),
                                       key=key_text(path)) from None
            out[key] = Override(value) if wrap else value
        return out

    def _normal_value(self, key: str, value: Any, base: Path, lookup: Callable[[str], str | None],
                      path: tuple[str | int, ...], lines: Lines) -> Any:
        if key == "build":
            return syntax.build(value, base, lookup)
        if key in ("command", "entrypoint"):
            return syntax.command(value)
        if key == "environment":
            return syntax.key_values(value, lookup)
        if key in ("labels", "annotations", "sysctls"):
            return syntax.key_values(value)
        if key == "extra_hosts":
            return syntax.key_values(value, sep="=") if isinstance(value, dict) else {
                h.split("=", 1)[0] if "=" in h else h.split(":", 1)[0]:
                h.split("=", 1)[1] if "=" in h else h.split(":", 1)[1] for h in value}
        if key == "ports":
            out = []
            for i, item in enumerate(value):
                try:
                    out.extend(syntax.ports(item))
                except syntax.SyntaxProblem as exc:
                    raise ComposeFileError(str(exc), filename=lines.filename, line=lines.line((*path, i)),
                                           key=key_text((*path, i))) from None
            return out
        if key == "expose":
            return list(dict.fromkeys(syntax.scalar_text(v) for v in value))
        if key == "volumes":
            vols = []
            for i, item in enumerate(value):
                try:
                    vols.append(syntax.volume(item, base))
                except syntax.SyntaxProblem as exc:
                    raise ComposeFileError(str(exc), filename=lines.filename, line=lines.line((*path, i)),
                                           key=key_text((*path, i))) from None
            return vols
        if key in ("secrets", "configs"):
            return [syntax.service_ref(v) for v in value]
        if key == "depends_on":
            return syntax.depends_on(value)
        if key == "networks":
            return syntax.networks(value)
        if key == "healthcheck":
            return syntax.healthcheck(value)
        if key == "restart":
            return syntax.restart(value)
        if key in ("tmpfs", "dns", "dns_search"):
            return [value] if isinstance(value, str) else list(value)
        if key == "env_file":
            items = [value] if isinstance(value, str) else value
            return [{"path": syntax.resolve_path(i if isinstance(i, str) else i["path"], base),
                     "required": True if isinstance(i, str) else syntax._truth(i.get("required", True))}
                    for i in items]
        if key == "stop_grace_period":
            return syntax.duration(value)
        return value

    # -- files, include, the project ----------------------------------------------------------------

    def model(self, files: list[Path], project_dir: Path, env: Mapping[str, str],
              seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, tuple[Lines, tuple[str, ...]]]]:
        """The merged model of `files` (before profiles and completion) and where each service is."""
        merged: dict[str, Any] = {"services": {}, **{r: {} for r in RESOURCES}}
        origin: dict[str, tuple[Lines, tuple[str, ...]]] = {}
        for file in files:
            data, lines = self.read(file, env)
            here: dict[str, Any] = {"services": {}, **{r: {} for r in RESOURCES}}
            here_origin: dict[str, tuple[Lines, tuple[str, ...]]] = {}
            for i, entry in enumerate(data.get("include") or []):
                self._include(entry, file, env, lines, i, here, here_origin, seen)
            services = _unwrap(data.get("services")) or {}
            for name, raw in services.items():
                if isinstance(raw, Reset):  # `web: !reset {}` in a later file removes the service
                    here["services"][name] = raw
                    continue
                replace = isinstance(raw, Override)
                raw = _unwrap(raw)
                if name in here["services"]:
                    raise ComposeFileError(f"service {name!r} is also defined by an included file",
                                           filename=lines.filename, line=lines.line(("services", name)),
                                           key=f"services.{name}", hint="rename one of them")
                svc = self.service(raw or {}, name, project_dir, env, lines, services, file)
                here["services"][name] = Override(svc) if replace else svc
                here_origin[name] = (lines, ("services", name))
            for resource in RESOURCES:
                for rname, spec in (_unwrap(data.get(resource)) or {}).items():
                    here[resource][rname] = self._resource(resource, spec, project_dir)
            for key, value in data.items():
                if key.startswith("x-") or key == "name":
                    here[key] = value
            for name, svc in here["services"].items():
                old = merged["services"].get(name)
                if isinstance(svc, Reset):
                    merged["services"].pop(name, None)
                elif isinstance(svc, Override) or old is None:
                    merged["services"][name] = strip_tags(svc)
                else:
                    merged["services"][name] = merge_service(old, svc)
                if name in here_origin:
                    origin.setdefault(name, here_origin[name])
            for resource in RESOURCES:
                merged[resource] = merge_resources(merged[resource], here[resource])
            for key, value in here.items():
                if key.startswith("x-") and key in merged:
                    merged[key] = merge_value(merged[key], value)  # extensions merge like any mapping
                elif key.startswith("x-") or key == "name":
                    merged[key] = strip_tags(value)
        return merged, origin

    def _include(self, entry: Any, file: Path, env: Mapping[str, str], lines: Lines, index: int,
                 here: dict[str, Any], origin: dict[str, Any], seen: tuple[Path, ...]) -> None:
        entry = {"path": entry} if isinstance(entry, str) else entry
        parent = file.parent if str(file) != "-" else self.options.cwd
        paths = [entry["path"]] if isinstance(entry["path"], str) else entry["path"]
        files = [Path(syntax.resolve_path(p, parent)) for p in paths]
        key = f"include[{index}]"
        if files[0] in seen or files[0] == file:
            chain = " -> ".join(str(f) for f in (*seen, file, files[0]) if str(f) != "-")
            raise ComposeFileError(f"include cycle detected: {chain}", filename=lines.filename,
                                   line=lines.line(("include", index)), key=key)
        project_dir = Path(syntax.resolve_path(entry["project_directory"], parent)) if "project_directory" in entry \
            else files[0].parent
        env_files = entry.get("env_file")
        env_paths = ([env_files] if isinstance(env_files, str) else env_files) if env_files else []
        inc_env: dict[str, str] = {}
        lookup = {**env}
        candidates = [Path(syntax.resolve_path(p, parent)) for p in env_paths] or [project_dir / ".env"]
        for candidate in candidates:
            if candidate.is_file() or env_paths:
                inc_env.update(read_env_file(candidate, shown_name(candidate, self.options.cwd), lookup.get))
        inc_env.update(env)  # the environment wins over the included project's .env
        model, inc_origin = self.model(files, project_dir, inc_env, (*seen, file))
        for resource in ("services", *RESOURCES):
            for name, spec in model[resource].items():
                if name in here[resource] and here[resource][name] != spec:
                    raise ComposeFileError(f"{resource}.{name} from {shown_name(files[0], self.options.cwd)} "
                                           "conflicts with one imported before", filename=lines.filename,
                                           line=lines.line(("include", index)), key=key)
                here[resource][name] = spec
        origin.update(inc_origin)

    def _resource(self, kind: str, spec: Any, base: Path) -> Any:
        if spec is None or isinstance(spec, Reset):
            return spec if spec is not None else {}
        spec = dict(strip_tags(spec))
        if kind in ("secrets", "configs") and "file" in spec:
            spec["file"] = syntax.resolve_path(str(spec["file"]), base)
        if "labels" in spec:
            spec["labels"] = syntax.key_values(spec["labels"])
        return spec


def _unwrap(value: Any) -> Any:
    """A section given as `!override {...}` is that mapping; `!reset` is empty."""
    if isinstance(value, Override):
        return value.value
    return None if isinstance(value, Reset) else value


def load_project(options: Options, warn: Warn | None = None) -> Project:
    """The resolved project; ComposeFileError or UsageError (exit 2) when it cannot be loaded."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    loader = _Loader(options, warn)
    files = find_files(options)
    first = files[0]
    project_dir = options.cwd if str(first) == "-" else first.parent
    env = _environment(options, project_dir)
    model, origin = loader.model(files, project_dir, env)
    name = _project_name(options, env, model, project_dir)
    profiles = _profiles(options, env)
    services = active_services({n: implicit_dependencies(s) for n, s in model["services"].items()}, profiles, origin,
                       set(options.services))
    check_cycles(services, origin)
    return complete(name, project_dir, files, model, services, env, origin, options.cwd)


def _environment(options: Options, project_dir: Path) -> dict[str, str]:
    """The variables interpolation sees: `--env-file` (else the project's `.env`), then the environment."""
    env: dict[str, str] = {}
    environ = dict(options.environ)
    if options.env_files:
        paths = [options.cwd / p for p in options.env_files]
    else:
        paths = [p for p in (project_dir / ".env",) if p.is_file()]
    for path in paths:
        env.update(read_env_file(path, shown_name(path, options.cwd), lambda k: env.get(k, environ.get(k))))
    env.update(environ)
    return env


def _project_name(options: Options, env: Mapping[str, str], model: Mapping[str, Any], project_dir: Path) -> str:
    if options.project_name:
        return check_project_name(options.project_name, "-p")
    if env.get("COMPOSE_PROJECT_NAME"):
        return check_project_name(env["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME")
    if model.get("name"):
        return check_project_name(str(model["name"]), "the name: key")
    name = normalize_project_name(project_dir.name)
    if not name:
        raise ComposeFileError(f"cannot make a project name of the directory {project_dir.name!r}",
                         hint="give one with -p NAME or a top-level name: key")
    return name


def _profiles(options: Options, env: Mapping[str, str]) -> set[str]:
    if options.profiles:
        return {p for item in options.profiles for p in item.split(",") if p}
    return {p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
