"""The door audit log on a real migrated SQLite file: hash chain, append-only triggers, tamper detection, CLI."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.cli.audit import audit_verify_main
from edge_agent.services.audit import (
    GENESIS_HASH,
    AuditError,
    AuditLog,
    canonical_json,
)
from edge_agent.storage import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


async def fill(log: AuditLog, n: int) -> None:
    kinds = ("code", "staff", "remote", "test", "uncommanded")
    for i in range(n):
        await log.append(
            kinds[i % len(kinds)],  # type: ignore[arg-type]
            compartment=f"A-{i % 16 + 1:02d}",
            actor=None if i % 5 == 4 else f"terminal-{i % 3}",
            order_id=f"order-{i}" if i % 5 == 0 else None,
            detail={"n": i, "text": "柜门已打开", "nested": {"b": 1, "a": [1, 2]}},
        )


def raw(db: Database) -> sqlite3.Connection:
    """A connection of someone with access to the file: drops the triggers, then edits rows."""
    conn = sqlite3.connect(db.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    return conn


async def test_append_chains_rows_from_the_genesis_hash(db: Database) -> None:
    log = AuditLog(db, clock=lambda: 1_700_000_000_000)
    first = await log.append("code", compartment="A-01", actor="locker-1", order_id="o-1", detail={"z": 1, "a": "x"})
    second = await log.append("staff", compartment="A-02", actor="staff:li", order_id=None, detail={})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    # The documented formula, recomputed independently.
    body = canonical_json({
        "seq": 1, "ts_ms": 1_700_000_000_000, "kind": "code", "compartment": "A-01", "actor": "locker-1",
        "order_id": "o-1", "detail": '{"a":"x","z":1}',
    })
    assert first.hash == hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    stored = db.read(lambda c: c.execute("SELECT detail FROM audit_log WHERE seq = 1").fetchone()[0])
    assert stored == '{"a":"x","z":1}'
    assert log.verify().ok and log.verify().rows == 2
    assert [r.seq for r in log.records()] == [1, 2] and log.records(after_seq=1)[0] == second
    assert second.as_payload()["prev_hash"] == first.hash


async def test_concurrent_appends_form_one_chain(db: Database) -> None:
    log = AuditLog(db)
    records = await asyncio.gather(*(
        log.append("remote", compartment=str(i), actor="cloud", order_id=None, detail={"i": i}) for i in range(200)
    ))
    assert sorted(r.seq for r in records) == list(range(1, 201))
    result = log.verify()
    assert result.ok and result.rows == 200 and result.first_bad_seq is None


async def test_bad_input_is_refused_and_nothing_is_written(db: Database) -> None:
    log = AuditLog(db)
    with pytest.raises(AuditError, match="kind"):
        await log.append("magic", compartment=None, actor=None, order_id=None, detail={})  # type: ignore[arg-type]
    with pytest.raises(AuditError, match="detail"):
        await log.append("test", compartment=None, actor=None, order_id=None, detail={"x": object()})
    with pytest.raises(AuditError, match="detail"):
        await log.append("test", compartment=None, actor=None, order_id=None, detail={"x": float("nan")})
    with pytest.raises(AuditError, match="compartment"):
        await log.append("test", compartment="", actor=None, order_id=None, detail={})
    assert log.verify().rows == 0 and log.verify().ok


async def test_update_and_delete_through_sql_are_refused(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 3)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await db.write(lambda c: c.execute("UPDATE audit_log SET actor = 'someone else' WHERE seq = 2"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await db.write(lambda c: c.execute("DELETE FROM audit_log WHERE seq = 3"))
    conn = sqlite3.connect(db.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    conn.close()
    assert log.verify().ok and log.verify().rows == 3


@pytest.mark.parametrize(
    ("statement", "bad_seq", "reason"),
    [
        ("UPDATE audit_log SET detail = '{\"n\":4}' WHERE seq = 5", 5, "hash does not match"),
        ("UPDATE audit_log SET actor = 'staff:wang' WHERE seq = 7", 7, "hash does not match"),
        ("UPDATE audit_log SET ts_ms = ts_ms + 1 WHERE seq = 1", 1, "hash does not match"),
        ("UPDATE audit_log SET kind = 'test' WHERE seq = 10", 10, "hash does not match"),
        ("DELETE FROM audit_log WHERE seq = 4", 4, "row 4 is missing"),
        ("DELETE FROM audit_log WHERE seq IN (4, 5, 6)", 4, "rows 4-6 are missing"),
        ("UPDATE audit_log SET prev_hash = hash WHERE seq = 6", 6, "prev_hash"),
        ("UPDATE audit_log SET ts_ms = 'soon' WHERE seq = 8", 8, "hash does not match"),
    ],
)
async def test_tampering_is_found_at_the_right_row(db: Database, statement: str, bad_seq: int, reason: str) -> None:
    log = AuditLog(db)
    await fill(log, 10)
    conn = raw(db)
    conn.execute(statement)
    conn.close()
    result = AuditLog(db).verify()
    assert not result.ok and result.first_bad_seq == bad_seq and result.reason is not None
    assert reason in result.reason
    assert result.rows == bad_seq - 1


async def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 6)
    from edge_agent.services.audit import row_hash

    conn = raw(db)
    prev = conn.execute("SELECT hash FROM audit_log WHERE seq = 2").fetchone()[0]
    detail = json.dumps({"n": 3, "forged": True}, separators=(",", ":"), sort_keys=True)
    row = conn.execute("SELECT ts_ms, kind, compartment, actor, order_id FROM audit_log WHERE seq = 3").fetchone()
    forged = row_hash(prev, seq=3, ts_ms=row[0], kind=row[1], compartment=row[2], actor=row[3], order_id=row[4],
                      detail_json=detail)
    conn.execute("UPDATE audit_log SET detail = ?, hash = ? WHERE seq = 3", (detail, forged))
    conn.close()
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4 and result.reason is not None and "prev_hash" in result.reason


async def test_cli_exit_codes(db: Database, tmp_path: Path) -> None:
    log = AuditLog(db)
    out = io.StringIO()
    assert audit_verify_main(tmp_path / "data", out=out) == 0  # empty log
    await fill(log, 12)
    out = io.StringIO()
    assert audit_verify_main(tmp_path / "data", out=out) == 0
    assert "12 rows" in out.getvalue()
    conn = raw(db)
    conn.execute("UPDATE audit_log SET compartment = 'B-01' WHERE seq = 9")
    conn.close()
    out = io.StringIO()
    assert audit_verify_main(tmp_path / "data", out=out) == 1
    assert "seq 9" in out.getvalue()
    out = io.StringIO()
    assert audit_verify_main(tmp_path / "nowhere", out=out) == 2
    assert "no database" in out.getvalue()


async def test_cli_prints_to_stdout_by_default(db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await fill(AuditLog(db), 2)
    assert audit_verify_main(tmp_path / "data") == 0
    assert "audit log intact: 2 rows" in capsys.readouterr().out


async def test_chain_survives_reopening_the_database(tmp_path: Path) -> None:
    first = Database(tmp_path / "data")
    await fill(AuditLog(first), 3)
    first.close()
    again = Database(tmp_path / "data")
    try:
        log = AuditLog(again)
        record = await log.append("test", compartment="A-01", actor="tech", order_id=None, detail={"why": "check"})
        assert record.seq == 4 and log.verify().ok and log.verify().rows == 4
    finally:
        again.close()
