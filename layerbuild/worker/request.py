"""What a build is asked to do: the inputs and options of one `layerbuild build` (light to import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.platforms import host_platform_args
from layerbuild.worker.cachespec import CacheSpec

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.worker.fastpath import Scan

# docker's words when standard input is asked for twice, or holds a Dockerfile while -f names another
# (docker/cli cli/command/image/build.go, docker/buildx build/opt.go)
BOTH_STDIN = "invalid argument: can't use stdin for both build context and dockerfile"
BOTH_STDIN_HINT = ("give the context as a directory (`build -f - DIR`), or put the Dockerfile inside the "
                   "archive piped to `build -`")
AMBIGUOUS = "ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles"


@dataclass(frozen=True)
class OutputSpec:
    """`--output type=local|tar,dest=PATH[,devices=true]` (devices: write device nodes, local only);
    `type=registry|image[,name=REF][,push=true]`: the image pushed to `names` (default: the tags),
    with `oci` media types or docker's, and `compression` gzip or zstd."""

    type: str
    dest: str
    devices: bool = False
    names: tuple[str, ...] = ()
    push: bool = False
    oci: bool = False
    compression: str = "gzip"


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
class StreamOrigin:
    """A build whose Dockerfile or context came as a stream (`build -f -`, `build -`), made into files
    under a scratch directory of the store (worker.streamctx).

    `key` names the build for its history (the miss explanations compare with the last build of the
    same key and target, as with the same Dockerfile path); `dockerfile_name` is how messages name
    the Dockerfile; `scratch_context` says the context directory is scratch (an unpacked archive,
    or empty): its stats are not worth remembering and no .dockerignore applies to it, as BuildKit
    applies none to an archive context; `note` is the hint for a source not found in it."""

    key: str
    dockerfile_name: str
    scratch_context: bool = False
    note: str | None = None


@dataclass(frozen=True)
class BuildRequest:
    """One build as the API and the CLI ask for it: the context, the Dockerfile, and every option."""

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
    fingerprint: Scan | None = None  # of the inputs, if the caller already took it (fastpath.scan)
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
    # Set on the final image's config after the Dockerfile's LABELs (`build --label`), as BuildKit does.
    labels: Mapping[str, str] = field(default_factory=dict)
    # `build --add-host` (name, address) pairs for every RUN step's /etc/hosts; part of their ops.
    extra_hosts: tuple[tuple[str, str], ...] = ()
    stream: StreamOrigin | None = None
    # `--cache-from` sources, asked in order at a local miss; `--cache-to` destinations, merged into.
    cache_from: tuple[CacheSpec, ...] = ()
    cache_to: tuple[CacheSpec, ...] = ()
    # `build --dry-run`: look every step up, run none, store nothing (no image, history or stat cache).
    dry_run: bool = False

    def fastpath_options(self) -> dict[str, object] | None:
        """What, besides files, decides the build's outputs; None when the fast path may not answer."""
        if self.dry_run or self.no_cache or self.outputs or self.secrets or self.no_cache_filter or self.pull or self.cache_to \
                or self.cache_from:
            return None
        if self.stream is not None and self.stream.scratch_context:
            return None  # a context unpacked for this build: no stat of it can vouch for the next one
        return {"context": str(self.context.resolve()), "args": dict(self.build_args), "target": self.target,
                "network": self.network, "sde": self.source_date_epoch, "platform": host_platform_args(),
                **({"allow": sorted(self.allow)} if self.allow else {}),
                **({"target_platform": self.platform} if self.platform else {}),
                **({"contexts": {n: [c.kind, c.value] for n, c in sorted(self.contexts.items())}}
                   if self.contexts else {}),
                **({"labels": dict(self.labels)} if self.labels else {}),
                **({"hosts": [list(pair) for pair in self.extra_hosts]} if self.extra_hosts else {})}

    def dockerfile_path(self) -> Path:
        return self.dockerfile or self.context / "Dockerfile"
