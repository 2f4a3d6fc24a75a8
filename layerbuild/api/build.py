"""`layerbuild.build()`: the library's build entry point; the CLI's `build` verb is a skin over it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from layerbuild.solve import BuildEvent, BuildResult
from layerbuild.store import Store, resolve_root
from layerbuild.worker.build import run_build
from layerbuild.worker.request import BuildRequest, OutputSpec


def build(
    context: str | os.PathLike[str],
    dockerfile: str | os.PathLike[str] | None = None,
    tags: Iterable[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    no_cache: bool = False,
    on_event: Callable[[BuildEvent], None] | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    no_cache_filter: Iterable[str] = (),
    jobs: int = 0,
    outputs: Iterable[tuple[str, str]] = (),
    source_date_epoch: int | None = None,
) -> BuildResult:
    """Build the Dockerfile in `context` (or `dockerfile`) into the store at `root`.

    Returns the report as typed values; `on_event` receives every progress event. Raises a
    LayerbuildError (DockerfileError for a bad Dockerfile, BuildError when a step fails).
    """
    request = BuildRequest(
        context=Path(context),
        dockerfile=Path(dockerfile) if dockerfile is not None else None,
        tags=tuple(tags),
        build_args=dict(build_args or {}),
        target=target,
        no_cache=no_cache,
        no_cache_filter=frozenset(no_cache_filter),
        jobs=jobs,
        outputs=tuple(OutputSpec(kind, dest) for kind, dest in outputs),
        source_date_epoch=source_date_epoch,
    )
    with Store.open(resolve_root(str(root) if root is not None else None)) as store:
        return run_build(request, store, on_event=on_event)
