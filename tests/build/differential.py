"""Differential cases against a real BuildKit: each case is a Dockerfile and a context, built on the same
busybox rootfs by BuildKit (through dockerd, by `scripts/record-buildkit`) and by layerbuild (by
tests/build/test_buildkit_differential.py). Both images are read from a docker-save archive into one
comparable summary: the files the build added, changed or removed against the base (type, mode, owner,
size, content hash, link target, hard-link groups; never mtimes), the image config's runtime fields and
the history's shape. The recorded summaries live in buildkit_recorded.json, so CI needs no dockerd."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).with_name("buildkit_recorded.json")

# A context file: text, or (text, mode), or ("->", target) for a symlink, or ("==", other) for a hard
# link to another file of the case.
File = str | tuple[str, int] | tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    files: Mapping[str, File] = dataclasses.field(default_factory=dict)
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    target: str | None = None
    # Images built first, from their own Dockerfiles in the same context, tagged with the key.
    parents: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Where the recorded engine (Docker 20.10's BuildKit) and current BuildKit differ, layerbuild
    # follows current BuildKit: `current` says how current BuildKit's summary differs from the record
    # ("history": {recorded text: current text}, "files": {path: current text of a file}, "twin": the
    # case whose record current BuildKit's result equals), and `current_why` cites the source.
    current: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    current_why: str = ""


EXPOSE_WHY = ('"EXPOSE %v" of the parsed port list (dockerfile2llb/convert_expose.go); Docker 20.10 '
              'printed a Go map')

CHOWN_WHY = "COPY's and ADD's history names --chown and --chmod (dockerfile2llb/convert_copy.go)"
GLOBAL_ARGS = {"ARG ver": "ARG ver=q u", "ARG other": "ARG other=2"}

CASES: list[Case] = [
    # issue 10, item 1: COPY into existing directories keeps their owner and mode.
    Case("copy_into_existing_dirs",
         "FROM base\nRUN mkdir -p /opt/app && chown 1000:1000 /opt/app && chmod 0750 /opt/app\n"
         "COPY f.txt /home/app/\nCOPY f.txt /opt/app/\nCOPY f.txt /new/deeper/\n",
         {"f.txt": "hello\n"}),
    # item 2: a base without PATH expands and runs with the default PATH.
    Case("default_path", "FROM base\nENV PATH=/usr/local/bin:$PATH\nRUN echo \"$PATH\" > /path.txt\n"),
    # item 3: a child stage inherits its parent stage's ARGs.
    Case("stage_inherits_args",
         "FROM base AS parent\nARG PARENT_ARG=from-parent\nFROM parent\n"
         "RUN echo \"[$PARENT_ARG]\" > /arg.txt\n",
         current={"history": {'RUN /bin/sh -c echo "[$PARENT_ARG]" > /arg.txt # buildkit':
                              'RUN |1 PARENT_ARG=from-parent /bin/sh -c echo "[$PARENT_ARG]" > /arg.txt # buildkit'}},
         current_why="a child stage inherits its parent's build args, which RUN's history lists "
                     "(dockerfile2llb/convert.go: ds.buildArgs = append(ds.buildArgs, ds.base.buildArgs...))"),
    # item 4: hard links among copied files stay hard links.
    Case("hard_links", "FROM base\nCOPY d/ /d/\n",
         {"d/a": "same\n", "d/b": ("==", "d/a"), "d/c": "other\n"}),
    # item 5: WORKDIR creates its directories owned by the USER in effect.
    Case("workdir_owner", "FROM base\nUSER app\nWORKDIR /w/x/y\nUSER 1000:2000\nWORKDIR /n/m\n"),
    # item 6: an empty wildcard match copies nothing.
    Case("empty_wildcard", "FROM base\nCOPY nomatch* /dst/\nCOPY f.txt /dst/\n", {"f.txt": "x\n"}),
    # item 7: supplementary groups of RUN steps.
    Case("run_groups", "FROM base\nUSER 1000:1000\nRUN id > /tmp/id1\nUSER app\nRUN id > /tmp/id2\n"
                       "USER root\nRUN id > /tmp/id3\n",
         current={"files": {"/tmp/id1": "uid=1000(app) gid=1000(app) groups=1000(app)\n",
                            "/tmp/id2": "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n",
                            "/tmp/id3": "uid=0(root) gid=0(root) groups=0(root)\n"}},
         current_why="BuildKit v0.12+ puts the primary gid among the supplementary groups, as docker run "
                     "does (executor/oci/user.go ensureAdditionalGids)"),
    # item 9: the pure-semantics cases of BuildKit's dockerfile integration tests.
    Case("required_variable", "FROM base\nRUN echo ${FOO:?FOO is not set}\n"),
    Case("arg_empty_and_bare", "FROM base\nARG FOO\nARG BAR=\n"
                               "RUN (env | grep '^BAR=' ; env | grep -c '^FOO=' ; true) > /env.txt\n"),
    Case("meta_arg_trim_in_from", 'ARG img=base-extra ver="q u" other=2\nFROM ${img%%-*}\nARG ver\nARG other\n'
                                  'RUN echo "$ver|$other" > /v.txt\n',
         current={"twin": "meta_arg_trim_twin", "history": GLOBAL_ARGS},
         current_why="`${var%%pattern}` is expanded since dockerfile 1.x's shell lexer learned prefix and "
                     "suffix removal; Docker 20.10's frontend refused it"),
    Case("meta_arg_trim_twin", 'ARG img=base-extra ver="q u" other=2\nFROM base\nARG ver\nARG other\n'
                               'RUN echo "$ver|$other" > /v.txt\n',
         current={"history": GLOBAL_ARGS},
         current_why="a stage's ARG that takes a global ARG's value records it in the history "
                     "(dockerfile2llb/convert.go dispatchArg, globalArgs)"),
    Case("expose_expansion", "FROM base\nARG PORTS='3000 4000/udp'\nEXPOSE $PORTS\nEXPOSE 5000\n",
         current={"history": {"EXPOSE map[3000/tcp:{} 4000/udp:{}]": "EXPOSE [3000/tcp 4000/udp]",
                              "EXPOSE map[5000/tcp:{}]": "EXPOSE [5000/tcp]"}},
         current_why=EXPOSE_WHY),
    Case("shell_entrypoint_clears_cmd",
         'FROM base AS parent\nCMD ["inherited"]\nFROM parent\nSHELL ["/bin/sh", "-xc"]\nENTRYPOINT echo hello\n'),
    Case("workdir_relative_copy", "FROM base\nWORKDIR /a\nWORKDIR b\nCOPY f.txt .\nCOPY f.txt rel/\n"
                                  "RUN pwd > /pwd.txt\n", {"f.txt": "f\n"}),
    Case("override_files", "FROM base\nCOPY f.txt /x/f.txt\nCOPY g.txt /x/f.txt\nCOPY d /x/\n",
         {"f.txt": "one\n", "g.txt": "two\n", "d/f.txt": "three\n"}),
    Case("trailing_slash", "FROM base\nCOPY f.txt /nodir\nCOPY f.txt /dir/\nCOPY f.txt g.txt /multi/\n",
         {"f.txt": "f\n", "g.txt": "g\n"}),
    Case("stage_names_case", "FROM base AS Builder\nRUN echo b > /b.txt\nFROM base\n"
                             "COPY --from=builder /b.txt /b.txt\nCOPY --from=BUILDER /b.txt /c.txt\n"),
    Case("scratch_config", "FROM scratch\nENV A=1\nLABEL l=v\nCOPY f.txt /\nCMD [\"/f.txt\"]\n",
         {"f.txt": "f\n"}),
    Case("onbuild_cleared", "FROM onbuilder\nRUN cat /trig.txt > /seen.txt\n",
         parents={"onbuilder": "FROM base\nONBUILD RUN echo triggered > /trig.txt\n"}),
    Case("symlink_destination", "FROM base\nRUN mkdir /real && ln -s /real /link && ln -s real /rel\n"
                                "COPY f.txt /link/\nCOPY f.txt /rel/g.txt\n", {"f.txt": "f\n"}),
    # Everyday semantics real Dockerfiles rely on.
    Case("copy_dir_contents_and_modes",
         "FROM base\nCOPY src /app\nCOPY src/ /app2/\nCOPY run.sh /\n",
         {"src/a.txt": "a\n", "src/sub/b.txt": "b\n", "src/link": ("->", "a.txt"), "run.sh": ("#!/bin/sh\n", 0o755)}),
    Case("copy_chown", "FROM base\nCOPY --chown=app:app f.txt /f1\nCOPY --chown=1000:2000 f.txt /f2\n"
                       "COPY --chown=app d /d/\n", {"f.txt": "f\n", "d/x": "x\n"},
         current={"history": {"COPY f.txt /f1 # buildkit": "COPY --chown=app:app f.txt /f1 # buildkit",
                              "COPY f.txt /f2 # buildkit": "COPY --chown=1000:2000 f.txt /f2 # buildkit",
                              "COPY d /d/ # buildkit": "COPY --chown=app d /d/ # buildkit"}},
         current_why=CHOWN_WHY),
    Case("run_whiteouts", "FROM base\nRUN rm /etc/motd && rm -r /home/app && mkdir /home/app && echo n > /home/app/n\n"),
    Case("dockerignore", "FROM base\nCOPY . /ctx/\n",
         {".dockerignore": "*.log\n!keep.log\nsecret/\n", "a.txt": "a\n", "x.log": "x\n", "keep.log": "k\n",
          "secret/s": "s\n", "sub/y.log": "y\n"}),
    Case("env_same_line", "FROM base\nENV A=1\nENV A=2 B=$A\nRUN echo \"$A $B\" > /ab.txt\n"),
    Case("arg_and_build_arg", "ARG V=default\nFROM base\nARG V\nARG W=w\nRUN echo \"$V $W\" > /vw.txt\n",
         build_args={"V": "given", "W": "over"},
         current={"history": {"ARG V": "ARG V=given", "ARG W=w": "ARG W=over"}},
         current_why="ARG's history holds the value the arg took, a --build-arg's included "
                     "(dockerfile2llb/convert.go dispatchArg)"),
    Case("target_stage", "FROM base AS one\nRUN echo 1 > /one\nFROM base AS two\nRUN echo 2 > /two\n",
         target="one"),
    Case("config_fields",
         'FROM base\nUSER app\nWORKDIR /srv\nENV X="a b" Y=\'c\'\nLABEL a=1 "b c"="d e"\n'
         "EXPOSE 80/tcp 53/udp\nVOLUME /data /logs\nSTOPSIGNAL SIGTERM\n"
         "HEALTHCHECK --interval=5s --retries=2 CMD true\nENTRYPOINT [\"/bin/sh\"]\nCMD [\"-c\", \"echo\"]\n",
         current={"history": {"EXPOSE map[53/udp:{} 80/tcp:{}]": "EXPOSE [80/tcp 53/udp]",
                              "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"5s\" \"0s\" \"0s\" '\\x02'}":
                              "HEALTHCHECK {Test:[CMD-SHELL true] Interval:5s Timeout:0s StartPeriod:0s "
                              "StartInterval:0s Retries:2}"}},
         current_why=EXPOSE_WHY + '; "HEALTHCHECK %+v" of the config struct (dockerfile2llb/convert.go)'),
    Case("user_copy_is_root", "FROM base\nUSER app\nCOPY f.txt /f\nRUN touch /tmp/t\n", {"f.txt": "f\n"}),
    Case("add_local_tar", "FROM base\nADD t.tar /t/\nADD f.txt /notar\n",
         {"f.txt": "f\n"}),
    Case("empty_steps", "FROM base\nRUN true\nWORKDIR /tmp\nWORKDIR /\nRUN echo x > /x && rm /x\nCOPY empty/ /tmp/\n",
         {"empty/.keep": ""}),
    # Names the image does not know leave the ids at 0 (solver/llbsolver/ops/user_linux.go readUser).
    Case("copy_chown_unknown_user", "FROM base\nCOPY --chown=nobody:nogroup f.txt /f\n", {"f.txt": "f\n"},
         current={"history": {"COPY f.txt /f # buildkit": "COPY --chown=nobody:nogroup f.txt /f # buildkit"}},
         current_why=CHOWN_WHY),
    Case("copy_chmod", "FROM base\nCOPY --chmod=0600 f.txt /f\nCOPY --chmod=755 d /d/\n",
         {"f.txt": "f\n", "d/x": "x\n"},
         current={"history": {"COPY f.txt /f # buildkit": "COPY --chmod=0600 f.txt /f # buildkit",
                              "COPY d /d/ # buildkit": "COPY --chmod=755 d /d/ # buildkit"}},
         current_why=CHOWN_WHY),
    Case("env_legacy_form", "FROM base\nENV A b c\nENV B=\"x y\" C=z\nLABEL old\\ form=1\n"),
    Case("add_chown_and_dir", "FROM base\nADD --chown=app:app d /ad/\nADD f.txt t.tar /multi/\n",
         {"d/x": "x\n", "f.txt": "f\n"},
         current={"history": {"ADD d /ad/ # buildkit": "ADD --chown=app:app d /ad/ # buildkit"}},
         current_why=CHOWN_WHY),
    # More of BuildKit's dockerfile_test.go: testDockerfileAddChownExpand, testCopyWildcards,
    # testCopySymlinks/testCopyThroughSymlinkContext, testEnvEmptyFormatting, testCopyVarSubstitution,
    # testDockerfileDirs, and ADD of a compressed archive.
    Case("chown_expansion", "FROM base\nARG owner=app\nARG group=extra\nCOPY --chown=$owner:${group} f.txt /f\n",
         {"f.txt": "f\n"},
         current={"history": {"COPY f.txt /f # buildkit": "COPY --chown=app:extra f.txt /f # buildkit"}},
         current_why=CHOWN_WHY),
    Case("copy_wildcards", "FROM base\nCOPY *.txt /w/\nCOPY dir* /d/\nCOPY [ab]?.md /m/\n",
         {"a.txt": "a\n", "b.txt": "b\n", "c.log": "c\n", "dir1/x": "x\n", "dir2/y": "y\n",
          "a1.md": "1\n", "b22.md": "2\n"}),
    Case("copy_symlinks", "FROM base\nCOPY link-to-file /lf\nCOPY sub/link-to-dir/ /ld/\nCOPY sub /sub/\n",
         {"file.txt": "f\n", "link-to-file": ("->", "file.txt"), "sub/real/x": "x\n",
          "sub/link-to-dir": ("->", "real")}),
    Case("env_empty_formatting", "FROM base\nENV myenv foo%sbar\nENV empty=\nENV q=\"\" s='a b'\n"
                                 "RUN echo \"[$myenv][$empty][$q][$s]\" > /e.txt\n"),
    Case("copy_var_substitution", "FROM base\nENV F=f.txt D=/dest\nCOPY $F ${D}/\nCOPY ${F} $D/again.txt\n",
         {"f.txt": "f\n"}),
    Case("dockerfile_dirs", "FROM base\nWORKDIR /test\nADD sub /sub\nADD f.txt .\nWORKDIR sub2\nCOPY f.txt ./\n"
                            "RUN stat -c '%n %a %u:%g %F' /test/* /test/sub2/* > /ls.txt; pwd >> /ls.txt\n",
         {"f.txt": "f\n", "sub/g": "g\n"}),
    Case("add_compressed_archive", "FROM base\nADD t.tar.gz /gz/\nCOPY t.tar.gz /copied/\n"),
    Case("copy_from_stage_paths",
         "FROM base AS b\nRUN mkdir -p /o/p && echo 1 > /o/p/one && echo 2 > /o/two\n"
         "FROM base\nCOPY --from=b /o /o\nCOPY --from=b /o/p/one /single\nCOPY --from=b /o/ /flat/\n"),
]


def tar_of(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_context(case: Case, ctx: Path) -> None:
    """The case's context in `ctx` (created), its Dockerfile included, with fixed mtimes."""
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(case.dockerfile)
    for name, text in case.parents.items():
        (ctx / f"{name}.Dockerfile").write_text(text)
    if case.name in ("add_local_tar", "add_chown_and_dir"):
        (ctx / "t.tar").write_bytes(tar_of({"in/a.txt": b"a\n", "b.txt": b"b\n"}))
    if case.name == "add_compressed_archive":
        (ctx / "t.tar.gz").write_bytes(gzip.compress(tar_of({"z/a.txt": b"za\n"}), mtime=0))
    links: list[tuple[str, str]] = []
    for name, spec in sorted(case.files.items()):
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, tuple) and spec[0] == "->":
            os.symlink(str(spec[1]), path)
            continue
        if isinstance(spec, tuple) and spec[0] == "==":
            links.append((name, str(spec[1])))
            continue
        text, mode = (spec, 0o644) if isinstance(spec, str) else (str(spec[0]), int(spec[1]))
        path.write_text(text)
        path.chmod(mode)
    for name, other in links:
        os.link(ctx / other, ctx / name)
    for path in [*ctx.rglob("*"), ctx]:
        if not path.is_symlink():
            os.utime(path, (1_700_000_000, 1_700_000_000))


# The config fields that say how a container runs; Docker's and OCI's spellings are the same here.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                 "StopSignal", "Shell", "OnBuild", "Healthcheck")


Entry = dict[str, Any]


def _entry(info: tarfile.TarInfo, data: bytes | None) -> Entry:
    kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(info.type, "file")
    out: Entry = {"type": kind, "mode": oct(stat.S_IMODE(info.mode)), "uid": info.uid, "gid": info.gid}
    if kind == "symlink":
        out["target"] = info.linkname
    elif kind == "file":
        out["size"] = len(data or b"")
        out["sha256"] = hashlib.sha256(data or b"").hexdigest()[:16]
        if data is not None and len(data) <= 200 and data.isascii():
            out["text"] = data.decode()  # small results (what a RUN step printed) readable in the record
    return out


def _norm(name: str) -> str:
    name = name.lstrip("./") if name not in (".", "./") else ""
    return "/" + name.rstrip("/") if name else "/"


def flatten(layers: list[bytes]) -> dict[str, Entry]:
    """The filesystem a list of uncompressed (or gzip) layer tars makes, whiteouts applied; each file
    of a hard-link group carries `links`, the group's paths."""
    tree: dict[str, Entry] = {}
    for blob in layers:
        groups: dict[str, list[str]] = {}
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for info in tar:
                path = _norm(info.name)
                parent, _, base = path.rpartition("/")
                parent = parent or "/"
                if base == ".wh..wh..opq":
                    for p in [p for p in tree if p.startswith(parent.rstrip("/") + "/")]:
                        del tree[p]
                    continue
                if base.startswith(".wh."):
                    gone = (parent.rstrip("/") + "/" + base[4:])
                    for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                        del tree[p]
                    continue
                if info.type == tarfile.LNKTYPE:
                    target = _norm(info.linkname)
                    tree[path] = dict(tree[target])
                    groups.setdefault(target, [target]).append(path)
                    continue
                data = tar.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
                if path in tree and tree[path]["type"] == "dir" and info.isdir():
                    tree[path] = _entry(info, None)  # a directory's metadata changes, its contents stay
                    continue
                if path in tree and tree[path]["type"] == "dir":
                    for p in [p for p in tree if p.startswith(path + "/")]:
                        del tree[p]
                tree[path] = _entry(info, data)
        for members in groups.values():
            for p in members:
                tree[p]["links"] = sorted(members)
    return tree


def read_docker_archive(archive: Path) -> tuple[dict[str, Any], list[bytes]]:
    """(config, layer tars) of the one image in a docker-save archive."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        [image] = manifest
        config = json.load(tar.extractfile(image["Config"]))  # type: ignore[arg-type]
        layers = [tar.extractfile(name).read() for name in image["Layers"]]  # type: ignore[union-attr]
    return config, layers


def summarize(archive: Path, base: dict[str, Entry]) -> dict[str, Any]:
    """A build's comparable summary: its files against `base`, its runtime config, its history's shape."""
    config, layers = read_docker_archive(archive)
    tree = flatten(layers)
    files: dict[str, Entry | None] = {p: e for p, e in sorted(tree.items()) if base.get(p) != e}
    files.update({p: None for p in sorted(base) if p not in tree})
    run = config.get("config") or {}
    return {
        "files": files,
        "config": {k: run[k] for k in CONFIG_FIELDS if run.get(k) not in (None, [], {}, "")},
        "platform": [config.get("os"), config.get("architecture")],
        "history": [{"created_by": h.get("created_by", ""), "empty_layer": bool(h.get("empty_layer"))}
                    for h in config.get("history", [])],
        "layers": len(layers),
    }


# Where layerbuild differs from BuildKit on purpose (the README lists both):
# - BuildKit appends " # buildkit" to the history of steps that made a layer, its builder's mark;
#   layerbuild's steps carry their own mark in the history comment instead.
# - runc makes the mount points /dev, /proc and /sys in the rootfs of a RUN step whose base lacks
#   them, and BuildKit keeps them in the step's layer; layerbuild's layers hold only what the step wrote.
BUILDKIT_MARK = " # buildkit"
MOUNT_POINTS = ("/dev", "/proc", "/sys")
BARE_DIR = {"type": "dir", "mode": "0o755", "uid": 0, "gid": 0}


def expected(case: Case, record: Mapping[str, Any]) -> dict[str, Any]:
    """What layerbuild must make of `case`: the recorded summary, moved to current BuildKit where the
    case says so, without the deliberate differences above."""
    summary = dict(record[case.current.get("twin", case.name)])
    if summary.get("error"):
        return summary
    files = {p: e for p, e in summary["files"].items() if not (p in MOUNT_POINTS and e == BARE_DIR)}
    for path, text in case.current.get("files", {}).items():
        data = text.encode()
        files[path] = {**files[path], "text": text, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}
    renamed = case.current.get("history", {})
    history = [{**h, "created_by": renamed.get(h["created_by"], h["created_by"]).removesuffix(BUILDKIT_MARK)}
               for h in summary["history"]]
    return {**summary, "files": files, "history": history}
