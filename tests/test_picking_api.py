"""The picking board's JSON API (`/api/picking...`) on a running agent with the base-station emulator on a real
pty: who may use it (staff and up; anonymous 401; writes need the CSRF header), what it answers for a list the
picking service started (products named, tags lit), and every way a confirmation, a scan or a cancel can be
refused: a 4xx with {"detail": {"error", "message"}}, nothing changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.web import signed_in

PRODUCTS = [
    {"sku": "milk-1", "name": "有机纯牛奶 250ml", "price": "12.80", "currency": "CNY", "barcode": "6901234567892"},
    {"sku": "rice-5", "name": "Jasmine rice 5 kg", "price": "59.00", "currency": "CNY", "barcode": "4006381333931"},
    {"sku": "water-1", "name": "农夫山泉 550ml", "price": "2.00", "currency": "CNY"},
]


@asynccontextmanager
async def picking_agent(tmp_path: Path, n_tags: int = 3) -> AsyncIterator[tuple[Agent, BaseStationEmulator, list[str]]]:
    """An agent with a base station (emulated, on a pty) whose tags are paired, one each, with PRODUCTS in order;
    yields the agent, the emulator and the tag ids (sorted) once every tag shows its price."""
    emu = BaseStationEmulator(mixed(n_tags, seed=17), checkin_interval=0.5, air_rate=200_000, seed=17)
    tags = sorted(t.hex() for t in emu.tags)
    config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}])
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None and agent.picking is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == n_tags, timeout=20)
        await agent.catalog.upsert([Product.model_validate(p) for p in PRODUCTS])
        await agent.catalog.pair_tags([(tag, PRODUCTS[i % len(PRODUCTS)]["sku"]) for i, tag in enumerate(tags)])
        await wait_until(lambda: all((r := labels.registry.get(t)) is not None and r.adopted and r.sku for t in tags))
        yield agent, emu, tags


async def test_picking_api_roles_csrf_and_refusals(tmp_path: Path) -> None:
    async with picking_agent(tmp_path) as (agent, _emu, tags):
        assert agent.picking is not None
        await agent.picking.start(
            "PL-1", picker="amy", colour="green", order_ids=["O-1"],
            lines=[("O-1", "milk-1", 2), ("O-1", "rice-5", 1), ("O-2", "water-1", 3)],
        )
        base = f"http://127.0.0.1:{agent.web_port}"
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/api/picking")).status_code == 401
            assert (await anonymous.post("/api/picking/scan", json={"code": "milk-1"})).status_code in (401, 403)

        async with signed_in(agent, "stella", Role.STAFF) as staff:
            board = (await staff.get("/api/picking", params={"recent": 1})).json()
            assert board["enabled"] is True and board["recent"] == []
            [plist] = board["lists"]
            assert plist["list_id"] == "PL-1" and plist["picker"] == "amy" and plist["colour"] == "green"
            assert plist["order_ids"] == ["O-1", "O-2"]
            first = plist["lines"][0]
            assert first["name"] == "有机纯牛奶 250ml" and first["quantity"] == 2 and first["state"] == "open"
            assert first["tags"] == [tags[0]]  # the tag paired with milk-1 is the one lit

            # Writes without the session's CSRF token are refused, and change nothing.
            token = staff.headers.pop("X-CSRF-Token")
            answer = await staff.post("/api/picking/PL-1/lines/1/confirm", json={})
            assert answer.status_code == 403 and answer.json()["detail"]["error"] == "csrf"
            staff.headers["X-CSRF-Token"] = token
            assert agent.picking.get("PL-1").lines[0].state == "open"  # type: ignore[union-attr]

            async def refused(path: str, body: object, status: int, error: str | None = None) -> None:
                answer = await staff.post(path, json=body)
                assert answer.status_code == status, (path, body, answer.text)
                if error is not None:
                    assert answer.json()["detail"]["error"] == error, answer.text
                    assert answer.json()["detail"]["message"]

            await refused("/api/picking/PL-1/lines/1/confirm", {"picked_qty": -1}, 422)
            await refused("/api/picking/PL-1/lines/1/confirm", {"picked_qty": 1, "colour": "red"}, 422)
            await refused("/api/picking/PL-1/lines/1/confirm", {"picked_qty": "many"}, 422)
            await refused("/api/picking/PL-1/lines/1/confirm", {"picked_qty": 3}, 422, "bad_quantity")
            await refused("/api/picking/PL-1/lines/1/confirm", {"substitute_sku": "nope-9"}, 422, "unknown_sku")
            await refused("/api/picking/PL-9/lines/1/confirm", {}, 404, "unknown_list")
            await refused("/api/picking/PL-1/lines/7/confirm", {}, 404, "unknown_line")
            await refused("/api/picking/PL-9/cancel", {}, 404, "unknown_list")
            await refused("/api/picking/scan", {"code": ""}, 422)
            await refused("/api/picking/scan", {"code": "bad\ncode"}, 422)
            await refused("/api/picking/scan", {"code": "no-such-product"}, 404, "no_open_line")
            assert (await staff.get("/api/picking/PL-9")).status_code == 404
            assert all(line.state == "open" for line in agent.picking.get("PL-1").lines)  # type: ignore[union-attr]

            # Short: one of two milk taken, by this user.
            short = (await staff.post("/api/picking/PL-1/lines/1/confirm", json={"picked_qty": 1})).json()
            assert short["state"] == "short" and short["picked_qty"] == 1 and short["confirmed_by"] == "web:stella"
            await refused("/api/picking/PL-1/lines/1/confirm", {}, 409, "not_open")
            # A substitute given by its barcode is recorded by sku.
            sub = (await staff.post("/api/picking/PL-1/lines/3/confirm",
                                    json={"substitute_sku": "6901234567892", "picked_qty": 2})).json()
            assert sub["state"] == "substituted" and sub["substitute_sku"] == "milk-1"
            assert sub["substitute_name"] == "有机纯牛奶 250ml"
            # The rice, scanned at the board by its barcode: the last line, so the list completes.
            scan = (await staff.post("/api/picking/scan", json={"code": "4006381333931"})).json()
            assert scan["list_id"] == "PL-1" and scan["line_no"] == 2 and scan["state"] == "picked"
            assert scan["confirmed_by"] == "scan:web:stella"
            board = (await staff.get("/api/picking?recent=1")).json()
            assert board["lists"] == [] and [r["list_id"] for r in board["recent"]] == ["PL-1"]
            assert board["recent"][0]["state"] == "completed"
            await refused("/api/picking/PL-1/cancel", {}, 409, "not_open")

            # Cancel: a second list, cancelled by staff.
            await agent.picking.start("PL-2", picker="bo", colour="blue", order_ids=["O-3"], lines=[("O-3", "water-1", 1)])
            cancelled = (await staff.post("/api/picking/PL-2/cancel", json={})).json()
            assert cancelled["state"] == "cancelled" and cancelled["lines"][0]["state"] == "cancelled"
            assert cancelled["lines"][0]["confirmed_by"] == "web:stella"

        # Technicians and admins are staff too.
        async with signed_in(agent, "tina", Role.TECHNICIAN) as tech:
            assert (await tech.get("/api/picking")).status_code == 200


async def test_picking_off_answers_so(tmp_path: Path) -> None:
    """A store with no labels runs no picking: the board says so, and every write is a 404 `picking_off`."""
    async with running_agent(agent_config(tmp_path / "data", None)) as agent:
        assert agent.picking is None
        async with signed_in(agent, "stella", Role.STAFF) as staff:
            board = (await staff.get("/api/picking?recent=1")).json()
            assert board["enabled"] is False and board["lists"] == [] and board["recent"] == []
            for path, body in (("/api/picking/scan", {"code": "milk-1"}), ("/api/picking/PL-1/cancel", {}),
                               ("/api/picking/PL-1/lines/1/confirm", {})):
                answer = await staff.post(path, json=body)
                assert answer.status_code == 404 and answer.json()["detail"]["error"] == "picking_off", answer.text
