"""Typed stages to a BuildPlan: bases resolved, stages pruned to the target, steps expanded in order.

Pure: the only outside knowledge, what a base image is, comes through the `resolve_image` callback.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from layerbuild.errors import DockerfileError, LayerbuildError, UsageError
from layerbuild.instructions import StageExpander, expand_from, parse_command, parse_stages, resolve_meta_args
from layerbuild.instructions import commands as c
from layerbuild.instructions.locate import syntax_error
from layerbuild.parser import Dockerfile, Instruction
from layerbuild.parser.shell import MAX_BUILD_EXPANSION_BYTES, ExpansionBudget
from layerbuild.plan.model import (
    Base,
    BaseImage,
    BuildPlan,
    LocalContext,
    PlannedStage,
    Scratch,
    StageRef,
    Step,
    StepKind,
)
from layerbuild.plan.opmake import Network, make_op
from layerbuild.plan.ops import FileCopy, Source
from layerbuild.platforms import DEFAULT_PATH, host_platform_args
from layerbuild.reference import context_name

ResolveImage = Callable[[str, "str | None"], BaseImage]
# `--build-context NAME=...` by name (as `reference.context_name` spells it): the image reference it
# stands for, or None for a local directory.
NamedContexts = Mapping[str, "str | None"]

DEFAULT_SHELL: tuple[str, ...] = ("/bin/sh", "-c")


def with_default_path(env: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A stage's starting environment: BuildKit appends its default PATH when the base has none
    (scratch, an imported rootfs), so that `$PATH` expands to it and RUN finds its programs."""
    if any(key == "PATH" for key, _ in env):
        return env
    return (*env, ("PATH", DEFAULT_PATH))


def step_kind(command: c.Command) -> StepKind:
    if isinstance(command, c.From):
        return "base"
    if isinstance(command, c.Run):
        return "exec"
    if isinstance(command, c.SourcesAndDest):
        return "copy"
    return "meta"


def _stage_lookup(stages: tuple[c.Stage, ...]) -> dict[str, int]:
    return {s.name: s.index for s in stages if s.name is not None}


def _source_ref(
    name: str, names: Mapping[str, int], current: int, resolve: Callable[[str], Base],
    contexts: NamedContexts, resolve_context: Callable[[str, str], Base],
) -> Base:
    """`--from=X`: a named context, a stage by name or position, else an image. A named context
    comes first: one with a stage's name replaces that stage, as in BuildKit."""
    named = context_name(name)
    if named in contexts and not name.isdigit():  # `--from=0` is always a stage's position
        ref = contexts[named]
        return LocalContext(named) if ref is None else resolve_context(named, ref)
    key = name.lower()
    if key in names:
        return StageRef(names[key])
    if name.isdigit():
        return StageRef(int(name))
    return resolve(name)


def _indexer(
    sources: list[Base], names: Mapping[str, int], current: int, resolve: Callable[[str], Base],
    contexts: NamedContexts, resolve_context: Callable[[str, str], Base],
) -> Callable[[str], int]:
    """`--from=ref` → its position in `sources` (appended in the order the op names them)."""

    def index(ref: str) -> int:
        sources.append(_source_ref(ref, names, current, resolve, contexts, resolve_context))
        return len(sources) - 1

    return index


def _dependencies(stage: c.Stage, names: Mapping[str, int], contexts: NamedContexts) -> set[int]:
    deps: set[int] = set()
    if stage.name is not None and stage.name in contexts:
        return deps  # replaced by the named context of its name: none of its lines is read
    base = stage.base_name.lower()
    if base in names and names[base] != stage.index and context_name(stage.base_name) not in contexts:
        deps.add(names[base])
    for command in stage.commands:
        refs: list[str] = []
        if isinstance(command, c.Copy) and command.from_stage:
            refs.append(command.from_stage)
        if isinstance(command, c.Run):
            for mount in command.mounts:
                ref = getattr(mount, "from_stage", None)
                if ref:
                    refs.append(ref)
        for ref in refs:
            if context_name(ref) in contexts and not ref.isdigit():
                continue
            if ref.lower() in names:
                deps.add(names[ref.lower()])
            elif ref.isdigit():
                deps.add(int(ref))
    return deps


def _order(df: Dockerfile, stages: tuple[c.Stage, ...], target: int, contexts: NamedContexts) -> list[int]:
    """The stages the target needs, each after its dependencies; a cycle is a Dockerfile error."""
    names = _stage_lookup(stages)
    order: list[int] = []
    state: dict[int, str] = {}

    def visit(index: int, via: c.Stage | None) -> None:
        if index >= len(stages) or index < 0:
            assert via is not None
            raise syntax_error(df, via.from_.node, f"invalid stage index {index}", hint="stages are numbered from 0")
        if state.get(index) == "done":
            return
        if state.get(index) == "visiting":
            assert via is not None
            raise syntax_error(df, via.from_.node, f"circular dependency between stages at stage {index}",
                               hint="a stage can use only stages that do not use it (FROM, COPY --from, RUN --mount from=)")
        state[index] = "visiting"
        for dep in sorted(_dependencies(stages[index], names, contexts)):
            visit(dep, stages[index])
        state[index] = "done"
        order.append(index)

    visit(target, None)
    return order


def _target_index(stages: tuple[c.Stage, ...], target: str | None) -> int:
    if target is None:
        return len(stages) - 1
    names = _stage_lookup(stages)
    if target.lower() in names:
        return names[target.lower()]
    import difflib  # only for a hint: not on every parse's path

    close = difflib.get_close_matches(target.lower(), list(names), n=1)
    known = ", ".join(names) or "none (name stages with FROM ... AS <name>)"
    raise UsageError(
        f"target stage {target!r} could not be found",
        hint=f"did you mean {close[0]!r}?" if close else f"stages: {known}",
    )


def _image_at(image: Callable[[str, str | None, Instruction | None], BaseImage], node: Instruction,
              ref: str) -> BaseImage:
    """`--from=ref` as an image, errors located at the instruction that names it."""
    return image(ref, None, node)


def _context_at(image: Callable[[str, str, str | None, Instruction], BaseImage], node: Instruction,
                named: str, ref: str) -> BaseImage:
    """`--from=NAME` of an image named context, errors located at the instruction that names it."""
    return image(named, ref, None, node)


def _triggers(df: Dockerfile, expressions: tuple[str, ...], origin: str) -> list[c.Command]:
    out: list[c.Command] = []
    if not expressions:
        return out
    from layerbuild.parser.core import parse

    for text in expressions:
        trigger_df = parse(text, filename=f"ONBUILD trigger of {origin}")
        for node in trigger_df.instructions:
            command = parse_command(trigger_df, node)
            if isinstance(command, c.From | c.Onbuild):
                raise DockerfileError(f"{node.cmd.upper()} is not allowed as an ONBUILD trigger ({origin})")
            out.append(command)
    return out


# Bytes that are not UTF-8 survive parsing as surrogate escapes (`layerbuild parse` shows them).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _check_utf8(df: Dockerfile, nodes: Iterable[Instruction]) -> None:
    """Refuse instructions holding bytes that are not UTF-8, at the first such byte.

    What a step does ends up in UTF-8 JSON (image config, cache keys, build records), where such
    bytes cannot be written as they are; BuildKit would replace them with U+FFFD and build
    something other than what was written. Comments, and stages the target does not need, may
    hold anything.
    """
    for node in nodes:
        texts = [node.original, *(doc.content for doc in node.heredocs)]
        if node.inner is not None:
            texts += [doc.content for doc in node.inner.heredocs]
        for text in texts:
            bad = _NOT_UTF8.search(text)
            if bad is not None:
                byte = ord(bad.group()) - 0xDC00
                raise syntax_error(
                    df, node, f"invalid UTF-8 in {node.keyword or node.cmd.upper()}: byte 0x{byte:02x}",
                    near=bad.group(), hint="save the Dockerfile as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                )


_SYMBOLIC_MODE = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+$")


def _valid_chmod(spec: str) -> bool:
    """`--chmod` as COPY applies it: octal up to 07777, or comma-separated symbolic clauses."""
    if spec.isdigit():
        return re.fullmatch(r"[0-7]+", spec) is not None and int(spec, 8) <= 0o7777
    return bool(spec) and all(_SYMBOLIC_MODE.match(clause) for clause in spec.split(","))


def plan_build(
    df: Dockerfile,
    *,
    resolve_image: ResolveImage,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    network: Network = "default",
    source_date_epoch: int | None = None,
    contexts: NamedContexts | None = None,
    extra_hosts: Sequence[tuple[str, str]] = (),
    platform: str | None = None,
) -> BuildPlan:
    """Plan the build of `target` (default: the last stage) of `df`; `network` is the RUN steps'
    network unless a `RUN --network` says otherwise; `source_date_epoch` clamps the times of the
    files that steps write (so it is part of their ops). `contexts` are the named contexts
    (`--build-context`): `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` read them before
    any stage or image of that name, and a stage whose name is one of them is replaced by it.
    `extra_hosts` (name, address) pairs are added to every RUN step's /etc/hosts (so they are part
    of its op). `platform` (`--platform`, normalised) is the target platform, TARGETPLATFORM's value,
    and the one images are resolved for unless a `FROM --platform` says otherwise (None: this machine's)."""
    hosts = tuple((str(name), str(ip)) for name, ip in extra_hosts)
    build_args = dict(build_args or {})
    contexts = {context_name(k): v for k, v in (contexts or {}).items()}
    meta_cmds, stages = parse_stages(df)
    _check_utf8(df, (cmd.node for cmd in meta_cmds))
    if not stages:  # only ARGs (BuildKit: "dockerfile contains no stages to build")
        raise syntax_error(df, meta_cmds[-1].node, "dockerfile contains no stages to build",
                           hint="a build needs a FROM instruction after the global ARGs")
    predefined = host_platform_args()
    build_platform = platform
    if platform is not None:
        os_, arch, variant = (platform.split("/") + ["", ""])[:3]
        predefined.update(TARGETPLATFORM=platform, TARGETOS=os_, TARGETARCH=arch, TARGETVARIANT=variant)
    platform = predefined["TARGETPLATFORM"]
    # All the substitutions of one build share a bound, so that doubling a value with every
    # instruction (`ENV B=$A$A`) ends in a located error instead of exhausting memory.
    budget = ExpansionBudget(MAX_BUILD_EXPANSION_BYTES)
    meta = resolve_meta_args(df, meta_cmds, build_args, predefined, budget)
    target_index = _target_index(stages, target)
    names = _stage_lookup(stages)
    declared = {a.key for cmd in meta_cmds for a in cmd.args} | set(predefined)

    planned: dict[int, PlannedStage] = {}
    env_out: dict[int, tuple[tuple[str, str], ...]] = {}
    onbuild_out: dict[int, tuple[str, ...]] = {}
    state_out: dict[int, tuple[str, str, tuple[str, ...]]] = {}
    args_out: dict[int, tuple[tuple[str, str], ...]] = {}
    arg_order_out: dict[int, tuple[str, ...]] = {}  # each stage's ARG names in declaration order
    resolved: dict[tuple[str, str | None], BaseImage] = {}

    def image(ref: str, plat: str | None = None, node: Instruction | None = None) -> BaseImage:
        if (ref, plat) not in resolved:
            try:
                resolved[ref, plat] = resolve_image(ref, plat)
            except LayerbuildError as exc:
                if node is None:
                    raise
                import difflib  # only for a hint: not on every parse's path

                close = difflib.get_close_matches(ref.lower(), list(names), n=1)
                hint = f"did you mean the stage {close[0]!r}?" if close else exc.hint
                raise DockerfileError(
                    f"{exc.message} (no stage of that name either)", filename=df.filename,
                    line=node.start_line, column=node.column, source_line=df.source_line(node.start_line),
                    hint=hint,
                ) from None
        return resolved[ref, plat]

    def context_image(named: str, ref: str, plat: str | None, node: Instruction) -> BaseImage:
        """The image `--build-context NAME=docker-image://REF` names, errors located at `node`."""
        try:
            return image(ref, plat)
        except LayerbuildError as exc:
            raise DockerfileError(
                f"named context {named} (docker-image://{ref}): {exc.message}", filename=df.filename,
                line=node.start_line, column=node.column, source_line=df.source_line(node.start_line),
                hint=exc.hint or "docker-image:// names an image of the store or of a registry",
            ) from None

    for index in _order(df, stages, target_index, contexts):
        stage = stages[index]
        _check_utf8(df, [stage.from_.node, *(cmd.node for cmd in stage.commands)])
        expanded_from = expand_from(df, stage.from_, meta, budget)
        frm = expanded_from.command
        base: Base
        base_env: tuple[tuple[str, str], ...] = ()
        base_args: tuple[tuple[str, str], ...] = ()
        arg_order: list[str] = []
        triggers: tuple[str, ...] = ()
        workdir: str
        user: str
        shell: tuple[str, ...]
        workdir, user, shell = "/", "", DEFAULT_SHELL
        origin = frm.base_name
        # A named context of the stage's own name replaces the whole stage; one of its base's name
        # replaces the base (BuildKit's dockerfile2llb: the stage's name is looked up first).
        replaced = stage.name is not None and stage.name in contexts
        named = stage.name if replaced else context_name(frm.base_name)
        local_base: str | None = None
        if named in contexts and contexts[named] is None:
            base = Scratch()
            base_env = with_default_path(())
            local_base = named
        elif named in contexts:
            ref = contexts[named]
            assert ref is not None
            base = context_image(named, ref, frm.platform or build_platform, frm.node)
            base_env, triggers = with_default_path(base.env), base.onbuild
            workdir, user, shell = base.workdir or "/", base.user, base.shell or DEFAULT_SHELL
        elif frm.base_name.lower() == "scratch":
            base = Scratch()
            base_env = with_default_path(())
        elif frm.base_name.lower() in names and names[frm.base_name.lower()] != index:
            base = StageRef(names[frm.base_name.lower()])
            base_env, base_args = env_out[base.index], args_out[base.index]
            arg_order = list(arg_order_out[base.index])
            workdir, user, shell = state_out[base.index]
            triggers = onbuild_out[base.index]
            origin = f"stage {frm.base_name}"
        else:
            base = image(frm.base_name, frm.platform or build_platform, frm.node)
            base_env, triggers = with_default_path(base.env), base.onbuild
            workdir, user, shell = base.workdir or "/", base.user, base.shell or DEFAULT_SHELL
        from_args = tuple(sorted((k, meta[k] or "") for k in expanded_from.used_args))
        source_op = Source(ref=frm.base_name, identity=base.identity if isinstance(base, BaseImage) else "")
        steps: list[Step] = [Step(index, 0, "base", frm.node.original, frm, args=from_args, op=source_op)]
        if local_base is not None:
            # FROM a local named context: its files are the stage's first layer, copied as COPY copies
            # the context (owners 0:0, .dockerignore applied), keyed by their content.
            steps.append(Step(index, 1, "copy", f"[context {local_base}] load", frm, sources=(LocalContext(local_base),),
                              op=FileCopy(sources=(".",), dest="/", from_input=0,
                                          source_date_epoch=source_date_epoch)))
        expander = StageExpander(df, meta_args=meta, build_args=build_args, base_env=base_env, budget=budget,
                                 base_args=base_args)
        commands = [] if replaced else [*_triggers(df, triggers, origin), *stage.commands]
        first = len(steps)
        trigger_count = len(commands) - len(stage.commands)
        own_onbuild: list[str] = []
        for position, command in enumerate(commands):
            if isinstance(command, c.Arg):
                declared.update(a.key for a in command.args)
            result = expander.step(command)
            cmd = result.command
            if isinstance(cmd, c.SourcesAndDest) and cmd.chmod is not None and not _valid_chmod(cmd.chmod):
                raise syntax_error(df, cmd.node, f"invalid --chmod value {cmd.chmod!r}", near="--chmod",
                                   hint="use octal between 0 and 07777 (0755) or a symbolic mode (u+x,go-w)")
            if isinstance(cmd, c.Onbuild):
                own_onbuild.append(cmd.expression)
            # Single values from the scope; the whole environment only where an op keeps it (RUN).
            scope = result.scope
            args = tuple(sorted((k, scope.get(k)) for k in result.used_args))
            sources: list[Base] = []
            resolve_source = functools.partial(_image_at, image, cmd.node)

            source_index = _indexer(sources, names, index, resolve_source, contexts,
                                    functools.partial(_context_at, context_image, cmd.node))
            if isinstance(cmd, c.Workdir):
                workdir = posixpath.normpath(posixpath.join(workdir, cmd.path))
            op = make_op(cmd, variables=scope.items() if isinstance(cmd, c.Run) else (), workdir=workdir, user=user, shell=shell,
                         network=network, platform=frm.platform or platform,
                         source_index=source_index, source_date_epoch=source_date_epoch,
                         extra_hosts=hosts)
            history_args: tuple[tuple[str, str | None], ...] = ()
            if isinstance(cmd, c.Run):
                history_args = tuple((k, scope.get(k)) for k in arg_order)
            elif isinstance(cmd, c.Arg):
                history_args = tuple((a.key, expander.arg_value(a)) for a in cmd.args)
                arg_order.extend(k for k, _ in history_args if k not in arg_order)
            steps.append(
                Step(index, position + first, step_kind(cmd), cmd.node.original, cmd, args=args,
                     history_args=history_args,
                     sources=tuple(sources), trigger=position < trigger_count,
                     workdir=workdir, user=user, shell=shell, op=op)
            )
            if isinstance(cmd, c.User):
                user = cmd.user
            elif isinstance(cmd, c.Shell):
                shell = cmd.shell
        env_out[index] = expander.env
        args_out[index] = expander.args
        arg_order_out[index] = tuple(arg_order)
        state_out[index] = (workdir, user, shell)
        onbuild_out[index] = tuple(own_onbuild)
        planned[index] = PlannedStage(index, stage.name, base, tuple(steps), frm.platform)

    order = list(planned)
    unused = tuple(sorted(k for k in build_args if k not in declared))
    return BuildPlan(
        stages=tuple(planned[i] for i in order),
        target=target_index,
        build_args=tuple(sorted(build_args.items())),
        unused_build_args=unused,
        filename=df.filename,
    )

