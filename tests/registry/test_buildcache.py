"""The registry cache (`--cache-to`/`--cache-from type=registry|local`) on a real docker-registry: fresh
stores stand for ephemeral CI runners. A runner that builds what another exported hits every step;
concurrent exports keep each other's records; another platform's records survive; a replaced blob is
refused and the step built; mode=min/max; an export with nothing new writes nothing; miss reasons
name the nearest record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.reference import parse_reference
from layerbuild.registry.buildcache import ARTIFACT_TYPE, CacheRecords, RegistryCache
from tests.cli.kit import busybox_root, lb
from tests.conftest import fsck_problems
from tests.image.schemas import validate
from tests.registry.fixtures import client_for
from tests.registry.kit import Registry
from tests.registry.test_pull import push_index, skopeo_push

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base(plain_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox in the registry: what every runner's Dockerfile starts FROM (pulled on a fresh store)."""
    capfd = None
    tmp = tmp_path_factory.mktemp("cache-base")
    with busybox_root("lb-cache-") as source:
        archive = tmp / "busybox.tar"
        code = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(source), "save", "busybox",
                               "-o", str(archive)], cwd=REPO, capture_output=True).returncode
        assert code == 0
    skopeo_push(f"docker-archive:{archive}", plain_registry, "tools/busybox:cache")
    del capfd
    return f"{plain_registry.host}/tools/busybox:cache"



def app(tmp_path: Path, name: str, base: str, text: str, *, dockerfile: str | None = None) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "app.txt").write_text(text)
    (ctx / "Dockerfile").write_text(dockerfile or (
        f"FROM {base}\n"
        "RUN echo deps > /deps.txt\n"
        "COPY app.txt /app.txt\n"
        "RUN cat /deps.txt /app.txt > /out.txt\n"
        "ENV DONE=1\n"
    ))
    return ctx


def report(root: Path, capfd: pytest.CaptureFixture[str], ctx: Path, *flags: str) -> dict:  # type: ignore[type-arg]
    out = ctx.parent / f"{ctx.name}-{root.name}-report.json"
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "--report", str(out), "-t", "app:1", *flags,
                      str(ctx))
    assert code == 0, err
    data: dict = json.loads(out.read_text())  # type: ignore[type-arg]
    data["stderr"] = err
    return data


def records(registry: Registry, ref: str) -> CacheRecords:
    with client_for(registry) as client:
        got, _ = RegistryCache(client, ref).read()
    return got


def manifest_digest(registry: Registry, ref: str) -> str | None:
    with client_for(registry) as client:
        desc = client.head_manifest(parse_reference(ref), accept=["application/vnd.oci.image.manifest.v1+json"])
    return desc.digest if desc is not None else None


def test_a_second_runner_hits_every_step(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    ref = f"{plain_registry.host}/cache/app:main"
    ctx = app(tmp_path, "ctx", base, "hello\n")
    first = report(tmp_path / "runner1", capfd, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
    assert not any(s["cached"] for s in first["steps"] if s["kind"] in ("exec", "copy"))
    assert f"cache {ref}: written" in first["stderr"]
    with client_for(plain_registry) as client:
        fetched = client.get_manifest(parse_reference(ref))
    validate(fetched.data, fetched.media_type)  # the OCI image-spec schema
    assert json.loads(fetched.data)["artifactType"] == ARTIFACT_TYPE
    # What the export sent, said in its line: every layer blob, the records and the manifest.
    doc = json.loads(fetched.data)
    sent = sum(d["size"] for d in doc["layers"]) + doc["config"]["size"] + len(fetched.data)
    assert f"cache {ref}: written (3 records, {sent} bytes sent)" in first["stderr"], first["stderr"]
    got = records(plain_registry, ref)
    assert len(got.entries) == 3  # RUN, COPY, RUN (ENV edits the config: no record)
    assert all(len(k) == 64 for k in got.entries)  # sha256 keys

    # A fresh store: every step from the cache, the image the same as the first runner's.
    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", f"type=registry,ref={ref}",
                    "--cache-to", f"type=registry,ref={ref},mode=max")
    assert all(s["cached"] for s in second["steps"]), second["steps"]
    assert "imported caches: 3 step(s) taken, 3 layer(s) downloaded" in second["stderr"]
    assert second["image"]["id"] == first["image"]["id"]
    assert f"cache {ref}: unchanged (3 records, 0 bytes sent)" in second["stderr"]  # nothing new: not rewritten
    code, out, err = lb(tmp_path / "runner2", capfd, "run", "--rm", "app:1", "cat", "/out.txt")
    assert (code, out) == (0, "deps\nhello\n"), err
    # Its push to the same registry mounts the layers the cache brought instead of uploading them.
    pushed = f"{plain_registry.host}/app/pushed:1"
    assert lb(tmp_path / "runner2", capfd, "tag", "app:1", pushed)[0] == 0
    code, out, err = lb(tmp_path / "runner2", capfd, "push", "--progress", "plain", pushed)
    assert code == 0, err
    assert out.count("Mounted from cache/app") == 3, out

    # An edit: the COPY misses, saying what differs from the nearest record, and the RUN before it hits.
    (ctx / "app.txt").write_text("edited\n")
    third = report(tmp_path / "runner3", capfd, ctx, "--cache-from", ref)
    steps = {s["instruction"]: s for s in third["steps"]}
    assert steps["RUN echo deps > /deps.txt"]["cached"]
    copy = steps["COPY app.txt /app.txt"]
    assert not copy["cached"]
    assert f"no record in {ref} for this step; the nearest differs in app.txt" in copy["reason"]
    for runner in ("runner1", "runner2", "runner3"):
        assert fsck_problems(tmp_path / runner) == []


def test_concurrent_exports_keep_both(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None) -> None:
    """Runners 3 and 4 export at the same time (other app contents: other records) to one ref."""
    ref = f"{plain_registry.host}/cache/app:concurrent"
    procs = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in (3, 4):
        ctx = app(tmp_path, f"ctx{i}", base, f"runner {i}\n")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "layerbuild", "--root", str(tmp_path / f"runner{i}"), "build", "-q",
             "--cache-to", f"type=registry,ref={ref}", str(ctx)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    got = records(plain_registry, ref)
    copies = [e for e in got.entries.values() if e.instruction.startswith("COPY")]
    assert len(copies) == 2, [e.instruction for e in got.entries.values()]
    # Both runners' final RUN steps are there, each with its own layer.
    finals = {e.diff_id for e in got.entries.values() if e.instruction.startswith("RUN cat")}
    assert len(finals) == 2


def test_other_platforms_records_survive(plain_registry: Registry, tmp_path: Path, cli_env: None,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    push_index(plain_registry, tmp_path, "kit/multi:cache", seed=3)
    multi = f"{plain_registry.host}/kit/multi:cache"
    ref = f"{plain_registry.host}/cache/multi:1"
    ctx = app(tmp_path, "ctx", multi, "x\n", dockerfile=f"FROM {multi}\nCOPY app.txt /app.txt\n")
    report(tmp_path / "arm", capfd, ctx, "--platform", "linux/arm64", "--cache-to", ref)
    report(tmp_path / "amd", capfd, ctx, "--platform", "linux/amd64", "--cache-to", ref)
    got = records(plain_registry, ref)
    assert sorted(e.platform for e in got.entries.values()) == ["linux/amd64", "linux/arm64"]
    again = report(tmp_path / "arm2", capfd, ctx, "--platform", "linux/arm64", "--cache-from", ref)
    assert all(s["cached"] for s in again["steps"])


def test_a_replaced_blob_is_refused_and_the_step_built(plain_registry: Registry, base: str, tmp_path: Path,
                                                       cli_env: None, capfd: pytest.CaptureFixture[str]) -> None:
    ref = f"{plain_registry.host}/cache/app:poisoned"
    ctx = app(tmp_path, "ctx", base, "poison me\n")
    report(tmp_path / "runner1", capfd, ctx, "--cache-to", ref)
    got = records(plain_registry, ref)
    copy = next(e for e in got.entries.values() if e.instruction.startswith("COPY"))
    assert copy.layer is not None
    hexpart = copy.layer.digest.partition(":")[2]
    data = plain_registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"
    if not data.exists():
        data = next(plain_registry.root.rglob(f"blobs/sha256/{hexpart[:2]}/{hexpart}/data"))
    data.write_bytes(data.read_bytes()[::-1])  # other bytes under the same digest
    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", ref)
    steps = {s["instruction"]: s for s in second["steps"]}
    assert not steps["COPY app.txt /app.txt"]["cached"]
    assert steps["RUN echo deps > /deps.txt"]["cached"]
    assert "refused the record of `COPY app.txt /app.txt`" in second["stderr"]
    code, out, err = lb(tmp_path / "runner2", capfd, "run", "--rm", "app:1", "cat", "/app.txt")
    assert (code, out) == (0, "poison me\n"), err
    assert fsck_problems(tmp_path / "runner2") == []


def test_mode_min_and_max(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                          capfd: pytest.CaptureFixture[str]) -> None:
    dockerfile = (f"FROM {base} AS deps\nRUN echo built > /dep\n"
                  f"FROM {base}\nCOPY --from=deps /dep /dep\nCOPY app.txt /app.txt\n")
    ctx = app(tmp_path, "ctx", base, "m\n", dockerfile=dockerfile)
    for mode in ("min", "max"):
        ref = f"{plain_registry.host}/cache/modes:{mode}"
        report(tmp_path / f"runner-{mode}", capfd, ctx, "--cache-to", f"type=registry,ref={ref},mode={mode}")
        texts = sorted(e.instruction for e in records(plain_registry, ref).entries.values())
        # COPY --from is recorded twice: by the files it copies, and by the result of the stage it
        # copies them from (which a runner can hit without downloading that stage).
        assert texts.count("COPY --from=deps /dep /dep") == 2
        texts = sorted(set(texts))
        if mode == "min":
            assert texts == ["COPY --from=deps /dep /dep", "COPY app.txt /app.txt"]
        else:
            assert texts == ["COPY --from=deps /dep /dep", "COPY app.txt /app.txt", "RUN echo built > /dep"]


def test_a_local_cache_directory(base: str, tmp_path: Path, cli_env: None, capfd: pytest.CaptureFixture[str]) -> None:
    """type=local: an OCI layout directory that a CI cache action saves and restores."""
    ctx = app(tmp_path, "ctx", base, "local\n")
    cache = tmp_path / "cache-dir"
    wrote = report(tmp_path / "runner1", capfd, ctx, "--cache-to", f"type=local,dest={cache},compression=zstd")
    written = sum(p.stat().st_size for p in (cache / "blobs" / "sha256").iterdir())
    assert f"cache {cache}: written (3 records, {written} bytes sent)" in wrote["stderr"], wrote["stderr"]
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads((cache / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert manifest["artifactType"] == ARTIFACT_TYPE
    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", f"type=local,src={cache}")
    assert all(s["cached"] for s in second["steps"])
    code, _, err = lb(tmp_path / "runner3", capfd, "build", "--cache-to", "type=local", str(ctx))
    assert code == 2 and "type=local needs dest=DIR" in err


def test_no_local_miss_reads_no_cache(base: str, tmp_path: Path, cli_env: None,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    """A build the store answers whole does not even ask for the cache: here a reference that is no
    cache at all (an ordinary image), which a build that misses is told about, and one that hits never is."""
    ctx = app(tmp_path, "ctx", base, "lazy\n")
    root = tmp_path / "runner"
    report(root, capfd, ctx)
    nowhere = base
    again = report(root, capfd, ctx, "--cache-from", nowhere)
    assert all(s["cached"] for s in again["steps"])
    assert "imported caches: not read (the store had every step)" in again["stderr"]
    assert "could not be read" not in again["stderr"]
    (ctx / "app.txt").write_text("changed\n")
    missed = report(root, capfd, ctx, "--cache-from", nowhere)
    assert f"cache {nowhere} could not be read: {nowhere} is an image that carries no cache records" in missed["stderr"]
    assert not next(s for s in missed["steps"] if s["kind"] == "copy")["cached"]


def test_many_writers_at_once_lose_nothing(plain_registry: Registry, tmp_path: Path) -> None:
    """Eight exports racing on one ref (the read-merge-write of each retried when the tag moved under
    it, or when its manifest was replaced by one without its records): every record survives."""
    import hashlib
    import threading

    from layerbuild.registry.buildcache import CacheEntry
    from layerbuild.store import Store

    ref = f"{plain_registry.host}/cache/race:1"
    errors: list[BaseException] = []
    with Store.open(tmp_path / "store") as store:
        def export(i: int) -> None:
            try:
                with client_for(plain_registry) as client:
                    key = hashlib.sha256(f"step {i}".encode()).hexdigest()
                    RegistryCache(client, ref).write(store, [CacheEntry(key, "config", None, None,
                                                                        instruction=f"ENV N={i}")],
                                                     compression="gzip")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=export, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert sorted(e.instruction for e in records(plain_registry, ref).entries.values()) == [
        f"ENV N={i}" for i in range(8)]


def test_two_machines_make_the_same_image_with_source_date_epoch(base: str, tmp_path: Path, cli_env: None,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """The same inputs in two stores (two checkouts at other paths, no cache shared, a minute apart)
    with SOURCE_DATE_EPOCH from the environment, as BuildKit takes it: one image digest."""
    import time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ids = []
    for machine in ("one", "two"):
        ctx = app(tmp_path / machine, "checkout", base, "same\n") if (tmp_path / machine).mkdir() is None else None
        assert ctx is not None
        ids.append(report(tmp_path / machine / "store", capfd, ctx)["image"]["id"])
        time.sleep(1.1)  # a second later: a timestamp not clamped would differ
    assert ids[0] == ids[1]
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    ctx = app(tmp_path, "third", base, "same\n")
    assert report(tmp_path / "third-store", capfd, ctx)["image"]["id"] != ids[0]


def _entry(i: int, size: int, used: float) -> object:
    import hashlib

    from layerbuild.image.manifest import Descriptor
    from layerbuild.registry.buildcache import CacheEntry

    digest = "sha256:" + hashlib.sha256(b"blob %d" % i).hexdigest()
    return CacheEntry(hashlib.sha256(b"key %d" % i).hexdigest(), "exec", "sha256:" + "d" * 64,
                      Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, size),
                      instruction=f"RUN {i}", last_used=used)


def test_merge_marks_use_by_the_day_and_evicts_the_least_recently_used() -> None:
    """Pure logic of the records: a re-export within a day changes nothing; `max_size` drops the
    records used longest ago first, keeping what this export brought."""
    from layerbuild.registry.buildcache import DAY, CacheRecords

    now = 1_800_000_000.0
    old = [_entry(i, 100, now - (10 - i) * DAY) for i in range(5)]  # used 10..6 days ago
    records = CacheRecords({e.key: e for e in old})  # type: ignore[attr-defined]
    assert records.merged([], now=now) == records
    fresh = CacheRecords().merged(old, now=now)  # type: ignore[arg-type]
    assert all(e.last_used == now for e in fresh.entries.values())
    assert fresh.merged(old, now=now + 3600) == fresh  # the same records an hour later: unchanged
    assert fresh.merged(old, now=now + 2 * DAY) != fresh  # two days later: marked again
    new = _entry(9, 100, 0.0)
    kept = records.merged([new], now=now, max_size=300)  # type: ignore[list-item]
    assert sorted(e.instruction for e in kept.entries.values()) == ["RUN 3", "RUN 4", "RUN 9"]


def test_max_size_evicts_in_the_registry(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    ref = f"{plain_registry.host}/cache/app:budget"
    first = app(tmp_path, "first", base, "one\n")
    report(tmp_path / "r1", capfd, first, "--cache-to", ref)
    size_one = sum(d.size for d in records(plain_registry, ref).blobs().values())
    second = app(tmp_path, "second", base, "two\n")
    # Room for about one build's layers: the first build's own records (used earlier) go first.
    report(tmp_path / "r2", capfd, second, "--cache-to", f"type=registry,ref={ref},max-size={size_one + 64}")
    got = records(plain_registry, ref)
    assert sum(d.size for d in got.blobs().values()) <= size_one + 64
    texts = [e.instruction for e in got.entries.values()]
    assert "COPY app.txt /app.txt" in texts and len(texts) < 5
    with client_for(plain_registry) as client:
        layers = json.loads(client.get_manifest(parse_reference(ref)).data)["layers"]
    assert {d["digest"] for d in layers} == set(got.blobs())


def test_cache_mounts_survive_ephemeral_runners(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """With cache-mounts=true a RUN --mount=type=cache directory travels with the cache: on a fresh
    store, the step that has to run again (its sources changed) finds the first runner's downloads."""
    ref = f"{plain_registry.host}/cache/mounts:1"
    dockerfile = (f"FROM {base}\nCOPY app.txt /app.txt\n"
                  "RUN --mount=type=cache,target=/var/cache/dl,id=downloads "
                  "if [ -f /var/cache/dl/pkg ]; then echo reused > /how; "
                  "else echo fetched > /how; echo bytes > /var/cache/dl/pkg; fi\n")
    ctx = app(tmp_path, "ctx", base, "v1\n", dockerfile=dockerfile)
    first = report(tmp_path / "r1", capfd, ctx, "--cache-to", f"type=registry,ref={ref},cache-mounts=true")
    assert "written" in first["stderr"]
    got = records(plain_registry, ref)
    assert list(got.mounts) == ["downloads"]
    (ctx / "app.txt").write_text("v2\n")
    report(tmp_path / "r2", capfd, ctx, "--cache-from", ref)
    code, out, err = lb(tmp_path / "r2", capfd, "run", "--rm", "app:1", "cat", "/how")
    assert (code, out) == (0, "reused\n"), err
    # Without cache-mounts the directory stays behind: a third runner fetches again.
    plain = f"{plain_registry.host}/cache/mounts:plain"
    (ctx / "app.txt").write_text("v1\n")
    report(tmp_path / "r3", capfd, ctx, "--cache-to", plain)
    assert records(plain_registry, plain).mounts == {}
    (ctx / "app.txt").write_text("v3\n")
    report(tmp_path / "r4", capfd, ctx, "--cache-from", plain)
    code, out, _ = lb(tmp_path / "r4", capfd, "run", "--rm", "app:1", "cat", "/how")
    assert out == "fetched\n"


def test_an_inline_cache_travels_in_the_pushed_image(plain_registry: Registry, base: str, tmp_path: Path,
                                                     cli_env: None, capfd: pytest.CaptureFixture[str]) -> None:
    """`--cache-to type=inline` (BuildKit's inline cache): the records go in the image's config, and a
    fresh store that names the pushed image in `--cache-from` hits every step from its layers."""
    image = f"{plain_registry.host}/inline/app:1"
    ctx = app(tmp_path, "ctx", base, "hello\n")
    first = report(tmp_path / "runner1", capfd, ctx, "--cache-to", "type=inline", "--output", f"type=registry,name={image}")
    assert "cache inline: 3 records in the image" in first["stderr"]
    with client_for(plain_registry) as client:
        fetched = client.get_manifest(parse_reference(image))
        manifest = json.loads(fetched.data)
        config = client.get_blob(parse_reference(image), manifest["config"]["digest"])
    validate(config, manifest["config"]["mediaType"])  # still an image config by the OCI schema
    inline = json.loads(config)["layerbuild.cache.v1"]
    assert len(inline["records"]) == 3 and all(len(r["key"]) == 64 for r in inline["records"])
    peer = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", "--config", f"docker://{image}"],
                          capture_output=True, text=True)
    assert peer.returncode == 0 and "layerbuild.cache.v1" in peer.stdout, peer.stderr  # a peer reads it

    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", image, "--cache-to", "type=inline")
    assert all(s["cached"] for s in second["steps"]), second["steps"]
    assert "imported caches: 3 step(s) taken, 3 layer(s) downloaded" in second["stderr"]
    assert second["image"]["id"] == first["image"]["id"]  # the same records, the same config
    code, out, err = lb(tmp_path / "runner2", capfd, "run", "--rm", "app:1", "cat", "/out.txt")
    assert (code, out) == (0, "deps\nhello\n"), err
    code, out, err = lb(tmp_path / "runner2", capfd, "inspect", "app:1")
    assert code == 0 and "layerbuild.cache.v1" in out, out

    # An edit: the COPY misses and says so against the image's records; the RUN before it hits.
    (ctx / "app.txt").write_text("edited\n")
    third = report(tmp_path / "runner3", capfd, ctx, "--cache-from", image)
    assert [s["cached"] for s in third["steps"] if s["kind"] in ("exec", "copy")] == [True, False, False]
    copy = next(s for s in third["steps"] if s["kind"] == "copy")
    assert f"no record in {image} for this step; the nearest differs in app.txt" in copy["reason"], copy
    # The image built FROM nothing inline does not carry a base's records: a child starts without them.
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text(f"FROM {image}\nRUN echo child > /child.txt\n")
    code, _, err = lb(tmp_path / "runner3", capfd, "build", "--progress", "plain", "-t", "child:1", str(child))
    assert code == 0, err
    code, out, err = lb(tmp_path / "runner3", capfd, "inspect", "child:1")
    assert code == 0 and "layerbuild.cache.v1" not in out, out


def test_an_image_without_inline_records_is_said_so(plain_registry: Registry, base: str, tmp_path: Path,
                                                    cli_env: None, capfd: pytest.CaptureFixture[str]) -> None:
    image = f"{plain_registry.host}/inline/plain:1"
    ctx = app(tmp_path, "ctx", base, "hello\n")
    report(tmp_path / "runner1", capfd, ctx, "--output", f"type=registry,name={image}")
    before = manifest_digest(plain_registry, image)
    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", image)
    assert not any(s["cached"] for s in second["steps"] if s["kind"] in ("exec", "copy"))
    assert f"cache {image} could not be read: {image} is an image that carries no cache records" in second["stderr"]
    # An export never replaces an image's tag with a cache.
    code, _, err = lb(tmp_path / "runner2", capfd, "build", "--progress", "plain", "-t", "app:1",
                      "--cache-to", f"type=registry,ref={image}", str(ctx))
    assert code == 1 and "is not a layerbuild cache" in err and "Traceback" not in err, err
    assert manifest_digest(plain_registry, image) == before
    # ignore-error=true (BuildKit's): the build succeeds and says the cache was not written.
    code, _, err = lb(tmp_path / "runner2", capfd, "build", "--progress", "plain", "-t", "app:1",
                      "--cache-to", f"type=registry,ref={image},ignore-error=true", str(ctx))
    assert code == 0 and f"cache {image} was not written: {image} is not a layerbuild cache" in err, err
    assert manifest_digest(plain_registry, image) == before
    code, _, err = lb(tmp_path / "runner2", capfd, "build", "--cache-to", "type=inline,mode=max", str(ctx))
    assert code == 2 and "only mode=min" in err, err


def test_layers_are_downloaded_only_when_needed(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """A build stage cached as a whole, whose result the final image only copies from, is never
    downloaded: the runner takes its records and downloads the final image's layers only."""
    ref = f"{plain_registry.host}/cache/app:lazy"
    ctx = app(tmp_path, "ctx", base, "lazy\n", dockerfile=(
        f"FROM {base} AS build\n"
        "RUN head -c 2000000 /dev/urandom > /toolchain && echo built > /artifact\n"
        f"FROM {base}\n"
        "COPY --from=build /artifact /artifact\n"
        "COPY app.txt /app.txt\n"
        "RUN cat /artifact /app.txt > /out.txt\n"
    ))
    first = report(tmp_path / "runner1", capfd, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
    toolchain = next(e for e in records(plain_registry, ref).entries.values() if "toolchain" in e.instruction)
    assert toolchain.layer is not None and toolchain.layer.size > 1_900_000  # random bytes: no smaller gzipped

    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", ref)
    assert all(s["cached"] for s in second["steps"]), second["steps"]
    assert second["image"]["id"] == first["image"]["id"]
    assert "imported caches: 4 step(s) taken, 3 layer(s) downloaded" in second["stderr"], second["stderr"]
    assert not (tmp_path / "runner2" / "blobs" / "sha256" / toolchain.layer.digest.partition(":")[2]).exists()
    assert not list((tmp_path / "runner2").rglob(toolchain.layer.digest.partition(":")[2]))
    assert fsck_problems(tmp_path / "runner2") == []
    code, out, err = lb(tmp_path / "runner2", capfd, "run", "--rm", "app:1", "cat", "/out.txt")
    assert (code, out) == (0, "built\nlazy\n"), err

    # An edit after the build stage: the RUN on top needs its parent's files, so those come now; the
    # build stage still does not.
    (ctx / "app.txt").write_text("edited\n")
    third = report(tmp_path / "runner3", capfd, ctx, "--cache-from", ref)
    cached = {s["instruction"]: s["cached"] for s in third["steps"] if s["kind"] in ("exec", "copy")}
    assert cached == {"RUN head -c 2000000 /dev/urandom > /toolchain && echo built > /artifact": True,
                      "COPY --from=build /artifact /artifact": True, "COPY app.txt /app.txt": False,
                      "RUN cat /artifact /app.txt > /out.txt": False}, cached
    assert "2 step(s) taken, 1 layer(s) downloaded" in third["stderr"], third["stderr"]
    assert not list((tmp_path / "runner3").rglob(toolchain.layer.digest.partition(":")[2]))
    # The records it took are the store's own now: the same build again asks no cache.
    again = report(tmp_path / "runner2", capfd, ctx, "--cache-from", ref)
    assert "imported caches: not read" in again["stderr"] or "0 layer(s) downloaded" in again["stderr"]


def test_records_taken_and_never_downloaded_are_exported_to_another_cache(
        plain_registry: Registry, base: str, tmp_path: Path, cli_env: None, capfd: pytest.CaptureFixture[str]) -> None:
    """A branch runner imports main's cache and exports its own: the build stage it took without
    downloading goes into the branch's cache too (its blob mounted from main's repository, not
    downloaded), and into a local cache (copied from the registry, checked); a third runner that
    reads only the branch's cache, or only the local one, hits every step."""
    main_ref = f"{plain_registry.host}/cache/main:max"
    branch_ref = f"{plain_registry.host}/cache/branch:max"
    ctx = app(tmp_path, "ctx", base, "lazy\n", dockerfile=(
        f"FROM {base} AS build\n"
        "RUN head -c 1500000 /dev/urandom > /toolchain && echo built > /artifact\n"
        f"FROM {base}\n"
        "COPY --from=build /artifact /artifact\n"
        "COPY app.txt /app.txt\n"
    ))
    first = report(tmp_path / "runner1", capfd, ctx, "--cache-to", f"type=registry,ref={main_ref},mode=max")
    toolchain = next(e for e in records(plain_registry, main_ref).entries.values() if "toolchain" in e.instruction)
    assert toolchain.layer is not None
    blob = toolchain.layer.digest.partition(":")[2]

    local = tmp_path / "local-cache"
    second = report(tmp_path / "runner2", capfd, ctx, "--cache-from", main_ref,
                    "--cache-to", f"type=registry,ref={branch_ref},mode=max",
                    "--cache-to", f"type=local,dest={local},mode=max")
    assert all(s["cached"] for s in second["steps"]), second["steps"]
    assert not list((tmp_path / "runner2").rglob(blob))  # taken, never downloaded
    branch = records(plain_registry, branch_ref)
    main = records(plain_registry, main_ref)
    # Every step is there (the COPY --from under the key by its sources' results, by which it hit:
    # its key by content was never computed here, as its sources were never read).
    assert {e.instruction for e in branch.entries.values()} == {e.instruction for e in main.entries.values()}
    assert set(branch.entries) <= set(main.entries) and toolchain.key in branch.entries
    assert toolchain.layer.digest in branch.blobs()
    assert (local / "blobs" / "sha256" / blob).read_bytes() == subprocess.run(
        ["curl", "-sf", f"http://{plain_registry.host}/v2/cache/main/blobs/{toolchain.layer.digest}"],
        capture_output=True, check=True).stdout
    # The branch's copy is the registry's own (mounted): same digest, readable from the branch repo.
    with client_for(plain_registry) as client:
        assert client.stat_blob(parse_reference(branch_ref).repository(), toolchain.layer.digest) == toolchain.layer.size

    for name, flag in (("runner3", branch_ref), ("runner4", f"type=local,src={local}")):
        third = report(tmp_path / name, capfd, ctx, "--cache-from", flag, "--target", "build")
        assert [s["cached"] for s in third["steps"] if s["kind"] == "exec"] == [True], (name, third["steps"])
        assert "1 layer(s) downloaded" in third["stderr"] or "1 step(s) taken" in third["stderr"], third["stderr"]
        code, out, err = lb(tmp_path / name, capfd, "run", "--rm", "app:1", "cat", "/artifact")
        assert (code, out) == (0, "built\n"), err
    assert first["image"]["id"] == second["image"]["id"]


def test_a_dry_run_takes_records_and_stores_none(plain_registry: Registry, base: str, tmp_path: Path, cli_env: None,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """`build --dry-run --cache-from`: a record whose layer the store already has (made by another
    build) is taken to plan with, as one that would need a download is, and neither is written into
    the store's own cache."""
    from layerbuild.store import Store

    ref = f"{plain_registry.host}/cache/app:dry"
    ctx = app(tmp_path, "ctx", base, "dry\n")
    report(tmp_path / "runner1", capfd, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
    other = tmp_path / "Dockerfile.other"  # the same COPY layer, made by a build without the RUN before it
    other.write_text(f"FROM {base}\nCOPY app.txt /app.txt\n")
    report(tmp_path / "runner2", capfd, ctx, "-f", str(other))
    with Store.open(tmp_path / "runner2") as store:
        before = {r.key for r in store.index.list_cache()}
    out = tmp_path / "dry.json"
    code, _, err = lb(tmp_path / "runner2", capfd, "build", "--dry-run", "--report", str(out), "--cache-from", ref,
                      str(ctx))
    assert code == 0, err
    steps = [s for s in json.loads(out.read_text())["steps"] if s["kind"] in ("exec", "copy")]
    assert len(steps) == 3 and all(s["cached"] for s in steps), steps
    with Store.open(tmp_path / "runner2") as store:
        assert {r.key for r in store.index.list_cache()} == before


def test_a_cache_registry_that_never_answers_is_given_up_on(base: str, tmp_path: Path, cli_env: None,
                                                            capfd: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A `--cache-from` registry that takes the connection and never answers: after the short wait
    (LAYERBUILD_CACHE_TIMEOUT, two tries) the build goes on without it and says so, instead of
    waiting out a pull's minute-long timeouts five times."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are taken by the kernel, and nothing ever reads or answers them
    try:
        monkeypatch.setenv("LAYERBUILD_CACHE_TIMEOUT", "1")
        ctx = app(tmp_path, "ctx", base, "silent\n")
        started = time.monotonic()
        got = report(tmp_path / "runner", capfd, ctx, "--cache-from", f"127.0.0.1:{silent.getsockname()[1]}/c:x")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert any(not s["cached"] for s in got["steps"])
    assert "could not be read" in got["stderr"] and "building without it" in got["stderr"], got["stderr"]
    assert took < 30, took


def test_a_fresh_store_reads_the_cache_from_the_start(base: str, tmp_path: Path, cli_env: None,
                                                      capfd: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An ephemeral runner's store (no cache record at all) will miss every step: the first
    `--cache-from` source's records are read from the build's start, on their own thread, while the
    context is read. A store with records reads them at its first miss, from the solve, as before;
    and one that misses nothing does not read them at all (test_no_local_miss_reads_no_cache)."""
    import threading

    from layerbuild.registry.buildcache import LocalCache

    readers: list[str] = []
    read = LocalCache.read

    def recorded(self: LocalCache) -> object:
        readers.append(threading.current_thread().name)
        return read(self)

    monkeypatch.setattr(LocalCache, "read", recorded)
    ctx = app(tmp_path, "ctx", base, "warm\n")
    cache = tmp_path / "cache-dir"
    report(tmp_path / "exporter", capfd, ctx, "--cache-to", f"type=local,dest={cache}")
    readers.clear()  # (the export read what was there, to merge)
    runner = tmp_path / "runner"
    first = report(runner, capfd, ctx, "--cache-from", f"type=local,src={cache}")
    assert all(s["cached"] for s in first["steps"][1:]) and readers == ["cache-records"]
    (ctx / "app.txt").write_text("edited\n")
    report(runner, capfd, ctx, "--cache-from", f"type=local,src={cache}")
    assert len(readers) == 2 and readers[1] != "cache-records"
    # A build with no step to look up (FROM alone) on a fresh store asks for nothing.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "Dockerfile").write_text(f"FROM {base}\n")
    alone = report(tmp_path / "runner-bare", capfd, bare, "--cache-from", f"type=local,src={cache}")
    assert len(readers) == 2 and "imported caches: not read" in alone["stderr"]


def test_cache_from_is_an_ordered_fallback(base: str, tmp_path: Path, cli_env: None,
                                           capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache-from BRANCH --cache-from MAIN`: a step the branch's cache lacks is taken from main's; a
    cache later in the list is not read while an earlier one has every step."""
    from layerbuild.registry.buildcache import LocalCache

    read: list[str] = []
    original = LocalCache.read

    def recorded(self: LocalCache) -> object:
        read.append(self.root.name)
        return original(self)

    ctx = app(tmp_path, "ctx", base, "main\n")
    main_cache, branch_cache = tmp_path / "main", tmp_path / "branch"
    report(tmp_path / "main-runner", capfd, ctx, "--cache-to", f"type=local,dest={main_cache}")
    other = app(tmp_path, "other", base, "x\n", dockerfile=f"FROM {base}\nRUN echo other > /other\n")
    report(tmp_path / "branch-runner", capfd, other, "--cache-to", f"type=local,dest={branch_cache}")
    monkeypatch.setattr(LocalCache, "read", recorded)

    got = report(tmp_path / "runner1", capfd, ctx, "--cache-from", f"type=local,src={branch_cache}",
                 "--cache-from", f"type=local,src={main_cache}")
    assert all(s["cached"] for s in got["steps"]), got["steps"]
    assert "imported caches: 3 step(s) taken" in got["stderr"]
    assert read == ["branch", "main"]  # the branch first (warmed: a fresh store), then main for what it lacks

    read.clear()
    again = report(tmp_path / "runner2", capfd, ctx, "--cache-from", f"type=local,src={main_cache}",
                   "--cache-from", f"type=local,src={branch_cache}")
    assert all(s["cached"] for s in again["steps"]) and read == ["main"]  # main had every step
