"""The tag registry: every shelf tag the agent knows, its base station, product, picture and telemetry.

Rows live in the `tags` table (migration 2); pictures sent to a tag, by hash, in `tag_pictures` (the
base of a delta update). Storage comes in through cloud_link.ports.DurableStore (one writer).

A tag first reported by a base station is *adopted* on sight only when `adopt_on_sight(tag_id)` says so (the
agent's `[labels] adopt` policy); otherwise it is *discovered*: its check-ins are recorded, but it gets no
picture until a technician adopts it, or pairs it (a pairing is the technician's explicit decision, see
ProductCatalog.pair_tags). Tags that existed before adoption was a thing stay adopted (column default 1).
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloud_link.ports import DurableStore

_SELECT = (
    "SELECT tag_id, type_code, base_station, rotation, template, sku, scan_code, current_hash, battery_mv, "
    "temperature_c, rssi, lqi, fw_version, last_seen_ms, adopted FROM tags"
)
_BY_ID = _SELECT + " WHERE tag_id = ?"

# Scan codes: 10 characters of an unambiguous alphabet, each drawn from the OS's CSPRNG (`secrets`): 31^10,
# about 49.5 bits, so one tag's code says nothing about another's. Guessing hits one of 10,000 tags once in
# ~8 x 10^10 tries on average: ~2,600 years at the scan links' default 60 requests a minute per address
# ([scan_links] rate limit), and short enough to keep the QR code on a small tag readable.
SCAN_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
SCAN_CODE_LEN = 10
PICTURES_KEPT_PER_TAG = 3


def new_scan_code() -> str:
    return "".join(secrets.choice(SCAN_ALPHABET) for _ in range(SCAN_CODE_LEN))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TagRecord:
    tag_id: str
    type_code: int
    base_station: str | None
    rotation: int
    template: str
    sku: str | None
    scan_code: str
    current_hash: str | None
    battery_mv: int | None
    temperature_c: float | None
    rssi: int | None
    lqi: int | None
    fw_version: int | None
    last_seen_ms: int | None
    adopted: bool = True


_FIELDS = tuple(f.name for f in dataclasses.fields(TagRecord))


def _record(row: Sequence[Any]) -> TagRecord:
    values = dict(zip(_FIELDS, row, strict=True))
    values["adopted"] = bool(values["adopted"])  # SQLite answers 0/1
    return TagRecord(**values)



@dataclass(frozen=True)
class Checkin:
    tag_id: str
    type_code: int
    base_station: str
    battery_mv: int
    temperature_c: float
    rssi: int
    lqi: int
    fw_version: int
    shown_hash: str


@dataclass(frozen=True)
class CheckinResult:
    record: TagRecord
    new: bool
    hash_changed: bool


def adopt_everything(tag_id: str) -> bool:
    return True


class TagRegistry:
    def __init__(self, store: DurableStore, *, adopt_on_sight: Callable[[str], bool] = adopt_everything) -> None:
        self._store = store
        self.adopt_on_sight = adopt_on_sight

    def get(self, tag_id: str) -> TagRecord | None:
        row = self._store.read(
            lambda c: c.execute(_BY_ID, (tag_id,)).fetchone()
        )
        return _record(row) if row else None

    def by_sku(self, skus: list[str]) -> list[TagRecord]:
        if not skus:
            return []
        marks = ",".join("?" * len(skus))
        rows = self._store.read(
            lambda c: c.execute(_SELECT + f" WHERE sku IN ({marks})", skus).fetchall()
        )
        return [_record(r) for r in rows]

    def paired_on(self, base_station: str) -> list[str]:
        """The adopted tags of a base station that show a product (a picking zone)."""
        rows = self._store.read(
            lambda c: c.execute(
                "SELECT tag_id FROM tags WHERE base_station = ? AND sku IS NOT NULL AND adopted = 1 ORDER BY tag_id",
                (base_station,),
            ).fetchall()
        )
        return [str(r[0]) for r in rows]

    def by_scan_code(self, code: str) -> TagRecord | None:
        row = self._store.read(
            lambda c: c.execute(_SELECT + " WHERE scan_code = ?", (code,)).fetchone()
        )
        return _record(row) if row else None

    def all(self, limit: int = 100_000) -> list[TagRecord]:
        rows = self._store.read(
            lambda c: c.execute(_SELECT + " ORDER BY tag_id LIMIT ?", (limit,)).fetchall()
        )
        return [_record(r) for r in rows]

    async def record_checkin(self, seen: Checkin, *, keep_shown: bool = False) -> CheckinResult:
        """Update (or create) a tag from a check-in; tells whether it is new and whether its picture moved.
        `keep_shown`: the check-in's picture hash is stale (sent before a confirmed update): keep the recorded one."""
        ts = now_ms()

        def job(conn: sqlite3.Connection) -> CheckinResult:
            row = conn.execute(_BY_ID, (seen.tag_id,)).fetchone()
            new = row is None
            if new:
                conn.execute(
                    "INSERT INTO tags(tag_id, type_code, base_station, scan_code, adopted, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (seen.tag_id, seen.type_code, seen.base_station, _unique_scan_code(conn),
                     int(self.adopt_on_sight(seen.tag_id)), ts),
                )
            old_hash = None if row is None else row[7]
            shown = old_hash if keep_shown and not new else seen.shown_hash
            conn.execute(
                "UPDATE tags SET type_code = ?, base_station = ?, current_hash = ?, battery_mv = ?, "
                "temperature_c = ?, rssi = ?, lqi = ?, fw_version = ?, last_seen_ms = ? WHERE tag_id = ?",
                (
                    seen.type_code,
                    seen.base_station,
                    shown,
                    seen.battery_mv,
                    seen.temperature_c,
                    seen.rssi,
                    seen.lqi,
                    seen.fw_version,
                    ts,
                    seen.tag_id,
                ),
            )
            record = conn.execute(_BY_ID, (seen.tag_id,)).fetchone()
            return CheckinResult(_record(record), new, not new and old_hash != shown)

        return await self._store.write(job)

    async def ensure(self, tag_id: str, type_code: int, base_station: str) -> tuple[TagRecord, bool]:
        """Make sure a tag reported by a base station exists; returns (record, created)."""
        ts = now_ms()

        def job(conn: sqlite3.Connection) -> tuple[TagRecord, bool]:
            row = conn.execute(_BY_ID, (tag_id,)).fetchone()
            if row is not None:
                return _record(row), False
            conn.execute(
                "INSERT INTO tags(tag_id, type_code, base_station, scan_code, adopted, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tag_id, type_code, base_station, _unique_scan_code(conn), int(self.adopt_on_sight(tag_id)), ts),
            )
            row = conn.execute(_BY_ID, (tag_id,)).fetchone()
            return _record(row), True

        return await self._store.write(job)

    async def adopt(self, tag_id: str) -> TagRecord | None:
        """Adopt a discovered tag (a technician's explicit choice); None when there is no such tag."""

        def job(conn: sqlite3.Connection) -> TagRecord | None:
            conn.execute("UPDATE tags SET adopted = 1 WHERE tag_id = ? AND adopted = 0", (tag_id,))
            row = conn.execute(_BY_ID, (tag_id,)).fetchone()
            return _record(row) if row else None

        return await self._store.write(job)

    def discovered(self, limit: int = 500) -> list[TagRecord]:
        """Tags reported by a base station and not adopted yet, the most recently seen first."""
        rows = self._store.read(
            lambda c: c.execute(
                _SELECT + " WHERE adopted = 0 ORDER BY last_seen_ms DESC, tag_id LIMIT ?", (limit,)
            ).fetchall()
        )
        return [_record(r) for r in rows]

    def count_discovered(self) -> int:
        row = self._store.read(lambda c: c.execute("SELECT COUNT(*) FROM tags WHERE adopted = 0").fetchone())
        return int(row[0])

    def search(self, text: str, limit: int = 20) -> list[TagRecord]:
        """Tags whose id or scan code starts with `text` (case-insensitive), or which show a product whose sku
        starts with it."""
        prefix = text.strip().lower()[:32].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._store.read(
            lambda c: c.execute(
                _SELECT + " WHERE tag_id LIKE :p ESCAPE '\\' OR scan_code LIKE :p ESCAPE '\\' "
                "OR sku LIKE :p ESCAPE '\\' ORDER BY tag_id LIMIT :limit",
                {"p": prefix, "limit": max(1, min(limit, 200))},
            ).fetchall()
        )
        return [_record(r) for r in rows]

    async def set_shown(self, tag_id: str, picture_hash: str | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE tags SET current_hash = ? WHERE tag_id = ?", (picture_hash, tag_id))
            if picture_hash is not None:
                # Keep the shown picture (the next delta's base) and the newest few others.
                conn.execute(
                    "DELETE FROM tag_pictures WHERE tag_id = ? AND hash != ? AND hash NOT IN "
                    "(SELECT hash FROM tag_pictures WHERE tag_id = ? ORDER BY created_ms DESC LIMIT ?)",
                    (tag_id, picture_hash, tag_id, PICTURES_KEPT_PER_TAG - 1),
                )

        await self._store.write(job)

    async def save_picture(self, tag_id: str, picture_hash: str, raw: bytes) -> None:
        blob = zlib.compress(raw, 6)
        ts = now_ms()
        await self._store.write(
            lambda c: c.execute(
                "INSERT INTO tag_pictures(tag_id, hash, raw_z, created_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(tag_id, hash) DO UPDATE SET created_ms = excluded.created_ms",
                (tag_id, picture_hash, blob, ts),
            )
        )

    def picture(self, tag_id: str, picture_hash: str | None) -> bytes | None:
        if picture_hash is None:
            return None
        row = self._store.read(
            lambda c: c.execute(
                "SELECT raw_z FROM tag_pictures WHERE tag_id = ? AND hash = ?", (tag_id, picture_hash)
            ).fetchone()
        )
        return zlib.decompress(row[0]) if row else None


def _unique_scan_code(conn: sqlite3.Connection) -> str:
    while True:
        code = new_scan_code()
        if conn.execute("SELECT 1 FROM tags WHERE scan_code = ?", (code,)).fetchone() is None:
            return code
