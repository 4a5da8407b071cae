"""The label update scheduler's rules, on a real SQLite file: what is queued, in which order, when held."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devices.labels.registry import Checkin
from devices.labels.render import LabelContent
from devices.labels.render_pool import RenderPool, RenderRequest, RenderResult
from devices.labels.updates import (
    PRIORITY_COSMETIC,
    PRIORITY_PRICE,
    PRIORITY_TECHNICIAN,
    LabelService,
    LabelSettings,
)
from edge_agent.storage import Database


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish_event(self, event_type: str, payload: dict[str, Any]) -> None:
        self.events.append((event_type, payload))

    async def put_state(self, device_id: str, state: dict[str, Any]) -> None:
        pass


PRICES: dict[str, Decimal] = {}


@contextlib.contextmanager
def priced(sku: str, price: str) -> Iterator[None]:
    """The product's price is `price` inside the block."""
    PRICES[sku] = Decimal(price)
    try:
        yield
    finally:
        PRICES.clear()


def content(sku: str) -> LabelContent | None:
    return LabelContent(sku=sku, name=f"商品 {sku}", price=PRICES.get(sku, Decimal("1.00")), currency="CNY")


@pytest.fixture
async def service(tmp_path: Path):
    db = Database(tmp_path)
    pool = RenderPool(1)
    svc = LabelService(db, content=content, events=Sink(), renderer=pool, settings=LabelSettings())
    for i in range(4):
        tag = f"{i:016x}"
        await svc.registry.record_checkin(Checkin(tag, 0x03, "bs1", 2900, 21.5, -60, 200, 1, "00" * 8))
        await db.write(
            lambda c, s=f"sku-{i}": c.execute(
                "INSERT INTO products(sku, name, price, currency, rev, updated_ms) VALUES (?, ?, '1.00', 'CNY', 1, 0)",
                (s, s),
            )
        )
        await db.write(lambda c, t=tag, s=f"sku-{i}": c.execute("UPDATE tags SET sku = ? WHERE tag_id = ?", (s, t)))
    yield svc, db
    pool.close()
    db.close()


def job(db: Database, tag: str) -> tuple[str, int, str, str]:
    return db.read(
        lambda c: c.execute(
            "SELECT state, priority, reason, target_hash FROM tag_jobs WHERE tag_id = ?", (tag,)
        ).fetchone()
    )


async def test_jobs_are_queued_only_for_pictures_that_change(service) -> None:
    svc, db = service
    assert await svc.request_update([f"{i:016x}" for i in range(4)], PRIORITY_PRICE, "first") == 4
    # The tag now "shows" its target: asking again queues nothing and sends nothing.
    tag0 = f"{0:016x}"
    target = job(db, tag0)[3]
    await svc.registry.set_shown(tag0, target)
    assert await svc.request_update([tag0], PRIORITY_PRICE, "again") == 0
    assert job(db, tag0)[0] == "confirmed"
    assert svc.stats.unchanged == 1


async def test_newer_content_replaces_older_queued_content_and_keeps_the_urgency(service) -> None:
    svc, db = service
    tag = f"{1:016x}"
    await svc.request_update([tag], PRIORITY_TECHNICIAN, "technician")
    first_target = job(db, tag)[3]
    with priced("sku-1", "9.99"):
        await svc.request_update([tag], PRIORITY_PRICE, "price change")
    state, priority, reason, target = job(db, tag)
    assert state == "queued" and target != first_target
    assert priority == PRIORITY_TECHNICIAN, "the newer content keeps the queued job's higher priority"
    assert reason == "price change"
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM tag_jobs WHERE tag_id = ?", (tag,)).fetchone()[0]) == 1


class HeldPool:
    """The real render pool, whose next render is held until `release` is set: a render that finishes late."""

    def __init__(self, pool: RenderPool) -> None:
        self.pool = pool
        self.hold_next = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        results = await self.pool.render(requests)
        if self.hold_next:
            self.hold_next = False
            self.held.set()
            await self.release.wait()
        return results


async def test_an_older_request_that_finishes_rendering_last_does_not_undo_a_newer_one(service) -> None:
    svc, db = service
    tag = f"{2:016x}"
    assert await svc.request_update([tag], PRIORITY_PRICE, "first") == 1
    old_target = job(db, tag)[3]
    await svc.registry.set_shown(tag, old_target)
    held = HeldPool(svc._renderer)
    svc._renderer = held
    # An older request decides on the old price and is slow to render; meanwhile the price changes and a newer
    # request queues it. When the older one lands, the tag already "shows" its content: it must not drop the
    # newer job (the pick page of a start that lands after a cancel's price, for example).
    held.hold_next = True
    older = asyncio.create_task(svc.request_update([tag], PRIORITY_PRICE, "older"))
    await asyncio.wait_for(held.held.wait(), 10)
    with priced("sku-2", "7.77"):
        assert await svc.request_update([tag], PRIORITY_PRICE, "newer") == 1
    new_target = job(db, tag)[3]
    assert new_target != old_target
    held.release.set()
    assert await asyncio.wait_for(older, 10) == 0
    assert job(db, tag)[0] == "queued" and job(db, tag)[3] == new_target
    assert svc.stats.superseded == 1


async def test_content_the_tag_shows_is_queued_again_while_other_content_is_on_its_way(service) -> None:
    svc, db = service
    tag = f"{3:016x}"
    await svc.request_update([tag], PRIORITY_PRICE, "first")
    shown = job(db, tag)[3]
    await svc.registry.set_shown(tag, shown)
    with priced("sku-3", "8.88"):
        await svc.request_update([tag], PRIORITY_PRICE, "price change")
    other = job(db, tag)[3]
    # The transfer of the new price is on its way (as _start leaves it) when the price goes back.
    await db.write(lambda c: c.execute("UPDATE tag_jobs SET state = 'sending' WHERE tag_id = ?", (tag,)))
    assert await svc.request_update([tag], PRIORITY_PRICE, "price back") == 1
    state, _, reason, target = job(db, tag)
    assert (state, reason, target) == ("queued", "price back", shown), "the old price follows the transfer"
    assert svc.registry.picture(tag, shown) is not None
    # The transfer lands: its own result no longer matches the job, which then sends the old price again.
    assert not await svc._set_job(tag, other, "confirmed", 1, None)
    await svc.registry.set_shown(tag, other)
    assert [t for t, _, _ in svc._due_jobs("bs1", 10, set())] == [tag]


async def test_due_jobs_come_by_priority_and_quiet_hours_hold_cosmetic_ones(service) -> None:
    svc, _ = service
    tags = [f"{i:016x}" for i in range(3)]
    await svc.request_update([tags[0]], PRIORITY_COSMETIC, "template")
    await svc.request_update([tags[1]], PRIORITY_PRICE, "price")
    await svc.request_update([tags[2]], PRIORITY_TECHNICIAN, "technician")
    assert [t for t, _, _ in svc._due_jobs("bs1", 10, set())] == [tags[2], tags[1], tags[0]]
    assert [t for t, _, _ in svc._due_jobs("bs1", 1, set())] == [tags[2]], "bounded by the free slots"
    assert svc._due_jobs("other-station", 10, set()) == []
    now = dt.datetime.now()
    quiet = LabelSettings(quiet_hours=((now - dt.timedelta(hours=1)).time(), (now + dt.timedelta(hours=1)).time()))
    svc.settings = quiet
    assert quiet.quiet_now()
    assert [t for t, _, _ in svc._due_jobs("bs1", 10, set())] == [tags[2], tags[1]]


def test_quiet_hours_across_midnight() -> None:
    s = LabelSettings(quiet_hours=(dt.time(22, 0), dt.time(7, 0)))
    assert s.quiet_now(dt.datetime(2026, 11, 22, 23, 30))
    assert s.quiet_now(dt.datetime(2026, 11, 23, 6, 59))
    assert not s.quiet_now(dt.datetime(2026, 11, 23, 7, 0))
    assert not s.quiet_now(dt.datetime(2026, 11, 22, 12, 0))
    assert not LabelSettings().quiet_now()
