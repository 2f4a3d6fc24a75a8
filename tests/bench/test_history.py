"""`layerbuild bench history` over a generated history: exact hit rates per commit, the ideal, the what-ifs,
the report files and their keys, a failing commit reported and exit 0."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import layerbuild.bench as bench
from layerbuild.cli.main import main
from tests.bench.kit import DOCKERFILE, EXPECTED_WARM, HISTORY, git, make_history

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-repo") / "app"
    make_history(path)
    return path


@pytest.fixture(scope="module")
def cli_run(repo: Path, base_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    out = tmp_path_factory.mktemp("bench-report") / "report"
    status = git(repo, "status", "--porcelain")
    code = main(["--root", str(base_root), "bench", "history", str(repo), "--last", str(len(HISTORY)),
                 "--report", str(out), "--progress", "plain"])
    assert git(repo, "status", "--porcelain") == status  # the user's checkout is untouched
    return code, out, status


@pytest.fixture(scope="module")
def report(cli_run: tuple[int, Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((cli_run[1] / "history.json").read_text())
    return data


def test_exit_status_is_zero_though_a_commit_fails_and_the_work_tree_is_gone(cli_run: tuple[int, Path, str],
                                                                           repo: Path) -> None:
    assert cli_run[0] == 0
    assert git(repo, "worktree", "list").count("\n") == 1  # only the checkout itself is left


def test_the_contract_keys_are_there(report: dict[str, Any], repo: Path) -> None:
    assert {"repo", "dockerfile", "runner", "commits", "ideal", "whatif"} <= set(report)
    assert report["repo"] == str(repo) and report["dockerfile"] == "Dockerfile" and report["runner"] == "warm"
    for commit in report["commits"]:
        assert {"commit", "subject", "ok", "duration_s", "changed_files", "steps", "summary"} <= set(commit)
        assert set(commit["summary"]) >= {"steps", "cached", "executed", "hit_rate"}
        for step in commit["steps"]:
            assert {"stage", "index", "instruction", "kind", "cached", "reason", "duration_s", "size"} <= set(step)
    assert {"hit_rate", "cache_misses"} <= set(report["ideal"])
    for w in report["whatif"]:
        assert {"description", "dockerfile", "hit_rate", "saved_s"} <= set(w)


def test_each_commit_hits_exactly_as_expected(report: dict[str, Any]) -> None:
    got = [(c["summary"]["cached"], c["summary"]["cached"] + c["summary"]["executed"]) if c["ok"] else None
           for c in report["commits"]]
    assert got == EXPECTED_WARM
    assert [c["subject"] for c in report["commits"]] == [s for s, _ in HISTORY]
    assert report["summary"]["hit_rate"] == round(9 / 21, 4)


def test_miss_reasons_and_changed_files_are_the_concrete_ones(report: dict[str, Any]) -> None:
    commits = report["commits"]
    assert commits[1]["changed_files"] == ["app.txt"]
    copy = next(s for s in commits[1]["steps"] if s["instruction"] == "COPY . /app")
    assert copy["reason"] == "app.txt changed" and copy["cached"] is False
    assert commits[2]["changed_files"] == ["notes.md"] and commits[2]["summary"]["executed"] == 0
    bump = [s["reason"] for s in commits[5]["steps"] if s["kind"] == "exec"]
    assert bump == ["build-arg VERSION changed ('1' → '2')"] * 2


def test_a_failing_commit_is_ok_false_with_its_error(report: dict[str, Any]) -> None:
    broken = report["commits"][6]
    assert broken["ok"] is False
    assert "exit code 3" in broken["error"]
    assert broken["error"].startswith("Dockerfile:9:")  # named as in the repository, not the scratch tree
    failed = [s for s in broken["steps"] if s["reason"] and "failed" in s["reason"]]
    assert [s["instruction"] for s in failed] == ["RUN echo about to fail && exit 3"]


def test_the_ideal_finds_no_cache_caused_miss(report: dict[str, Any]) -> None:
    assert report["ideal"]["cache_misses"] == []
    assert report["ideal"]["hit_rate"] == report["summary"]["hit_rate"]


def test_the_copy_before_install_what_if_is_found_measured_and_keeps_the_image(report: dict[str, Any]) -> None:
    split = next(w for w in report["whatif"] if w["rule"] == "split-copy")
    assert split["accepted"] is True and split["rejected"] is None
    assert "COPY requirements.txt /app/\nRUN mkdir -p /deps" in split["dockerfile"]
    assert split["dockerfile"].index("COPY requirements.txt") < split["dockerfile"].index("COPY . /app")
    # manifests first: the source edit (commit 2) and the build-arg bump (6, early cut-off after the
    # install re-ran) keep more steps cached; 15 of 28 steps hit where the Dockerfile as it is hits 9 of 21
    assert [c["hit_rate"] for c in split["per_commit"]] == [0.0, 0.5, 1.0, 0.0, 0.75, 0.5, 0.8, 1.0]
    assert split["hit_rate"] == round(15 / 28, 4)
    assert split["saved_s"] > 0.5  # the install (a 1 s step) no longer runs for the source edit


def test_the_changing_arg_is_moved_to_where_it_is_used(report: dict[str, Any]) -> None:
    later = next(w for w in report["whatif"] if w["rule"] == "move-later")
    assert later["accepted"] is True
    assert later["dockerfile"].endswith("ARG VERSION=2\nLABEL version=$VERSION\n")
    assert later["hit_rate"] == round(11 / 21, 4)
    assert later["saved_s"] > 0.5  # the bump no longer re-runs the install


def test_the_csv_has_a_row_per_commit_and_step(cli_run: tuple[int, Path, str], report: dict[str, Any]) -> None:
    rows = list(csv.DictReader((cli_run[1] / "history.csv").open()))
    assert len(rows) == sum(len(c["steps"]) for c in report["commits"])
    assert rows[0]["commit"] == report["commits"][0]["commit"] and rows[0]["instruction"] == "FROM busybox"
    assert {r["ok"] for r in rows} == {"True", "False"}


def test_ephemeral_runner_misses_what_a_shared_cache_would_have_kept(repo: Path, base_root: Path) -> None:
    result = bench.history(repo, rev_range="HEAD~2..HEAD", root=base_root, runner="ephemeral", whatif=False)
    assert [c.subject for c in result.commits] == ["break the build", "fix the build"]
    assert [c.ok for c in result.commits] == [False, True]
    assert [c.summary.cached for c in result.commits] == [0, 0]  # an empty store per commit
    # The fix's three steps ran, with the same keys, in the broken commit's build before its last step
    # failed: a cache shared between the runners would have kept them, so they are the cache's misses.
    install = next(s.instruction for s in result.commits[1].steps if s.kind == "exec")
    assert [(m.instruction, m.seen_at) for m in result.ideal.cache_misses] == [
        ("COPY . /app", result.commits[0].commit), (install, result.commits[0].commit),
        ("RUN echo built again > /built", result.commits[0].commit)]
    assert (result.ideal.could_hit, result.ideal.steps, result.ideal.hit_rate) == (3, 3, 1.0)


def test_a_rewrite_that_changes_the_image_is_rejected(tmp_path: Path, base_root: Path) -> None:
    # The install writes /app/deps.lock, which the context also has: copying the sources after the
    # install would overwrite it, so splitting the copy would change the image.
    text = ("FROM busybox\nWORKDIR /app\nCOPY . /app\n"
            "RUN cat requirements.txt > /app/deps.lock\n")
    repo = tmp_path / "app"
    make_history(repo, [("one", {"Dockerfile": text, "requirements.txt": "a\n", "deps.lock": "stale\n"}),
                        ("two", {"deps.lock": "stale again\n"})])
    result = bench.history(repo, last=2, root=base_root)
    split = next(w for w in result.whatif if w.rule == "split-copy")
    assert not split.accepted
    assert split.rejected == "the image differs: /app/deps.lock differs"
    assert split.saved_s == 0.0


def test_bad_input_is_a_clear_error(tmp_path: Path, base_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    code = main(["--root", str(base_root), "bench", "history", str(tmp_path / "plain"), "--last", "2"])
    assert code == 2 and "is not a git repository" in capsys.readouterr().err
    repo = tmp_path / "one"
    make_history(repo, [("only", {"Dockerfile": DOCKERFILE.format(version="1", build="true"),
                                  "requirements.txt": ""})])
    code = main(["--root", str(base_root), "bench", "history", str(repo), "--rev-range", "nosuch..HEAD"])
    assert code == 2 and "cannot list the commits nosuch..HEAD" in capsys.readouterr().err
    code = main(["--root", str(base_root), "bench", "history", str(repo), "--last", "0"])
    assert code == 2 and "--last 0" in capsys.readouterr().err


def test_a_run_that_reads_nothing_copied_is_moved_above_the_copy(tmp_path: Path, base_root: Path) -> None:
    text = ("FROM busybox\nWORKDIR /app\nCOPY . /app\n"
            "RUN mkdir -p /tools && echo tool > /tools/t && touch -t 200001010000 /tools /tools/t && sleep 1\n"
            "RUN cat /app/app.txt > /out\n")
    repo = tmp_path / "app"
    make_history(repo, [("one", {"Dockerfile": text, "app.txt": "1\n"}), ("two", {"app.txt": "2\n"}),
                        ("three", {"app.txt": "3\n"})])
    result = bench.history(repo, last=3, root=base_root)
    assert [c.summary.cached for c in result.commits] == [0, 0, 0]
    [early] = [w for w in result.whatif if w.rule == "move-earlier"]
    assert early.accepted, early.rejected
    assert early.dockerfile.index("RUN mkdir -p /tools") < early.dockerfile.index("COPY . /app")
    # moved above the copy, the tools step hits at every source edit: 2 of 3 steps hit at commits 2 and 3
    assert [c.summary.cached for c in early.commits] == [0, 1, 1]
    assert early.hit_rate == round(2 / 9, 4) and early.saved_s > 1.0
    # the step that reads the copied file stays where it is
    assert not any("RUN cat /app/app.txt" in w.description for w in result.whatif)
