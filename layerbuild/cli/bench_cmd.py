"""`layerbuild.bench.measure [REPO] [--last N | --rev-range A..B] [--report DIR] ...`: cache hit rates over
a project's git history, with a progress bar while it replays and a table at the end."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from layerbuild.errors import UsageError

if TYPE_CHECKING:
    from layerbuild.bench.model import HistoryReport


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("bench", help="measure the cache over a project's history")
    cmds = p.add_subparsers(dest="bench_cmd", metavar="COMMAND")
    h = cmds.add_parser("history", help="replay a repository's commits and report each step's hits and misses, "
                        "the ideal, and the Dockerfile rewrites that would save the most")
    h.add_argument("repo", nargs="?", default=".", metavar="REPO", help="a git checkout (default: .)")
    which = h.add_mutually_exclusive_group()
    which.add_argument("--last", type=int, metavar="N", help="the last N commits of HEAD (default 10)")
    which.add_argument("--rev-range", metavar="A..B", help="the commits of A..B (A excluded), first parents")
    h.add_argument("-f", "--file", metavar="PATH", help="the Dockerfile, as a path in the repository "
                   "(default: CONTEXT/Dockerfile)")
    h.add_argument("--context", default=".", metavar="PATH", help="the build context, a directory of the "
                   "repository (default: its top)")
    h.add_argument("--target", metavar="STAGE")
    h.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    h.add_argument("--build-context", action="append", default=[], metavar="NAME=VALUE",
                   help="a named context, as for build (e.g. NAME=docker-image://REF)")
    h.add_argument("--runner", choices=("warm", "ephemeral"), default="warm",
                   help="warm: one store for every commit; ephemeral: an empty store per commit (a fresh CI "
                        "runner), with --cache-registry as its shared cache")
    h.add_argument("--cache-registry", metavar="REF", help="the registry cache an ephemeral runner imports and "
                   "exports (--cache-from/--cache-to type=registry,ref=REF)")
    h.add_argument("--compare", action="append", default=[], choices=("docker",),
                   help="the same replay through a docker engine's BuildKit (skipped when none answers)")
    h.add_argument("--no-whatif", action="store_true", help="skip the what-if rewrites")
    h.add_argument("--report", metavar="DIR", help="write history.json, history.csv and index.html into DIR")
    h.add_argument("--jobs", type=int, default=0, metavar="N", help="stages built at once (default: CPUs)")
    h.add_argument("--progress", choices=("auto", "plain", "quiet"), default="auto")
    return "bench", run


def run(args: argparse.Namespace) -> int:
    if args.bench_cmd != "history":
        raise UsageError("say what to measure", hint="layerbuild.bench.measure REPO --last N")
    from layerbuild.bench.measure import history
    from layerbuild.bench.output import check_report_dir, write_report
    from layerbuild.cli.build_cmd import _build_args, _build_contexts

    if args.report:
        check_report_dir(args.report)
    view = _View(args.progress)
    try:
        report = history(
            args.repo, rev_range=args.rev_range, last=args.last, dockerfile=args.file, context=args.context,
            target=args.target, runner=args.runner, build_args=_build_args(args.build_arg),
            build_contexts=_build_contexts(args.build_context), cache_registry=args.cache_registry, jobs=args.jobs,
            root=args.root, whatif=not args.no_whatif, compare=args.compare, progress=view.progress(),
            on_phase=view.phase,
        )  # fmt: skip
    finally:
        view.close()
    if args.report:
        paths = write_report(report, args.report)
        print(f"report: {paths['json']}, {paths['csv']}, {paths['html']}", file=sys.stderr)
    print_table(report, plain=args.progress == "plain" or not sys.stdout.isatty())
    return 0


class _View:
    """A rich progress bar on a terminal (plain lines otherwise) while the replays go."""

    def __init__(self, mode: str) -> None:
        self.mode = "plain" if mode == "auto" and not sys.stderr.isatty() else mode
        self.bar: Any = None
        self.task: Any = None
        self.name = "replay"

    def phase(self, name: str, total: int) -> None:
        self.name = name
        if self.mode == "quiet":
            return
        if self.mode == "plain":
            print(f"{name}: {total} commits", file=sys.stderr)
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=False)
            self.bar.start()
        self.task = self.bar.add_task(name, total=total)

    def progress(self) -> Any:
        from layerbuild.bench.replay import Progress

        def done(n: int, outcome: Any) -> None:
            if self.mode == "plain":
                s = outcome.summary
                state = f"hit rate {s.hit_rate:.0%} ({s.cached}/{s.cached + s.executed})" if outcome.ok else "FAILED"
                print(f"  {self.name} {n + 1}: {outcome.commit[:12]} {state} {outcome.duration_s:.2f}s "
                      f"{outcome.subject[:50]}", file=sys.stderr)
            elif self.bar is not None and self.task is not None:
                self.bar.update(self.task, advance=1)

        return Progress(commit_done=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_table(report: HistoryReport, *, plain: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, no_color=plain, width=140 if plain else None, markup=False)
    table = Table(title=f"{report.repo} · {report.dockerfile} · runner {report.runner}")
    for col in ("commit", "subject", "hit rate", "ran", "time", "changed", "first miss"):
        table.add_column(col, overflow="fold")
    for c in report.commits:
        first = next((s for s in c.steps if s.counted and not s.cached), None)
        why = f"{first.instruction[:40]}: {first.reason}" if first is not None else ""
        changed = ", ".join(c.changed_files[:3]) + (" …" if len(c.changed_files) > 3 else "")
        if c.ok:
            table.add_row(c.commit[:7], c.subject[:40], f"{c.summary.hit_rate:.0%}", str(c.summary.executed),
                          f"{c.duration_s:.2f}s", changed, why)
        else:
            table.add_row(c.commit[:7], c.subject[:40], "failed", "", f"{c.duration_s:.2f}s", changed,
                          (c.error or "").splitlines()[0][:80] if c.error else "")
    console.print(table)
    t, ideal = report.totals, report.ideal
    console.print(f"hit rate {t.hit_rate:.1%} ({t.cached}/{t.steps} steps), ideal {ideal.hit_rate:.1%}, "
                  f"{len(ideal.cache_misses)} miss(es) the cache should have avoided, {t.failed} failed commit(s), "
                  f"{t.duration_s:.2f}s of builds")
    for w in report.whatif:
        verdict = f"saves {w.saved_s:.2f}s, hit rate {w.hit_rate:.1%}" if w.accepted else f"rejected: {w.rejected}"
        console.print(f"what-if [{w.rule}] {w.description}: {verdict}")
    for comp in report.compare:
        rate = f": hit rate {comp.to_json()['hit_rate']:.1%}" if comp.commits else ""
        console.print(f"compare {comp.builder}: {comp.message}{rate}")
