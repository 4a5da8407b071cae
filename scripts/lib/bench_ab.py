"""scripts/bench: the benchmarks at the working tree (A) against another revision (B), run alternately on this
machine, and a table per benchmark: each figure, both medians, A/B, the spread of the runs and a flag.

Revisions:
  A  the working tree itself, uncommitted changes and untracked files included.
  B  REV, any git revision (--against). Default: the commit the current change started from, defined as
     `git merge-base HEAD origin/main` when the ref origin/main exists, else HEAD (the last commit: then the
     uncommitted work is what is compared). B runs in a temporary `git worktree add --detach`, removed at
     the end, also on Ctrl-C or failure.
  Both sides run with the same interpreter, this tree's .venv/bin/python (the same dependencies, so only the
  code differs), as `python -m bench.<name> [--quick]` with the current directory and PYTHONPATH set to that
  side's tree. The project is installed editable into .venv, pointing at this tree, so before any run each
  side is checked to import its own packages (edge_agent, bench, ...): the script stops if one does not.

Order: a benchmark's runs alternate A B B A (then A B B A again for --runs 3 and 4, ...), so neither side
always runs first and a slow drift of the machine hits both alike; one benchmark finishes before the next.

Figures: the last line of a run's stdout, a JSON object; nested objects flatten to dotted names (missed.led),
strings, lists and booleans are skipped. A benchmark absent at REV runs on A only (B shows as "—").

Flags: spread = the larger of the two sides' ranges (max - min over its runs). A figure is worse when the
working tree's median is worse than REV's by more than the spread and by more than 5 % of REV's median; a
count of bad things (lost, missing, wrong_..., 0 is right) is worse as soon as a run of A is above 0 where
every run of REV was 0. With 1 run per side there is no spread and the 5 % floor alone decides (noisier:
prefer --runs 2 or more). Figures that are configuration or the machine's reference have no direction and
are never flagged. WORSE: a target figure (the issues' targets, marked *); worse: any other (a warning).

Exit status: 0 no target figure flagged; 1 a target figure flagged WORSE; 2 a usage error, or a run failed
(non-zero exit or no JSON line: the other runs still go ahead, and its stderr's last lines are printed).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

RELATIVE_FLOOR = 0.05
STDERR_TAIL_LINES = 25

Direction = Literal["lower", "higher", "zero", "none"]
Side = Literal["A", "B"]

# ---- Which way is better, for every figure of bench/*.py (one place; the default for an unknown name: none).
# "lower": times (_ms, _s, seconds), memory (_mb), bytes per change; "higher": rates (_rps, _eps, _per_s,
# throughput) and shares (_vs_ ratios, _ok counts); "zero": counts of bad things, where 0 is right (lower is
# better, and any rise from 0 is flagged); "none": configuration (how much was asked or sent), the machine's
# reference (bare paho, bare Starlette), counts of what happened: shown, never flagged. A dotted name
# (missed.led) is decided by its last part that is known, so missed.led is a "zero" and
# restore_p95_ms_by_path.web a "lower".
NO_DIRECTION = frozenset({
    # configuration and sizes
    "quick", "tags", "tag_types", "banks", "buses", "compartments", "kiosks", "mqtt_devices", "pickers", "rounds",
    "lists", "lines", "events", "requests", "cycles", "bulk_tags", "price_changes", "orders_placed",
    "scan_connections", "scan_tags", "sse_clients", "sse_rounds", "checkin_s", "air_rate", "line_rate_baud",
    "steady_rate_eps", "render_processes", "raw_bytes_per_tag",
    # the machine's reference, measured in the same run (relay_eps: bench.scale's; bench.lockers' relay rate)
    "raw_paho_eps", "bare_rps", "relay_eps",
    # counts of what happened, better neither way
    "unlock_samples", "urgent_samples", "line_bytes", "group_commits", "scan_redirects", "scan_events_at_cloud",
    "bulk_tag_updates", "bulk_tags_confirmed", "bulk_waves", "bulk_update_tags", "pick_completed_events",
    "outbox_depth_at_end", "outbox_depth_backlog", "events_relayed", "events_published",
})
EXPLICIT: dict[str, Direction] = {
    "ratio": "higher",  # bench.relay: throughput_eps / raw_paho_eps
    "wire_ratio": "lower",  # bench.tags: wire bytes per price change / raw picture bytes
    "wire_bytes_per_price_change": "lower",
    "line_busy": "higher",  # bench.tags: share of the serial line's capacity used during the bulk update
    "sse_clients_opened": "higher",
    "scan_other_statuses": "zero",  # bench.kiosk: answers other than the 302
    "outbox_depth_after": "zero",  # bench.scale: events still in the outbox once the backlog drained
    "agent_exit_code": "zero",  # bench.scale: the agent's exit status when stopped
    "reconnect_loops": "zero",  # bench.chaos: in-store connections beyond one per run of the agent
    "relay_paused": "zero",  # bench.chaos: the relay dropping its connection to slow the broker down
}
# Nested objects that hold configuration only, whatever their members are called (bench.scale's "counts").
NO_DIRECTION_GROUPS = frozenset({"counts"})
BAD_COUNT_WORDS = frozenset({
    "missing", "extra", "lost", "wrong", "failed", "errors", "missed", "refused", "dropped", "duplicates",
    "unauthorized", "gaps", "retransmits", "timeouts", "crashes",
})
HIGHER_WORDS = frozenset({"rps", "eps", "throughput", "vs", "ok"})
LOWER_WORDS = frozenset({"ms", "s", "mb", "seconds"})

# ---- Targets: the figures the issues (README's "target" column, the benchmarks' docstrings) set a target for.
# A flagged target makes the exit status 1. Entries are fnmatch patterns over the (dotted) figure name.
TARGETS: dict[str, tuple[str, ...]] = {
    "kiosk": ("scan_link_rps", "scan_vs_bare", "scan_p99_ms", "scan_events_missing", "scan_events_extra",
              "price_to_kiosk_p99_ms", "order_to_cloud_p99_ms", "lost_orders"),
    "lockers": ("unlock_p99_ms", "wrong_opens", "missed_events", "failed_cycles"),
    "relay": ("throughput_eps", "ratio", "p99_ms", "lost", "gaps"),
    "shelves": ("led_p95_ms", "restore_p95_ms", "wrong_tags", "wrong_colour", "wrong_pages"),
    "tags": ("render_per_s", "wire_ratio", "line_busy", "bulk_s", "bulk_1000_s", "urgent_p99_ms", "wrong_pictures"),
    "ui": ("dashboard_p95_ms", "sse_clients_ok", "unauthorized_routes"),
    # bench.scale's docstring: ready_s_warm <= 5 (and ready_s_restart), rss_mb_busy <= 200, drain_vs_relay >= 0.8;
    # and, as for bench.relay, nothing of the outage's backlog lost.
    "scale": ("ready_s_warm", "ready_s_restart", "rss_mb_busy", "drain_vs_relay", "drain_lost", "drain_gaps"),
    # bench.chaos's docstring (issue 14): lost 0, reconnect_loops 0; nothing stored twice under a new event_id.
    "chaos": ("lost", "reconnect_loops", "duplicates_new_event_id"),
}


def _word_direction(part: str) -> Direction | None:
    if part in NO_DIRECTION:
        return "none"
    if part in EXPLICIT:
        return EXPLICIT[part]
    words = part.split("_")
    if any(w in BAD_COUNT_WORDS for w in words):
        return "zero"
    if any(a == "per" and b == "s" for a, b in itertools.pairwise(words)):
        return "higher"
    if any(w in HIGHER_WORDS for w in words):
        return "higher"
    if any(w in LOWER_WORDS for w in words):
        return "lower"
    return None


def direction(figure: str) -> Direction:
    """Which way is better for a figure (see the table above); "none" when nothing in its name says."""
    parts = figure.split(".")
    if any(part in NO_DIRECTION_GROUPS for part in parts[:-1]):
        return "none"
    for part in reversed(parts):
        found = _word_direction(part)
        if found is not None:
            return found
    return "none"


def is_target(bench: str, figure: str) -> bool:
    return any(fnmatch.fnmatchcase(figure, pattern) for pattern in TARGETS.get(bench, ()))


def flatten(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a benchmark's JSON figures, nested objects under dotted names; booleans, strings, lists,
    null and non-finite numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float) and math.isfinite(value):
            flat[name] = value
    return flat


def last_json_line(stdout: str) -> dict[str, Any] | None:
    """The figures: the last non-empty line of stdout when it is a JSON object, else None."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        parsed = json.loads(lines[-1])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_order(runs: int) -> list[Side]:
    """A B B A, then again: each pair alternates which side goes first."""
    order: list[Side] = []
    for k in range(runs):
        order.extend(("A", "B") if k % 2 == 0 else ("B", "A"))
    return order


@dataclass
class Row:
    figure: str
    direction: Direction
    target: bool
    a: list[float]
    b: list[float] | None  # None: the benchmark does not exist at REV
    a_median: float | None
    b_median: float | None
    ratio: float | None
    spread: float | None  # None: fewer than 2 runs on both sides, the floor alone decides
    flag: str  # "WORSE" (a target), "worse", "better" or ""


def spread_of(a: Sequence[float], b: Sequence[float]) -> float | None:
    ranges = [max(v) - min(v) for v in (a, b) if len(v) >= 2]
    return max(ranges) if ranges else None


def judge(a: Sequence[float], b: Sequence[float], sense: Direction, floor: float = RELATIVE_FLOOR) -> str:
    """ "worse", "better" or "" for A's runs against B's, by the rule in the module's docstring."""
    if sense == "none" or not a or not b:
        return ""
    if sense == "zero":
        if max(a) > 0 and max(b) == 0:
            return "worse"
        if max(a) == 0 and max(b) > 0:
            return "better"
    ma, mb = statistics.median(a), statistics.median(b)
    worse_by = ma - mb if sense in ("lower", "zero") else mb - ma
    margin = max(spread_of(a, b) or 0.0, floor * abs(mb))
    if worse_by > margin:
        return "worse"
    if -worse_by > margin:
        return "better"
    return ""


def compare(
    bench: str, figure: str, a: Sequence[float], b: Sequence[float] | None, floor: float = RELATIVE_FLOOR
) -> Row:
    sense = direction(figure)
    target = is_target(bench, figure)
    a_median = statistics.median(a) if a else None
    b_median = statistics.median(b) if b else None
    ratio = a_median / b_median if a_median is not None and b_median else None
    verdict = judge(a, b, sense, floor) if b is not None else ""
    flag = "WORSE" if verdict == "worse" and target else verdict
    return Row(
        figure=figure, direction=sense, target=target, a=list(a), b=None if b is None else list(b),
        a_median=a_median, b_median=b_median, ratio=ratio, spread=spread_of(a, b or []), flag=flag,
    )


def rows_for(
    bench: str, a_runs: Sequence[Mapping[str, float]], b_runs: Sequence[Mapping[str, float]] | None
) -> list[Row]:
    """One row per figure seen in any run, in the order of first appearance (A's runs first)."""
    names: dict[str, None] = {}
    for figures in [*a_runs, *(b_runs or [])]:
        names.update(dict.fromkeys(figures))
    rows = []
    for name in names:
        a = [f[name] for f in a_runs if name in f]
        b = None if b_runs is None else [f[name] for f in b_runs if name in f]
        rows.append(compare(bench, name, a, b))
    return rows


def fmt_number(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


COLUMNS = ("figure", "target", "better", "A median", "B median", "A/B", "spread", "flag")


def table_cells(rows: Iterable[Row]) -> list[list[str]]:
    return [
        [
            r.figure, "*" if r.target else "", "" if r.direction == "none" else r.direction,
            fmt_number(r.a_median), fmt_number(r.b_median), fmt_ratio(r.ratio), fmt_number(r.spread), r.flag,
        ]
        for r in rows
    ]


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """A fixed-width text table (numbers right-aligned), or a Markdown table."""
    cells = table_cells(rows)
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|---|:-:|---|--:|--:|--:|--:|---|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(COLUMNS)]
    numeric = {3, 4, 5, 6}

    def line(row: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(row) for row in cells)])


LEGEND = """\
A median / B median: the medians over each side's runs; A/B: their ratio; spread: the larger of the two sides'
ranges (max - min over its runs), "—" with 1 run per side (then the 5 % floor alone decides).
better: lower, higher, or zero (a count of bad things: 0 is right); blank: configuration or the machine's
reference, never flagged. target (*): a figure an issue sets a target for.
flag: WORSE = a target figure worse at A by more than the spread and more than 5 % of B's median (for a
zero figure: a run of A above 0 where every run of B was 0) -> exit 1; worse = the same for a figure that is
not a target (a warning); better = improved by as much."""


# ---- Running: git, the worktree, the benchmarks.


class UsageError(Exception):
    pass


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"git {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout.strip()


def default_rev(repo: Path) -> tuple[str, str]:
    """(label, commit) of the default REV: merge-base of HEAD with origin/main if that ref exists, else HEAD."""
    has_origin = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "refs/remotes/origin/main"], cwd=repo, capture_output=True,
        check=False,
    ).returncode == 0
    if has_origin:
        return "merge-base(HEAD, origin/main)", git(repo, "merge-base", "HEAD", "origin/main")
    return "HEAD", git(repo, "rev-parse", "--verify", "HEAD^{commit}")


def benchmarks_in(tree: Path) -> list[str]:
    return sorted(p.stem for p in (tree / "bench").glob("*.py") if not p.name.startswith("_"))


def packages_in(tree: Path) -> list[str]:
    return sorted(p.parent.name for p in tree.glob("*/__init__.py") if not p.parent.name.startswith("."))


def side_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


IMPORT_CHECK = (
    "import importlib.util, json, sys; "
    "print(json.dumps({n: getattr(importlib.util.find_spec(n), 'origin', None) for n in sys.argv[1:]}))"
)


def check_imports(python: str, tree: Path, label: str) -> None:
    """Each of the tree's packages must be imported from the tree itself, not from wherever .venv points."""
    names = packages_in(tree)
    if not names:
        return
    done = subprocess.run(
        [python, "-c", IMPORT_CHECK, *names], cwd=tree, env=side_env(tree), capture_output=True, text=True,
        check=False,
    )
    if done.returncode != 0:
        raise UsageError(f"the import check of {label} failed: {done.stderr.strip()[-2000:]}")
    origins: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    root = tree.resolve()
    wrong = {n: o for n, o in origins.items() if o is None or not Path(o).resolve().is_relative_to(root)}
    if wrong:
        found = ", ".join(f"{n} from {o}" for n, o in wrong.items())
        raise UsageError(f"{label} ({tree}) does not import its own code: {found}; its runs would measure other code")
    say(f"{label} imports its own code: " + ", ".join(f"{n} from {Path(str(origins[n])).parent}" for n in names))


@dataclass
class Run:
    bench: str
    side: Side
    number: int  # 1-based, over both sides, in the order run
    returncode: int | None
    seconds: float
    figures: dict[str, Any] | None  # the JSON line as printed
    error: str = ""
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """Interrupt a benchmark and everything it started (its own process group), as Ctrl-C would, so it removes
    its brokers and temporary directories; kill what is left after the grace period."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # whatever it left behind
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Settings:
    python: str  # the one interpreter of both sides
    quick: bool
    timeout_s: float  # 0: none
    logs: Path  # each run's stdout and stderr go to files here


def run_benchmark(settings: Settings, tree: Path, bench: str, side: Side, number: int) -> Run:
    python, timeout_s, logs = settings.python, settings.timeout_s, settings.logs
    command = [python, "-m", f"bench.{bench}", *(["--quick"] if settings.quick else [])]
    out_path, err_path = logs / f"{bench}-{number}-{side}.out", logs / f"{bench}-{number}-{side}.err"
    started = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(command, cwd=tree, env=side_env(tree), stdout=out, stderr=err, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout_s if timeout_s > 0 else None)
            timed_out = False
        except subprocess.TimeoutExpired:
            stop_group(proc)
            returncode, timed_out = proc.returncode, True
        except BaseException:
            stop_group(proc)
            raise
    seconds = time.monotonic() - started
    stdout = out_path.read_text(errors="replace")
    stderr_tail = err_path.read_text(errors="replace").splitlines()[-STDERR_TAIL_LINES:]
    figures = last_json_line(stdout)
    error = ""
    if timed_out:
        error = f"stopped after the {timeout_s:.0f} s timeout"
    elif returncode != 0:
        error = f"exit status {returncode}"
    elif figures is None:
        last = stdout.strip().splitlines()[-1:] or ["(no output)"]
        error = f"its last line of output is not a JSON object: {last[0][:200]}"
    return Run(bench, side, number, returncode, round(seconds, 1), figures if not error else None, error, stderr_tail)


@dataclass
class Revision:
    label: str
    commit: str
    short: str
    dirty: bool = False

    def title(self) -> str:
        return f"{self.label} ({self.short}{'+dirty' if self.dirty else ''})"


@dataclass
class BenchResult:
    name: str
    at_rev: bool
    runs: list[Run]
    rows: list[Row]


def failures_text(result: BenchResult, sides: Mapping[Side, Revision]) -> str:
    lines = []
    for run in result.runs:
        if run.ok:
            continue
        lines.append(f"FAILED: run {run.number} ({run.side}, {sides[run.side].title()}): {run.error}")
        if run.stderr_tail:
            lines.append("  last lines of its stderr:")
            lines += [f"    {line}" for line in run.stderr_tail]
    return "\n".join(lines)


def report(result: BenchResult, sides: Mapping[Side, Revision], runs: int, markdown: bool) -> str:
    order = " ".join(run_order(runs)) if result.at_rev else " ".join(["A"] * runs) + " (absent at B)"
    runs_text = f"{runs} run{'s' if runs != 1 else ''} per side, in the order {order}"
    head = f"bench.{result.name}: A = {sides['A'].title()}, B = {sides['B'].title()}; {runs_text}"
    blocks = [f"### {head}" if markdown else head]
    blocks.append(format_table(result.rows, markdown) if result.rows else "(no figures: every run failed)")
    if not result.at_rev:
        blocks.append(f"bench/{result.name}.py does not exist at B: run at A only.")
    failed = failures_text(result, sides)
    if failed:
        blocks.append(f"```\n{failed}\n```" if markdown else failed)
    return "\n\n".join(blocks) + "\n"


def exit_status(results: Sequence[BenchResult]) -> int:
    if any(not run.ok for result in results for run in result.runs):
        return 2
    if any(row.flag == "WORSE" for result in results for row in result.rows):
        return 1
    return 0


def summary(results: Sequence[BenchResult]) -> str:
    worse = [f"bench.{r.name} {row.figure}" for r in results for row in r.rows if row.flag == "WORSE"]
    warn = [f"bench.{r.name} {row.figure}" for r in results for row in r.rows if row.flag == "worse"]
    failed = [f"bench.{r.name} run {run.number} ({run.side})" for r in results for run in r.runs if not run.ok]
    lines = []
    if failed:
        lines.append("Failed runs: " + ", ".join(failed))
    lines.append("Target figures worse: " + (", ".join(worse) if worse else "none"))
    if warn:
        lines.append("Warnings (worse, not targets): " + ", ".join(warn))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks (bench/NAME.py); default: all of them")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--against", metavar="REV", help="the revision B (any git revision); default: see above")
    parser.add_argument("--runs", type=int, default=2, metavar="N", help="runs per side (default 2)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write everything, every raw run, as JSON")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables (for notes and reviews)")
    parser.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                        help="stop a run after S seconds, counted as failed (default 3600; 0: never)")
    parser.add_argument("--repo", type=Path, metavar="DIR",
                        help="the repository (default: the one around the current directory; scripts/bench sets it)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    return args


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return compare_revisions(args)
    except UsageError as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scripts/bench: interrupted", file=sys.stderr)
        return 130


def compare_revisions(args: argparse.Namespace) -> int:
    repo = Path(git(args.repo or Path.cwd(), "rev-parse", "--show-toplevel"))
    python = sys.executable
    if args.against:
        label = args.against
        try:
            commit = git(repo, "rev-parse", "--verify", "--quiet", f"{args.against}^{{commit}}")
        except UsageError:
            raise UsageError(f"--against {args.against}: not a commit in {repo}") from None
    else:
        label, commit = default_rev(repo)
    head = git(repo, "rev-parse", "HEAD")
    sides: dict[Side, Revision] = {
        "A": Revision("working tree", head, git(repo, "rev-parse", "--short", head),
                      dirty=bool(git(repo, "status", "--porcelain"))),
        "B": Revision(label, commit, git(repo, "rev-parse", "--short", commit)),
    }
    available = benchmarks_in(repo)
    names = args.names or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"no such benchmark: {', '.join(unknown)} (bench/ has: {', '.join(available)})")
    # Ctrl-C, SIGTERM and SIGHUP stop the run in progress (see stop_group) and remove the worktree. SIGINT is
    # caught even where it came in ignored (a background job) so that the benchmarks, which get back the default
    # disposition of a caught signal, can be interrupted to clean up after themselves.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup stays nohup
            signal.signal(sig, interrupted)

    results: list[BenchResult] = []
    scratch = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    worktree = scratch / "tree"
    added = False
    try:
        say(f"B: {sides['B'].title()} in a temporary worktree at {worktree}")
        git(repo, "worktree", "add", "--detach", str(worktree), commit)
        added = True
        check_imports(python, repo, "A (the working tree)")
        check_imports(python, worktree, "B")
        trees: dict[Side, Path] = {"A": repo, "B": worktree}
        settings = Settings(python, args.quick, args.timeout, scratch / "logs")
        settings.logs.mkdir()
        for name in names:
            at_rev = (worktree / "bench" / f"{name}.py").is_file()
            order: list[Side] = run_order(args.runs) if at_rev else ["A"] * args.runs
            runs: list[Run] = []
            for number, side in enumerate(order, 1):
                say(f"bench.{name}: run {number}/{len(order)}, {side} = {sides[side].title()}")
                run = run_benchmark(settings, trees[side], name, side, number)
                outcome = f": FAILED, {run.error}" if run.error else ""
                say(f"bench.{name}: run {number} took {run.seconds} s{outcome}")
                runs.append(run)
            a_runs = [flatten(r.figures) for r in runs if r.side == "A" and r.figures is not None]
            b_runs = [flatten(r.figures) for r in runs if r.side == "B" and r.figures is not None] if at_rev else None
            result = BenchResult(name, at_rev, runs, rows_for(name, a_runs, b_runs))
            results.append(result)
            print(report(result, sides, args.runs, args.markdown), flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let nothing cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if added:
            subprocess.run(["git", "worktree", "remove", "--force", "--force", str(worktree)], cwd=repo,
                           capture_output=True, check=False)
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)

    status = exit_status(results)
    print(LEGEND)
    print()
    print(summary(results))
    if args.json is not None:
        document = {
            "a": asdict(sides["A"]), "b": asdict(sides["B"]), "quick": args.quick, "runs_per_side": args.runs,
            "python": python, "relative_floor": RELATIVE_FLOOR, "exit_status": status,
            "benchmarks": [
                {"name": r.name, "at_b": r.at_rev, "runs": [asdict(run) for run in r.runs],
                 "rows": [asdict(row) for row in r.rows]}
                for r in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        say(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
