"""The scan-link part of the cloud contract against what the code really produces.

A real ScanLinkService on a real migrated SQLite file records scans into a real Outbox; every stored event
(the bytes that go on the wire) is validated against the envelope and `payload.scan.tag.json`. The schema's
patterns and enums are checked against the code's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from cloud_link import contract
from cloud_link.events import EventClass, classify
from cloud_link.outbox import Outbox
from cloud_link.topics import Topics
from devices.labels.registry import TagRegistry
from edge_agent.config import ScanLinksSection
from edge_agent.services.catalog import SKU_PATTERN, TAG_ID_PATTERN, Product, ProductCatalog
from edge_agent.services.scan_links import CLIENT_TYPES, SCAN_EVENT, Answer, ScanLinkService, ScanTarget
from edge_agent.storage import Database
from edge_agent.wiring.scan_links import connect_scan_links

SCHEMA = "payload.scan.tag.json"


def test_schema_agrees_with_the_code() -> None:
    schema = contract.load_schema(SCHEMA)
    props = schema["properties"]
    assert props["tag_id"]["pattern"] == TAG_ID_PATTERN
    assert props["sku"]["pattern"] == SKU_PATTERN
    assert tuple(props["client"]["enum"]) == CLIENT_TYPES
    assert tuple(props["answer"]["enum"]) == get_args(Answer)
    assert classify(SCAN_EVENT) is EventClass.CRITICAL


async def test_recorded_scans_match_the_contract(tmp_path: Path) -> None:
    db = Database(tmp_path)
    try:
        outbox = Outbox(db, Topics("retail/v1", "sh-0042"), max_bytes=64 * 1024 * 1024)
        await outbox.open()
        catalog = ProductCatalog(db)
        await catalog.upsert([Product.model_validate({"sku": "6901234567892", "name": "水", "price": "2",
                                                      "currency": "CNY"})])
        registry = TagRegistry(db)
        paired, _ = await registry.ensure("4a3f0c12d5e6b788", 0x12, "bs1")
        bare, _ = await registry.ensure("0b5e2a7c99d1f340", 0x12, "bs1")
        await catalog.pair_tags([(paired.tag_id, "6901234567892")])
        service = ScanLinkService(
            db, catalog, outbox.publish,
            ScanLinksSection.model_validate({"product_url_template": "https://m.example.cn/p/{sku}?s={store_id}&t={tag_id}"}),
            store_id="sh-0042", cloud_up=lambda: True, form_secret=b"k" * 32,
        )
        connect_scan_links(service, catalog)  # as wiring/scan_links.py does
        for code, client in ((paired.scan_code, "wechat"), (bare.scan_code, "other"), (paired.scan_code, "ios")):
            target = service.resolve(code)
            assert target is not None
            decision = service.decide(target)
            assert await service.record(target, client, decision.answer)  # type: ignore[arg-type]
        assert service.decide(ScanTarget("0b5e2a7c99d1f340", "a b/c")).location == (
            "https://m.example.cn/p/a%20b%2Fc?s=sh-0042&t=0b5e2a7c99d1f340"
        )
        # Codes are remembered, and forgotten when a pairing changes (re-paired, or the product deleted).
        await catalog.upsert([Product.model_validate({"sku": "6901234567893", "name": "茶", "price": "3",
                                                      "currency": "CNY"})])
        await catalog.pair_tags([(paired.tag_id, "6901234567893")])
        assert service.resolve(paired.scan_code) == ScanTarget(paired.tag_id, "6901234567893")
        await catalog.delete(["6901234567893"])
        assert service.resolve(paired.scan_code) == ScanTarget(paired.tag_id, None)
        assert service.resolve("zzzzzzzzzz") is None
        rows = db.read(lambda c: c.execute("SELECT topic, body FROM outbox ORDER BY seq").fetchall())
        assert len(rows) == 3
        for topic, body in rows:
            assert topic == "retail/v1/sh-0042/events/scan.tag"
            contract.validate_event(bytes(body))
            contract.validate(SCHEMA, json.dumps(json.loads(body)["payload"]).encode())
        payloads = [json.loads(body)["payload"] for _, body in rows]
        assert payloads[1] == {"tag_id": "0b5e2a7c99d1f340", "sku": None, "client": "other", "answer": "no_product"}
        assert [p["answer"] for p in payloads] == ["redirect", "no_product", "redirect"]
    finally:
        db.close()


async def test_a_full_outbox_never_keeps_a_shopper_from_the_product(tmp_path: Path) -> None:
    from cloud_link.outbox import OutboxFullError

    async def refuse(event_type: str, payload: dict[str, object]) -> None:
        raise OutboxFullError(event_type, EventClass.CRITICAL, 10, 10)

    db = Database(tmp_path)
    try:
        service = ScanLinkService(
            db, ProductCatalog(db), refuse, ScanLinksSection.model_validate({}),
            store_id="sh-0042", cloud_up=lambda: True, form_secret=b"k" * 32,
        )
        assert await service.record(ScanTarget("4a3f0c12d5e6b788", "6901234567892"), "ios", "redirect") is False
        assert (service.recorded, service.not_recorded) == (0, 1)
    finally:
        db.close()
