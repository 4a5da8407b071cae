"""CSV import and export of the product catalog and of tag pairings, for technicians and spreadsheets.

Products: a header row naming the columns (the `Product` field names, any order, case-insensitive):
`sku`, `name`, `price` and `currency` are required, the others optional; an empty cell is an absent value.
`on_shelf` and `available` read 1/0, true/false, yes/no (empty: true); exports write 1 or 0.
Pairings: columns `tag_id` and `sku` (an empty sku unpairs the tag).

Files are UTF-8 with or without a byte-order mark (what Excel writes as "CSV UTF-8"), comma separated,
quoted as RFC 4180 says. Nothing in a file can crash the import: a file that cannot be read as a table
(not UTF-8, binary, another separator, missing or unknown columns, too many rows) gets one clear error
and imports nothing; otherwise every bad row is reported with its row number (as a spreadsheet shows
it: the header is row 1) and column, and every good row is imported.

Exports write the same format, with a byte-order mark by default so that Excel shows Chinese names right.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from edge_agent.services.catalog import COLUMNS, TAG_ID_RE, PairingResult, Product, ProductCatalog

REQUIRED_COLUMNS = ("sku", "name", "price", "currency")
PAIRING_COLUMNS = ("tag_id", "sku")
MAX_ROWS = 100_000
MAX_ERRORS = 1000
EXPORT_PAGE = 1000
_BOM = "\ufeff"
_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


@dataclass(frozen=True)
class CsvError:
    row: int | None  # the spreadsheet row (the header is row 1); None: the file as a whole
    column: str | None
    message: str

    def __str__(self) -> str:
        where = "file" if self.row is None else f"row {self.row}"
        return f"{where}, {self.column}: {self.message}" if self.column else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


@dataclass
class CsvImportReport:
    """What an import did. `changed` holds skus (products) or tag ids (pairings)."""

    rows: int = 0  # data rows read, blank rows not counted
    imported: int = 0  # good rows, now in the store (changed or not)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: list[CsvError] = field(default_factory=list)
    errors_omitted: int = 0  # errors past MAX_ERRORS, counted only
    fatal: bool = False  # the file could not be read as a table (one error says why): nothing was imported

    @property
    def ok(self) -> bool:
        return not self.errors and not self.errors_omitted

    def add_error(self, error: CsvError) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)
        else:
            self.errors_omitted += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "changed": list(self.changed),
            "unchanged": self.unchanged,
            "errors": [e.to_dict() for e in self.errors],
            "errors_omitted": self.errors_omitted,
            "fatal": self.fatal,
        }


class _FileError(Exception):
    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.row = row


# -- reading a table ------------------------------------------------------------------------------


def _decode(data: str | bytes) -> str:
    if isinstance(data, bytes | bytearray):
        raw = bytes(data)
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _FileError("the file is UTF-16 text; save it as CSV UTF-8")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _FileError(
                f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save the file as CSV UTF-8"
            ) from None
    else:
        text = data
    text = text.removeprefix(_BOM)
    if "\x00" in text:
        raise _FileError("binary data (NUL characters): this is not a CSV text file")
    if not text.strip():
        raise _FileError("the file is empty")
    return text


def _read_table(
    data: str | bytes, required: Sequence[str], optional: Sequence[str], max_rows: int
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (lower-cased column names) and the non-blank data rows with their row numbers."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    known = (*required, *optional)
    try:
        header = [cell.strip().lower() for cell in next(reader)]
        header_text = ",".join(header)
        if len(header) == 1:
            for sep, name in _OTHER_SEPARATORS.items():
                if sep in header[0]:
                    raise _FileError(f"the header is one column {header_text[:80]!r}: the file seems to be separated "
                                     f"by {name}; save it comma separated", 1)
        duplicates = sorted({c for c in header if header.count(c) > 1})
        if duplicates:
            raise _FileError(f"columns named twice: {', '.join(duplicates)}", 1)
        missing = [c for c in required if c not in header]
        if missing:
            raise _FileError(f"missing required columns: {', '.join(missing)} (the first row must name the columns: "
                             f"{', '.join(known)})", 1)
        unknown = [c for c in header if c not in known]
        if unknown:
            shown = ", ".join(repr(c[:40]) for c in unknown[:10])
            raise _FileError(f"unknown columns: {shown}; the columns are: {', '.join(known)}", 1)
        rows: list[tuple[int, list[str]]] = []
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) >= max_rows:
                raise _FileError(f"more than {max_rows} rows; split the file")
            rows.append((number, cells))
    except csv.Error as exc:
        raise _FileError(f"not readable as CSV near line {reader.line_num}: {exc}") from None
    return header, rows


def _cells(header: list[str], number: int, cells: list[str], report: CsvImportReport) -> dict[str, str] | None:
    """The row's non-empty cells by column, or None (reported) when it has more cells than columns."""
    if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
        report.add_error(CsvError(number, None, f"{len(cells)} cells, but the header names {len(header)} columns "
                                                "(a comma too many, or a value with a comma and no quotes?)"))
        return None
    values = {}
    for column, cell in zip(header, cells, strict=False):
        value = cell.strip()
        if value:
            values[column] = value
    return values


def _validation_errors(number: int, exc: ValidationError) -> Iterator[CsvError]:
    for err in exc.errors():
        column = str(err["loc"][0]) if err["loc"] else None
        message = "required, but the cell is empty" if err["type"] == "missing" else str(err["msg"])
        yield CsvError(number, column, message.removeprefix("Value error, "))


# -- products -------------------------------------------------------------------------------------


def parse_products_csv(data: str | bytes, *, max_rows: int = MAX_ROWS) -> tuple[list[Product], CsvImportReport]:
    """Validate a products file without importing it: the good products, and a report of the bad rows."""
    report = CsvImportReport()
    try:
        header, rows = _read_table(data, REQUIRED_COLUMNS, [c for c in COLUMNS if c not in REQUIRED_COLUMNS],
                                   max_rows)
    except _FileError as exc:
        report.fatal = True
        report.add_error(CsvError(exc.row, None, exc.message))
        return [], report
    products: list[Product] = []
    first_row: dict[str, int] = {}
    for number, cells in rows:
        report.rows += 1
        values = _cells(header, number, cells, report)
        if values is None:
            continue
        if not _read_flags(number, values, report):
            continue
        try:
            product = Product.model_validate(values)
        except ValidationError as exc:
            for error in _validation_errors(number, exc):
                report.add_error(error)
            continue
        if product.sku in first_row:
            report.add_error(CsvError(number, "sku", f"{product.sku} is already on row {first_row[product.sku]}; "
                                                     "give each product once"))
            continue
        first_row[product.sku] = number
        products.append(product)
    return products, report


_FLAG_WORDS = {"1": True, "true": True, "yes": True, "y": True, "0": False, "false": False, "no": False, "n": False}
FLAG_COLUMNS = ("on_shelf", "available")


def _read_flags(number: int, values: dict[str, Any], report: CsvImportReport) -> bool:
    """Turn the yes/no cells into booleans in place (the model takes booleans only); False: reported."""
    ok = True
    for column in FLAG_COLUMNS:
        if column in values:
            flag = _FLAG_WORDS.get(str(values[column]).lower())
            if flag is None:
                report.add_error(CsvError(number, column, "must be 1 or 0 (true/false, yes/no)"))
                ok = False
            values[column] = flag
    return ok


async def import_products_csv(
    catalog: ProductCatalog, data: str | bytes, *, dry_run: bool = False, max_rows: int = MAX_ROWS
) -> CsvImportReport:
    """Import the good rows of a products file into the catalog; report the bad ones (see the module doc).

    With `dry_run` nothing is written: `changed` then lists the skus that would change.
    """
    products, report = parse_products_csv(data, max_rows=max_rows)
    if not products:
        return report
    if dry_run:
        rows = {p.sku: p.full_row() for p in products}
        stored = catalog.get_many(rows)
        report.changed = [sku for sku, row in rows.items() if sku not in stored or stored[sku].full_row() != row]
    else:
        report.changed = await catalog.upsert(products)
    report.imported = len(products)
    report.unchanged = report.imported - len(report.changed)
    return report


def _export(header: Sequence[str], rows: Iterator[Sequence[str | int | None]], bom: bool) -> str:
    out = io.StringIO()
    if bom:
        out.write(_BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def _product_rows(catalog: ProductCatalog) -> Iterator[Sequence[str | int | None]]:
    after: str | None = None
    while True:
        page = catalog.list_after(after, EXPORT_PAGE)
        for product in page:
            yield product.full_row()
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1].sku


def export_products_csv(catalog: ProductCatalog, *, bom: bool = True) -> str:
    """The whole catalog as CSV in sku order, every column, in the format import_products_csv reads."""
    return _export(COLUMNS, _product_rows(catalog), bom)


# -- tag pairings ---------------------------------------------------------------------------------


async def import_pairings_csv(
    catalog: ProductCatalog, data: str | bytes, *, max_rows: int = MAX_ROWS
) -> CsvImportReport:
    """Pair tags with products from a `tag_id,sku` file; the tag must exist (adopted), and so must the product.

    Tag ids are accepted in upper case and stored in lower case. `changed` lists the tag ids re-paired.
    """
    report = CsvImportReport()
    try:
        header, rows = _read_table(data, PAIRING_COLUMNS, (), max_rows)
    except _FileError as exc:
        report.fatal = True
        report.add_error(CsvError(exc.row, None, exc.message))
        return report
    pairs: list[tuple[str, str | None]] = []
    numbers: list[int] = []
    first_row: dict[str, int] = {}
    for number, cells in rows:
        report.rows += 1
        values = _cells(header, number, cells, report)
        if values is None:
            continue
        tag_id = values.get("tag_id", "").lower()
        if not tag_id:
            report.add_error(CsvError(number, "tag_id", "required, but the cell is empty"))
            continue
        if not TAG_ID_RE.fullmatch(tag_id):
            report.add_error(CsvError(number, "tag_id", f"{values['tag_id'][:40]!r} is not 16 hex characters"))
            continue
        if tag_id in first_row:
            report.add_error(CsvError(number, "tag_id", f"{tag_id} is already on row {first_row[tag_id]}; "
                                                        "give each tag once"))
            continue
        first_row[tag_id] = number
        pairs.append((tag_id, values.get("sku")))
        numbers.append(number)
    if not pairs:
        return report
    result: PairingResult = await catalog.pair_tags(pairs)
    rejected = set()
    for problem in result.problems:
        rejected.add(problem.index)
        report.add_error(CsvError(numbers[problem.index], problem.column, problem.message))
    report.errors.sort(key=lambda e: (e.row or 0))
    report.changed = result.changed
    report.imported = len(pairs) - len(rejected)
    report.unchanged = result.unchanged
    return report


def _pairing_rows(catalog: ProductCatalog) -> Iterator[Sequence[str | None]]:
    after: str | None = None
    while True:
        page = catalog.pairings_after(after, EXPORT_PAGE)
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1][0]


def export_pairings_csv(catalog: ProductCatalog, *, bom: bool = True) -> str:
    """Every tag with its product (empty when unpaired), in tag_id order: `tag_id,sku`."""
    return _export(PAIRING_COLUMNS, _pairing_rows(catalog), bom)


__all__ = [
    "CsvError",
    "CsvImportReport",
    "export_pairings_csv",
    "export_products_csv",
    "import_pairings_csv",
    "import_products_csv",
    "parse_products_csv",
]
