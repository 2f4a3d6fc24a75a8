"""One build, start to end: parse, plan, solve with real ops, assemble and store the image, export."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from layerbuild import __version__
from layerbuild.digest import xxh3
from layerbuild.errors import DockerfileError, LayerbuildError, StoreError, UsageError
from layerbuild.image.config import HistoryEntry, ImageConfig, format_created
from layerbuild.image.store_io import ImageNotFoundError, StoredImage, find_tag, resolve_image, write_image
from layerbuild.parser import Dockerfile
from layerbuild.parser.limits import read_dockerfile
from layerbuild.plan import BaseImage, BuildPlan, Exec, plan_build
from layerbuild.plan.opmake import Network, network_mode
from layerbuild.platforms import host_arch
from layerbuild.runtime.limits import Limits
from layerbuild.solve import (
    BuildEvent,
    BuildResult,
    Executor,
    ImageRef,
    SolveOptions,
    Solver,
    State,
    StepReport,
    Summary,
)
from layerbuild.solve.cache import StoreCache
from layerbuild.solve.explain import StepRecord, history_from_json
from layerbuild.store import Store
from layerbuild.store.layout import Layout
from layerbuild.store.scratch import clean_temp
from layerbuild.worker import fastpath
from layerbuild.worker.executor import WorkerExecutor
from layerbuild.worker.meta import ConfigBuilder, created_by, empty_config
from layerbuild.worker.ops import BuildServices
from layerbuild.worker.request import BuildRequest, OutputSpec
from layerbuild.worker.rootfs import RootfsCache


def _read_dockerfile(request: BuildRequest, root: Path) -> tuple[Path, Dockerfile]:
    if not request.context.is_dir():
        raise UsageError(f"build context {str(request.context)!r} is not a directory")
    path = request.dockerfile or request.context / "Dockerfile"
    # A regular file only (a FIFO would block), read no further than the parser's size limit.
    if request.stream is not None:  # from a stream: named as the user knows it, not by its scratch path
        name = request.stream.dockerfile_name
        data = read_dockerfile(path, name)
    else:
        data = read_dockerfile(path)
        name = os.path.relpath(path) if not path.is_absolute() else str(path)
    return path, parsed(data, name, root)


def parsed(data: bytes, filename: str, root: Path) -> Dockerfile:
    """The Dockerfile parsed, or read back from the last parse of these exact bytes (no grammar load)."""
    from layerbuild.parser.ast import from_state, to_state

    key = xxh3(b"%s\0%s\0%s" % (__version__.encode(), filename.encode("utf-8", "surrogateescape"), data))
    cached = Layout(root).parsed / f"{key}.json"
    try:
        return from_state(json.loads(cached.read_text(encoding="utf-8", errors="surrogateescape")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from layerbuild.parser.core import parse

    df = parse(data, filename=filename, remember=True)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(to_state(df), ensure_ascii=False), encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, cached)
    except (OSError, ValueError):
        pass  # a cache, nothing more
    return df


def _base_image(ref: str, stored: StoredImage) -> BaseImage:
    cfg = stored.config.config
    env = tuple(tuple(e.split("=", 1)) if "=" in e else (e, "") for e in cfg.env)
    return BaseImage(
        ref=ref, identity=stored.id, env=env,  # type: ignore[arg-type]
        onbuild=cfg.on_build, workdir=cfg.working_dir, user=cfg.user, shell=cfg.shell or (),
    )  # fmt: skip


class Build:
    """The state of one build; `run()` does it."""

    def __init__(
        self,
        request: BuildRequest,
        store: Store,
        *,
        wrap_executor: Callable[[Executor], Executor] | None = None,
        on_event: Callable[[BuildEvent], None] | None = None,
    ) -> None:
        self.request = request
        self.store = store
        self.wrap_executor = wrap_executor
        self.warnings: list[str] = []  # what the exports left out, for the report
        self.warmed = 0  # sandbox helpers started ahead for RUN steps (_run)
        # Events come from every stage's thread (steps, RUN output): one lock serialises them.
        self.on_event = _serialised(on_event) if on_event is not None else None
        self.images: dict[str, StoredImage] = {}
        self.bases: dict[str, BaseImage] = {}
        self.arch = request.platform.split("/")[1] if request.platform else host_arch()
        self.pulled: set[tuple[str, str | None]] = set()  # what this build asked a registry for
        self._client: object | None = None
        self._cache_client: object | None = None

    # -- planning ----------------------------------------------------------------------------

    def _resolve(self, ref: str, platform: str | None) -> BaseImage:
        stored = self._hold(ref, platform)
        self.images[stored.id] = stored
        base = _base_image(ref, stored)
        self.bases[ref] = base
        return base

    def _pull(self, ref: str, platform: str | None, *, missing: bool) -> None:
        """Pull `ref` from its registry (for `platform`, else this machine's) into the store."""
        from layerbuild.platforms import parse_platform
        from layerbuild.reference import parse_reference
        from layerbuild.registry.client import RegistryClient
        from layerbuild.registry.pull import pull

        if (ref, platform) in self.pulled:
            return
        self.pulled.add((ref, platform))
        try:
            remote = parse_reference(ref)
        except UsageError:
            if missing:
                raise
            return  # an image id, or no image name at all: nothing to pull
        client = self._registry()
        assert isinstance(client, RegistryClient)
        result = pull(self.store, remote, client=client, platform=parse_platform(platform) if platform else None)
        if self.on_event is not None:
            what = "pulled" if result.updated else "up to date:"
            self.on_event(BuildEvent("build.pulled", message=f"{what} {remote} ({result.digest})"))

    def _find(self, ref: str, platform: str | None) -> StoredImage:
        """The store's image `ref` names, pulled first with --pull (a name with a tag), when the store
        lacks it, or when the stored one is for another platform than `platform` asks for."""
        from layerbuild.reference import split_digest_ref

        pinned = split_digest_ref(ref) is not None
        if self.request.pull and not pinned:
            self._pull(ref, platform, missing=False)
        try:
            stored = resolve_image(self.store, ref)
        except ImageNotFoundError as missing:
            if (ref, platform) in self.pulled:
                raise
            try:
                self._pull(ref, platform, missing=True)
            except LayerbuildError as exc:
                if isinstance(exc, UsageError) and not isinstance(exc, ImageNotFoundError):
                    raise missing from None  # no name a registry could have (an id, a stage's typo'd name)
                raise ImageNotFoundError(f"{missing.message}: not in the store, and the pull failed: {exc.message}",
                                         hint=exc.hint or missing.hint) from None
            return resolve_image(self.store, ref)
        if platform is not None and not _for_platform(stored, platform) and (ref, platform) not in self.pulled:
            self._pull(ref, platform, missing=False)
            stored = resolve_image(self.store, ref)
        return stored

    def _hold(self, ref: str, platform: str | None = None) -> StoredImage:
        """The image `ref` names, held by the build's lease from now on (prune keeps it and its layers).

        Leased after it is read: if a prune removed it in between (an untagged image named by
        digest, or a tag moved and pruned), its rows are gone and it is resolved once more."""
        for _ in range(3):
            stored = self._find(ref, platform)
            self.lease.add(stored.manifest_digest, stored.config_digest,
                           *(layer.digest for layer in stored.layers), *stored.config.diff_ids)
            if self.store.index.get_image(stored.manifest_digest) is not None and all(
                self.store.index.get_layer(layer.digest) is not None for layer in stored.layers
            ):
                return stored
        return resolve_image(self.store, ref)

    def base_layers(self, state: State) -> tuple[str, ...]:
        if state.base is None:
            return ()
        return self.images[state.base.identity].config.diff_ids

    # -- the build -----------------------------------------------------------------------------

    def _fast(self, started: float) -> tuple[BuildResult | None, fastpath.Scan | None]:
        """The last build's result if nothing it read has changed (see fastpath), and the fingerprint."""
        return fastpath.answer(self.request, self.store.root, started, self.on_event)

    def run(self) -> BuildResult:
        started = time.monotonic()
        fast, fp = self._fast(started)
        if fast is not None:
            return fast
        path, df = _read_dockerfile(self.request, self.store.root)
        # What killed builds left under tmp/ (scratch dirs, temp blobs) goes before this one adds its own.
        clean_temp(self.store)
        # Held from the moment the build decides to use something (a base, a cache hit) until its
        # image and cache records point at what it made; prune ends the lease of a killed build.
        self.lease = self.store.lease()
        try:
            return self._run(started, fp, path, df)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StoreError(f"no space left on device: {exc.filename or self.store.root}",
                             hint="free space on that filesystem; `layerbuild prune` frees what the store "
                                  "no longer needs") from exc
        finally:
            if self.warmed:  # sandbox helpers started for RUN steps that did not come (see _run)
                from layerbuild.runtime.sandbox import drop_step_helpers

                drop_step_helpers()
            with contextlib.suppress(StoreError):  # on a full disk, an expired lease does no harm
                self.lease.release()

    def _run(self, started: float, fp: fastpath.Scan | None, path: Path, df: Dockerfile) -> BuildResult:
        plan = plan_build(
            df, resolve_image=self._resolve, build_args=self.request.build_args, target=self.request.target,
            network=_network(self.request.network), source_date_epoch=self.request.source_date_epoch,
            contexts={name: named.image for name, named in self.request.contexts.items()},
            extra_hosts=self.request.extra_hosts,
            platform=self.request.platform,
        )
        _check_runnable(plan, df)
        from layerbuild.worker.runop import check_plan_entitled, entitlements

        allow = entitlements(self.request.allow, self.request.network)
        check_plan_entitled(plan, allow)  # before any step runs, as BuildKit does
        if self.on_event is not None:
            self.on_event(BuildEvent("build.planned", message=plan.render()))
        stream = self.request.stream
        history_id = xxh3((f"stream\0{stream.key}" if stream is not None else str(path.resolve())).encode())
        target_key = self.request.target or ""
        previous = self.store.index.get_history(history_id, target_key)
        self.plan = plan
        history = history_from_json(previous.steps) if previous is not None else None
        self.rootfs = RootfsCache(self.store)
        if not self.request.dry_run and any(isinstance(s.base, BaseImage) for s in plan.stages):
            self.rootfs.prestart()  # a stage on an image will look at its filesystem
        if previous is None and not self.request.dry_run:
            # No earlier build of this context: its RUN steps are likely to run, a stage's first
            # ones at once; their sandbox helpers start now, while the build reads its context.
            runs = sum(1 for stage in plan.stages if any(isinstance(step.op, Exec) for step in stage.steps))
            self.warmed = min(runs, os.cpu_count() or 1, 4)
            if self.warmed:
                from layerbuild.runtime.sandbox import warm_step_helpers

                warm_step_helpers(self.warmed)
        if (not self.request.dry_run and not _compiled_any(self.store.layout.seccomp)
                and any(isinstance(step.op, Exec) and step.op.security != "insecure"
                        for stage in plan.stages for step in stage.steps)):
            from layerbuild.worker.runop import prewarm_seccomp

            prewarm_seccomp(self.store.layout.seccomp)
        cache: StoreCache
        if self.request.cache_from:
            from layerbuild.worker.remotecache import LayeredCache, open_backend

            cache = LayeredCache(self.store, self.lease,
                                 [open_backend(spec, self._cache_registry, platform=self._platform())
                                  for spec in self.request.cache_from],
                                 warn=self.warnings.append, dry_run=self.request.dry_run)
        else:
            cache = StoreCache(self.store, self.lease)
        services = BuildServices(self.store, self.rootfs, self.base_layers, self.request.source_date_epoch,
                                 limits=_limits(self.request), lease=self.lease)
        restore = getattr(cache, "restore_mount", None)
        if restore is not None:
            services.restore_mount = restore
        from layerbuild.context.tree import BuildContext

        if stream is not None and stream.scratch_context:  # unpacked for this build: no stats, no ignore file
            self.context = BuildContext(self.request.context, note=stream.note)
            if (self.request.context / ".dockerignore").is_file():
                self.warnings.append("the .dockerignore in the context archive was not applied: as BuildKit, "
                                     "layerbuild takes an archive context as it is")
        else:
            self.context = BuildContext.open(self.request.context, dockerfile=path, store=self.store)
        # A named context is read as the main one is, with its own .dockerignore (never the
        # Dockerfile's) and its own stat cache, as BuildKit reads a local named context.
        named = {name: BuildContext.open(directory, store=self.store)
                 for name, directory in self.request.local_contexts().items()}
        agents = None
        if self.request.ssh:  # its module (sockets, an agent) is loaded by builds that forward one
            from layerbuild.worker.sshagent import SshAgents

            agents = SshAgents(self.request.ssh)
        executor: Executor = WorkerExecutor(services, self.context, secrets=self.request.secrets,
                                            allow=allow, contexts=named, ssh=agents)
        if self.wrap_executor is not None:
            executor = self.wrap_executor(executor)
        ensure = getattr(cache, "ensure", None)  # an imported cache's layers come when they are needed
        if ensure is not None:
            services.pending_layer = cache.pending  # type: ignore[attr-defined]
            services.ensure_layers = ensure
        warm = getattr(cache, "warm", None)
        if (warm is not None and previous is None and not self.store.index.has_cache()
                and any(step.kind != "base" for stage in plan.stages for step in stage.steps)):
            warm()  # a fresh store (an ephemeral runner's): every step will be asked for in the sources
        try:
            if agents is not None:
                agents.start()
            for attempt in range(4):
                solver = Solver(
                    plan, executor, cache,
                    options=SolveOptions(
                        jobs=self.request.jobs or (os.cpu_count() or 1),
                        no_cache=self.request.no_cache, no_cache_filter=self.request.no_cache_filter,
                        dry_run=self.request.dry_run,
                    ),
                    previous=history,
                    on_event=self.on_event,
                )  # fmt: skip
                try:
                    solved = solver.solve()
                    final = solved.states[plan.target]
                    if ensure is not None and not self.request.dry_run:
                        ensure(final.layers)  # the image's own layers, before it is written
                    break
                except LayerbuildError as exc:
                    if ensure is None or attempt == 3 or not _refused_layer(exc):
                        raise
                    # What was taken or built so far is in the store now: the next solve hits it,
                    # and builds the steps whose layers were refused.
                    if self.on_event is not None:
                        self.on_event(BuildEvent("build.cache", message="a cache layer was refused: solving again"))
            summary = getattr(cache, "summary", None)
            if summary is not None and self.on_event is not None:
                self.on_event(BuildEvent("build.cache", message=summary()))
            if self.request.dry_run:  # nothing ran: no image, no history, no stat cache, no export
                return self._dry_result(plan, solved.reports, started)
            self.lease.add(*[d for d in final.layers])
            image = self._assemble(plan, final)
            if any(spec.type == "inline" for spec in self.request.cache_to):
                image = self._inline_cache(plan, solved.records, image)
            stored = write_image(self.store, image, self.request.tags, lease=self.lease)
            self.store.index.put_history(history_id, target_key, [r.to_json() for r in solved.records])
            self.context.save()
            for tree in named.values():
                tree.save()
            self._export(stored)
            if self.request.cache_to:  # after a push: its blobs are then there to mount or skip
                self._export_cache(plan, solved.records, getattr(cache, "borrowed", None))
        finally:
            if agents is not None:
                agents.close()
            close = getattr(cache, "close", None)
            if close is not None:
                close()
            services.settle()  # the steps' scratch dirs, removed while later steps ran
            self.rootfs.close()
            for client in (self._client, self._cache_client):
                if client is not None:
                    client.close()  # type: ignore[attr-defined]
        warnings = tuple(f"build-arg {name} was not consumed by any ARG" for name in plan.unused_build_args)
        warnings += tuple(self.warnings)
        result = BuildResult(
            image=ImageRef(stored.id, stored.tags), steps=solved.reports,
            summary=Summary.of(solved.reports, time.monotonic() - started), warnings=warnings,
        )  # fmt: skip
        if fp is not None:
            blobs = [stored.manifest_digest, stored.config_digest, *(layer.digest for layer in stored.layers)]
            # Base images named by a tag: the fast path checks the tag still points where it did.
            bases = {}
            for ref, base in self.bases.items():
                tag = find_tag(self.store, ref) if "@" not in ref else None
                if tag is not None:
                    bases[tag.name] = self.images[base.identity].manifest_digest
            fastpath.save(self.store.root, path, self.request.target, fp, manifest=stored.manifest_digest,
                          blobs=blobs, bases=bases, report=result.to_json(),
                          key=stream.key if stream is not None else None, trees={"": self.context, **named})
        if self.on_event is not None:
            self.on_event(BuildEvent("build.finished", result=result))
        return result

    def _registry(self) -> object:
        from layerbuild.registry.client import RegistryClient

        if self._client is None:
            self._client = RegistryClient()
        return self._client

    def _cache_registry(self) -> object:
        """The client `--cache-from` sources are read with: a cache is optional, so a registry that
        does not answer is given up on after a short wait (LAYERBUILD_CACHE_TIMEOUT seconds a read may
        stall, default 15; two tries), and the build goes on without it, said so."""
        from layerbuild.registry.client import RegistryClient
        from layerbuild.registry.transport import RetryPolicy

        if self._cache_client is None:
            try:
                wait = float(os.environ.get("LAYERBUILD_CACHE_TIMEOUT", "") or 15.0)
            except ValueError:
                wait = 15.0
            self._cache_client = RegistryClient(timeout=wait, connect_timeout=min(wait, 5.0),
                                                retry=RetryPolicy(attempts=2))
        return self._cache_client

    def _platform(self) -> str:
        return self.request.platform or f"linux/{self.arch}"

    def _inline_cache(self, plan: BuildPlan, records: Sequence[StepRecord], image: ImageConfig) -> ImageConfig:
        """`--cache-to type=inline`: the final image's step records in its config (as BuildKit's inline
        cache), so `--cache-from IMAGE` of the pushed image finds them; its layers are their blobs."""
        from layerbuild.registry.buildcache import INLINE_KEY, inline_json
        from layerbuild.worker.remotecache import export_entries

        entries = export_entries(self.store, plan, records, mode="min", compression="", platform=self._platform(),
                                 layers=False, epoch=self.request.source_date_epoch)
        if self.on_event is not None:
            self.on_event(BuildEvent("build.cache", message=f"cache inline: {len(entries)} records in the image"))
        return dataclasses.replace(image, extensions=((INLINE_KEY, inline_json(entries)),))

    def _export_cache(self, plan: BuildPlan, records: Sequence[StepRecord],
                      borrowed: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None) -> None:
        """Each `--cache-to`: this build's records merged into what is there (see remotecache), with
        those taken from a `--cache-from` source and never downloaded (`borrowed`) as the source has them."""
        from layerbuild.worker.remotecache import (
            export_entries,
            export_mounts,
            open_backend,
            plan_cache_mounts,
        )
        from layerbuild.worker.runop import cache_mount_path

        platform = self._platform()
        mounts = None
        taken, taken_layers = borrowed() if borrowed is not None else ({}, {})
        for spec in self.request.cache_to:
            if spec.type == "inline":
                continue  # written into the image (see _inline_cache)
            entries = export_entries(self.store, plan, records, mode=spec.mode, compression=spec.compression,
                                     platform=platform, borrowed=taken)
            if spec.cache_mounts and mounts is None:
                assert self.lease is not None
                mounts = export_mounts(self.store, self.lease, plan_cache_mounts(plan),
                                       lambda mount_id: cache_mount_path(self.store.root, mount_id))
            try:
                backend = open_backend(spec, self._registry, platform=platform)
                outcome = backend.write(
                    self.store, entries, compression=spec.compression, max_size=spec.max_size,
                    mounts=mounts if spec.cache_mounts and mounts else (), borrowed=taken_layers)
            except LayerbuildError as exc:
                if not spec.ignore_error:
                    raise
                # ignore-error=true, as BuildKit's: the image is built; the cache was not written.
                self.warnings.append(f"cache {spec.describe()} was not written: {exc.message}")
                continue
            if self.on_event is not None:
                self.on_event(BuildEvent("build.cache",
                                         message=f"cache {spec.describe()}: {outcome} ({len(entries)} records, "
                                                 f"{backend.sent} bytes sent)"))

    def _dry_result(self, plan: BuildPlan, reports: Sequence[StepReport], started: float) -> BuildResult:
        steps = tuple(reports)
        warnings = tuple(f"build-arg {name} was not consumed by any ARG" for name in plan.unused_build_args)
        result = BuildResult(image=ImageRef("", self.request.tags), steps=steps,
                             summary=Summary.of(steps, time.monotonic() - started),
                             warnings=warnings + tuple(self.warnings), dry_run=True)
        if self.on_event is not None:
            self.on_event(BuildEvent("build.finished", result=result))
        return result

    def _assemble(self, plan: BuildPlan, state: State) -> ImageConfig:
        """The image config: the base's, then every step of the chain in order."""
        if state.base is not None:
            base = self.images[state.base.identity].config
            # Triggers run in this build, not in its children; a base's inline cache is not the child's.
            config = dataclasses.replace(base, extensions=()).with_config(on_build=())
        else:
            config = empty_config(self.arch)
        builder = ConfigBuilder(config)
        epoch = self.request.source_date_epoch
        applied = list(state.applied)
        times = history_times([output.created if output.diff_id else None for _, output in applied],
                              base_time=_last_history_time(config), now=time.time())
        current_stage = -1
        for (step, output), layer_time in zip(applied, times, strict=True):
            if step.stage != current_stage:
                current_stage = step.stage
                builder.cmd_set = False
            command = step.command
            when = float(epoch) if epoch is not None else layer_time
            text = created_by(command, step.shell, step.workdir, step.history_args)
            entry = HistoryEntry(
                created=format_created(when), created_by=text or "", comment="layerbuild.v0",
                empty_layer=output.diff_id is None,
            )  # fmt: skip
            builder.apply(command, step.workdir, step.shell)
            if output.diff_id is not None:
                builder.add_layer(output.diff_id, entry)
            elif text is not None:  # BuildKit records no history for ONBUILD
                builder.add_history(entry)
        cfg = builder.result()
        if self.request.labels:  # `build --label`: after the Dockerfile's own, on the final image only
            cfg = dataclasses.replace(cfg, config=cfg.config.with_labels(self.request.labels))
        # The image is as old as its newest step: a fully cached rebuild gives the same image id.
        created = max((h.created or "" for h in cfg.history), default="") or format_created(float(epoch or 0))
        return dataclasses.replace(cfg, created=created)

    def _push(self, stored: StoredImage, spec: OutputSpec) -> None:
        """The built image pushed to the output's names (else the build's tags), docker's types or OCI's."""
        from layerbuild.registry.push import push_all

        push_all(self.store, spec.names or self.request.tags, stored, fmt="oci" if spec.oci else "docker",
                 compression=spec.compression, on_event=self._push_events(self.on_event))

    @staticmethod
    def _push_events(on_event: Callable[[BuildEvent], None] | None) -> Callable[[Any], None] | None:
        """A push's lines (each layer's outcome and the push's own) as `build.pushed` build events."""
        if on_event is None:
            return None

        def tell(event: Any) -> None:
            if event.final:
                line = f"{event.id}: {event.status}" if event.id else event.status
                on_event(BuildEvent("build.pushed", message=line, detail=event.to_json()))

        return tell

    def _export(self, stored: StoredImage) -> None:
        # The writers are imported by the outputs that use them: a build into the store alone (most
        # builds) never loads them.
        for spec in self.request.outputs:
            if spec.type == "local":
                from layerbuild.image.export import export_local

                written = export_local(self.store, stored, spec.dest, devices=spec.devices)
                if written.devices_skipped:
                    shown = ", ".join(written.devices_skipped[:5])
                    more = len(written.devices_skipped) - 5
                    self.warnings.append(
                        f"--output type=local,dest={spec.dest}: left out {len(written.devices_skipped)} device "
                        f"node(s): {shown}{f' and {more} more' if more > 0 else ''} (devices=true writes them)")
            elif spec.type == "tar":
                from layerbuild.image.export import export_tar

                export_tar(self.store, stored, spec.dest)
            elif spec.type in ("oci", "docker"):
                from layerbuild.image.archive import save

                save(self.store, stored, spec.dest, spec.type, self.request.tags)
            elif spec.type in ("registry", "image"):
                if spec.push:
                    self._push(stored, spec)
            else:
                raise UsageError(f"unknown output type {spec.type!r}", hint="use type=local, tar, oci or docker")


def _for_platform(stored: StoredImage, platform: str) -> bool:
    from layerbuild.platforms import compatible_platforms, normalize_platform, parse_platform

    cfg = stored.config
    return normalize_platform(cfg.os or "linux", cfg.architecture or "", getattr(cfg, "variant", "") or "") in \
        compatible_platforms(parse_platform(platform))


def _check_runnable(plan: BuildPlan, df: Dockerfile) -> None:
    """Refuse, at its line, a RUN step of a stage for a platform this machine cannot run (building for
    another platform needs emulation, which layerbuild does not do yet); stages without RUN may be for any."""
    from layerbuild.plan.ops import Exec
    from layerbuild.platforms import format_platform, host_platform, parse_platform, runnable

    for stage in plan.stages:
        for step in stage.steps:
            op = step.op
            if isinstance(op, Exec) and op.platform and not runnable(parse_platform(op.platform)):
                node = step.command.node
                raise DockerfileError(
                    f"RUN for platform {op.platform}, which this machine ({format_platform(host_platform())}) "
                    "cannot run", filename=df.filename, line=node.start_line, column=node.column,
                    source_line=df.source_line(node.start_line),
                    hint="build for this machine's platform; stages without RUN steps may be for any platform")


def _serialised(callback: Callable[[BuildEvent], None]) -> Callable[[BuildEvent], None]:
    lock = threading.Lock()

    def call(event: BuildEvent) -> None:
        with lock:
            callback(event)

    return call


def _limits(request: BuildRequest) -> Limits:
    return Limits(request.memory, request.memory_swap, request.cpus, request.pids_limit)


def _network(mode: str) -> Network:
    known = network_mode(mode)
    if known is None:
        raise UsageError(f"unknown network mode {mode!r}", hint="use default, none or host")
    return known


def run_build(
    request: BuildRequest,
    store: Store,
    *,
    wrap_executor: Callable[[Executor], Executor] | None = None,
    on_event: Callable[[BuildEvent], None] | None = None,
) -> BuildResult:
    """Build `request` into `store`; raises a LayerbuildError on failure (the store stays valid).

    `wrap_executor` lets a caller put its own Executor in front of the real one (tests run toy
    processes through it)."""
    return Build(request, store, wrap_executor=wrap_executor, on_event=on_event).run()


def history_times(layer_times: list[float | None], *, base_time: float | None, now: float) -> list[float]:
    """The `created` time of each step's history entry, as BuildKit's image exporter fills them in
    (exporter/containerimage/writer.go normalizeLayersAndHistory): a step that made a layer has the
    layer's time (kept in its cache record); a config-only step has no time of its own and takes the
    first new layer's time if it comes before it, else the time of the layer before it; with no layer
    to take one from, the base image's newest history time, else now. So a fully cached rebuild gives
    the same history, hence the same image id, whatever its last steps are."""
    known = [t for t in layer_times if t is not None]
    first_gap = next((i for i, t in enumerate(layer_times) if t is None), None)
    after_gap = [t for t in layer_times[first_gap:] if t is not None] if first_gap is not None else []
    fill = after_gap[0] if after_gap else (known[-1] if known else (base_time if base_time is not None else now))
    out: list[float] = []
    seen_gap = False
    for t in layer_times:
        if t is None:
            seen_gap = True
            out.append(fill)
        else:
            if seen_gap:
                fill = t
            out.append(t)
    return out


def _refused_layer(exc: BaseException) -> bool:
    """Whether `exc` is (or a step failed of) a layer from an imported cache that failed its check."""
    from layerbuild.worker.remotecache import RefusedCacheLayer

    return isinstance(exc, RefusedCacheLayer) or isinstance(exc.__cause__, RefusedCacheLayer)


def _last_history_time(config: ImageConfig) -> float | None:
    for entry in reversed(config.history):
        if entry.created:
            try:
                return datetime.fromisoformat(entry.created.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
    return None


def _compiled_any(cache: Path) -> bool:
    """Whether the store keeps a compiled seccomp program already: then a RUN step reads it (a file)
    and nothing is compiled ahead, in a build whose RUN steps may all hit the cache anyway."""
    try:
        return any(name.endswith(".bpf") for name in os.listdir(cache))
    except OSError:
        return False
