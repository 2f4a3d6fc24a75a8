"""`--cache-from`/`--cache-to` values in BuildKit's syntax, and the inline cache's records as pure data."""

from __future__ import annotations

import json

import pytest

from layerbuild.errors import UsageError
from layerbuild.image.manifest import Descriptor
from layerbuild.registry.buildcache import CacheEntry, CacheFormatError, inline_json, inline_records
from layerbuild.worker.cachespec import parse_cache_spec


def test_specs_read_as_buildkit_writes_them() -> None:
    spec = parse_cache_spec("type=registry,ref=reg.example/app:cache,mode=max,compression=zstd,max-size=2GiB",
                            export=True)
    assert (spec.type, spec.ref, spec.mode, spec.compression, spec.max_size) == \
        ("registry", "reg.example/app:cache", "max", "zstd", 2 << 30)
    assert parse_cache_spec("reg.example/app:1", export=False).ref == "reg.example/app:1"  # a bare REF
    assert parse_cache_spec("type=local,dest=/tmp/c", export=True).path == "/tmp/c"
    assert parse_cache_spec("type=inline", export=True).type == "inline"
    assert parse_cache_spec("type=registry,ref=a/b,ignore-error=true", export=True).ignore_error
    assert not parse_cache_spec("type=registry,ref=a/b", export=True).ignore_error


@pytest.mark.parametrize(("value", "export", "says"), [
    ("type=inline", False, "not a source"),
    ("type=inline,mode=max", True, "only mode=min"),
    ("type=gha", True, "not supported"),
    ("type=registry", True, "needs ref="),
    ("type=local", False, "needs src="),
    ("type=registry,ref=a/b,mode=all", True, "neither min nor max"),
    ("type=registry,ref=a/b,colour=red", True, "unknown option"),
    ("type=registry,ref=a/b,ignore-error=maybe", True, "neither true nor false"),
])
def test_bad_specs_are_refused(value: str, export: bool, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_cache_spec(value, export=export)


def _config(records: str, diff_ids: list[str]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
                       "layerbuild.cache.v1": json.loads(records)}).encode()


def test_inline_records_take_the_images_layers_by_diff_id() -> None:
    base_layer, own = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    layer = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "sha256:" + "c" * 64, 9)
    run = CacheEntry(key="1" * 64, kind="exec", diff_id=own, layer=layer, created=5.0, last_used=7.0,
                     stage="0", instruction="RUN make", files={"a.c": "f" * 16})
    env = CacheEntry(key="2" * 64, kind="meta", diff_id=None, layer=None, created=5.0)
    text = inline_json([env, run])
    assert "last_used" not in text and layer.digest not in text  # no blob named: the image's layer is its blob
    assert text == inline_json([run, env])  # canonical: the same records, the same config
    pushed = Descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", "sha256:" + "d" * 64, 11)
    got = inline_records(_config(text, [base_layer, own]), [Descriptor(pushed.media_type, "sha256:" + "e" * 64, 3),
                                                             pushed], "img")
    assert got.get(run.key) is not None and got.get(run.key).layer == pushed  # type: ignore[union-attr]
    assert got.get(run.key).files == {"a.c": "f" * 16}  # type: ignore[union-attr]
    assert got.get(env.key) is not None and got.get(env.key).layer is None  # type: ignore[union-attr]
    # A record whose layer the image lacks has no blob to take: it is left out.
    assert inline_records(_config(text, [base_layer]), [pushed], "img").get(run.key) is None


def test_configs_without_or_with_bad_inline_records_are_refused() -> None:
    plain = json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode()
    with pytest.raises(CacheFormatError, match="carries no cache records"):
        inline_records(plain, [], "img")
    with pytest.raises(CacheFormatError, match="not layerbuild's format"):
        inline_records(_config('{"version": 2, "records": []}', []), [], "img")
    with pytest.raises(CacheFormatError, match="not a sha256 hex digest"):
        inline_records(_config('{"version": 1, "records": [{"key": "x"}]}', []), [], "img")
