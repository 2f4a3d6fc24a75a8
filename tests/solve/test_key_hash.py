"""Cache keys and the content fingerprints under them are sha256: a key may travel to a cache that other
machines share (a registry cache), where a fast non-cryptographic hash would let whoever writes there
forge a record for someone else's step."""

from __future__ import annotations

import hashlib
from pathlib import Path

from layerbuild.context.contenthash import fingerprint, hash_file
from layerbuild.context.tree import BuildContext
from layerbuild.solve import keys


def test_combine_is_sha256_of_the_version_and_the_parts() -> None:
    want = hashlib.sha256(b"\0".join([keys.KEY_VERSION.encode(), b"input", b"abc", b"-"])).hexdigest()
    assert keys.combine("input", "abc", "-") == want


def test_file_content_and_fingerprints_are_sha256(tmp_path: Path) -> None:
    data = b"hello\n" * 1000
    (tmp_path / "f").write_bytes(data)
    content, _ = hash_file(str(tmp_path / "f"))
    assert content == hashlib.sha256(data).hexdigest()
    fp = fingerprint(b"f", 0o100644, len(data), content)
    assert fp == hashlib.sha256(b"\0".join([b"f", b"f", b"644", b"%d" % len(data), b"", content.encode(),
                                            b""])).hexdigest()
    tree = BuildContext(tmp_path)
    entry = tree.resolve("f", what="f")
    assert entry is not None and tree.fingerprint(entry) == fp
