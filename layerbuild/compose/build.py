"""`compose build`: every service with `build:` built through `layerbuild.build()` into one store.

Services whose builds would share steps go in one lane and build one after the other, so a common
stage is built once and hits the cache afterwards: the same Dockerfile in the same context, or
Dockerfiles with a stage that opens the same way (the same base and the same steps up to its first
RUN; in the same context when a COPY or ADD comes first). Lanes run in parallel (the store is safe for
concurrent builds). A service whose `additional_contexts` names `service:OTHER` builds after
OTHER, from OTHER's image.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.api.build import build
from layerbuild.compose.model import Project
from layerbuild.errors import BuildError, ComposeFileError, LayerbuildError

if TYPE_CHECKING:
    from layerbuild.solve.report import BuildEvent, BuildResult

# Build keys read from the model but not applied yet: a warning names each one a service sets.
IGNORED = ("labels", "platforms", "shm_size", "extra_hosts", "isolation", "pull",
           "privileged", "ulimits", "entitlements", "ssh")


@dataclass(frozen=True)
class ServiceBuild:
    """One service's build, as `layerbuild.build()` takes it."""

    service: str
    context: Path
    dockerfile: Path | None
    inline: str | None
    tags: tuple[str, ...]
    build_args: Mapping[str, str]
    target: str | None
    network: str
    secrets: Mapping[str, str]
    contexts: Mapping[str, str]
    after: tuple[str, ...]
    # `build.cache_from` / `cache_to`: as `build --cache-from/--cache-to` takes them (a registry
    # reference, or `type=registry|local|inline,...`), docker compose's meaning.
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()

    @property
    def lane_key(self) -> tuple[str, str]:
        """Builds of one Dockerfile in one context share stages: they go in one lane."""
        source = self.inline if self.inline is not None else str(self.context / (self.dockerfile or "Dockerfile"))
        return (str(self.context), source)


def plan(project: Project, services: Sequence[str] = (), build_args: Mapping[str, str] | None = None,
         warn: Callable[[str], None] | None = None) -> list[ServiceBuild]:
    """The builds of the named services (all with `build:` if none), in the project's order."""
    for name in services:
        if name not in project.services:
            raise ComposeFileError(f"no such service: {name}", hint=f"the project has {', '.join(project.service_names())}")
    names = list(services) or project.service_names()
    out = []
    for name in names:
        spec = project.services[name].get("build")
        if spec is None:
            continue
        if "://" in spec["context"] or spec["context"].endswith(".git"):
            raise ComposeFileError(f"service {name!r}: remote build contexts are not supported yet",
                             hint="check the repository out and name the directory as context")
        for key in IGNORED:
            if spec.get(key) and warn is not None:
                warn(f"service {name!r}: build.{key} is not applied yet")
        args = {**spec.get("args", {}), **(build_args or {})}
        network = spec.get("network", "default")
        if network not in ("default", "none", "host"):
            raise ComposeFileError(f"service {name!r}: build.network {network!r} is not supported",
                             hint="use default, none or host")
        secrets = {}
        for ref in spec.get("secrets", []):
            top = project.secrets[ref["source"]]
            if "file" in top:
                secrets[ref.get("target") or ref["source"]] = top["file"]
            elif "environment" in top:
                raise ComposeFileError(f"service {name!r}: build secret {ref['source']!r} from the environment "
                                 "is not supported yet", hint="give it as file:")
        contexts, after = {}, []
        for cname, where in spec.get("additional_contexts", {}).items():
            if where.startswith("service:"):
                other = where.removeprefix("service:")
                if other not in project.services:
                    raise ComposeFileError(f"service {name!r}: additional context {cname!r} names unknown service {other!r}")
                contexts[cname] = f"docker-image://{project.image_of(other)}"
                after.append(other)
            else:
                contexts[cname] = where
        tags = (project.image_of(name), *spec.get("tags", ()))
        out.append(ServiceBuild(
            service=name, context=Path(spec["context"]),
            dockerfile=Path(spec["dockerfile"]) if "dockerfile" in spec and "dockerfile_inline" not in spec else None,
            inline=spec.get("dockerfile_inline"), tags=tuple(dict.fromkeys(tags)), build_args=args,
            target=spec.get("target"), network=network, secrets=secrets, contexts=contexts, after=tuple(after),
            cache_from=tuple(_relative_cache(c, project) for c in spec.get("cache_from", ())),
            cache_to=tuple(_relative_cache(c, project) for c in spec.get("cache_to", ())),
        ))
    wanted = {b.service for b in out}
    for b in out:
        for dep in b.after:
            if dep not in wanted:
                raise ComposeFileError(f"service {b.service!r} builds from service {dep!r}, which is not being built",
                                 hint=f"build both: compose build {dep} {b.service}")
    return out


def _relative_cache(spec: str, project: Project) -> str:
    """A cache spec with a local directory (`src=`/`dest=`) relative to the project directory, as
    docker compose resolves it; anything else as written."""
    if "type=local" not in spec:
        return spec
    parts = []
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        if eq and key.strip() in ("src", "dest") and value and not os.path.isabs(value):
            part = f"{key}={os.path.join(project.working_dir, value)}"
        parts.append(part)
    return ",".join(parts)


def lanes(builds: Sequence[ServiceBuild]) -> list[list[ServiceBuild]]:
    """Builds grouped so that those that would share steps run one after the other, in the order given."""
    parent = list(range(len(builds)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[Any, int] = {}
    for i, b in enumerate(builds):
        for key in (b.lane_key, *stage_openings(b)):
            if key in owner:
                parent[find(i)] = find(owner[key])
            else:
                owner[key] = i
    groups: dict[int, list[ServiceBuild]] = {}
    for i, b in enumerate(builds):
        groups.setdefault(find(i), []).append(b)
    return list(groups.values())


def stage_openings(b: ServiceBuild) -> list[tuple[str, ...]]:
    """For each stage of the build's Dockerfile, its base and steps up to its first RUN: two builds
    whose stages open alike would run that RUN with the same cache key. When a COPY or ADD comes
    before the RUN, the build's context is part of the opening (another context, other files). An
    unreadable Dockerfile has none (its build reports the error)."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.parser import parse

    try:
        text = b.inline if b.inline is not None else (b.context / (b.dockerfile or "Dockerfile")).read_text()
        instructions = parse(text).instructions
    except (OSError, UnicodeDecodeError, LayerbuildError):
        return []
    prelude = tuple(i.original for i in instructions if i.cmd == "arg")  # (approximately) the global ARGs
    stages: list[list[Any]] = []
    for ins in instructions:
        if ins.cmd == "from":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
    out: list[tuple[str, ...]] = []
    for stage in stages:
        steps: list[str] = ["FROM " + (stage[0].value[0] if stage[0].value else ""), *prelude]
        reads_context = False
        for ins in stage[1:]:
            steps.append(ins.original)
            reads_context = reads_context or ins.cmd in ("copy", "add")
            if ins.cmd == "run":
                out.append(("CONTEXT", str(b.context), *steps) if reads_context else tuple(steps))
                break
    return out


def build_services(builds: Sequence[ServiceBuild], *, root: str | os.PathLike[str] | None = None,
                   no_cache: bool = False, jobs: int = 0,
                   on_event: Callable[[str, BuildEvent], None] | None = None) -> dict[str, BuildResult]:
    """Run the builds (lanes in parallel, `service:` contexts after their service); returns each
    service's report. A failed build stops the lanes that have not started and raises BuildError."""
    results: dict[str, BuildResult] = {}
    done: dict[str, threading.Event] = {b.service: threading.Event() for b in builds}
    failed: list[tuple[str, BaseException]] = []
    lock = threading.Lock()

    def one(b: ServiceBuild) -> None:
        for dep in b.after:
            done[dep].wait()
        if failed:
            return
        events = (lambda event, name=b.service: on_event(name, event)) if on_event else None
        try:
            with tempfile.TemporaryDirectory(prefix="layerbuild-compose-") as scratch:
                dockerfile: Path | None = b.context / b.dockerfile if b.dockerfile is not None else None
                if b.inline is not None:
                    dockerfile = Path(scratch) / "Dockerfile"
                    dockerfile.write_text(b.inline, encoding="utf-8")
                result = build(b.context, dockerfile=dockerfile, tags=b.tags, build_args=dict(b.build_args),
                               target=b.target, no_cache=no_cache, on_event=events, root=root, jobs=jobs,
                               network=b.network, secrets=dict(b.secrets) or None,
                               build_contexts=dict(b.contexts) or None,
                               cache_from=b.cache_from, cache_to=b.cache_to)
            with lock:
                results[b.service] = result
        except BaseException as exc:
            with lock:
                failed.append((b.service, exc))
        finally:
            done[b.service].set()

    def lane(items: list[ServiceBuild]) -> None:
        for b in items:
            one(b)

    groups = lanes(builds)
    workers = max(1, min(len(groups), jobs or (os.cpu_count() or 1)))
    # lanes waiting on another lane's service must not starve it of a worker: one thread per lane
    workers = len(groups) if any(b.after for b in builds) else workers
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="compose-build") as pool:
        list(pool.map(lane, groups))
    if failed:
        service, exc = failed[0]
        if isinstance(exc, LayerbuildError):
            exc.message = f"service {service!r}: {exc.message}"
            raise exc
        if isinstance(exc, Exception):
            raise BuildError(f"service {service!r}: {exc}") from exc
        raise exc
    return results


def summary(results: Mapping[str, Any]) -> dict[str, Any]:
    return {name: r.to_json() for name, r in results.items()}
