"""The door audit log: every door opening, of any kind, in an append-only, hash-chained table (and every
pickup-shelf release, handover and retrieval: the shelves' counterpart of a door opening).

Rows live in `audit_log` (migration 3). Triggers refuse UPDATE and DELETE through SQL. Against someone who
has the file and drops the triggers, each row carries the hash of the one before it:

    hash = sha256(prev_hash || canonical JSON of {seq, ts_ms, kind, compartment, actor, order_id, detail})

with `prev_hash` of the first row the genesis value (64 zeros), `||` byte concatenation (the hex text of
`prev_hash` in ASCII, then the JSON in UTF-8), and the canonical JSON `json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`. `detail` is itself stored as canonical JSON text, and it is
that text which is hashed, so a verifier needs no JSON re-encoding to agree.

`verify()` recomputes the chain and names the first row that is wrong (changed, missing, with a prev_hash
that does not match, or with a time earlier than the row before). Times never go back: a row appended while
the wall clock reads earlier than the previous row takes that row's time and keeps the clock's reading in
`detail.wall_clock_ms` (edge_agent.services.agent_clock says when the clock is not trusted).

What a local check cannot catch: a rewrite of a row *and every row after it*, or
rows cut off the end. The copy of each row sent to the cloud (`audit.door_opened`, with its hash) covers
those: the cloud holds hashes the store can no longer change.

Appends go through the database's single writer: reading the last row and inserting the next happen in
one transaction, so two appends can never chain onto the same row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.storage.writer import open_connection

# shelf_*: pickup shelves (edge_agent.services.pickup_shelves) have no door; a right code making a slot's label
# flash, the staff handover and the staff retrieval are recorded in the same chain, `compartment` then the slot.
AuditKind = Literal[
    "code", "staff", "remote", "test", "uncommanded", "shelf_release", "shelf_handover", "shelf_retrieval"
]
AUDIT_KINDS: tuple[str, ...] = get_args(AuditKind)
GENESIS_HASH = "0" * 64
# Rows read per query while verifying: bounded memory whatever the size of the log.
VERIFY_CHUNK = 1000
TEXT_MAX = 200

_Q_LAST = "SELECT seq, hash, ts_ms FROM audit_log ORDER BY seq DESC LIMIT 1"
_Q_INSERT = (
    "INSERT INTO audit_log(seq, ts_ms, kind, compartment, actor, order_id, detail, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_Q_AFTER = (
    "SELECT seq, ts_ms, kind, compartment, actor, order_id, detail, prev_hash, hash "
    "FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"
)


class AuditError(Exception):
    """An audit record could not be written (bad input); nothing was appended."""


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts_ms: int
    kind: str
    compartment: str | None
    actor: str | None
    order_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_payload(self) -> dict[str, Any]:
        """The record as a plain dict, e.g. the body of an `audit.door_opened` event."""
        return {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "kind": self.kind,
            "compartment": self.compartment,
            "actor": self.actor,
            "order_id": self.order_id,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_hash(
    prev_hash: str,
    *,
    seq: int,
    ts_ms: int,
    kind: str,
    compartment: str | None,
    actor: str | None,
    order_id: str | None,
    detail_json: str,
) -> str:
    """sha256(prev_hash || canonical JSON of the row's fields), as lowercase hex."""
    body = canonical_json(
        {
            "seq": seq,
            "ts_ms": ts_ms,
            "kind": kind,
            "compartment": compartment,
            "actor": actor,
            "order_id": order_id,
            "detail": detail_json,
        }
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("utf-8")).hexdigest()


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value or len(value) > TEXT_MAX:
        raise AuditError(f"{name}: must be a non-empty string of at most {TEXT_MAX} characters, or None")


def _row_to_record(row: tuple[Any, ...]) -> AuditRecord:
    seq, ts_ms, kind, compartment, actor, order_id, detail, prev_hash, hash_ = row
    return AuditRecord(seq, ts_ms, kind, compartment, actor, order_id, json.loads(detail), prev_hash, hash_)


def _rows(conn: sqlite3.Connection, chunk: int = VERIFY_CHUNK) -> Iterator[tuple[Any, ...]]:
    after = 0
    while True:
        rows = conn.execute(_Q_AFTER, (after, chunk)).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def verify_chain(conn: sqlite3.Connection) -> AuditVerification:
    """Recompute the whole chain on `conn`; the first row found wrong is reported, the rest not read."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    prev_ts = 0
    count = 0
    for seq, ts_ms, kind, compartment, actor, order_id, detail, stored_prev, stored_hash in _rows(conn):
        if seq != expected_seq:
            missing = f"row {expected_seq} is" if seq == expected_seq + 1 else f"rows {expected_seq}-{seq - 1} are"
            return AuditVerification(False, count, expected_seq, f"{missing} missing (next row present: {seq})")
        if stored_prev != prev_hash:
            return AuditVerification(False, count, seq, "prev_hash does not match the previous row's hash")
        try:
            computed = row_hash(
                prev_hash, seq=seq, ts_ms=ts_ms, kind=kind, compartment=compartment, actor=actor,
                order_id=order_id, detail_json=detail,
            )
        except (TypeError, ValueError, AttributeError) as exc:  # a column of the wrong type, written by hand
            return AuditVerification(False, count, seq, f"row cannot be hashed: {exc}")
        if computed != stored_hash:
            return AuditVerification(False, count, seq, "hash does not match the row's content")
        if not isinstance(ts_ms, int) or ts_ms < prev_ts:
            # append() never writes a time earlier than the row before: this row was written otherwise.
            return AuditVerification(False, count, seq, f"ts_ms {ts_ms} is earlier than the previous row's {prev_ts}")
        prev_ts = ts_ms
        prev_hash = stored_hash
        expected_seq += 1
        count += 1
    return AuditVerification(True, count)


class AuditSink(Protocol):
    """Where a door opening is recorded: the hash chain, then the cloud (wiring/lockers.py's AuditToCloud). `also`
    runs in the audit row's transaction (the door opener marks its operation audited in the same commit)."""

    async def append(
        self, kind: str, *, compartment: str | None, actor: str | None, order_id: str | None, detail: dict[str, Any],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Any: ...


class AuditLog:
    """Appends door openings to the hash chain and checks it."""

    def __init__(self, db: DurableStore, *, clock: Callable[[], int] = now_ms) -> None:
        self._db = db
        self._clock = clock

    async def append(
        self,
        kind: AuditKind,
        *,
        compartment: str | None,
        actor: str | None,
        order_id: str | None,
        detail: dict[str, Any],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> AuditRecord:
        """Append one door opening; returns the record once it is durable. Raises AuditError on bad input.
        `also` runs in the same transaction (the door operation marked audited: both or neither)."""
        if kind not in AUDIT_KINDS:
            raise AuditError(f"kind: must be one of {', '.join(AUDIT_KINDS)}, got {kind!r}")
        _check_text("compartment", compartment)
        _check_text("actor", actor)
        _check_text("order_id", order_id)
        if not isinstance(detail, dict):
            raise AuditError("detail: must be a JSON object (dict)")
        try:
            detail_json = canonical_json(detail)
        except (TypeError, ValueError) as exc:
            raise AuditError(f"detail: not JSON-serialisable: {exc}") from exc
        wall_ms = self._clock()

        def insert(conn: sqlite3.Connection) -> AuditRecord:
            nonlocal detail_json
            last = conn.execute(_Q_LAST).fetchone()
            seq, prev_hash = (1, GENESIS_HASH) if last is None else (int(last[0]) + 1, str(last[1]))
            ts_ms = wall_ms
            if last is not None and wall_ms < int(last[2]):
                # The wall clock is behind the previous row (set back): times in the chain never go back, so
                # this row takes the previous one's time and keeps what the clock said, for whoever reads it.
                ts_ms = int(last[2])
                detail_json = canonical_json({**json.loads(detail_json), "wall_clock_ms": wall_ms})
            hash_ = row_hash(
                prev_hash, seq=seq, ts_ms=ts_ms, kind=kind, compartment=compartment, actor=actor,
                order_id=order_id, detail_json=detail_json,
            )
            conn.execute(_Q_INSERT, (seq, ts_ms, kind, compartment, actor, order_id, detail_json, prev_hash, hash_))
            if also is not None:
                also(conn)
            return AuditRecord(
                seq, ts_ms, kind, compartment, actor, order_id, json.loads(detail_json), prev_hash, hash_
            )

        return await self._db.write(insert)

    async def mark_published(self, seq: int) -> None:
        """Its audit.door_opened event is in the outbox (table audit_published: audit_log is append-only)."""
        await self._db.write(lambda c: c.execute("INSERT OR IGNORE INTO audit_published(seq) VALUES (?)", (seq,)))

    def unpublished(self, limit: int = 1000) -> list[AuditRecord]:
        """Records whose audit.door_opened never reached the outbox, oldest first."""
        seqs = self._db.read(lambda c: [int(r[0]) for r in c.execute(
            "SELECT seq FROM audit_log WHERE seq NOT IN (SELECT seq FROM audit_published) ORDER BY seq LIMIT ?",
            (limit,),
        )])
        return [record for seq in seqs for record in self.records(after_seq=seq - 1, limit=1)]

    def records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Rows with seq > after_seq, oldest first, at most `limit` (capped at VERIFY_CHUNK)."""
        limit = max(1, min(limit, VERIFY_CHUNK))
        rows = self._db.read(lambda c: c.execute(_Q_AFTER, (after_seq, limit)).fetchall())
        return [_row_to_record(r) for r in rows]

    def verify(self) -> AuditVerification:
        """Check the whole chain against the reader's snapshot (reads in chunks; long logs take a while)."""
        return self._db.read(verify_chain)

    def last_seq(self) -> int:
        """The newest row's seq; 0 while the log is empty."""
        return int(self._db.read(lambda c: c.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]) or 0)


def verify_file(path: Path) -> AuditVerification:
    """Check the whole chain in the database file at `path` on a read-only connection of its own: neither the
    agent's shared reader nor its writer is held, so it may run in a worker thread while the agent runs."""
    conn = open_connection(path, readonly=True)
    try:
        return verify_chain(conn)
    finally:
        conn.close()
