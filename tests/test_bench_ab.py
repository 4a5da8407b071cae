"""scripts/lib/bench_ab.py (scripts/bench): flattening, directions, medians, spreads, flags, tables, with real
figures; and one run end to end in a throwaway git repository with fake benchmarks (worktree, order A B B A, a
benchmark absent at REV, a failing one, exit statuses)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "lib" / "bench_ab.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ab", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ab"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ab = load()


def test_flatten_keeps_numbers_under_dotted_names() -> None:
    figures = {
        "led_p95_ms": 308.8, "lists": 21, "quick": False, "note": None, "failures": [], "sse_changes": ["A-01"],
        "missed": {"led": 0, "page": 2, "deeper": {"x": 1.5, "ok": True}}, "p99_ms": float("nan"),
        "restore_p95_ms_by_path": {"web": 1521.0, "scan": None},
    }  # fmt: skip
    assert ab.flatten(figures) == {
        "led_p95_ms": 308.8, "lists": 21, "missed.led": 0, "missed.page": 2, "missed.deeper.x": 1.5,
        "restore_p95_ms_by_path.web": 1521.0,
    }  # fmt: skip


def test_last_json_line() -> None:
    assert ab.last_json_line('rendering: {...}\n{"render_per_s": 8662.0, "quick": true}\n\n') == {
        "render_per_s": 8662.0,
        "quick": True,
    }
    assert ab.last_json_line('{"a": 1}\nTraceback (most recent call last):\n') is None
    assert ab.last_json_line("[1, 2]\n") is None
    assert ab.last_json_line("") is None


@pytest.mark.parametrize(
    ("figure", "expected"),
    [
        # lower is better: times, memory
        ("unlock_p99_ms", "lower"), ("bulk_1000_s", "lower"), ("rss_mb", "lower"), ("seconds", "lower"),
        ("restore_p95_ms_by_path.web", "lower"), ("ready_s_warm", "lower"), ("rss_mb_after_busy", "lower"),
        ("wire_ratio", "lower"), ("wire_bytes_per_price_change", "lower"),
        # higher is better: rates, shares
        ("scan_link_rps", "higher"), ("throughput_eps", "higher"), ("render_per_s", "higher"),
        ("cycles_per_s", "higher"), ("ratio", "higher"), ("scan_vs_bare", "higher"), ("drain_vs_relay", "higher"),
        ("sse_clients_ok", "higher"), ("line_busy", "higher"), ("outbox_drain_eps", "higher"),
        # counts of bad things: 0 is right
        ("lost", "zero"), ("lost_orders", "zero"), ("scan_events_missing", "zero"), ("scan_events_extra", "zero"),
        ("wrong_opens", "zero"), ("wrong_pictures", "zero"), ("missed_events", "zero"), ("missed.led", "zero"),
        ("failed_cycles", "zero"), ("orders_refused", "zero"), ("duplicates", "zero"), ("gaps", "zero"),
        ("unauthorized_routes", "zero"), ("scan_errors", "zero"), ("scan_other_statuses", "zero"),
        # configuration, the machine's reference, counts of what happened; unknown names
        ("quick", "none"), ("tags", "none"), ("banks", "none"), ("events", "none"), ("relay_eps", "none"),
        ("steady_rate_eps", "none"), ("checkin_s", "none"), ("raw_paho_eps", "none"), ("bare_rps", "none"),
        ("raw_bytes_per_tag", "none"), ("scan_redirects", "none"), ("orders_placed", "none"),
        ("something_new", "none"),
        # bench.scale
        ("ready_s_restart", "lower"), ("rss_mb_tree_busy", "lower"), ("db_mb_backlog", "lower"),
        ("backlog_ingest_eps", "higher"), ("drain_eps_connected", "higher"), ("drain_lost", "zero"),
        ("drain_gaps", "zero"), ("label_updates_failed", "zero"), ("locker_cycles_failed", "zero"),
        ("outbox_depth_after", "zero"), ("agent_exit_code", "zero"), ("events_relayed", "none"),
        ("counts.tags", "none"), ("counts.label_updates", "none"), ("counts.some_s", "none"),
    ],
)  # fmt: skip
def test_direction(figure: str, expected: str) -> None:
    assert ab.direction(figure) == expected


def test_targets() -> None:
    for bench, figure in [
        ("kiosk", "scan_link_rps"), ("kiosk", "scan_p99_ms"), ("kiosk", "price_to_kiosk_p99_ms"),
        ("kiosk", "order_to_cloud_p99_ms"), ("kiosk", "lost_orders"), ("kiosk", "scan_events_missing"),
        ("lockers", "unlock_p99_ms"), ("lockers", "wrong_opens"), ("lockers", "missed_events"),
        ("relay", "throughput_eps"), ("relay", "ratio"), ("relay", "lost"), ("tags", "render_per_s"),
        ("tags", "urgent_p99_ms"), ("tags", "wrong_pictures"), ("tags", "bulk_1000_s"), ("shelves", "led_p95_ms"),
        ("shelves", "restore_p95_ms"), ("shelves", "wrong_tags"), ("ui", "dashboard_p95_ms"),
        ("ui", "sse_clients_ok"), ("ui", "unauthorized_routes"), ("scale", "ready_s_warm"),
        ("scale", "ready_s_restart"), ("scale", "rss_mb_busy"), ("scale", "drain_vs_relay"), ("scale", "drain_lost"),
    ]:  # fmt: skip
        assert ab.is_target(bench, figure), (bench, figure)
    for bench, figure in [("kiosk", "scan_p50_ms"), ("relay", "raw_paho_eps"), ("shelves", "led_first_ms"),
                          ("relay", "unlock_p99_ms"), ("nosuch", "p99_ms"), ("scale", "relay_eps"),
                          ("scale", "ready_s_cold"), ("scale", "outbox_drain_eps")]:  # fmt: skip
        assert not ab.is_target(bench, figure), (bench, figure)
    # A target with no direction could never be flagged.
    for bench, patterns in ab.TARGETS.items():
        for pattern in patterns:
            if "*" not in pattern:
                assert ab.direction(pattern) != "none", (bench, pattern)


def test_run_order_alternates() -> None:
    assert ab.run_order(1) == ["A", "B"]
    assert ab.run_order(2) == ["A", "B", "B", "A"]
    assert ab.run_order(3) == ["A", "B", "B", "A", "A", "B"]


def test_within_the_spread_is_not_flagged() -> None:
    # Eight full runs of bench.shelves on one quiet machine gave led_p95_ms from 276 to 466 ms.
    row = ab.compare("shelves", "led_p95_ms", [300.1, 310.5], [276.0, 466.2])
    assert (row.a_median, row.b_median, row.spread, row.flag) == (305.3, 371.1, 190.2, "")
    assert row.target and row.direction == "lower"
    assert math.isclose(row.ratio, 305.3 / 371.1)


def test_worse_beyond_spread_and_floor_target_and_not() -> None:
    row = ab.compare("lockers", "unlock_p99_ms", [52.0, 55.0], [40.0, 41.5])
    assert (row.a_median, row.b_median, row.spread, row.flag) == (53.5, 40.75, 3.0, "WORSE")
    row = ab.compare("lockers", "unlock_p50_ms", [12.0, 12.4], [9.2, 9.3])
    assert row.flag == "worse"  # not a target: a warning
    row = ab.compare("kiosk", "scan_link_rps", [1700.0, 1720.0], [2008.0, 1986.0])  # higher is better
    assert (row.spread, row.flag) == (22.0, "WORSE")


def test_beyond_spread_but_under_the_floor_is_not_flagged() -> None:
    # Two runs can agree by chance: 2.2 % worse, four times the spread, is still not flagged.
    row = ab.compare("relay", "p99_ms", [2.10, 2.11], [2.05, 2.07])
    assert row.spread == pytest.approx(0.02) and row.flag == ""


def test_better() -> None:
    assert ab.compare("kiosk", "scan_p99_ms", [4.5, 4.9], [15.0, 24.8]).flag == "better"
    assert ab.compare("tags", "render_per_s", [8662.0, 8700.0], [7814.0, 7800.0]).flag == "better"


def test_counts_of_bad_things() -> None:
    # Any run above 0 where REV had 0 in every run, whatever the spread.
    assert ab.compare("kiosk", "lost_orders", [0, 1], [0, 0]).flag == "WORSE"
    assert ab.compare("relay", "duplicates", [0, 3], [0, 0]).flag == "worse"
    assert ab.compare("relay", "lost", [0, 0], [0, 2]).flag == "better"
    assert ab.compare("relay", "lost", [0, 0], [0, 0]).flag == ""
    # Both above 0: the usual rule.
    assert ab.compare("tags", "retransmits", [3, 4], [2, 5]).flag == ""
    assert ab.compare("tags", "retransmits", [9, 10], [2, 3]).flag == "worse"


def test_one_run_per_side_uses_the_floor_alone() -> None:
    row = ab.compare("relay", "p99_ms", [1.66], [1.5])  # 10.7 % worse
    assert row.spread is None and row.flag == "WORSE"
    assert ab.compare("relay", "p99_ms", [1.55], [1.5]).flag == ""  # 3.3 %


def test_no_direction_and_absent_at_rev_are_never_flagged() -> None:
    assert ab.compare("relay", "events", [24968], [129968]).flag == ""
    row = ab.compare("scale", "ready_s_warm", [3.0, 3.4], None)
    assert (row.b, row.b_median, row.ratio, row.flag, row.spread) == (None, None, None, "", pytest.approx(0.4))


def test_rows_in_order_of_first_appearance() -> None:
    a_runs = [{"render_per_s": 8662.0, "bulk_s": 39.9}, {"render_per_s": 8600.0, "bulk_s": 40.1, "only_a": 1}]
    b_runs = [{"render_per_s": 7814.0, "bulk_s": 41.0, "only_b": 2}, {"render_per_s": 7800.0, "bulk_s": 40.0}]
    rows = ab.rows_for("tags", a_runs, b_runs)
    assert [r.figure for r in rows] == ["render_per_s", "bulk_s", "only_a", "only_b"]
    assert rows[0].flag == "better" and rows[1].flag == ""
    assert (rows[2].b, rows[2].b_median) == ([], None)
    assert (rows[3].a, rows[3].a_median, rows[3].b_median) == ([], None, 2)


def test_number_formats() -> None:
    assert [ab.fmt_number(v) for v in (129968, 7858.2, 0.854, 41.5, 2.0, 0, 0.0004, None, -3.25)] == [
        "129,968", "7,858.2", "0.854", "41.5", "2", "0", "0", "—", "-3.25",
    ]  # fmt: skip
    assert ab.fmt_ratio(0.85432) == "0.854" and ab.fmt_ratio(None) == "—"


def test_text_and_markdown_tables() -> None:
    rows = [
        ab.compare("relay", "throughput_eps", [7858.0, 7901.0], [7873.0, 7810.0]),
        ab.compare("relay", "p99_ms", [3.1, 3.3], [1.66, 2.1]),
        ab.compare("relay", "lost", [0, 0], [0, 0]),
        ab.compare("relay", "events", [129968, 129968], None),
    ]
    assert ab.format_table(rows).splitlines() == [
        "figure          target  better  A median  B median    A/B  spread  flag",
        "--------------  ------  ------  --------  --------  -----  ------  -----",
        "throughput_eps  *       higher   7,879.5   7,841.5  1.005      63",
        "p99_ms          *       lower        3.2      1.88  1.702    0.44  WORSE",
        "lost            *       zero           0         0      —       0",
        "events                           129,968         —      —       0",
    ]
    markdown = ab.format_table(rows, markdown=True).splitlines()
    assert markdown[0] == "| figure | target | better | A median | B median | A/B | spread | flag |"
    assert markdown[3] == "| p99_ms | * | lower | 3.2 | 1.88 | 1.702 | 0.44 | WORSE |"
    assert all(line.count("|") == 9 for line in markdown)


def run(i: int, side: str, error: str = "") -> object:
    return ab.Run("relay", side, i, 0 if not error else 1, 1.0, None if error else {"p99_ms": 1.0}, error)


def test_exit_status() -> None:
    warn = ab.BenchResult("relay", True, [run(1, "A"), run(2, "B")], [ab.compare("relay", "p50_ms", [9.0], [1.0])])
    worse = ab.BenchResult("relay", True, [run(1, "A")], [ab.compare("relay", "p99_ms", [9.0], [1.0])])
    failed = ab.BenchResult("relay", True, [run(1, "A"), run(2, "B", "exit status 1")], [])
    assert ab.exit_status([warn]) == 0
    assert ab.exit_status([warn, worse]) == 1
    assert ab.exit_status([worse, failed]) == 2


# ---- End to end, in a throwaway repository.


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


FAKE = """\
import json, os, sys
from pathlib import Path
with open(os.environ["BENCH_AB_TEST_LOG"], "a") as log:
    log.write(f"{NAME} {Path(__file__).resolve().parent.parent} {'--quick' in sys.argv}\\n")
print("some progress")
print(json.dumps(FIGURES))
"""


def fake(repo: Path, name: str, figures: dict[str, object]) -> None:
    (repo / "bench" / f"{name}.py").write_text(FAKE.replace("NAME", repr(name)).replace("FIGURES", repr(figures)))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Commit 1: bench.fake and bench.relay (a name with targets). HEAD adds bench.newer. The working tree
    changes both old ones, uncommitted."""
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "bench" / "__init__.py").write_text("")
    (repo / "bench" / "_helper.py").write_text("raise SystemExit('not a benchmark')\n")
    fake(repo, "fake", {"x_ms": 10, "missed": {"led": 0}, "tags": 5, "quick": True, "name": "n"})
    fake(repo, "relay", {"p99_ms": 1.5, "lost": 0})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    fake(repo, "newer", {"y_per_s": 3.5})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two")
    fake(repo, "fake", {"x_ms": 20, "missed": {"led": 1}, "tags": 5, "quick": True, "name": "n"})
    fake(repo, "relay", {"p99_ms": 1.6, "lost": 0})  # 6.7 % worse, one run per side: WORSE
    return repo


def bench_ab(repo: Path, log: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_AB_TEST_LOG": str(log)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_default_rev(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert ab.default_rev(repo) == ("HEAD", head)
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "update-ref", "refs/remotes/origin/main", first)
    assert ab.default_rev(repo) == ("merge-base(HEAD, origin/main)", first)


def test_end_to_end(repo: Path, tmp_path: Path) -> None:
    log, out = tmp_path / "order.log", tmp_path / "out.json"
    done = bench_ab(repo, log, "--against", "HEAD~1", "--runs", "2", "--quick", "--json", str(out))
    assert done.returncode == 1, done.stderr  # bench.relay's p99_ms is a target
    found = re.search(r"temporary worktree at (\S+)", done.stderr)
    assert found is not None, done.stderr
    worktree = Path(found[1])
    short = git(repo, "rev-parse", "--short", "HEAD")
    base = git(repo, "rev-parse", "--short", "HEAD~1")
    # Alphabetical, each benchmark's runs A B B A; B in its own worktree with its own code; newer only at A.
    order = log.read_text().splitlines()
    assert order == [
        f"fake {repo} True", f"fake {worktree} True", f"fake {worktree} True", f"fake {repo} True",
        f"newer {repo} True", f"newer {repo} True",
        f"relay {repo} True", f"relay {worktree} True", f"relay {worktree} True", f"relay {repo} True",
    ]  # fmt: skip
    assert f"bench.fake: A = working tree ({short}+dirty), B = HEAD~1 ({base}); 2 runs per side" in done.stdout
    assert re.search(r"\nx_ms +lower +20 +10 +2\.000 +0 +worse\n", done.stdout)
    assert re.search(r"\nmissed\.led +zero +1 +0 +— +0 +worse\n", done.stdout)
    assert re.search(r"\ny_per_s +higher +3\.5 +— +— +0\n", done.stdout)
    assert "bench/newer.py does not exist at B" in done.stdout
    assert re.search(r"\np99_ms +\* +lower +1\.6 +1\.5 +1\.067 +0 +WORSE\n", done.stdout)
    assert "Target figures worse: bench.relay p99_ms" in done.stdout
    assert "Warnings (worse, not targets): bench.fake x_ms, bench.fake missed.led" in done.stdout
    # The worktree is gone, and git forgot it.
    assert not worktree.exists() and not worktree.parent.exists()
    assert str(worktree) not in git(repo, "worktree", "list")
    document = json.loads(out.read_text())
    assert document["exit_status"] == 1 and document["b"]["short"] == base and document["a"]["dirty"]
    fake_runs = document["benchmarks"][0]["runs"]
    assert [r["side"] for r in fake_runs] == ["A", "B", "B", "A"]
    assert fake_runs[1]["figures"] == {"x_ms": 10, "missed": {"led": 0}, "tags": 5, "quick": True, "name": "n"}


def test_failures_and_usage_errors(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    (repo / "bench" / "broken.py").write_text("import sys\nprint('boom: the broker did not start', file=sys.stderr)\n"
                                              "sys.exit(3)\n")  # fmt: skip
    (repo / "bench" / "nojson.py").write_text("print('done, no figures')\n")
    done = bench_ab(repo, log, "--against", "HEAD", "--runs", "1", "broken", "nojson", "newer")
    assert done.returncode == 2
    assert "FAILED: run 1 (A, working tree" in done.stdout and "exit status 3" in done.stdout
    assert "    boom: the broker did not start" in done.stdout
    assert "its last line of output is not a JSON object: done, no figures" in done.stdout
    assert re.search(r"\ny_per_s +higher +3\.5 +3\.5 +1\.000 +— *\n", done.stdout)  # ran after the failures
    assert "Failed runs: bench.broken run 1 (A), bench.nojson run 1 (A)" in done.stdout

    unknown = bench_ab(repo, log, "--runs", "1", "nosuch")
    assert unknown.returncode == 2 and "no such benchmark: nosuch (bench/ has: broken, fake, newer, nojson, relay)" in unknown.stderr
    assert "_helper" not in unknown.stderr
    bad_rev = bench_ab(repo, log, "--against", "no-such-rev")
    assert bad_rev.returncode == 2 and "--against no-such-rev: not a commit" in bad_rev.stderr
    assert bench_ab(repo, log, "--runs", "0").returncode == 2


def test_import_check_catches_code_from_elsewhere(tmp_path: Path) -> None:
    # A tree's package shadowed by one found first elsewhere (here a built-in module; in this project, the
    # editable install pointing at the working tree is what the check guards against).
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    ab.check_imports(sys.executable, tmp_path, "B")
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "__init__.py").write_text("")
    with pytest.raises(ab.UsageError, match=r"B \(.*\) does not import its own code: sys from built-in"):
        ab.check_imports(sys.executable, tmp_path, "B")
