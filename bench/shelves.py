"""Pick-to-light benchmark: how fast pick lists light their tags and give them their price back, while a bulk
price update keeps the base station busy.

python -m bench.shelves [--quick]

The agent runs in this process with a real cloud Mosquitto and the base-station emulator on a pty paced at
115,200 baud, tags checking in every 30 s (the default: they listen only then unless in fast check-in), the
radio at the emulator's default air rate. The store's tags (a mix of types, 2,000; quick: 300) are paired
with products and already show their prices. Then:

1. a bulk price update (a `catalog.upsert` cloud command of 80 % of the products) starts; another wave is sent
   before a round whenever the previous one is nearly done, so the line and the radio stay busy throughout;
2. a first pick list (`pick.start` over the cloud broker) wakes its picking zone: its tags light at their next
   check-in (up to 30 s), which is `led_first_ms`, reported apart; the zone's tags are then in fast check-in
   (`zone_fast_s`: until every tag of the zone listens);
3. rounds of pick lists from several pickers at once, each with its own colour, lines of distinct products.
   Figures come from what the emulator observed, on its own clock (time.monotonic, shared in this process):
   - led_p95_ms: from the `pick.start` command's publication on the cloud broker (a stricter start than its
     acceptance by the agent, whose result comes after it lit the tags) until the tag's LED is on in the
     picker's colour;
   - page_p95_ms: the same until the tag shows its pick page (checked pixel-exact against render_page);
   - restore_p95_ms: a line confirmed (in turn: the web path `agent.picking.confirm`, a staff scan
     `agent.picking.scanned`, the tag's button pressed in the emulator) until the emulator's picture hash
     equals the tag's price picture again (rendered here, for any price the bulk waves gave the product);
   - wrong_tags: tags that got an LED command or a picture that is not a price picture while not on any pick
     list; wrong_colour: lights in another colour than the list's; wrong_pages: pick pages not as rendered.
   A light, page or restore not seen within its time limit counts as the limit (and in `missed`).

Targets (issue 7): led_p95_ms <= 2000, restore_p95_ms <= 5000, wrong_tags = 0. The last line printed is the
JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench._agent import running
from bench._shelves_cloud import BenchCloud
from devices.labels.pages import PickEntry, PickPage, render_page
from devices.labels.render import render_label
from edge_agent.config import parse_config
from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from edge_agent.storage import migrate
from edge_agent.wiring.labels import product_to_content
from firmware_bridge.emulators.base_station import DEFAULT_AIR_RATE, DEFAULT_CHECKIN_S, BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from tests.support.broker import Broker

STORE = "bench-store"
BASE_URL = "https://shop.example/bench-store"
LOCALE = "zh_CN"
NAMES = ["有机纯牛奶 250ml", "金龙鱼 大米 5kg", "Jasmine rice 5 kg", "农夫山泉 550ml", "法式可颂面包", "红富士苹果"]
COLOURS = {"red": 1, "green": 2, "blue": 3, "white": 4}
BULK_SHARE = 0.8
BULK_COMMAND = 500
LIGHT_LIMIT_S = 60.0  # a light or page not seen by then counts as this
RESTORE_LIMIT_S = 60.0


@dataclass(frozen=True)
class Size:
    tags: int
    pickers: int
    lines: int  # per list
    rounds: int


QUICK = Size(tags=300, pickers=3, lines=4, rounds=2)
FULL = Size(tags=2000, pickers=4, lines=6, rounds=5)


def barcode(i: int) -> str:
    body = f"690{i:09d}"
    total = sum(int(d) * (3 if n % 2 else 1) for n, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def product(i: int, cents: int) -> dict[str, Any]:
    price = Decimal(cents) / 100
    return {
        "sku": f"sku-{i:05d}", "name": f"{NAMES[i % len(NAMES)]} #{i}", "price": str(price), "currency": "CNY",
        "unit_price": str((price / 2).quantize(Decimal("0.01"))), "unit_label": "500 g", "origin": "中国",
        "barcode": barcode(i),
    }  # fmt: skip


@dataclass
class Store:
    """The benchmark's store: tag i shows product i. Prices per product over the waves (the first is the seed)."""

    tags: list[bytes]
    types: dict[bytes, Any]
    prices: dict[int, list[int]] = field(default_factory=dict)
    _hashes: dict[tuple[int, int], str] = field(default_factory=dict)

    def scan_url(self, i: int) -> str:
        return f"{BASE_URL}/s/bench{i:05d}"

    def price_render(self, i: int, cents: int) -> Any:
        content = product_to_content(Product.model_validate(product(i, cents)), LOCALE)
        return render_label(content, self.types[self.tags[i]], scan_url=self.scan_url(i))

    def price_hashes(self, i: int) -> set[str]:
        """Every picture of product i's price the tag may rightly show: one per price it has had."""
        out = set()
        for cents in self.prices[i]:
            key = (i, cents)
            if key not in self._hashes:
                self._hashes[key] = self.price_render(i, cents).hash.hex()
            out.add(self._hashes[key])
        return out


def seed_store(data_dir: Path, store: Store) -> dict[bytes, bytes]:
    """Products, tags paired with them and the pictures they show (the delta bases); returns tag -> picture."""
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate(data_dir / "agent.db")
    conn = sqlite3.connect(data_dir / "agent.db")
    now = int(time.time() * 1000)
    shown: dict[bytes, bytes] = {}
    for i, tag in enumerate(store.tags):
        cents = 1000 + (i * 37) % 900
        store.prices[i] = [cents]
        model = Product.model_validate(product(i, cents))
        conn.execute(
            "INSERT INTO products(sku, name, price, currency, unit_price, unit_label, former_price, promotion, "
            "barcode, origin, locale, rev, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?)",
            (*model.to_row(), now),
        )
        raw = store.price_render(i, cents).raw
        digest = store.price_render(i, cents).hash.hex()
        conn.execute(
            "INSERT INTO tags(tag_id, type_code, base_station, sku, scan_code, current_hash, created_ms) "
            "VALUES (?, ?, 'bs1', ?, ?, ?, ?)",
            (tag.hex(), store.types[tag].code, model.sku, f"bench{i:05d}", digest, now),
        )
        conn.execute(
            "INSERT INTO tag_pictures(tag_id, hash, raw_z, created_ms) VALUES (?, ?, ?, ?)",
            (tag.hex(), digest, zlib.compress(raw), now),
        )
        shown[tag] = raw
    conn.commit()
    conn.close()
    return shown


class Shown:
    """Every picture a tag took in the emulator, with the time: the emulator's `_show`, wrapped."""

    def __init__(self, emulator: BaseStationEmulator) -> None:
        self.pictures: dict[bytes, list[tuple[float, str]]] = {}
        original = emulator._show

        def show(transfer: Any) -> None:
            original(transfer)
            sim = transfer.tag
            self.pictures.setdefault(sim.tag, []).append((time.monotonic(), sim.hash.hex()))

        emulator._show = show  # type: ignore[method-assign]

    def first(self, tag: bytes, after: float, want: Any) -> float | None:
        for at, digest in self.pictures.get(tag, ()):
            if at >= after and want(digest):
                return at
        return None


@dataclass
class PickRun:
    list_id: str
    picker: str
    colour: str
    sent: float
    lines: list[tuple[int, int]]  # (product index, quantity)
    result_at: float | None = None


def first_led(emulator: BaseStationEmulator, tag: bytes, after: float, *, on: bool) -> tuple[float, int] | None:
    for record in emulator.led_flashes.get(tag, ()):
        if record.at >= after and (record.colour != 0) == on:
            return record.at, record.colour
    return None


def p95(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1)


def p50(samples: list[float]) -> float | None:
    return round(statistics.median(samples), 1) if samples else None


class Bench:
    def __init__(self, size: Size, agent: Agent, emulator: BaseStationEmulator, store: Store, cloud: BenchCloud):
        self.size = size
        self.agent = agent
        self.emu = emulator
        self.store = store
        self.cloud = cloud
        self.shown = Shown(emulator)
        self.rng = random.Random(7)
        self.runs: list[PickRun] = []
        self.pick_tags: set[bytes] = set()
        self.waves = 0
        self.bulk_tags = 0
        self.backlog_at_rounds: list[int] = []
        self.missed = {"led": 0, "page": 0, "restore": 0}
        self.wrong_colour = 0
        self.wrong_pages = 0
        self.led_ms: list[float] = []
        self.page_ms: list[float] = []
        self.restore_ms: list[float] = []
        self.led_off_ms: list[float] = []
        self.result_ms: list[float] = []
        self.by_path: dict[str, list[float]] = {"web": [], "scan": [], "button": []}

    # -- the bulk update ---------------------------------------------------------------------------------

    def backlog(self) -> int:
        assert self.agent.labels is not None
        progress = self.agent.labels.progress()
        return progress["queued"] + progress["sending"]

    async def bulk_wave(self) -> None:
        """A catalog.upsert of 80 % of the products with new prices, as the cloud sends it."""
        self.waves += 1
        chosen = sorted(self.rng.sample(range(len(self.store.tags)), int(len(self.store.tags) * BULK_SHARE)))
        products = []
        for i in chosen:
            cents = self.store.prices[i][-1] + 10 * self.waves
            self.store.prices[i].append(cents)
            products.append(product(i, cents))
        self.bulk_tags += len(chosen)
        # In commands of at most BULK_COMMAND products (the contract takes up to 1,000), as the cloud sends them.
        cids = []
        for k in range(0, len(products), BULK_COMMAND):
            cids.append(f"bulk-{self.waves}-{k // BULK_COMMAND}")
            self.cloud.send(cids[-1], "catalog.upsert", {"products": products[k : k + BULK_COMMAND]})
        for cid in cids:
            await self.wait_result(cid, 60)
        # The catalog answered: its products' tags are being rendered and queued. Wait until jobs are queued.
        deadline = time.monotonic() + 30
        while self.backlog() < len(chosen) // 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def wait_result(self, cid: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.cloud.result(cid)
            if found is not None:
                if found[1].get("status") != "ok":
                    raise RuntimeError(f"command {cid} failed: {found[1]}")
                return found[1]
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no result for command {cid} within {timeout} s")

    # -- pick lists --------------------------------------------------------------------------------------

    def start_list(self, list_id: str, picker: str, colour: str, products: list[int]) -> PickRun:
        lines = [(i, 1 + self.rng.randrange(5)) for i in products]
        payload = {
            "list_id": list_id, "picker": picker, "colour": colour, "order_ids": [f"SO-{list_id}"],
            "lines": [{"order_id": f"SO-{list_id}", "sku": f"sku-{i:05d}", "quantity": q} for i, q in lines],
        }  # fmt: skip
        run = PickRun(list_id, picker, colour, 0.0, lines)
        run.sent = self.cloud.send(f"pick-{list_id}", "pick.start", payload)
        self.runs.append(run)
        self.pick_tags.update(self.store.tags[i] for i, _ in lines)
        return run

    def expected_page(self, run: PickRun, i: int, quantity: int) -> str:
        tag = self.store.tags[i]
        page = PickPage(
            f"{NAMES[i % len(NAMES)]} #{i}", (PickEntry(quantity, f"SO-{run.list_id}", run.picker, run.colour),), LOCALE
        )
        return render_page(page, self.store.types[tag]).hash.hex()

    async def lit(self, runs: list[PickRun], led: list[float], page: list[float]) -> None:
        """Wait until every tag of the lists is lit and shows its pick page; note the times."""
        waiting = {(id(r), i): (r, q) for r in runs for i, q in r.lines}
        expected = {key: self.expected_page(r, key[1], q) for key, (r, q) in waiting.items()}
        seen_led: dict[tuple[int, int], float] = {}
        seen_page: dict[tuple[int, int], float] = {}
        deadline = time.monotonic() + LIGHT_LIMIT_S
        while time.monotonic() < deadline and (len(seen_led) < len(waiting) or len(seen_page) < len(waiting)):
            for key, (run, _) in waiting.items():
                tag = self.store.tags[key[1]]
                if run.result_at is None and (found := self.cloud.result(f"pick-{run.list_id}")) is not None:
                    run.result_at = found[0]
                    self.result_ms.append((found[0] - run.sent) * 1000)
                if key not in seen_led and (on := first_led(self.emu, tag, run.sent, on=True)) is not None:
                    seen_led[key] = on[0]
                    self.wrong_colour += on[1] != COLOURS[run.colour]
                if key not in seen_page:
                    prices = self.store.price_hashes(key[1])
                    at = self.shown.first(tag, run.sent, lambda d, prices=prices: d not in prices)
                    if at is not None:
                        seen_page[key] = at
                        shown = next(d for t, d in self.shown.pictures[tag] if t == at)
                        self.wrong_pages += shown != expected[key]
            await asyncio.sleep(0.02)
        for key, (run, _) in waiting.items():
            for seen, samples, kind in ((seen_led, led, "led"), (seen_page, page, "page")):
                if key in seen:
                    samples.append((seen[key] - run.sent) * 1000)
                else:
                    samples.append(LIGHT_LIMIT_S * 1000)
                    self.missed[kind] += 1

    async def confirm_all(self, runs: list[PickRun], gap_s: float) -> None:
        """Confirm every line, a little apart, by web, scan and button in turn; wait for the price pages."""
        assert self.agent.picking is not None
        picking = self.agent.picking
        confirmed: list[tuple[PickRun, int, float, str]] = []
        n = 0
        for run in runs:
            for line_no, (i, _) in enumerate(run.lines, 1):
                path = ("web", "scan", "button")[n % 3]
                n += 1
                at = time.monotonic()
                if path == "web":
                    await picking.confirm(run.list_id, line_no, by="web:bench")
                elif path == "scan":
                    if await picking.scanned("serial:bench", barcode(i)) is None:
                        raise RuntimeError(f"the scan of product {i} confirmed no line")
                elif not self.emu.press_button(self.store.tags[i], 1):
                    raise RuntimeError(f"the button of tag {i} was not pressed")
                confirmed.append((run, i, at, path))
                await asyncio.sleep(gap_s)
        deadline = time.monotonic() + RESTORE_LIMIT_S
        done: dict[int, float] = {}
        while time.monotonic() < deadline and len(done) < len(confirmed):
            for k, (_, i, at, _) in enumerate(confirmed):
                if k not in done:
                    prices = self.store.price_hashes(i)
                    back = self.shown.first(self.store.tags[i], at, lambda d, prices=prices: d in prices)
                    if back is not None:
                        done[k] = back
            await asyncio.sleep(0.02)
        for k, (_, i, at, path) in enumerate(confirmed):
            took = (done[k] - at) * 1000 if k in done else RESTORE_LIMIT_S * 1000
            self.missed["restore"] += k not in done
            self.restore_ms.append(took)
            self.by_path[path].append(took)
            off = first_led(self.emu, self.store.tags[i], at, on=False)
            if off is not None:
                self.led_off_ms.append((off[0] - at) * 1000)

    async def zone_fast(self, since: float) -> float:
        """Until every tag of the base station listens all the time (the zone is fast)."""
        deadline = time.monotonic() + 3 * DEFAULT_CHECKIN_S
        while time.monotonic() < deadline:
            if all(sim.always_listening for sim in self.emu.tags.values()):
                return time.monotonic() - since
            await asyncio.sleep(0.1)
        raise RuntimeError("the picking zone did not become fast")

    # -- the run -----------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        n = len(self.store.tags)
        order = list(range(n))
        self.rng.shuffle(order)
        await self.bulk_wave()
        # The first list wakes the zone: its tags hear their commands at their next check-in.
        first = self.start_list("first", "picker-0", "red", order[: self.size.lines])
        led_first: list[float] = []
        page_first: list[float] = []
        await self.lit([first], led_first, page_first)
        zone_s = await self.zone_fast(first.sent)
        await self.confirm_all([first], 0.1)
        colours = list(COLOURS)
        offset = self.size.lines
        for r in range(self.size.rounds):
            backlog = self.backlog()
            if backlog < n * BULK_SHARE * 0.2:
                await self.bulk_wave()
                backlog = self.backlog()
            self.backlog_at_rounds.append(backlog)
            runs = []
            for p in range(self.size.pickers):
                products = [order[(offset + k) % n] for k in range(self.size.lines)]
                offset += self.size.lines
                runs.append(self.start_list(f"r{r}-p{p}", f"picker-{p + 1}", colours[p % len(colours)], products))
            await self.lit(runs, self.led_ms, self.page_ms)
            await self.confirm_all(runs, 0.1)
        completed = await self.completed(len(self.runs))
        return {
            "led_p95_ms": p95(self.led_ms),
            "led_p50_ms": p50(self.led_ms),
            "led_max_ms": round(max(self.led_ms), 1) if self.led_ms else None,
            "restore_p95_ms": p95(self.restore_ms),
            "restore_p50_ms": p50(self.restore_ms),
            "restore_max_ms": round(max(self.restore_ms), 1) if self.restore_ms else None,
            "restore_p95_ms_by_path": {k: p95(v) for k, v in self.by_path.items()},
            "wrong_tags": self.wrong_tags(),
            "wrong_colour": self.wrong_colour,
            "wrong_pages": self.wrong_pages,
            "missed": self.missed,
            "led_first_ms": round(max(led_first), 1),
            "led_first_p50_ms": p50(led_first),
            "page_first_ms": round(max(page_first), 1),
            "zone_fast_s": round(zone_s, 1),
            "page_p95_ms": p95(self.page_ms),
            "led_off_p95_ms": p95(self.led_off_ms),
            "command_result_p95_ms": p95(self.result_ms),
            "pick_completed_events": completed,
            "lists": len(self.runs),
            "lines": sum(len(r.lines) for r in self.runs),
            "pickers": self.size.pickers,
            "rounds": self.size.rounds,
            "bulk_waves": self.waves,
            "bulk_update_tags": self.bulk_tags,
            "bulk_backlog_at_rounds": self.backlog_at_rounds,
        }

    async def completed(self, lists: int) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(self.cloud.pick_events("pick.completed")) < lists:
            await asyncio.sleep(0.05)
        return len(self.cloud.pick_events("pick.completed"))

    def wrong_tags(self) -> int:
        """Tags on no pick list that got an LED command, or a picture other than one of their price pictures."""
        wrong = {tag for tag in self.emu.led_flashes if tag not in self.pick_tags}
        index = {tag: i for i, tag in enumerate(self.store.tags)}
        for tag, pictures in self.shown.pictures.items():
            if tag in self.pick_tags or tag in wrong:
                continue
            prices = self.store.price_hashes(index[tag])
            if any(digest not in prices for _, digest in pictures):
                wrong.add(tag)
        return len(wrong)


async def run(size: Size, quick: bool) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-shelves-"))
    broker = Broker(workdir / "cloud", persistence=False)
    broker.start()
    cloud: BenchCloud | None = None
    try:
        specs = mixed(size.tags, 11)
        emulator = BaseStationEmulator(specs, air_rate=DEFAULT_AIR_RATE, checkin_interval=DEFAULT_CHECKIN_S, seed=11)
        tags = sorted(emulator.tags)
        store = Store(tags, {t: emulator.tags[t].type for t in tags})
        seeded = time.monotonic()
        pictures = await asyncio.to_thread(seed_store, workdir / "data", store)
        seed_s = time.monotonic() - seeded
        for tag, raw in pictures.items():
            emulator.set_picture(tag, raw)
        config = parse_config(
            {
                "agent": {"store_id": STORE, "data_dir": str(workdir / "data"), "log_level": "WARNING"},
                "web": {"enabled": False},
                "cloud": {"enabled": True, "host": broker.host, "port": broker.port, "tls": {"enabled": False},
                          "keepalive_s": 10, "backoff_min_s": 0.1, "backoff_max_s": 1.0},
                "local_broker": {"enabled": False},
                "labels": {"public_base_url": BASE_URL, "locale": LOCALE},
                "commands": {"max_payload_bytes": 8 * 1024 * 1024},
                "base_stations": [{"name": "bs1", "url": str(workdir / "bs0")}],
            }
        )  # fmt: skip
        cloud = await asyncio.to_thread(BenchCloud, broker.host, broker.port, STORE)
        async with emulator.running(PtyPort(workdir / "bs0")):
            agent = Agent(config)
            async with running(agent):
                assert agent.labels is not None and agent.picking is not None
                labels = agent.labels
                deadline = time.monotonic() + 60
                while not (labels.stations["bs1"].connected and len(labels.registry.all()) == size.tags):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the base station did not come up with every tag")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.0)  # the first sync (INFO, LIST_TAGS) is not part of what is measured
                if agent.labels.progress()["queued"]:
                    raise RuntimeError(f"seeded pictures differ from the agent's: {agent.labels.progress()}")
                figures = await Bench(size, agent, emulator, store, cloud).run()
    finally:
        if cloud is not None:
            cloud.close()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update({
        "tags": size.tags, "tag_types": len({t.name for t in store.types.values()}), "seed_s": round(seed_s, 1),
        "checkin_s": DEFAULT_CHECKIN_S, "air_rate": DEFAULT_AIR_RATE, "line_rate_baud": 115200, "quick": quick,
    })  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 tags, 3 pickers, 2 rounds (under 90 s)")
    args = parser.parse_args()
    started = time.monotonic()
    figures = asyncio.run(run(QUICK if args.quick else FULL, args.quick))
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
