"""The shelf tags as the devices page lists them: each tag with its product's name and its pending update job.

A read-side view over three tables of two layers: `tags` and `tag_jobs` are the labels' (devices.labels), `products`
the catalog's (edge_agent.services.catalog); the join is made here, in the store's layer, so neither lower part
needs to know the other. Nothing is written. Every list is bounded by the caller's `limit` and ordered by tag id,
so `offset` pages through a stable order.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from cloud_link.ports import DurableStore
from edge_agent.storage.like import like_contains

_COLUMNS = (
    "t.tag_id, t.type_code, t.base_station, t.sku, p.name, t.scan_code, t.battery_mv, t.rssi, t.lqi, "
    "t.last_seen_ms, t.current_hash, t.adopted, j.state, j.reason, j.attempts, j.error, j.updated_ms, j.target_hash, "
    "t.temperature_c, t.fw_version, t.rotation, t.template"
)
_FROM = (
    "FROM tags t LEFT JOIN products p ON p.sku = t.sku LEFT JOIN tag_jobs j ON j.tag_id = t.tag_id "
)
# The search text matches part of a tag id, sku, scan code or product name (the sku and name without case).
_TEXT_MATCH = (
    "(t.tag_id LIKE ? ESCAPE '\\' OR lower(t.sku) LIKE ? ESCAPE '\\' OR t.scan_code LIKE ? ESCAPE '\\' "
    "OR lower(p.name) LIKE ? ESCAPE '\\')"
)


@dataclass(frozen=True, slots=True)
class ListedTag:
    """One tag, its product's name and its update job, as stored (the job fields are None when it has none)."""

    tag_id: str
    type_code: int
    base_station: str | None
    sku: str | None
    product_name: str | None
    scan_code: str
    battery_mv: int | None
    rssi: int | None
    lqi: int | None
    last_seen_ms: int | None
    shown_hash: str | None
    adopted: int
    job_state: str | None
    job_reason: str | None
    job_attempts: int | None
    job_error: str | None
    job_updated_ms: int | None
    job_target_hash: str | None
    temperature_c: float | None
    fw_version: int | None
    rotation: int
    template: str

    @property
    def update_pending(self) -> bool:
        """An update job exists and the tag has not confirmed it yet."""
        return self.job_state is not None and self.job_state != "confirmed"


class TagListing:
    """Reads tags with their product and job; never writes."""

    def __init__(self, db: DurableStore) -> None:
        self._db = db

    def get(self, tag_id: str) -> ListedTag | None:
        row = self._db.read(lambda c: c.execute(f"SELECT {_COLUMNS} {_FROM} WHERE t.tag_id = ?", (tag_id,)).fetchone())
        return None if row is None else ListedTag(*row)

    def page(
        self, *, limit: int, offset: int, text: str = "", station: str | None = None, paired: bool | None = None
    ) -> tuple[int, list[ListedTag]]:
        """(how many tags match, the `limit` of them from `offset` by tag id). `text` is matched as a lowercase
        substring (LIKE wildcards in it are literal); `paired` True keeps tags with a product, False those without."""
        where: list[str] = []
        args: list[Any] = []
        if station:
            where.append("t.base_station = ?")
            args.append(station)
        if paired is not None:
            where.append("t.sku IS NOT NULL" if paired else "t.sku IS NULL")
        if text:
            where.append(_TEXT_MATCH)
            args += [like_contains(text.lower())] * 4
        clause = ("WHERE " + " AND ".join(where)) if where else ""

        def page(c: sqlite3.Connection) -> tuple[int, list[ListedTag]]:
            # Only the filters' own text is formatted in; values are bound. One read: the count and the rows
            # come from the same snapshot.
            total = c.execute(f"SELECT COUNT(*) {_FROM} {clause}", args).fetchone()[0]
            rows = c.execute(
                f"SELECT {_COLUMNS} {_FROM} {clause} ORDER BY t.tag_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            return int(total), [ListedTag(*r) for r in rows]

        return self._db.read(page)

    def counts_by_station(self) -> dict[str, int]:
        """How many tags each base station (or Wi-Fi label station) holds; stations with none are absent."""
        return dict(
            self._db.read(
                lambda c: c.execute(
                    "SELECT base_station, COUNT(*) FROM tags WHERE base_station IS NOT NULL GROUP BY base_station"
                ).fetchall()
            )
        )
