"""The ephemeral runner with a registry cache (a real docker-registry on loopback): a fresh store per
commit that imports and exports the shared cache hits what the runner before it built, so the ideal
finds no cache-caused miss where, without the registry, every step the earlier commit built is one."""

from __future__ import annotations

from pathlib import Path

import pytest

import layerbuild.bench as bench
from tests.bench.kit import make_history
from tests.registry.kit import Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]



def test_ephemeral_runners_share_the_registry_cache(plain_registry: Registry, base_root: Path, tmp_path: Path,
                                                   cli_env: None) -> None:
    repo = tmp_path / "app"
    make_history(repo)
    commits = "HEAD~7..HEAD~5"  # the source edit, then an edit of an ignored file: the same context
    ref = f"{plain_registry.host}/bench/cache:app"
    shared = bench.history(repo, rev_range=commits, root=base_root, runner="ephemeral", cache_registry=ref,
                           whatif=False)
    assert [c.subject for c in shared.commits] == ["edit the app's source", "edit the notes (ignored by .dockerignore)"]
    assert all(c.ok for c in shared.commits)
    assert [c.summary.cached for c in shared.commits] == [0, 3]  # an empty store, all from the registry
    assert shared.ideal.cache_misses == ()
    alone = bench.history(repo, rev_range=commits, root=base_root, runner="ephemeral", whatif=False)
    assert [c.summary.cached for c in alone.commits] == [0, 0]
    assert len(alone.ideal.cache_misses) == 3


def test_a_cache_registry_needs_the_ephemeral_runner(base_root: Path, tmp_path: Path) -> None:
    from layerbuild.errors import UsageError

    with pytest.raises(UsageError, match="--cache-registry is for the ephemeral runner"):
        bench.history(tmp_path, runner="warm", cache_registry="127.0.0.1:1/x:y", root=base_root)
