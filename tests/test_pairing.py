"""Pairing (/api/pairing) and the CSV import and export of pairings and the catalog, against a running agent
with the base-station emulator on a real pty and real sessions."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from PIL import Image

from devices.labels.registry import TagRegistry
from devices.labels.render import picture_image
from edge_agent.services.catalog import Product
from edge_agent.services.web_users import Role
from firmware_bridge.emulators.base_station import BaseStationEmulator, mixed
from firmware_bridge.emulators.pty_line import PtyPort
from firmware_bridge.tag_types import tag_type
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.web import signed_in
from tests.test_discovery import error_of

MILK = Product.model_validate(
    {"sku": "milk-1", "name": "有机纯牛奶 250ml", "price": "12.80", "currency": "CNY", "barcode": "6901234567892"}
)
RICE = Product.model_validate(
    {"sku": "rice-5", "name": "Jasmine rice 5 kg", "price": "59.00", "currency": "CNY", "barcode": "4006381333931"}
)


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_two_scans_pair_a_tag_preview_first_then_the_tag_shows_it(tmp_path: Path) -> None:
    emu = BaseStationEmulator(mixed(2, seed=21), checkin_interval=0.5, air_rate=200_000, seed=21)
    first, second = sorted(t.hex() for t in emu.tags)
    config = agent_config(tmp_path / "data", None, base_stations=[{"name": "bs1", "url": str(tmp_path / "bs0")}],
                          labels={"public_base_url": "https://shop.example/s1"})
    async with emu.running(PtyPort(tmp_path / "bs0")), running_agent(config) as agent:
        assert agent.labels is not None and agent.catalog is not None
        labels = agent.labels
        await wait_until(lambda: len(labels.registry.all()) == 2, timeout=20)
        await agent.catalog.upsert([MILK, RICE])
        rec = labels.registry.get(first)
        assert rec is not None and not rec.adopted  # discovered: the default allow-list is empty
        async with signed_in(agent, "tech") as tech, signed_in(agent, "desk", Role.STAFF) as staff:
            # What a scanner may type for the tag: its id as printed (any case, with separators), its scan code,
            # the scan link of its QR code; for the product: its barcode (EAN-13 or the UPC-A form) or its sku.
            printed = ":".join(first[i : i + 2] for i in range(0, 16, 2)).upper()
            for code in (first, printed, rec.scan_code, f"https://shop.example/s1/s/{rec.scan_code}"):
                found = (await tech.get("/api/pairing/lookup", params={"code": code})).json()
                assert found["tag"]["tag_id"] == first and found["product"] is None, code
            for code in ("6901234567892", "milk-1"):
                found = (await tech.get("/api/pairing/lookup", params={"code": code})).json()
                assert found["product"]["sku"] == "milk-1" and found["tag"] is None, code
            nothing = (await tech.get("/api/pairing/lookup", params={"code": "no such thing"})).json()
            assert nothing["tag"] is None and nothing["product"] is None
            assert (await tech.get("/api/pairing/lookup", params={"code": ""})).status_code == 422
            assert (await staff.get("/api/pairing/lookup", params={"code": first})).status_code == 403

            # The preview, before anything is paired: a PNG of the tag's size, different per product.
            previews = {}
            for sku in ("milk-1", "rice-5"):
                answer = await tech.get("/api/pairing/preview", params={"tag_id": first, "sku": sku, "scale": 1})
                assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
                previews[sku] = png_image(answer.content)
            kind = tag_type(rec.type_code)
            assert previews["milk-1"].size in ((kind.width, kind.height), (kind.height, kind.width))
            assert previews["milk-1"].tobytes() != previews["rice-5"].tobytes()
            assert labels.registry.get(first).sku is None  # type: ignore[union-attr]  # nothing paired or sent
            big = await tech.get("/api/pairing/preview", params={"tag_id": first, "sku": "milk-1", "scale": 2})
            assert png_image(big.content).size == (previews["milk-1"].width * 2, previews["milk-1"].height * 2)
            missing = await tech.get("/api/pairing/preview", params={"tag_id": first, "sku": "nope"})
            assert missing.status_code == 404 and error_of(missing) == "unknown_product"

            # Pairing: the tag is adopted, re-rendered, sent; what it ends up showing is exactly the preview.
            paired = await tech.post("/api/pairing", json={"tag_id": first.upper(), "sku": "milk-1"})
            assert paired.status_code == 200, paired.text
            body = paired.json()
            assert body["changed"] is True and body["tag"]["adopted"] is True
            assert body["tag"]["product"]["name"] == "有机纯牛奶 250ml"
            await wait_until(lambda: labels.progress()["confirmed"] == 1, timeout=60)
            rec = labels.registry.get(first)
            assert rec is not None and rec.sku == "milk-1" and rec.adopted
            assert rec.current_hash == emu.tag_hash(bytes.fromhex(first)).hex()
            shown = picture_image(emu.tag_picture(bytes.fromhex(first)), kind)
            assert shown.convert("RGB").tobytes() == previews["milk-1"].convert("RGB").tobytes()
            again = await tech.post("/api/pairing", json={"tag_id": first, "sku": "milk-1"})
            assert again.json()["changed"] is False

            # Bad requests answer 4xx and change nothing.
            unknown_tag = await tech.post("/api/pairing", json={"tag_id": "00000000000000ee", "sku": "milk-1"})
            assert unknown_tag.status_code == 404 and error_of(unknown_tag) == "unknown_tag"
            unknown_sku = await tech.post("/api/pairing", json={"tag_id": second, "sku": "nope"})
            assert unknown_sku.status_code == 404 and error_of(unknown_sku) == "unknown_product"
            assert (await tech.post("/api/pairing", json={"tag_id": "xyz", "sku": "milk-1"})).status_code == 422
            extra = await tech.post("/api/pairing", json={"tag_id": second, "sku": "milk-1", "x": 1})
            assert extra.status_code == 422
            assert not labels.registry.get(second).adopted  # type: ignore[union-attr]
            assert (await staff.post("/api/pairing", json={"tag_id": second, "sku": "milk-1"})).status_code == 403

            # Searching instead of scanning.
            by_name = (await tech.get("/api/pairing/products", params={"q": "牛奶"})).json()["products"]
            assert [p["sku"] for p in by_name] == ["milk-1"] and by_name[0]["price"] == "12.8"
            assert [p["sku"] for p in (await tech.get("/api/pairing/products", params={"q": "ric"})).json()["products"]] == [
                "rice-5"]
            assert [p["sku"] for p in (await tech.get("/api/pairing/products", params={"q": "400638"})).json()[
                "products"]] == ["rice-5"]
            tags = (await tech.get("/api/pairing/tags", params={"q": second[:6]})).json()["tags"]
            assert second in [t["tag_id"] for t in tags]
            by_sku = (await tech.get("/api/pairing/tags", params={"q": "milk"})).json()["tags"]
            assert [t["tag_id"] for t in by_sku] == [first]


async def test_csv_import_reports_bad_rows_applies_good_ones_and_exports_round_trip(tmp_path: Path) -> None:
    config = agent_config(tmp_path / "data", None)
    async with running_agent(config) as agent:
        assert agent.catalog is not None and agent.db is not None
        registry = TagRegistry(agent.db, adopt_on_sight=lambda _: False)  # as base stations reported them
        tags = [f"00000000000000a{i}" for i in range(4)]
        for tag_id in tags:
            await registry.ensure(tag_id, 0x03, "bs1")
        async with signed_in(agent, "tech") as tech:
            products = (
                "\ufeffsku,name,price,currency,barcode\r\n"
                "milk-1,有机纯牛奶 250ml,12.80,CNY,6901234567892\r\n"
                "bad-price,Broken,twelve,CNY,\r\n"
                "rice-5,\"Jasmine rice, 5 kg\",59.00,CNY,\r\n"
                ",No sku,1.00,CNY,\r\n"
            )
            answer = await tech.post("/api/catalog/import", content=products.encode("utf-8"),
                                     headers={"Content-Type": "text/csv"})
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert report["rows"] == 4 and report["imported"] == 2 and sorted(report["changed"]) == ["milk-1", "rice-5"]
            assert [(e["row"], e["column"]) for e in report["errors"]] == [(3, "price"), (5, "sku")]
            assert agent.catalog.get("rice-5").name == "Jasmine rice, 5 kg"  # type: ignore[union-attr]
            assert agent.catalog.get("bad-price") is None

            pairings = (
                "tag_id,sku\n"
                f"{tags[0].upper()},milk-1\n"
                f"{tags[1]},no-such-product\n"
                "00000000000000ff,milk-1\n"
                "not-a-tag,milk-1\n"
                f"{tags[2]},rice-5\n"
            )
            answer = await tech.post("/api/pairing/import", content=pairings.encode())
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert report["imported"] == 2 and sorted(report["changed"]) == [tags[0], tags[2]]
            assert [(e["row"], e["column"]) for e in report["errors"]] == [(3, "sku"), (4, "tag_id"), (5, "tag_id")]
            for tag_id, sku in ((tags[0], "milk-1"), (tags[2], "rice-5")):
                rec = registry.get(tag_id)
                assert rec is not None and rec.sku == sku and rec.adopted  # an imported pairing adopts the tag
            assert not registry.get(tags[1]).adopted  # type: ignore[union-attr]

            # Export, then import the export: nothing changes.
            exported = await tech.get("/api/pairing/export.csv")
            assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
            assert "attachment" in exported.headers["content-disposition"]
            text = exported.content.decode("utf-8")
            assert text.startswith("\ufeff")
            rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
            assert rows[0] == ["tag_id", "sku"] and [tags[0], "milk-1"] in rows and [tags[1], ""] in rows
            again = (await tech.post("/api/pairing/import", content=exported.content)).json()
            assert again["errors"] == [] and again["changed"] == [] and again["unchanged"] == len(rows) - 1
            catalog_csv = await tech.get("/api/catalog/export.csv")
            again = (await tech.post("/api/catalog/import", content=catalog_csv.content)).json()
            assert again["errors"] == [] and again["changed"] == [] and again["imported"] == 2
            assert "有机纯牛奶 250ml" in catalog_csv.content.decode("utf-8")

            # A file that is no table imports nothing; a file too large is refused before it is read.
            fatal = await tech.post("/api/pairing/import", content=b"\xff\xfe t\x00a\x00g\x00")
            assert fatal.status_code == 422 and error_of(fatal) == "csv_unreadable"
            assert fatal.json()["detail"]["report"]["fatal"] is True
            semicolons = await tech.post("/api/catalog/import", content=b"sku;name;price;currency\n")
            assert semicolons.status_code == 422 and "semicolons" in semicolons.json()["detail"]["message"]
            huge = await tech.post("/api/catalog/import", content=b"sku,name,price,currency\n" + b"x" * (9 << 20))
            assert huge.status_code == 413 and error_of(huge) == "too_large"
            assert agent.catalog.count() == 2
            no_csrf = await tech.post("/api/pairing/import", content=pairings.encode(), headers={"X-CSRF-Token": "x"})
            assert no_csrf.status_code == 403
