"""CSV import and export of products and tag pairings, on a real migrated SQLite file."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.services.catalog import COLUMNS, Product, ProductCatalog
from edge_agent.services.catalog_csv import (
    MAX_ERRORS,
    CsvImportReport,
    export_pairings_csv,
    export_products_csv,
    import_pairings_csv,
    import_products_csv,
    parse_products_csv,
)
from edge_agent.storage import Database

GOOD = (
    "\ufeffsku,name,price,currency,unit_price,unit_label,former_price,promotion,barcode,origin,locale\r\n"
    "6901234567892,东方树叶 茉莉花茶 500ml,4.50,CNY,9.00,L,5.20,第二件半价,6901234567892,浙江杭州,zh-CN\r\n"
    'A-1002,"Organic apples, 1 kg bag",12.80,CNY,,,,,,,\r\n'
    'EU-77,"Vollmilch ""frisch"" 3,5 %",1.19,EUR,1.19,L,,,4006381333931,Deutschland,de-DE\r\n'
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "data")
    yield database
    database.close()


@pytest.fixture
def catalog(db: Database) -> ProductCatalog:
    return ProductCatalog(db)


def errors(report: CsvImportReport) -> list[tuple[int | None, str | None]]:
    return [(e.row, e.column) for e in report.errors]


async def test_a_good_file_is_imported(catalog: ProductCatalog) -> None:
    report = await import_products_csv(catalog, GOOD.encode("utf-8"))
    assert report.ok and not report.fatal
    assert (report.rows, report.imported, report.unchanged) == (3, 3, 0)
    assert report.changed == ["6901234567892", "A-1002", "EU-77"]
    tea = catalog.get("6901234567892")
    assert tea is not None
    assert (tea.name, tea.price, tea.unit_price, tea.unit_label, tea.promotion, tea.locale) == (
        "东方树叶 茉莉花茶 500ml", Decimal("4.5"), Decimal(9), "L", "第二件半价", "zh-CN")
    milk = catalog.get("EU-77")
    assert milk is not None and milk.name == 'Vollmilch "frisch" 3,5 %'
    apples = catalog.get("A-1002")
    assert apples is not None and apples.barcode is None and apples.name == "Organic apples, 1 kg bag"
    # The same file again changes nothing.
    again = await import_products_csv(catalog, GOOD)
    assert again.changed == [] and again.unchanged == 3


async def test_export_and_import_round_trip_with_chinese_names(catalog: ProductCatalog, tmp_path: Path) -> None:
    await import_products_csv(catalog, GOOD)
    names = ["康师傅红烧牛肉面 五连包", "农夫山泉 饮用天然水 550ml×24瓶", "「双十一」特惠：进口车厘子 JJ级", "𠮷野家 牛丼"]
    await catalog.upsert([
        Product(sku=f"CN-{i}", name=n, price=Decimal("19.9") + i, currency="CNY", promotion="满99减20")
        for i, n in enumerate(names)
    ])
    text = export_products_csv(catalog)
    assert text.startswith("\ufeffsku,name,price,currency,")
    assert "\r\n" in text
    # A file written the way a technician's tool writes it, read back into an empty catalog: identical.
    path = tmp_path / "catalog.csv"
    path.write_text(text, encoding="utf-8", newline="")
    other_db = Database(tmp_path / "other")
    try:
        other = ProductCatalog(other_db)
        report = await import_products_csv(other, path.read_bytes())
        assert report.ok and report.imported == 7
        assert other.list(0, 100) == catalog.list(0, 100)
        assert export_products_csv(other) == text
    finally:
        other_db.close()
    # The standard csv module reads the export too (BOM removed), every column in order.
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    assert rows[0] == list(COLUMNS) and len(rows) == 8
    assert export_products_csv(catalog, bom=False).startswith("sku,")


async def test_bad_rows_are_reported_and_good_rows_imported(catalog: ProductCatalog) -> None:
    text = (
        "sku,name,price,currency,barcode,unit_price,unit_label\n"
        "A1,Good one,1.00,CNY,,,\n"  # row 2
        "A2,,x,cny,4006381333932,,\n"  # row 3: four problems
        "\n"  # row 4: blank, skipped
        "A3,Another good,2,CNY,,,\n"  # row 5
        "A4,Unit price alone,2,CNY,,1.00,\n"  # row 6
        "A1,Again,3,CNY,,,\n"  # row 7: sku already on row 2
        "A5,Too many,1,CNY,,,,surprise\n"  # row 8
        "A6,Short row,3\n"  # row 9: currency missing
        '"A7","Two\nlines",1,CNY,,,\n'  # row 10: a quoted newline (one spreadsheet row)
        "A8,After the multi-line cell,1,CNY,,,\n"  # row 11
        "A9,Trailing empty cells,1,CNY,,,,,,\n"  # row 12: fine
        "bad sku,Price -1,-1,CNY,,,\n"  # row 13
    )
    report = await import_products_csv(catalog, text)
    assert not report.ok and not report.fatal
    assert errors(report) == [
        (3, "name"), (3, "price"), (3, "currency"), (3, "barcode"),
        (6, None),
        (7, "sku"),
        (8, None),
        (9, "currency"),
        (10, "name"),
        (13, "sku"), (13, "price"),
    ]
    by_row = {(e.row, e.column): e.message for e in report.errors}
    assert by_row[(3, "name")] == "required, but the cell is empty"
    assert "EAN-13 check digit" in by_row[(3, "barcode")]
    assert "already on row 2" in by_row[(7, "sku")]
    assert "unit_price and unit_label go together" in by_row[(6, None)]
    assert "8 cells" in by_row[(8, None)]
    assert str(report.errors[0]) == "row 3, name: required, but the cell is empty"
    assert (report.rows, report.imported) == (11, 4)
    assert report.changed == ["A1", "A3", "A8", "A9"]
    assert {p.sku for p in catalog.list(0, 100)} == {"A1", "A3", "A8", "A9"}
    first = catalog.get("A1")
    assert first is not None and first.name == "Good one"  # the duplicate did not overwrite it
    assert report.to_dict()["errors"][0] == {"row": 3, "column": "name", "message": "required, but the cell is empty"}


@pytest.mark.parametrize(
    ("data", "row", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, "not UTF-8 text"),
        (b"\xff\xfes\x00k\x00u\x00", None, "UTF-16"),
        (b"sku,name,price,currency\nA1,\xe4\xb8,1,CNY\n", None, "not UTF-8 text (byte 0xe4"),
        ("sku,name,price,currency\nA1,x\x00y,1,CNY\n", None, "binary data"),
        ("", None, "empty"),
        ("\ufeff \r\n", None, "empty"),
        ("sku;name;price;currency\nA1;Tea;1;CNY\n", 1, "separated by semicolons"),
        ("sku\tname\tprice\tcurrency\nA1\tTea\t1\tCNY\n", 1, "separated by tabs"),
        ("sku,name\nA1,Tea\n", 1, "missing required columns: price, currency"),
        ("A1,Tea,1.00,CNY\nA2,Milk,2.00,CNY\n", 1, "missing required columns: sku, name, price, currency"),
        ("sku,name,price,currency,colour\n", 1, "unknown columns: 'colour'"),
        ("sku,name,price,currency,SKU\n", 1, "columns named twice: sku"),
        ("sku,name,price,currency\nA1," + "x" * 200_000 + ",1,CNY\n", None, "not readable as CSV"),
    ],
)
async def test_unreadable_files_get_one_clear_error_and_import_nothing(
    catalog: ProductCatalog, data: str | bytes, row: int | None, message: str
) -> None:
    report = await import_products_csv(catalog, data)
    assert report.fatal and len(report.errors) == 1
    assert report.errors[0].row == row and message in report.errors[0].message
    assert catalog.count() == 0


async def test_only_a_header_is_fine_and_header_names_are_forgiving(catalog: ProductCatalog) -> None:
    report = await import_products_csv(catalog, "sku,name,price,currency\n")
    assert report.ok and report.rows == 0
    report = await import_products_csv(catalog, " SKU , Name ,PRICE,Currency\r\nA1, Tea ,1.5,CNY\r\n")
    assert report.ok and report.changed == ["A1"]
    stored = catalog.get("A1")
    assert stored is not None and stored.name == "Tea"  # cells are trimmed


async def test_too_many_rows_is_refused_whole(catalog: ProductCatalog) -> None:
    text = "sku,name,price,currency\n" + "".join(f"S{i},Item {i},1,CNY\n" for i in range(5))
    report = await import_products_csv(catalog, text, max_rows=4)
    assert report.fatal and "more than 4 rows" in report.errors[0].message
    assert catalog.count() == 0


async def test_errors_are_capped(catalog: ProductCatalog) -> None:
    text = "sku,name,price,currency\n" + "".join(f"S{i},Item,bad,CNY\n" for i in range(MAX_ERRORS + 500))
    report = await import_products_csv(catalog, text)
    assert len(report.errors) == MAX_ERRORS and report.errors_omitted == 500
    assert not report.ok


async def test_dry_run_reports_what_would_change_and_writes_nothing(catalog: ProductCatalog) -> None:
    await import_products_csv(catalog, GOOD)
    changed_tea = GOOD.replace("4.50,CNY,9.00", "4.80,CNY,9.60")
    report = await import_products_csv(catalog, changed_tea + "NEW-1,New,1,CNY,,,,,,,\n", dry_run=True)
    assert report.changed == ["6901234567892", "NEW-1"] and report.unchanged == 2
    tea = catalog.get("6901234567892")
    assert tea is not None and tea.price == Decimal("4.5") and catalog.get("NEW-1") is None
    products, parsed = parse_products_csv(GOOD)
    assert len(products) == 3 and parsed.ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=2000),
    st.text(alphabet=st.sampled_from(list('sku,name,price,currency,"\r\n;\t 1.05CNY东方\x00\ufeff')), max_size=500),
    st.lists(st.text(max_size=30), max_size=40).map(lambda cells: "sku,name,price,currency\n" + ",".join(cells)),
))
async def test_garbage_never_crashes_the_import(catalog: ProductCatalog, data: str | bytes) -> None:
    report = await import_products_csv(catalog, data)
    assert report.fatal or report.rows >= 0
    for error in report.errors:
        assert error.message and (error.row is None or error.row >= 1)


async def test_random_bytes_are_refused_plainly(catalog: ProductCatalog) -> None:
    report = await import_products_csv(catalog, os.urandom(4096))
    assert report.fatal and len(report.errors) == 1


# -- tag pairings ---------------------------------------------------------------------------------


async def add_tag(db: Database, tag_id: str, sku: str | None = None) -> None:
    await db.write(lambda c: c.execute(
        "INSERT INTO tags(tag_id, type_code, sku, scan_code, created_ms) VALUES (?, 3, ?, ?, 0)",
        (tag_id, sku, f"s{tag_id}"),
    ))


async def test_pairings_import_and_export(catalog: ProductCatalog, db: Database) -> None:
    await import_products_csv(catalog, GOOD)
    for tag in ("00000000000000a1", "00000000000000a2", "00000000000000a3", "00000000000000a4"):
        await add_tag(db, tag, "EU-77" if tag.endswith("a4") else None)
    heard: list[list[str]] = []
    catalog.on_pairing_change(heard.append)
    text = (
        "\ufefftag_id,sku\r\n"
        "00000000000000A1,6901234567892\r\n"  # row 2: upper case accepted
        "00000000000000a2,A-1002\r\n"  # row 3
        "00000000000000a3,NO-SUCH-SKU\r\n"  # row 4: unknown product
        "00000000000000ff,A-1002\r\n"  # row 5: unknown tag
        "not-a-tag,A-1002\r\n"  # row 6
        "00000000000000a1,EU-77\r\n"  # row 7: tag already on row 2
        ",A-1002\r\n"  # row 8: tag id missing
        "00000000000000a4,\r\n"  # row 9: unpair
    )
    report = await import_pairings_csv(catalog, text.encode())
    assert errors(report) == [(4, "sku"), (5, "tag_id"), (6, "tag_id"), (7, "tag_id"), (8, "tag_id")]
    assert report.changed == ["00000000000000a1", "00000000000000a2", "00000000000000a4"]
    assert (report.rows, report.imported, report.unchanged) == (8, 3, 0)
    assert heard == [report.changed]
    exported = export_pairings_csv(catalog)
    assert exported == (
        "\ufefftag_id,sku\r\n"
        "00000000000000a1,6901234567892\r\n"
        "00000000000000a2,A-1002\r\n"
        "00000000000000a3,\r\n"
        "00000000000000a4,\r\n"
    )
    # Its own export imports back as "nothing changed".
    again = await import_pairings_csv(catalog, exported)
    assert again.ok and again.changed == [] and again.unchanged == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x01\x02garbage", "binary data"),
        ("tag_id;sku\n00000000000000a1;A1\n", "separated by semicolons"),
        ("tag,sku\n", "missing required columns: tag_id"),
        ("tag_id,sku,note\n", "unknown columns: 'note'"),
    ],
)
async def test_unreadable_pairing_files(catalog: ProductCatalog, data: str | bytes, message: str) -> None:
    report = await import_pairings_csv(catalog, data)
    assert report.fatal and message in report.errors[0].message
