"""The cache's first promise, never a wrong hit: regression tests for known false hits, and a property
test comparing builds with the cache against no-cache builds of the same inputs in a fresh store."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from layerbuild.errors import LayerbuildError
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build import kit
from tests.build.conftest import write

pytestmark = pytest.mark.integration


@pytest.fixture
def based(tmp_path: Path, root: Path) -> Path:
    """The store at `root` with the busybox base tagged base:1."""
    kit.make_base(tmp_path / "base", root)
    return root


def rebuilt_run(ctx: Path, root: Path, **kw: object) -> kit.BuildResult:
    """Build again with the cache and insist the last RUN re-ran."""
    result = kit.build(ctx, root, **kw)  # type: ignore[arg-type]
    last = [s for s in result.steps if s.kind == "exec"][-1]
    assert not last.cached, f"false hit: {last.instruction!r} stayed cached after its input changed"
    return result


def test_user_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 1000\nRUN id -u > /tmp/uid\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/tmp/uid") == "1000\n"
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 2000\nRUN id -u > /tmp/uid\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/tmp/uid") == "2000\n"


def test_workdir_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nWORKDIR /w1\nRUN pwd > /out/pwd\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/pwd") == "/w1\n"
    write(ctx, {"Dockerfile": "FROM base:1\nWORKDIR /w2\nRUN pwd > /out/pwd\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/pwd") == "/w2\n"


def test_shell_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": 'FROM base:1\nSHELL ["/bin/sh", "-c"]\nRUN echo "$-" > /out/flags\n'})
    kit.build(ctx, based)
    assert "e" not in kit.read(based, "sut:latest", tmp_path / "fs", "/out/flags")
    write(ctx, {"Dockerfile": 'FROM base:1\nSHELL ["/bin/sh", "-ec"]\nRUN echo "$-" > /out/flags\n'})
    rebuilt_run(ctx, based)
    assert "e" in kit.read(based, "sut:latest", tmp_path / "fs", "/out/flags")


def test_bind_mount_source_edit_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nRUN --mount=type=bind,source=m.txt,target=/m.txt cat /m.txt > /out/m\n",
                "m.txt": "first\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "first\n"
    write(ctx, {"m.txt": "second\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "second\n"


NETS = "RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /out/nets\n"


def test_network_none_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\n" + NETS})
    kit.build(ctx, based)
    kit.read(based, "sut:latest", tmp_path / "fs", "/out/nets")
    rebuilt_run(ctx, based, network="none")
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/nets").split() == ["lo"]


def test_bind_mount_of_the_whole_context_reruns_on_edit(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nRUN --mount=type=bind,target=/c cat /c/m.txt > /out/m\n", "m.txt": "one\n"})
    kit.build(ctx, based)
    write(ctx, {"m.txt": "two\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "two\n"


def test_bind_mount_through_a_symlink_reruns_when_its_target_changes(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nRUN --mount=type=bind,source=link,target=/m.txt cat /m.txt > /out/m\n",
                "m.txt": "one\n"})
    (ctx / "link").symlink_to("m.txt")
    kit.build(ctx, based)
    write(ctx, {"m.txt": "two\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "two\n"


def test_bind_mount_sees_the_context_as_dockerignore_filters_it(ctx: Path, based: Path, tmp_path: Path) -> None:
    """As in BuildKit, a bind of the context offers only what .dockerignore lets through. Otherwise a RUN
    reads files that the context's content key rightly leaves out, and an edit to them is a wrong hit."""
    write(ctx, {"Dockerfile": "FROM base:1\nRUN --mount=type=bind,target=/c ls -a /c > /out/ls\n",
                "kept.txt": "k\n", "hidden.txt": "one\n", ".dockerignore": "hidden.txt\n"})
    kit.build(ctx, based)
    listing = kit.read(based, "sut:latest", tmp_path / "fs", "/out/ls").split()
    assert "kept.txt" in listing and "Dockerfile" in listing
    assert "hidden.txt" not in listing


def test_base_retagged_to_same_layers_with_another_config_reruns(ctx: Path, root: Path, tmp_path: Path) -> None:
    """A base whose layers are identical but whose USER, WORKDIR, SHELL and ENV differ is another input:
    a key on the base's files alone (early cutoff) would be a wrong hit."""
    kit.make_base(tmp_path / "bb", root, tag="bb:1")
    base_ctx = tmp_path / "base"
    base_ctx.mkdir()
    write(ctx, {"Dockerfile": 'FROM base:1\nRUN { id -u; pwd; echo "$-"; echo "X=$X"; } > /out/seen\n'})
    seen, layers = [], []
    for user, workdir, flag, x in (("1001", "/w1", "-c", "1"), ("1002", "/w2", "-ec", "2")):
        write(base_ctx, {"Dockerfile": f'FROM bb:1\nUSER {user}\nWORKDIR {workdir}\nSHELL ["/bin/sh", "{flag}"]\nENV X={x}\n'})
        kit.build(base_ctx, root, tag="base:1")
        with Store.open(root) as store:
            layers.append(resolve_image(store, "base:1").config.diff_ids)
        result = kit.build(ctx, root)
        assert not kit.step(result, "RUN {").cached, f"false hit on a base with USER {user}"
        seen.append(kit.read(root, "sut:latest", tmp_path / "fs", "/out/seen").split())
    assert layers[0] == layers[1], "the two bases should differ only in their config"
    assert seen[0][:2] == ["1001", "/w1"] and seen[1][:2] == ["1002", "/w2"]
    assert "e" not in seen[0][2] and "e" in seen[1][2] and (seen[0][3], seen[1][3]) == ("X=1", "X=2")


# The soundness property ------------------------------------------------------------------------------
#
# A Dockerfile and its context are rendered from a small model. Hypothesis draws a sequence of
# mutations; after each one the same inputs are built twice: with the cache, in one store kept for the
# whole sequence, and with --no-cache in a fresh store. The RUN steps write what they could be fooled by
# (uid, gid, cwd, shell flags, environment, network interfaces, the bind-mounted file, the base's
# flavor, ONBUILD output) into the image, so a wrong hit shows as a file that differs.

# Whether the RUN had a network of its own (only lo) or the host's, not the host's interface names: a
# correct hit may replay interfaces that came and went since, and that is no cache error.
OBSERVE = ("{ id -u; id -g; pwd; echo \"flags=$-\"; env | sort; "
           "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -vxq lo && echo net=host || echo net=own; "
           "cat /etc/flavor; }")


@dataclass(frozen=True)
class Model:
    """Every knob the mutations turn; `dockerfile()` and `context()` render it."""

    run_text: int = 0
    user: str = ""
    workdir: str = "/w1"
    workdir_rel: str = ""
    shell: tuple[str, ...] = ()
    mode: str = "a"
    arg_default: str = "d1"
    build_arg: str = ""
    unused_arg: str = ""
    network: str = "default"
    target: str = ""
    files: tuple[tuple[str, str, int], ...] = (("a.txt", "a-v000\n", 0o644), ("b.txt", "b-v000\n", 0o644))
    link: str = "a.txt"
    ignore: tuple[str, ...] = ()
    bind: str = "m-v000\n"
    run_heredoc: int = 0
    copy_heredoc: int = 0
    tar_member: str = "t-v000\n"
    other_x: int = 0
    other_y: int = 0
    base_flavor: str = "0"
    base_trigger: str = ""
    base_env: str = "0"
    label: int = 0
    cmd: int = 0
    entrypoint: int = 0
    remove: str = "nothing"

    def dockerfile(self) -> str:
        main = ["FROM base:1 AS main", f"ARG B={self.arg_default}"]
        if self.shell:
            main.append("SHELL " + json.dumps(list(self.shell)))
        main += [f"ENV MODE={self.mode}", f"WORKDIR {self.workdir}"]
        if self.workdir_rel:
            main.append(f"WORKDIR {self.workdir_rel}")
        main += [
            "COPY files/ /ctx/",
            "ADD arch.tar /arch/",
            "COPY --from=other /out/x /fromother/x",
            "COPY <<EOF /heredoc.txt", f"copy-heredoc-{self.copy_heredoc} B=$B", "EOF",
        ]
        main.append(f"RUN rm -rf /ctx/{self.remove} /arch/{self.remove}")  # whiteouts
        if self.user:
            main.append(f"USER {self.user}")
        main += [
            "RUN --mount=type=bind,source=m.txt,target=/m.txt --mount=type=bind,from=other,source=/out,target=/other "
            f"{OBSERVE} > /out/obs-main && cat /m.txt > /out/m && cat /other/y > /out/other-y",
            "RUN <<EOF", f"echo run-heredoc-{self.run_heredoc} $B > /out/run-heredoc", "EOF",
            f"RUN echo text-{self.run_text} > /out/text && ln -f /out/text /out/text-hardlink",
            # The whole context, bound: the RUN sees every file the context offers (and .dockerignore hides).
            "RUN --mount=type=bind,target=/c { find /c | sort; cat /c/files/link /c/m.txt; } > /out/ctx 2>&1 || true",
            f"LABEL v={self.label}",
            f'CMD ["cmd-{self.cmd}"]',
            f'ENTRYPOINT ["/bin/echo", "entry-{self.entrypoint}"]',
        ]
        other = [
            "# the other stage: main copies /out/x from it; --target other builds it alone",
            "FROM base:1 AS other", f"ARG B={self.arg_default}",
            f"RUN {OBSERVE} > /out/obs-other && echo x-{self.other_x} $B > /out/x && echo y-{self.other_y} > /out/y",
        ]
        return "\n".join(other + [""] + main) + "\n"

    def build_args(self) -> dict[str, str]:
        args = {"B": self.build_arg} if self.build_arg else {}
        if self.unused_arg:
            args["UNUSED"] = self.unused_arg
        return args

    def tar_bytes(self) -> bytes:
        """A deterministic tar for ADD to unpack (fixed times and owners, a hard link)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in (("one.txt", self.tar_member.encode()), ("two.txt", b"two\n")):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 1_000_000, 0o640, 7, 8
                tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("hard.txt")
            link.type, link.linkname, link.mtime, link.mode = tarfile.LNKTYPE, "one.txt", 1_000_000, 0o640
            tar.addfile(link)
        return buf.getvalue()


def write_context(ctx: Path, model: Model, keep_mtime: frozenset[str] = frozenset()) -> None:
    """Make `ctx` hold exactly what `model` says; files named in `keep_mtime` keep their old mtime."""
    wanted: dict[str, bytes] = {name: data.encode() for name, data, _ in model.files}
    files = ctx / "files"
    files.mkdir(parents=True, exist_ok=True)
    for path in list(files.iterdir()):
        if path.name != "link" and path.name not in wanted:
            path.unlink()
    for name, data, mode in model.files:
        put(files / name, data.encode(), f"files/{name}" in keep_mtime)
        os.chmod(files / name, mode)
    link = files / "link"
    if link.is_symlink() and os.readlink(link) != model.link:
        link.unlink()
    if not link.is_symlink():
        os.symlink(model.link, link)
    put(ctx / "Dockerfile", model.dockerfile().encode(), False)
    put(ctx / "m.txt", model.bind.encode(), "m.txt" in keep_mtime)
    put(ctx / "arch.tar", model.tar_bytes(), "arch.tar" in keep_mtime)
    ignore = ctx / ".dockerignore"
    if model.ignore:
        put(ignore, ("\n".join(model.ignore) + "\n").encode(), False)
    else:
        ignore.unlink(missing_ok=True)


def put(path: Path, data: bytes, keep_mtime: bool) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    before = path.stat() if path.exists() else None
    path.write_bytes(data)
    if keep_mtime and before is not None:
        assert before.st_size == len(data), f"{path}: a keep-mtime rewrite must keep the size"
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _same_size(text: str, n: int) -> str:
    """`text` with its version number replaced: same length, different bytes."""
    stem, _, rest = text.rpartition("-v")
    tail = rest[3:]  # whatever other mutations appended after the three digits stays as it is
    new = f"{stem}-v{n % 1000:03d}{tail}"
    return new if new != text else f"{stem}-v{(n + 1) % 1000:03d}{tail}"


def _pick(options: Sequence[Any], current: Any, n: int) -> Any:
    """One of `options` other than `current` (when there is another)."""
    others = [o for o in options if o != current] or list(options)
    return others[n % len(others)]


def mutate(model: Model, kind: str, n: int) -> tuple[Model, frozenset[str]]:
    """The model after mutation `kind` (with `n` choosing among variants), and files to keep the mtime of."""
    keep: frozenset[str] = frozenset()
    r = dataclasses.replace
    files = list(model.files)
    i = n % len(files)
    if kind == "instruction":
        model = r(model, run_text=model.run_text + 1)
    elif kind == "user":
        model = r(model, user=_pick(("", "1000", "2000", "1000:1000"), model.user, n))
    elif kind == "workdir":
        model = r(model, workdir=_pick(("/w1", "/w2", "/w1/sub"), model.workdir, n))
    elif kind == "workdir_rel":
        model = r(model, workdir_rel=_pick(("", "rel", "rel/deeper"), model.workdir_rel, n))
    elif kind == "shell":
        model = r(model, shell=_pick(((), ("/bin/sh", "-c"), ("/bin/sh", "-ec"), ("/bin/sh", "-uc")), model.shell, n))
    elif kind == "env":
        model = r(model, mode=_pick(("a", "b", "c"), model.mode, n))
    elif kind == "arg_default":
        model = r(model, arg_default=_pick(("d1", "d2", "d3"), model.arg_default, n))
    elif kind == "build_arg":
        model = r(model, build_arg=_pick(("", "x", "y"), model.build_arg, n))
    elif kind == "unused_arg":
        model = r(model, unused_arg=_pick(("", "u1", "u2"), model.unused_arg, n))
    elif kind == "network":
        model = r(model, network=_pick(("default", "none"), model.network, n))
    elif kind == "target":
        model = r(model, target=_pick(("", "other"), model.target, n))
    elif kind == "file_content":
        name, data, mode = files[i]
        files[i] = (name, data.rstrip("\n") + "+" * (1 + n % 3) + "\n", mode)
        model = r(model, files=tuple(files))
    elif kind == "file_same_size":
        name, data, mode = files[i]
        files[i] = (name, _same_size(data, n), mode)
        model, keep = r(model, files=tuple(files)), frozenset({f"files/{name}"})
    elif kind == "file_mode":
        name, data, mode = files[i]
        files[i] = (name, data, _pick((0o644, 0o755, 0o600), mode, n))
        model = r(model, files=tuple(files))
    elif kind == "symlink":
        model = r(model, link=_pick(("a.txt", "b.txt", "missing.txt"), model.link, n))
    elif kind == "add_file":
        model = r(model, files=(*files, (f"new{len(files)}-{n % 7}.txt", f"n{n % 7}-v000\n", 0o644)))
    elif kind == "remove_file":
        if len(files) > 1:
            del files[i]
        model = r(model, files=tuple(files))
    elif kind == "dockerignore":
        options = ((), ("files/b.txt",), ("files/new*",), ("files/*", "!files/a.txt"))
        model = r(model, ignore=_pick(options, model.ignore, n))
    elif kind == "bind_source":
        model = r(model, bind=model.bind.rstrip("\n") + "!\n")
    elif kind == "bind_same_size":
        model, keep = r(model, bind=_same_size(model.bind, n)), frozenset({"m.txt"})
    elif kind == "run_heredoc":
        model = r(model, run_heredoc=model.run_heredoc + 1)
    elif kind == "copy_heredoc":
        model = r(model, copy_heredoc=model.copy_heredoc + 1)
    elif kind == "tar":
        model, keep = r(model, tar_member=_same_size(model.tar_member, n)), frozenset({"arch.tar"})
    elif kind == "other_x":
        model = r(model, other_x=model.other_x + 1)
    elif kind == "other_y":
        model = r(model, other_y=model.other_y + 1)
    elif kind == "base_retag":
        model = r(model, base_flavor=_pick(("0", "1"), model.base_flavor, n))
    elif kind == "base_config":
        model = r(model, base_env=_pick(("0", "1"), model.base_env, n))
    elif kind == "base_onbuild":
        model = r(model, base_trigger=_pick(("", "t1", "t2"), model.base_trigger, n))
    elif kind == "whiteout":
        model = r(model, remove=_pick(("nothing", "a.txt", "link", "hard.txt"), model.remove, n))
    elif kind == "label":
        model = r(model, label=model.label + 1)
    elif kind == "cmd":
        model = r(model, cmd=model.cmd + 1)
    elif kind == "entrypoint":
        model = r(model, entrypoint=model.entrypoint + 1)
    else:
        raise AssertionError(f"unknown mutation {kind}")
    return model, keep


MUTATIONS = ("instruction", "user", "workdir", "workdir_rel", "shell", "env", "arg_default", "build_arg",
             "unused_arg", "network", "target", "file_content", "file_same_size", "file_mode", "symlink",
             "add_file", "remove_file", "dockerignore", "bind_source", "bind_same_size", "run_heredoc",
             "copy_heredoc", "tar", "other_x", "other_y", "base_retag", "base_config", "base_onbuild", "label", "cmd",
             "entrypoint", "whiteout")


class Lab:
    """The directories of one example: a context, base contexts, the cached store, base templates."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.ctx = top / "ctx"
        self.cached = top / "cached" / "store"
        self.templates: dict[tuple[str, str, str], Path] = {}
        self.base_in_cache: tuple[str, str, str] | None = None
        self.builds = 0

    def base(self, root: Path, variant: tuple[str, str, str], *, no_cache: bool) -> None:
        flavor, trigger, env = variant
        # One base context, rewritten: the base is rebuilt (with the cache) and base:1 retagged, as a user would.
        kit.make_base(self.top / "base", root, flavor=flavor, trigger=trigger or None, env=env, no_cache=no_cache)
        self.builds += 1

    def fresh_store(self, variant: tuple[str, str, str]) -> Path:
        """A new store holding only the base image, copied from a template built once with --no-cache."""
        if variant not in self.templates:
            self.templates[variant] = self.top / f"template-{len(self.templates)}" / "store"
            self.base(self.templates[variant], variant, no_cache=True)
        fresh = self.top / "fresh" / "store"
        shutil.rmtree(fresh.parent, ignore_errors=True)
        shutil.copytree(self.templates[variant], fresh, symlinks=True)
        return fresh

    def build(self, model: Model, root: Path, *, no_cache: bool, history: list[str]) -> dict[str, Any]:
        try:
            kit.build(self.ctx, root, network=model.network, build_args=model.build_args(),
                      target=model.target or None, no_cache=no_cache)
        except LayerbuildError as exc:
            raise AssertionError(f"the {'--no-cache' if no_cache else 'cached'} build failed after mutations "
                                 f"{' → '.join(history)}: {exc}\nDockerfile:\n{model.dockerfile()}") from exc
        self.builds += 1
        return kit.image_snapshot(root, "sut:latest", self.top / "export")

    def check(self, model: Model, history: list[str]) -> None:
        variant = (model.base_flavor, model.base_trigger, model.base_env)
        if self.base_in_cache != variant:
            self.base(self.cached, variant, no_cache=False)  # builds (with the cache) and retags base:1
            self.base_in_cache = variant
        cached = self.build(model, self.cached, no_cache=False, history=history)
        fresh_root = self.fresh_store(variant)
        fresh = self.build(model, fresh_root, no_cache=True, history=history)
        shutil.rmtree(fresh_root.parent, ignore_errors=True)
        diffs = kit.differences(cached, fresh)
        assert not diffs, (
            "the build with the cache differs from a --no-cache build of the same inputs\n"
            f"mutations: {' → '.join(history)}\n" + "\n".join(f"  {d}" for d in diffs[:20])
            + f"\nDockerfile:\n{model.dockerfile()}build args: {model.build_args()} network: {model.network} "
            f"target: {model.target or '(last)'}"
        )


EXAMPLES = int(os.environ.get("LAYERBUILD_SOUNDNESS_EXAMPLES", "8"))
# A comma-separated subset of MUTATIONS, to hunt one kind of false hit (default: all of them).
CHOSEN = tuple(m for m in os.environ.get("LAYERBUILD_SOUNDNESS_MUTATIONS", "").split(",") if m) or MUTATIONS
# Shrinking a failing sequence costs minutes of builds; the failure names its sequence anyway.
PHASES = tuple(Phase) if os.environ.get("LAYERBUILD_SOUNDNESS_SHRINK") else (Phase.explicit, Phase.generate)
BUILD_COUNT: list[int] = []


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=PHASES,
          derandomize=not os.environ.get("LAYERBUILD_SOUNDNESS_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(mutations=st.lists(st.tuples(st.sampled_from(CHOSEN), st.integers(0, 999)), min_size=1, max_size=3))
def test_cached_build_equals_fresh_no_cache_build(
        mutations: list[tuple[str, int]], tmp_path_factory: pytest.TempPathFactory,
        record_property: Callable[[str, object], None]) -> None:
    top = tmp_path_factory.mktemp("soundness")
    lab = Lab(top)
    try:
        model = Model()
        write_context(lab.ctx, model)
        history = ["initial"]
        lab.check(model, history)
        for kind, n in mutations:
            model, keep = mutate(model, kind, n)
            write_context(lab.ctx, model, keep)
            history.append(f"{kind}({n})")
            lab.check(model, history)
    finally:
        BUILD_COUNT.append(lab.builds)
        total = sum(BUILD_COUNT)
        record_property("soundness_builds", total)
        print(f"soundness: {len(BUILD_COUNT)} sequences, {total} builds so far")
        shutil.rmtree(top, ignore_errors=True)
