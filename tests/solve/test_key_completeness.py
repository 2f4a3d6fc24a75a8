"""Every field of every op definition is part of its cache key: found by introspection, so a field
added to an op later is covered without anyone remembering to add it here."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from layerbuild.plan import (
    MOUNT_KINDS,
    OP_KINDS,
    BindMountDef,
    CacheMountDef,
    ConfigEdit,
    Exec,
    FileCopy,
    InlineFile,
    MakeDir,
    OpDef,
    ScriptFile,
    SecretMountDef,
    Source,
    SshMountDef,
    TmpfsMountDef,
)
from layerbuild.solve import keys

# One op of each kind with every field set to something (and one mount of each kind), so that each
# field can be changed from a known value.
SAMPLES: dict[type, OpDef] = {
    Exec: Exec(
        shell=("/bin/sh", "-c"), args=("make",), env=(("PATH", "/bin"), ("MODE", "a")), user="1000",
        workdir="/w", network="default", security="sandbox", hostname="layerbuild", platform="linux/amd64",
        mounts=(
            CacheMountDef(target="/c", id="c1", source="s", from_input=0),
            BindMountDef(target="/b", source="m.txt", from_input=None, readonly=True),
            TmpfsMountDef(target="/t", size=1024),
            SecretMountDef(id="tok", target="/run/secrets/tok", required=True),
            SshMountDef(id="default", target="/ssh", required=False),
        ),
        files=(ScriptFile("EOF", "#!/bin/sh\necho hi\n"),),
        extra_hosts=(("db", "10.0.0.5"), ("cache", "10.0.0.6")),
    ),
    FileCopy: FileCopy(
        sources=("src/",), dest="./src/", workdir="/app", add=False,
        contents=(InlineFile("note.txt", "hello\n"),), chown="1:1", chmod="0644", link=False,
        parents=False, excludes=("*.pyc",), checksum=None, keep_git_dir=False, from_input=None,
    ),
    MakeDir: MakeDir(path="/app"),
    ConfigEdit: ConfigEdit(instruction="ENV A=1"),
    Source: Source(ref="base:1", identity="sha256:" + "1" * 64),
}


def _other(value: Any, hint: Any) -> Iterator[Any]:
    """Values different from `value` that the field's type allows."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        yield from (a for a in args if a != value)
        return
    if origin in (types.UnionType, typing.Union):
        if value is None:
            inner = next(a for a in args if a is not type(None))
            yield _fresh(inner)
        else:
            yield None
            inner = next(a for a in args if isinstance(value, typing.get_origin(a) or a))
            yield from _other(value, inner)
        return
    if origin is tuple:
        yield (*value, _fresh(args[0]))
        if value:
            yield value[:-1]
            yield tuple(reversed(value)) if len(value) > 1 and value[0] != value[-1] else value[:-1]
        return
    if hint is bool:
        yield not value
    elif hint is int:
        yield value + 1
    elif hint is str:
        yield value + "x"
    else:
        raise AssertionError(f"no mutation for a field of type {hint!r}")


def _fresh(hint: Any) -> Any:
    """Some value of type `hint`."""
    if hint is str:
        return "fresh"
    if hint is int:
        return 7
    if typing.get_origin(hint) is tuple:
        return tuple(_fresh(a) for a in typing.get_args(hint) if a is not Ellipsis)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return _fresh(typing.get_args(hint)[0])
    if dataclasses.is_dataclass(hint):
        return SAMPLE_MOUNTS.get(hint) or hint(*(_fresh(str) for f in dataclasses.fields(hint) if
                                                   f.default is dataclasses.MISSING))
    raise AssertionError(f"cannot make a value of type {hint!r}")


SAMPLE_MOUNTS: dict[Any, Any] = {type(m): m for m in SAMPLES[Exec].mounts}  # type: ignore[attr-defined]


def mutations(value: Any) -> Iterator[tuple[str, Any]]:
    """(field path, the value with that one field changed) for every field, nested ones included."""
    hints = typing.get_type_hints(type(value))
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and len(typing.get_args(hint)) == 1:
            continue  # a type tag with one possible value: the kind is keyed as "@type"
        for new in _other(current, hint):
            if new != current:
                yield f.name, dataclasses.replace(value, **{f.name: new})
        if isinstance(current, tuple):
            for i, item in enumerate(current):
                if dataclasses.is_dataclass(item):
                    for path, changed in mutations(item):
                        items = (*current[:i], changed, *current[i + 1:])
                        yield f"{f.name}[{i}].{path}", dataclasses.replace(value, **{f.name: items})


def test_every_op_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(OP_KINDS)
    assert set(SAMPLE_MOUNTS) == set(MOUNT_KINDS)


@pytest.mark.parametrize("cls", OP_KINDS, ids=lambda c: c.__name__)
def test_every_field_changes_the_definition_key(cls: type) -> None:
    sample = SAMPLES[cls]
    base = keys.definition_key(sample)
    seen: set[str] = set()
    for path, changed in mutations(sample):
        seen.add(path.split("[")[0])
        assert keys.definition_key(changed) != base, f"{cls.__name__}.{path} is not part of the key"
    # Every top-level field was mutated at least once (none skipped by the walk).
    expected = {f.name for f in dataclasses.fields(cls)
                if not (typing.get_origin(typing.get_type_hints(cls)[f.name]) is Literal
                        and len(typing.get_args(typing.get_type_hints(cls)[f.name])) == 1)}
    assert seen == expected


def test_every_mount_field_changes_the_exec_key() -> None:
    sample = SAMPLES[Exec]
    base = keys.definition_key(sample)
    nested = {path.split("].", 1)[1] for path, _ in mutations(sample) if path.startswith("mounts[")}
    for mount_cls in MOUNT_KINDS:
        for f in dataclasses.fields(mount_cls):
            if f.name == "type":
                continue
            assert f.name in nested, f"{mount_cls.__name__}.{f.name} was never changed"
    for path, changed in mutations(sample):
        if path.startswith("mounts["):
            assert keys.definition_key(changed) != base, f"Exec.{path} is not part of the key"


def test_op_kinds_with_equal_fields_have_different_keys() -> None:
    # MakeDir("/x") and a hypothetical op with one `path` field must not collide: the kind is keyed.
    assert keys.definition_key(MakeDir(path="ENV A=1")) != keys.definition_key(ConfigEdit(instruction="ENV A=1"))


def test_the_walker_catches_an_unkeyed_field() -> None:
    # The check itself can fail: a key function that forgets a field is caught.
    sample = SAMPLES[Exec]

    def forgetful(op: OpDef) -> str:
        return keys.definition_key(dataclasses.replace(op, user="")) if isinstance(op, Exec) else ""

    base = forgetful(sample)
    missed = [path for path, changed in mutations(sample) if forgetful(changed) == base]
    assert missed == ["user"]


def test_solve_knows_ops_not_dockerfile_instructions() -> None:
    import ast
    from pathlib import Path

    import layerbuild.solve

    for path in Path(layerbuild.solve.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("layerbuild.instructions", "layerbuild.parser")), \
                    f"{path.name} imports {name}"
            if isinstance(node, ast.Attribute):
                assert node.attr != "command", f"{path.name} reads a step's Dockerfile command"
