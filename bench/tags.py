"""Price-tag benchmark: rendering throughput, bytes on the wire per price change, and a bulk update of
1,000 tags over a 115200-baud pty link with urgent LED flashes on top.

python -m bench.tags [--quick]

1. render_per_s: 2.9" black/white/red price re-renders with QR code, all the way to encoded bytes (delta
   against the previous picture), on every core (a process per core).
2. raw_bytes_per_tag, wire_bytes_per_price_change (median, our framing included: every DATA frame of the
   transfer as it goes on the line) and wire_ratio.
3. bulk: the real agent (catalog, render pool, update scheduler, base-station client) and the real
   emulator in its own process on a pty paced at 11,520 bytes/s, its radio fast enough not to matter. All
   tags show the old prices; one catalog.upsert changes every price; the clock runs until every tag
   confirmed its new picture by hash. line_busy = host-to-station bytes / (elapsed x 11,520).
   Meanwhile an LED flash every 100 ms: urgent_p99_ms from send to the base station's answer.
   wrong_pictures: tags whose final picture (the emulator's) differs from what was rendered.
The last line printed is the JSON of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from devices.labels.render import LabelContent, render_label
from edge_agent.config import parse_config
from edge_agent.runtime import Agent
from edge_agent.services.catalog import Product
from edge_agent.storage import migrate
from firmware_bridge.base_station.client import BaseStationClient
from firmware_bridge.base_station.frames import BULK, DataFrame, to_wire
from firmware_bridge.base_station.messages import CHUNK_OVERHEAD, DeltaBegin, PushChunk, PushEnd
from firmware_bridge.emulators.base_station import mixed
from firmware_bridge.picture import encode_picture, picture_hash
from firmware_bridge.tag_types import TAG_TYPES_BY_NAME

TAG = TAG_TYPES_BY_NAME["2.9-bwr"]
# A picture chunk at the link's full frame size (the steady state on a clean line).
CHUNK_AT_FULL_SIZE = 1024 - CHUNK_OVERHEAD
LINE_RATE = 11_520.0
NAMES = [
    "有机纯牛奶 250ml",
    "金龙鱼 大米 5kg",
    "Jasmine rice 5 kg",
    "农夫山泉 饮用天然水 550ml",
    "法式可颂面包",
    "红富士苹果 精选",
]


def content(i: int, cents: int) -> LabelContent:
    price = Decimal(cents) / 100
    return LabelContent(
        sku=f"sku-{i:05d}",
        name=f"{NAMES[i % len(NAMES)]} #{i}",
        price=price,
        currency="CNY",
        unit_price=(price / 2).quantize(Decimal("0.01")),
        unit_label="500 g",
        barcode=None,
        origin="中国",
    )


def scan_url(i: int) -> str:
    return f"https://shop.example/s/bench{i:05d}"


def wire_bytes(encoded_len: int, data: bytes, base_hash: bytes, picture_hash: bytes) -> int:
    """Bytes on the line for one transfer at full frame size: every DATA frame, framed and stuffed."""
    chunk = CHUNK_AT_FULL_SIZE
    payloads = [DeltaBegin(1, b"\x00" * 8, 2, encoded_len, base_hash, 0).to_bytes()]
    payloads += [PushChunk(1, off, data[off : off + chunk]).to_bytes() for off in range(0, len(data), chunk)]
    payloads.append(PushEnd(1, picture_hash).to_bytes())
    return sum(len(to_wire(DataFrame(BULK, seq, p))) for seq, p in enumerate(payloads))


def render_worker(args: tuple[int, int, int]) -> tuple[int, float, list[int]]:
    """One process: warm up a set of products, then time price changes rendered and encoded."""
    first, products, rounds = args
    previous: dict[int, bytes] = {}
    for i in range(first, first + products):
        previous[i] = render_label(content(i, 1280), TAG, scan_url=scan_url(i)).raw
    wires: list[int] = []
    count = 0
    started = time.perf_counter()
    for r in range(rounds):
        for i in range(first, first + products):
            label = render_label(content(i, 1280 + 10 * (r + 1)), TAG, scan_url=scan_url(i))
            enc = encode_picture(label.raw, previous[i])
            previous[i] = label.raw
            count += 1
            if r == 0 and enc.base_hash is not None:
                wires.append(wire_bytes(len(enc.data), enc.data, enc.base_hash, enc.hash))
    return count, time.perf_counter() - started, wires


def measure_rendering(quick: bool) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    products, rounds = (100, 3) if quick else (200, 10)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver")) as pool:
        # Warm the pool's imports first so process start-up is not timed.
        list(pool.map(render_worker, [(0, 1, 1)] * workers))
        wall = time.perf_counter()
        results = list(pool.map(render_worker, [(k * products, products, rounds) for k in range(workers)]))
        wall = time.perf_counter() - wall
    renders = sum(r[0] for r in results)
    slowest = max(r[1] for r in results)
    wires = [w for r in results for w in r[2]]
    return {
        "render_per_s": round(renders / slowest, 1),
        "render_wall_per_s": round(renders / wall, 1),
        "render_processes": workers,
        "raw_bytes_per_tag": TAG.raw_bytes,
        "wire_bytes_per_price_change": int(statistics.median(wires)),
        "wire_ratio": round(statistics.median(wires) / TAG.raw_bytes, 4),
    }


# What seeding renders for one tag: the product's row, the tag's scan code, the picture the tag shows.
SeedLabel = tuple[tuple[Any, ...], str, bytes]


def seed_label(args: tuple[int, str]) -> SeedLabel:
    """One product of the seeded store, its scan code and the picture its tag shows (a process pool may run
    this: rendering is most of seeding)."""
    i, base_url = args
    c = content(i, 1280)
    product = Product.model_validate(
        {"sku": c.sku, "name": c.name, "price": c.price, "currency": "CNY", "unit_price": c.unit_price,
         "unit_label": "500 g", "origin": "中国"}
    )
    code = f"bench{i:05d}"
    return product.to_row(), code, render_label(c, TAG, scan_url=f"{base_url}/s/{code}").raw


def seed_store(
    data_dir: Path,
    preload: Path,
    tags: list[bytes],
    base_url: str,
    *,
    base_station: str = "bs1",
    first: int = 0,
    render: Callable[[Callable[[tuple[int, str]], SeedLabel], Iterable[tuple[int, str]]], Iterable[SeedLabel]] = map,
) -> None:
    """The state of a store whose tags show the old prices: products, paired tags, shown pictures. Tag k is
    paired with product `first + k` on `base_station`; `render` may be a process pool's map."""
    migrate(data_dir / "agent.db")
    conn = sqlite3.connect(data_dir / "agent.db")
    now = int(time.time() * 1000)
    preload.mkdir(parents=True, exist_ok=True)
    labels = render(seed_label, [(first + k, base_url) for k in range(len(tags))])
    for tag, (product_row, code, raw) in zip(tags, labels, strict=True):
        conn.execute(
            "INSERT INTO products(sku, name, price, currency, unit_price, unit_label, former_price, promotion, "
            "barcode, origin, locale, rev, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?)",
            (*product_row, now),
        )
        shown = picture_hash(raw).hex()
        conn.execute(
            "INSERT INTO tags(tag_id, type_code, base_station, sku, scan_code, current_hash, created_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tag.hex(), TAG.code, base_station, product_row[0], code, shown, now),
        )
        conn.execute(
            "INSERT INTO tag_pictures(tag_id, hash, raw_z, created_ms) VALUES (?, ?, ?, ?)",
            (tag.hex(), shown, zlib.compress(raw), now),
        )
        (preload / f"{tag.hex()}.bin").write_bytes(raw)
    conn.commit()
    conn.close()


async def bulk_update(workdir: Path, count: int, base_url: str) -> dict[str, Any]:
    tags = sorted(s.tag for s in mixed(count, 11, type=TAG))
    seed_store(workdir / "data", workdir / "preload", tags, base_url)
    pty = str(workdir / "bs0")
    state_dir = workdir / "state"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "bench._emulator_proc", pty, str(workdir / "preload"), str(count), "11", TAG.name,
         str(state_dir)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert emulator.stdout is not None
        line = await asyncio.to_thread(emulator.stdout.readline)
        if b"ready" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        config = parse_config(
            {
                "agent": {"store_id": "bench-store", "data_dir": str(workdir / "data"), "log_level": "WARNING"},
                "web": {"enabled": False},
                "cloud": {"enabled": False},
                "local_broker": {"enabled": False},
                "labels": {"public_base_url": base_url, "max_in_flight_per_station": 8},
                "base_stations": [{"name": "bs1", "url": pty}],
            }
        )
        agent = Agent(config)
        runner = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 30)
        assert agent.labels is not None and agent.catalog is not None
        labels = agent.labels
        client = labels.stations["bs1"]
        assert isinstance(client, BaseStationClient)
        await asyncio.wait_for(client.link.up.wait(), 30)
        await asyncio.sleep(2.0)  # the initial sync (INFO, LIST_TAGS) is not part of the update
        sent_before = client.link.stats.bytes_sent
        new_products = []
        for i in range(count):
            c = content(i, 990 + i % 50)
            new_products.append(
                Product.model_validate(
                    {"sku": c.sku, "name": c.name, "price": c.price, "currency": "CNY", "unit_price": c.unit_price,
                     "unit_label": "500 g", "origin": "中国"}
                )
            )
        latencies: list[float] = []
        done = asyncio.Event()

        async def flasher() -> None:
            rng = random.Random(5)
            while not done.is_set():
                started = time.perf_counter()
                await client.led_flash(rng.choice(tags), count=1)
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.1)

        started = time.monotonic()
        await agent.catalog.upsert(new_products)
        flash_task = asyncio.create_task(flasher())
        while labels.progress()["confirmed"] < count:
            await asyncio.sleep(0.05)
            if time.monotonic() - started > 900:
                raise RuntimeError(f"bulk update did not finish: {labels.progress()}")
        elapsed = time.monotonic() - started
        done.set()
        await flash_task
        line_bytes = client.link.stats.bytes_sent - sent_before
        retransmits = client.link.stats.retransmits
        agent.request_stop()
        await asyncio.wait_for(runner, 30)
        # Let the emulator write its last pictures, then compare every tag with what was rendered.
        emulator.terminate()
        emulator.wait(30)
        wrong = 0
        conn = sqlite3.connect(workdir / "data" / "agent.db")
        for tag in tags:
            (target,) = conn.execute("SELECT target_hash FROM tag_jobs WHERE tag_id = ?", (tag.hex(),)).fetchone()
            (blob,) = conn.execute(
                "SELECT raw_z FROM tag_pictures WHERE tag_id = ? AND hash = ?", (tag.hex(), target)
            ).fetchone()
            shown = (state_dir / f"{tag.hex()}.bin").read_bytes()
            wrong += shown != zlib.decompress(blob)
        conn.close()
        return {
            "bulk_tags": count,
            "bulk_s": round(elapsed, 2),
            "line_busy": round(line_bytes / (elapsed * LINE_RATE), 3),
            "line_bytes": line_bytes,
            "retransmits": retransmits,
            "urgent_p50_ms": round(statistics.median(latencies), 1),
            "urgent_p99_ms": round(sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)], 1),
            "urgent_samples": len(latencies),
            "wrong_pictures": wrong,
        }
    finally:
        if emulator.poll() is None:
            emulator.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer renders and 200 tags instead of 1,000")
    args = parser.parse_args()
    figures = measure_rendering(args.quick)
    print(f"rendering: {figures}", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="bench-tags-"))
    try:
        count = 200 if args.quick else 1000
        bulk = asyncio.run(bulk_update(workdir, count, "https://shop.example"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {**figures, **bulk}
    if count == 1000:
        result["bulk_1000_s"] = bulk["bulk_s"]
    result["quick"] = args.quick
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
