"""What a build is asked to do: the inputs and options of one `layerbuild build` (light to import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.platforms import host_platform_args


@dataclass(frozen=True)
class OutputSpec:
    """`--output type=local|tar,dest=PATH[,devices=true]` (devices: write device nodes, local only)."""

    type: str
    dest: str
    devices: bool = False


@dataclass(frozen=True)
class NamedContext:
    """`--build-context NAME=VALUE`: a local directory (`kind` "local", `value` its absolute path) or
    an image of the store (`kind` "image", `value` its reference, `docker-image://` taken off)."""

    kind: str
    value: str

    @property
    def image(self) -> str | None:
        """The image reference, or None for a local directory (what the planner is told)."""
        return self.value if self.kind == "image" else None


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path | None = None
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    jobs: int = 0
    network: str = "default"
    secrets: Mapping[str, Path] = field(default_factory=dict)
    outputs: tuple[OutputSpec, ...] = ()
    source_date_epoch: int | None = None
    fingerprint: str | None = None  # of the inputs, if the caller already took it (fastpath.fingerprint)
    allow: frozenset[str] = frozenset()  # entitlements (`--allow security.insecure`)
    # Resource limits of every RUN step (cgroups.Limits' fields); like BuildKit, not part of any key.
    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    # Named contexts by the name they answer to (reference.context_name), and the ssh agents
    # `RUN --mount=type=ssh` may reach by id: an agent socket, or private key files (never keyed).
    contexts: Mapping[str, NamedContext] = field(default_factory=dict)
    ssh: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    # `--pull`: ask the registry for every base image and image source named by a tag, and pull what
    # changed; `--platform`: the platform built for (normalised OS/ARCH[/VARIANT]; None: this machine's).
    pull: bool = False
    platform: str | None = None

    def local_contexts(self) -> dict[str, Path]:
        """The named contexts that are directories, by name."""
        return {name: Path(c.value) for name, c in sorted(self.contexts.items()) if c.kind == "local"}

    def fastpath_options(self) -> dict[str, object] | None:
        """What, besides files, decides the build's outputs; None when the fast path may not answer."""
        if self.no_cache or self.outputs or self.secrets or self.no_cache_filter or self.pull:
            return None
        return {"context": str(self.context.resolve()), "args": dict(self.build_args), "target": self.target,
                "network": self.network, "sde": self.source_date_epoch, "platform": host_platform_args(),
                **({"allow": sorted(self.allow)} if self.allow else {}),
                **({"target_platform": self.platform} if self.platform else {}),
                **({"contexts": {n: [c.kind, c.value] for n, c in sorted(self.contexts.items())}}
                   if self.contexts else {})}

    def dockerfile_path(self) -> Path:
        return self.dockerfile or self.context / "Dockerfile"
