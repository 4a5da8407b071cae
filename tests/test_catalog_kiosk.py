"""The catalog's kiosk fields and browsing on a real migrated SQLite file (issue 5, part 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.services.catalog import Product, ProductCatalog
from edge_agent.services.catalog_csv import export_products_csv, import_products_csv
from edge_agent.storage import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def catalog(db: Database) -> ProductCatalog:
    return ProductCatalog(db)


def product(sku: str, name: str = "东方树叶 茉莉花茶 500ml", **changes: Any) -> Product:
    data: dict[str, Any] = {"sku": sku, "name": name, "price": "4.50", "currency": "CNY"}
    data.update(changes)
    return Product.model_validate(data)


async def test_kiosk_fields_default_and_round_trip(catalog: ProductCatalog) -> None:
    plain = product("A1")
    assert (plain.category, plain.image_url, plain.on_shelf, plain.available) == (None, None, True, True)
    full = product("A2", category="乳制品 Dairy", image_url="https://cdn.example.cn/p/A2.jpg?w=400",
                   on_shelf=False, available=False)
    await catalog.upsert([plain, full])
    assert catalog.get("A1") == plain
    assert catalog.get("A2") == full
    assert catalog.get_many(["A2"])["A2"] == full


async def test_a_change_of_availability_alone_is_a_change(catalog: ProductCatalog) -> None:
    heard: list[list[str]] = []
    catalog.on_change(heard.append)
    await catalog.upsert([product("A1")])
    assert await catalog.upsert([product("A1")]) == []
    assert await catalog.upsert([product("A1", available=False)]) == ["A1"]
    assert await catalog.upsert([product("A1", available=False, on_shelf=False)]) == ["A1"]
    assert await catalog.upsert([product("A1", available=False, on_shelf=False, category="饮料")]) == ["A1"]
    assert heard == [["A1"], ["A1"], ["A1"], ["A1"]]


@pytest.mark.parametrize(
    "changes",
    [
        {"image_url": "http://cdn.example.cn/a.jpg"},
        {"image_url": "https://cdn.example.cn/a b.jpg"},
        {"image_url": "https://cdn.example.cn/\"onerror=x"},
        {"image_url": "javascript:alert(1)"},
        {"image_url": "https://x/" + "a" * 600},
        {"category": ""},
        {"category": "a\nb"},
        {"category": "类" * 65},
        {"available": "yes"},
        {"on_shelf": 1},
    ],
)
def test_bad_kiosk_fields_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        product("A1", **changes)


async def test_browse_by_category_with_paging(catalog: ProductCatalog) -> None:
    await catalog.upsert(
        [product(f"M{i:02d}", f"牛奶 {i:02d}", category="乳制品 Dairy") for i in range(30)]
        + [product("T1", "茉莉花茶", category="饮料 Drinks"), product("X1", "Loose item")]
    )
    assert catalog.categories() == [("乳制品 Dairy", 30), ("饮料 Drinks", 1)]
    page, total = catalog.browse(category="乳制品 Dairy", offset=24, limit=24)
    assert total == 30 and [p.sku for p in page] == [f"M{i:02d}" for i in range(24, 30)]
    everything, total = catalog.browse(limit=100)
    assert total == 32 and len(everything) == 32
    assert catalog.browse(category="nothing") == ([], 0)


async def test_browse_searches_names_in_any_script_and_codes(catalog: ProductCatalog) -> None:
    await catalog.upsert([
        product("M1", "光明 鲜牛奶 950ml", category="乳制品", barcode="6901234567892"),
        product("M2", "蒙牛 纯牛奶", category="乳制品"),
        product("T1", "东方树叶 茉莉花茶", category="饮料"),
        product("E1", "Organic apples 50%", category="Fruit"),
    ])
    assert [p.sku for p in catalog.browse(text="牛奶")[0]] == ["M1", "M2"]
    assert catalog.browse(text="牛奶", category="饮料") == ([], 0)
    assert [p.sku for p in catalog.browse(text="6901234")[0]] == ["M1"]
    assert [p.sku for p in catalog.browse(text="6901234567892")[0]] == ["M1"]
    assert [p.sku for p in catalog.browse(text="t1")[0]] == ["T1"]  # sku prefix, ASCII case-insensitive
    assert [p.sku for p in catalog.browse(text="apples")[0]] == ["E1"]
    assert catalog.browse(text="%")[1] == 1  # LIKE wildcards are literal
    assert catalog.browse(text="_")[1] == 0
    assert catalog.browse(text="   ")[1] == 4  # blank: no filter


async def test_csv_carries_the_kiosk_fields(catalog: ProductCatalog) -> None:
    data = (
        "sku,name,price,currency,category,image_url,on_shelf,available\r\n"
        "A1,牛奶,12.80,CNY,乳制品,https://cdn.example.cn/a1.jpg,no,1\r\n"
        "A2,茶,4.50,CNY,,,,\r\n"
        "A3,茶,4.50,CNY,,,maybe,\r\n"
    )
    report = await import_products_csv(catalog, data)
    assert report.imported == 2
    assert [(e.row, e.column) for e in report.errors] == [(4, "on_shelf")]
    a1 = catalog.get("A1")
    assert a1 is not None and (a1.category, a1.on_shelf, a1.available) == ("乳制品", False, True)
    a2 = catalog.get("A2")
    assert a2 is not None and (a2.on_shelf, a2.available) == (True, True)
    exported = export_products_csv(catalog, bom=False)
    lines = exported.splitlines()
    assert lines[0].endswith("category,image_url,on_shelf,available")
    assert lines[1].endswith("乳制品,https://cdn.example.cn/a1.jpg,0,1")
    # What was exported imports as no change.
    assert (await import_products_csv(catalog, exported, dry_run=True)).changed == []
