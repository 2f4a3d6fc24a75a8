"""COPY/ADD source selection with Docker's semantics, and the content key over what was selected.

`select_copy` resolves every source (wildcards, symlinks inside the tree, directories meaning their
contents, --exclude, --parents, heredocs, URLs, archives) into a `CopySelection`; `write_copy_layer`
(copywrite.py) then turns the selection into a layer. The content key covers the selected entries'
fingerprints and where they go relative to the destination, plus the flags as written; whether the
destination already exists in the image is part of the parent's key, not of this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from layerbuild.context.ignore import (
    Matcher,
    MatchInfo,
    compile_patterns,
    glob_regex,
    go_clean,
    has_wildcards,
)
from layerbuild.context.tree import BuildContext, Entry, SourceTree
from layerbuild.digest import key_hash
from layerbuild.errors import BuildError
from layerbuild.worker.copyowner import check_chown, parse_chmod
from layerbuild.worker.fetch import (
    HttpFetch,
    archive_format,
    http_fetch,
    is_git_url,
    is_url,
    parse_checksum,
    url_filename,
)
from layerbuild.worker.selection import CopySelection, CopySource

if TYPE_CHECKING:
    from layerbuild.instructions.commands import SourceContent
    from layerbuild.layer import LayerInfo

__all__ = ["CopySelection", "CopySource", "normalize_dest", "select_copy", "write_copy_layer"]


def normalize_dest(dest: str, workdir: str) -> tuple[str, bool]:
    """(absolute cleaned destination, whether its spelling makes it a directory) like BuildKit."""
    is_dir = dest.endswith("/") or dest in ("", ".") or dest.endswith("/.")
    if not dest.startswith("/"):
        dest = (workdir or "/").rstrip("/") + "/" + dest
    return go_clean("/" + dest), is_dir


def _source_rel(src: str, tree: SourceTree) -> str:
    cleaned = go_clean(src)
    if cleaned == ".." or cleaned.startswith("../"):
        raise BuildError(f"forbidden path outside the {tree.kind}: {src}")
    return go_clean("/" + cleaned).lstrip("/")


def not_found(src: str, tree: SourceTree, label: str | None = None) -> BuildError:
    """`src` is not in `tree` (named `label` in the message, else quoted), with a hint when
    .dockerignore is why."""
    hint = None
    if isinstance(tree, BuildContext) and tree.excluded(_source_rel(src, tree)):
        ignore = tree.ignore_file.name if tree.ignore_file is not None else ".dockerignore"
        hint = f"{src!r} is excluded by {ignore}"
    elif isinstance(tree, BuildContext) and tree.note:
        hint = tree.note
    return BuildError(f"{label or repr(src)}: not found in the {tree.kind}", hint=hint)


def glob_tree(tree: SourceTree, rel: str) -> list[tuple[str, Entry]]:
    """Matches of a wildcard path (Go filepath.Match per component) as (path as matched, entry followed)."""
    parts = [p for p in rel.split("/") if p]
    results: list[tuple[str, Entry]] = []

    def step(i: int, real_dir: str, shown: str) -> None:
        if i == len(parts):
            return
        part = parts[i]
        last = i == len(parts) - 1
        if has_wildcards(part):
            regex = glob_regex(part)
            names = [n for n in tree.children(real_dir) if regex.match(n)]
        else:
            names = [part.replace("\\", "")]
        for name in names:
            here = f"{shown}/{name}" if shown else name
            probe = f"{real_dir}/{name}" if real_dir else name
            entry = tree.resolve(probe, what=here)
            if entry is None:
                continue
            if last:
                results.append((here, entry))
            elif entry.is_dir:
                step(i + 1, entry.rel, here)

    step(0, "", "")
    return results


def _walk_members(
    tree: SourceTree, real_dir: str, prefix: str, excl: Matcher | None, info: MatchInfo
) -> Iterator[tuple[str, Entry]]:
    for name, entry in tree.children(real_dir).items():
        rel = f"{prefix}/{name}" if prefix else name
        cinfo: MatchInfo = ()
        if excl is not None:
            excluded, cinfo = excl.matches(rel, info)
            if excluded:
                if entry.is_dir and excl.may_reinclude_below(rel):
                    inner = list(_walk_members(tree, entry.rel, rel, excl, cinfo))
                    if inner:
                        yield rel, entry
                        yield from inner
                continue
        yield rel, entry
        if entry.is_dir:
            yield from _walk_members(tree, entry.rel, rel, excl, cinfo)


def _parents_source(tree: SourceTree, src: str, excl: Matcher | None) -> CopySource:
    # `--parents`: the part after a `/./` pivot (else the whole path) keeps its directories below dest.
    pivot, sep, pattern = src.partition("/./")
    if not sep:
        pivot, pattern = "/", src
    root = tree.resolve(_source_rel(pivot, tree), what=pivot)
    if root is None or not root.is_dir:
        raise not_found(pivot, tree)
    pattern = go_clean("/" + pattern).lstrip("/")
    include = compile_patterns([pattern])
    members: list[tuple[str, Entry]] = []
    for rel, entry in _walk_members(tree, root.rel, "", excl, ()):
        if include.matches(rel)[0]:
            members.append((rel, entry))
    if members:
        keep = {rel for rel, _ in members}
        parents = set()
        for rel in keep:  # the directories leading to a match come along, with their own metadata
            while "/" in rel:
                rel = rel.rpartition("/")[0]
                parents.add(rel)
        members = [
            (rel, e)
            for rel, e in _walk_members(tree, root.rel, "", excl, ())
            if rel in keep or rel in parents
        ]
    elif not has_wildcards(pattern):
        raise not_found(src, tree)
    return CopySource("contents", root.name, root, tuple(members))


def select_copy(
    source: SourceTree | None,
    sources: Sequence[str],
    dest: str,
    *,
    workdir: str = "/",
    excludes: Sequence[str] = (),
    parents: bool = False,
    chown: str | None = None,
    chmod: str | None = None,
    link: bool = False,
    heredocs: Sequence[SourceContent] = (),
    is_add: bool = False,
    checksum: str | None = None,
    keep_git_dir: bool = False,
    allow_empty_wildcard: bool = False,
    http_fetch: HttpFetch = http_fetch,
) -> CopySelection:
    """Resolve a COPY/ADD against `source` (the build context or a stage's tree) and key its content.

    Heredoc `data` is used as given (the caller expands variables when the heredoc asks for it)."""
    name = "ADD" if is_add else "COPY"
    if checksum is not None:
        if not is_add:
            raise BuildError("checksum can't be specified for COPY")
        if len(sources) != 1:
            raise BuildError("checksum can't be specified for multiple sources")
        if not is_url(sources[0]):
            raise BuildError("checksum requires HTTP(S) or Git sources")
        parse_checksum(checksum)
    if chown is not None:
        check_chown(chown)
    mode_fn = parse_chmod(chmod) if chmod is not None else None
    excl = compile_patterns(excludes) if excludes else None
    dest_abs, dest_is_dir = normalize_dest(dest, workdir)

    resolved: list[CopySource] = []
    for src in sources:
        if is_url(src) or is_git_url(src):
            if not is_add:
                raise BuildError(f"source can't be a URL for COPY: {src}", hint="use ADD for URLs")
            if is_git_url(src):
                raise BuildError(f"ADD {src}: git sources are not supported yet")
            resolved.append(CopySource("url", url_filename(src), url=src))
            continue
        if source is None:
            raise BuildError(f"{name} {src}: no source tree to copy from")
        if parents:
            resolved.append(_parents_source(source, src, excl))
            continue
        rel = _source_rel(src, source)
        if has_wildcards(rel):
            matches = glob_tree(source, rel)
        else:
            entry = source.resolve(rel, what=src)
            if entry is None:
                raise not_found(src, source)
            matches = [(rel, entry)]
        for shown, entry in matches:
            item = _single(source, shown, entry, excl, is_add)
            if item is not None:
                resolved.append(item)
    for doc in heredocs:
        resolved.append(CopySource("heredoc", doc.path, data=doc.data.encode("utf-8", "surrogateescape")))
    if not resolved and not allow_empty_wildcard:
        raise BuildError(f"{name} failed: no source files were specified")
    if len(resolved) > 1:
        dest_is_dir = True

    sel = CopySelection(
        source,
        dest_abs,
        dest_is_dir,
        tuple(resolved),
        "",
        {},
        chown=chown,
        chmod=mode_fn,
        link=link,
        is_add=is_add,
        checksum=checksum,
        http_fetch=http_fetch,
    )
    try:
        _key(sel, dest, excludes, parents, chmod, keep_git_dir)
    except BaseException:
        sel.close()
        raise
    return sel


def _single(
    tree: SourceTree, shown: str, entry: Entry, excl: Matcher | None, is_add: bool
) -> CopySource | None:
    base = shown.rpartition("/")[2] or entry.name
    # A top-level source is matched against --exclude by its name (`COPY --exclude=*.txt hom* /d/`);
    # what is inside a directory source, by its path relative to that directory.
    if base and excl is not None and excl.matches(base)[0]:
        return None
    if entry.is_dir:
        return CopySource("contents", base, entry, tuple(_walk_members(tree, entry.rel, "", excl, ())))
    if is_add and entry.is_file:
        fmt = archive_format(entry.path)
        if fmt is not None:
            return CopySource("archive", base, entry, archive=fmt)
    return CopySource("single", base, entry)


def _key(
    sel: CopySelection,
    dest: str,
    excludes: Sequence[str],
    parents: bool,
    chmod: str | None,
    keep_git_dir: bool,
) -> None:
    h = hashlib.sha256()
    flags = [
        "copy-v1",
        "ADD" if sel.is_add else "COPY",
        dest,
        sel.dest,
        str(sel.dest_is_dir),
        str(parents),
        sel.chown or "",
        chmod or "",
        "\x1f".join(excludes),
        str(sel.link),
        str(keep_git_dir),
    ]
    h.update("\0".join(flags).encode("utf-8", "surrogateescape"))
    fps: dict[str, str] = {}
    tree = sel.tree
    if tree is not None:  # the big files the stat cache cannot vouch for, hashed in parallel first
        tree.prefetch(entry for src in sel.sources for _, entry in src.members)
    for src in sel.sources:
        h.update(f"\n{src.kind}\0{src.name}\0".encode("utf-8", "surrogateescape"))
        if src.root is not None:
            assert tree is not None
            fp = tree.fingerprint(src.root)
            fps[src.root.rel] = fp
            h.update(fp.encode())
        for rel, entry in src.members:
            fp = tree.fingerprint(entry)  # type: ignore[union-attr]
            fps[entry.rel] = fp
            h.update(b"\n" + rel.encode("utf-8", "surrogateescape") + b"\0" + fp.encode())
        _key_links(h, src)
        if src.data is not None:
            fp = key_hash(src.data)
            fps["<<" + src.name] = fp
            h.update(fp.encode())
        if src.url is not None:
            # With --checksum the content is pinned: no download is needed to know the key.
            fp = sel.checksum if sel.checksum is not None else sel.fetch(src.url).digest
            fps[src.url] = fp
            h.update(fp.encode())
    sel.content_key = h.hexdigest()
    sel.fingerprints = fps


def _key_links(h: Any, src: CopySource) -> None:
    """Hash which of the source's files are hard links of each other: the layer writes them as links,
    so changing the link structure alone (same contents) must change the key."""
    inodes: dict[tuple[int, int], list[str]] = {}
    for rel, entry in src.members:
        if entry.is_file and entry.st.st_nlink > 1:
            inodes.setdefault((entry.st.st_dev, entry.st.st_ino), []).append(rel)
    groups = sorted(sorted(rels) for rels in inodes.values() if len(rels) > 1)
    for rels in groups:
        h.update(b"\nlinks\0" + "\0".join(rels).encode("utf-8", "surrogateescape"))


def write_copy_layer(sel: CopySelection, out: BinaryIO, **kw: Any) -> LayerInfo:
    """See `copywrite.write_copy_layer`; imported on first use, so a cached (no-op) build never loads
    the layer writer."""
    from layerbuild.worker.copywrite import write_copy_layer as write

    return write(sel, out, **kw)
