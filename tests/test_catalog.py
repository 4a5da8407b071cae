"""The product catalog on a real migrated SQLite file: validation, change detection, revisions, listeners, reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.services.catalog import (
    WRITE_CHUNK,
    Product,
    ProductCatalog,
    gtin_check_digit_ok,
)
from edge_agent.storage import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def catalog(db: Database) -> ProductCatalog:
    return ProductCatalog(db)


def product(sku: str = "A1", **changes: Any) -> Product:
    data: dict[str, Any] = {"sku": sku, "name": "东方树叶 茉莉花茶 500ml", "price": "4.50", "currency": "CNY"}
    data.update(changes)
    return Product.model_validate(data)


async def add_tag(db: Database, tag_id: str, sku: str | None) -> None:
    await db.write(lambda c: c.execute(
        "INSERT INTO tags(tag_id, type_code, sku, scan_code, created_ms) VALUES (?, 3, ?, ?, 0)",
        (tag_id, sku, f"s{tag_id}"),
    ))


def tag_sku(db: Database, tag_id: str) -> str | None:
    row = db.read(lambda c: c.execute("SELECT sku FROM tags WHERE tag_id = ?", (tag_id,)).fetchone())
    return None if row is None else row[0]


# -- upsert and change detection ------------------------------------------------------------------


async def test_upsert_inserts_and_reads_back(catalog: ProductCatalog) -> None:
    full = product(
        "6901234567892", unit_price="9.00", unit_label="L", former_price="5.20", promotion="第二件半价",
        barcode="6901234567892", origin="浙江杭州", locale="zh-CN",
    )
    assert await catalog.upsert([full, product("B2")]) == ["6901234567892", "B2"]
    assert catalog.get("6901234567892") == full
    assert catalog.get("B2") == product("B2")
    assert catalog.get("nope") is None
    entry = catalog.get_entry("B2")
    assert entry is not None and entry.rev >= 1 and entry.updated_ms > 0
    assert catalog.count() == 2


async def test_unchanged_products_are_not_rewritten_and_keep_their_rev(catalog: ProductCatalog, db: Database) -> None:
    await catalog.upsert([product("A1"), product("B2")])
    before = {s: catalog.get_entry(s) for s in ("A1", "B2")}
    commits = db.writer.stats.commits
    # The same content, prices written differently but equal as numbers.
    assert await catalog.upsert([product("A1", price="4.5"), product("B2", price="4.5000")]) == []
    assert {s: catalog.get_entry(s) for s in ("A1", "B2")} == before
    assert db.writer.stats.commits == commits + 1  # the comparison ran in the writer, nothing was written
    assert db.read(lambda c: c.execute("SELECT value FROM counters WHERE name = 'catalog_rev'").fetchone()[0]) == 1


async def test_a_change_bumps_rev_of_the_changed_rows_only(catalog: ProductCatalog) -> None:
    await catalog.upsert([product("A1"), product("B2")])
    a_before, b_before = catalog.get_entry("A1"), catalog.get_entry("B2")
    assert a_before is not None and b_before is not None
    assert await catalog.upsert([product("A1", price="4.20"), product("B2")]) == ["A1"]
    a_after, b_after = catalog.get_entry("A1"), catalog.get_entry("B2")
    assert a_after is not None and a_after.rev > a_before.rev and a_after.product.price == Decimal("4.2")
    assert b_after == b_before


async def test_upsert_replaces_the_whole_product(catalog: ProductCatalog) -> None:
    await catalog.upsert([product("A1", promotion="限时特价", barcode="4006381333931")])
    assert await catalog.upsert([product("A1")]) == ["A1"]
    stored = catalog.get("A1")
    assert stored is not None and stored.promotion is None and stored.barcode is None


async def test_a_sku_given_twice_counts_once_with_its_last_content(catalog: ProductCatalog) -> None:
    assert await catalog.upsert([product("A1", price="1"), product("B2"), product("A1", price="2")]) == ["A1", "B2"]
    stored = catalog.get("A1")
    assert stored is not None and stored.price == Decimal(2)


async def test_concurrent_identical_upserts_change_the_row_once(catalog: ProductCatalog) -> None:
    results = await asyncio.gather(*(catalog.upsert([product("A1", price="3.30")]) for _ in range(8)))
    assert sorted(results) == [[]] * 7 + [["A1"]]


async def test_large_upserts_are_split_into_several_transactions(catalog: ProductCatalog, db: Database) -> None:
    many = [product(f"P{i:05d}", price=f"{i}.01") for i in range(WRITE_CHUNK * 2 + 5)]
    commits = db.writer.stats.commits
    changed = await catalog.upsert(many)
    assert len(changed) == len(many) and catalog.count() == len(many)
    assert db.writer.stats.commits - commits == 3
    assert await catalog.upsert(many) == []


# -- delete, pairing, listeners ----------------------------------------------------------------------


async def test_delete_returns_what_existed_and_revs_are_never_reused(catalog: ProductCatalog) -> None:
    await catalog.upsert([product("A1"), product("B2")])
    entry = catalog.get_entry("A1")
    assert entry is not None
    assert await catalog.delete(["A1", "nope", "A1"]) == ["A1"]
    assert catalog.get("A1") is None and catalog.get("B2") is not None
    assert await catalog.delete(["A1"]) == []
    await catalog.upsert([product("A1")])
    again = catalog.get_entry("A1")
    assert again is not None and again.rev > entry.rev


async def test_listeners_hear_changes_after_commit(catalog: ProductCatalog, db: Database) -> None:
    heard: list[tuple[str, list[str], str | None]] = []

    def sync_listener(skus: list[str]) -> None:
        # Called after the commit: a fresh connection already sees the new content.
        conn = sqlite3.connect(db.path)
        row = conn.execute("SELECT price FROM products WHERE sku = ?", (skus[0],)).fetchone()
        conn.close()
        heard.append(("sync", skus, None if row is None else row[0]))

    async def async_listener(skus: list[str]) -> None:
        await asyncio.sleep(0)
        heard.append(("async", skus, None))

    def broken(skus: list[str]) -> None:
        raise RuntimeError("a buggy subscriber")

    catalog.on_change(broken)
    catalog.on_change(sync_listener)
    unsubscribe = catalog.on_change(async_listener)
    await catalog.upsert([product("A1", price="7.7"), product("B2")])
    await catalog.upsert([product("A1", price="7.7")])  # unchanged: nobody is called
    unsubscribe()
    await catalog.delete(["B2"])
    assert heard == [
        ("sync", ["A1", "B2"], "7.7"),
        ("async", ["A1", "B2"], None),
        ("sync", ["B2"], None),
    ]


async def test_deleting_a_product_unpairs_its_tags_and_says_which(catalog: ProductCatalog, db: Database) -> None:
    await catalog.upsert([product("A1"), product("B2")])
    await add_tag(db, "00000000000000a1", "A1")
    await add_tag(db, "00000000000000a2", "A1")
    await add_tag(db, "00000000000000b1", "B2")
    unpaired: list[list[str]] = []
    catalog.on_pairing_change(unpaired.append)
    await catalog.delete(["A1"])
    assert unpaired == [["00000000000000a1", "00000000000000a2"]]
    assert tag_sku(db, "00000000000000a1") is None and tag_sku(db, "00000000000000b1") == "B2"


async def test_pair_tags_checks_tags_and_products(catalog: ProductCatalog, db: Database) -> None:
    await catalog.upsert([product("A1"), product("B2")])
    await add_tag(db, "00000000000000a1", None)
    await add_tag(db, "00000000000000a2", "B2")
    await add_tag(db, "00000000000000a3", "A1")
    heard: list[list[str]] = []
    catalog.on_pairing_change(heard.append)
    result = await catalog.pair_tags([
        ("00000000000000a1", "A1"),
        ("00000000000000a2", None),
        ("00000000000000a3", "A1"),
        ("00000000000000ff", "A1"),
        ("00000000000000a1", "nope"),
        ("NOT-A-TAG", "A1"),
    ])
    assert result.changed == ["00000000000000a1", "00000000000000a2"] and result.unchanged == 1
    assert [(p.index, p.column) for p in result.problems] == [(3, "tag_id"), (4, "sku"), (5, "tag_id")]
    assert heard == [["00000000000000a1", "00000000000000a2"]]
    assert tag_sku(db, "00000000000000a1") == "A1" and tag_sku(db, "00000000000000a2") is None
    assert catalog.pairings_after(None, 10) == [
        ("00000000000000a1", "A1"), ("00000000000000a2", None), ("00000000000000a3", "A1"),
    ]


# -- reads ----------------------------------------------------------------------------------------


async def test_search_by_name_sku_and_barcode(catalog: ProductCatalog) -> None:
    await catalog.upsert([
        product("TEA-1", name="东方树叶 茉莉花茶 500ml", barcode="6901234567892"),
        product("TEA-2", name="东方树叶 乌龙茶 500ml"),
        product("MILK-1", name="Whole milk 100% 1 L", barcode="4006381333931"),
        product("X_1", name="Underscore_item"),
    ])
    assert [p.sku for p in catalog.search("东方树叶")] == ["TEA-2", "TEA-1"]  # by name
    assert [p.sku for p in catalog.search("乌龙")] == ["TEA-2"]
    assert [p.sku for p in catalog.search("tea-")] == ["TEA-2", "TEA-1"]  # sku prefix, ASCII case-insensitive
    assert [p.sku for p in catalog.search("6901234567892")] == ["TEA-1"]
    assert [p.sku for p in catalog.search("milk")] == ["MILK-1"]
    assert [p.sku for p in catalog.search("100%")] == ["MILK-1"]  # % is literal
    assert [p.sku for p in catalog.search("%")] == ["MILK-1"]
    assert [p.sku for p in catalog.search("_")] == ["X_1"]  # _ is literal too
    assert catalog.search("   ") == [] and catalog.search("zzz") == []
    assert len(catalog.search("东方", limit=1)) == 1
    # An exact sku hit comes before name matches.
    await catalog.upsert([product("TEA", name="Generic")])
    assert catalog.search("TEA")[0].sku == "TEA"


async def test_find_by_barcode_also_across_upc_and_ean_forms(catalog: ProductCatalog) -> None:
    await catalog.upsert([
        product("EAN", barcode="4006381333931"),
        product("UPC", barcode="036000291452"),
        product("UPC-AS-EAN", barcode="0012345678905"),
    ])
    found = catalog.find_by_barcode("4006381333931")
    assert found is not None and found.sku == "EAN"
    for code, sku in [("036000291452", "UPC"), ("0036000291452", "UPC"), ("012345678905", "UPC-AS-EAN"),
                      (" 4006381333931\n", "EAN")]:
        hit = catalog.find_by_barcode(code)
        assert hit is not None and hit.sku == sku, code
    assert catalog.find_by_barcode("4006381333948") is None
    assert catalog.find_by_barcode("' OR 1=1 --") is None
    assert catalog.find_by_barcode("") is None


async def test_list_pages_and_get_many(catalog: ProductCatalog) -> None:
    await catalog.upsert([product(f"S{i:03d}") for i in range(25)])
    assert [p.sku for p in catalog.list(0, 10)] == [f"S{i:03d}" for i in range(10)]
    assert [p.sku for p in catalog.list(20, 10)] == [f"S{i:03d}" for i in range(20, 25)]
    assert [p.sku for p in catalog.list_after("S019", 3)] == ["S020", "S021", "S022"]
    assert catalog.list(0, 0) and len(catalog.list(0, 10**9)) == 25  # limits are clamped
    assert set(catalog.get_many(["S001", "S002", "nope", "S001"])) == {"S001", "S002"}


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("4006381333931", True),  # EAN-13
        ("6901234567892", True),
        ("4006381333932", False),
        ("036000291452", True),  # UPC-A
        ("036000291453", False),
        ("0012345678905", True),  # UPC-A written as EAN-13
        ("96385074", True),  # EAN-8 (same algorithm)
    ],
)
def test_gtin_check_digits(code: str, ok: bool) -> None:
    assert gtin_check_digit_ok(code) is ok


def test_barcodes_are_checked_when_they_are_ean13_or_upca() -> None:
    assert product(barcode="4006381333931").barcode == "4006381333931"
    assert product(barcode="036000291452").barcode == "036000291452"
    assert product(barcode="12345").barcode == "12345"  # a store code: no check digit to verify
    assert product(barcode="12345678").barcode == "12345678"
    with pytest.raises(ValidationError, match="EAN-13 check digit is wrong"):
        product(barcode="4006381333932")
    with pytest.raises(ValidationError, match="UPC-A check digit is wrong"):
        product(barcode="036000291453")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sku": ""}, "sku"),
        ({"sku": "has space"}, "sku"),
        ({"sku": "x" * 65}, "sku"),
        ({"sku": "A1\n"}, "sku"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "\u3000"}, "name"),  # an ideographic space is still blank
        ({"name": "two\nlines"}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": "c1\x85"}, "name"),
        ({"name": "名" * 201}, "name"),
        ({"name": 5}, "name"),
        ({"price": "-1"}, "price"),
        ({"price": "1.23456"}, "price"),
        ({"price": "1e3"}, "price"),
        ({"price": "1,50"}, "price"),
        ({"price": "\uff11\uff12"}, "price"),  # full-width digits
        ({"price": ""}, "price"),
        ({"price": "1234567890"}, "price"),
        ({"price": 12.8}, "price"),
        ({"price": 12}, "price"),
        ({"price": True}, "price"),
        ({"price": None}, "price"),
        ({"price": Decimal("-0.01")}, "price"),
        ({"price": Decimal("0.00001")}, "price"),
        ({"price": Decimal("NaN")}, "price"),
        ({"currency": "cny"}, "currency"),
        ({"currency": "CNYX"}, "currency"),
        ({"currency": "¥"}, "currency"),
        ({"former_price": "abc"}, "former_price"),
        ({"promotion": ""}, "promotion"),
        ({"promotion": "x" * 101}, "promotion"),
        ({"barcode": "12a45"}, "barcode"),
        ({"barcode": "123"}, "barcode"),
        ({"barcode": "1" * 21}, "barcode"),
        ({"barcode": "".join(chr(0xFF10 + int(d)) for d in "6901234567892")}, "barcode"),
        ({"origin": "o" * 65}, "origin"),
        ({"locale": "zh_CN"}, "locale"),
        ({"locale": "ZH-cn"}, "locale"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_products_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        product(**changes)
    assert [e["loc"][0] for e in info.value.errors()] == [field]


@pytest.mark.parametrize("changes", [{"unit_price": "1.00"}, {"unit_label": "kg"}])
def test_unit_price_and_unit_label_go_together(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="unit_price and unit_label go together"):
        product(**changes)
    assert product(unit_price="1.00", unit_label="500 g").unit_price == Decimal(1)


def test_prices_are_canonical_decimals() -> None:
    p = product(price="12.80", former_price="100", unit_price="0.0500", unit_label="g")
    assert (str(p.price), str(p.former_price), str(p.unit_price)) == ("12.8", "100", "0.05")
    assert p.to_row()[2] == "12.8"
    assert product(price=Decimal("1E+2")).to_row()[2] == "100"
    assert product(price="0.0000").price == Decimal(0)
    assert product(price="999999999.9999").price == Decimal("999999999.9999")
    assert p.model_dump(mode="json")["price"] == "12.8"
    # Any script, up to 200 characters, surrounding spaces kept as given.
    assert product(name="名" * 200).name == "名" * 200
    assert product(name="Ünïcödé ☕ עברית العربية").name.startswith("Ü")


def test_products_are_immutable_and_hashable() -> None:
    p = product()
    with pytest.raises(ValidationError):
        p.price = Decimal(1)  # type: ignore[misc]
    assert hash(p) == hash(product())


_texts = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200).filter(
    lambda s: not s.isspace() and s.strip() != ""
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=_texts,
    price=st.decimals(min_value=0, max_value=Decimal("999999999.9999"), places=4),
    promotion=st.none() | _texts.map(lambda s: s[:100]),
)
async def test_any_valid_product_round_trips_through_the_database(
    catalog: ProductCatalog, name: str, price: Decimal, promotion: str | None
) -> None:
    try:
        p = product("RT", name=name, price=price, promotion=promotion)
    except ValidationError:
        return  # e.g. only white space by Python's definition after all
    await catalog.upsert([p])
    assert catalog.get("RT") == p
    assert await catalog.upsert([p]) == []
