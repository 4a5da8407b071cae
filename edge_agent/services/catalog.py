"""The product catalog: what shelf tags and kiosks show, filled by the cloud (`catalog.upsert`) and by CSV.

Products live in the `products` table (migration 2). Prices are `Decimal` in Python and canonical decimal
strings in the database (`12.8`, `100`, `0.5`), never floats, so a price survives every round trip exactly.

Writes go through the database's single writer (group commit); reads run on the caller's thread against
the reader connection and are bounded by LIMIT. An upsert replaces each product whole (an optional field
left out is cleared), and a product whose content did not change is not rewritten: it keeps its `rev`,
and nobody is told about it, so no tag is re-rendered, sent or woken up for nothing.

`rev` is the catalog revision at which a row last changed: one catalog-wide counter (`counters.catalog_rev`)
bumped once per write that changes anything. It only grows, also across a delete and re-insert of the same
sku, so `(sku, rev)` names one content for ever (a render cache can key on it).

Listeners (`on_change`, `on_pairing_change`) run after the commit, in the caller's task: keep them short
(queue work, do not do it), a listener that raises is logged and the others still run.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, model_validator

from cloud_link.events import now_ms
from cloud_link.ports import DurableStore
from edge_agent.storage.like import like_escape

log = logging.getLogger(__name__)

# Patterns shared with the JSON Schemas of the catalog commands (cloud_link/schemas/command.catalog.*.json);
# tests/test_contract.py checks they are the same strings. They are applied with `fullmatch`.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
DECIMAL_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,4})?$"
BARCODE_PATTERN = r"^[0-9]{4,20}$"
LOCALE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
# Any script, no control characters (C0, DEL, C1), at least one character that is not white space.
TEXT_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
TAG_ID_PATTERN = r"^[0-9a-f]{16}$"
# The product picture the kiosk page loads (the agent never fetches it): https only, so a kiosk on the store's
# network never mixes content, and nothing that could break out of an attribute or a CSS url().
IMAGE_URL_PATTERN = r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&*+,;=:@%/?-]*)?$"

SKU_RE = re.compile(SKU_PATTERN)
CURRENCY_RE = re.compile(CURRENCY_PATTERN)
DECIMAL_RE = re.compile(DECIMAL_PATTERN)
BARCODE_RE = re.compile(BARCODE_PATTERN)
LOCALE_RE = re.compile(LOCALE_PATTERN)
TEXT_RE = re.compile(TEXT_PATTERN)
TAG_ID_RE = re.compile(TAG_ID_PATTERN)
IMAGE_URL_RE = re.compile(IMAGE_URL_PATTERN)

NAME_MAX = 200
UNIT_LABEL_MAX = 32
PROMOTION_MAX = 100
ORIGIN_MAX = 64
CATEGORY_MAX = 64
IMAGE_URL_MAX = 512
MAX_DECIMAL = Decimal(10) ** 9
MAX_DECIMALS = 4

# Products per write transaction: one catalog.upsert command (at most 1000) is atomic; a large CSV import
# is split so that it never holds the single writer (and every other producer) for long.
WRITE_CHUNK = 1000
MAX_PAGE = 1000

# The first eleven (BASE_COLUMNS, `Product.to_row`) are the columns of migration 2; the kiosk's four
# (`Product.kiosk_row`) came with migration 7. COLUMNS is the whole stored product, also the CSV columns.
BASE_COLUMNS = (
    "sku", "name", "price", "currency", "unit_price", "unit_label", "former_price", "promotion",
    "barcode", "origin", "locale",
)
KIOSK_COLUMNS = ("category", "image_url", "on_shelf", "available")
COLUMNS = BASE_COLUMNS + KIOSK_COLUMNS
# Queries spelled out whole (no SQL built from strings). The product columns in COLUMNS order come first.
_Q_BY_SKUS = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available "
    "FROM products WHERE sku IN (SELECT value FROM json_each(?))"
)
_Q_ENTRY = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available, rev, updated_ms FROM products WHERE sku = ?"
)
_Q_BY_BARCODES = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available "
    "FROM products WHERE barcode IN (SELECT value FROM json_each(?)) ORDER BY sku LIMIT 1"
)
_Q_SEARCH = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available "
    "FROM products WHERE name LIKE :contains ESCAPE '\\' OR sku LIKE :prefix ESCAPE '\\' "
    "OR barcode LIKE :prefix ESCAPE '\\' "
    "ORDER BY (sku = :text OR IFNULL(barcode, '') = :text) DESC, name, sku LIMIT :limit"
)
_Q_PAGE = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available "
    "FROM products ORDER BY sku LIMIT ? OFFSET ?"
)
_Q_AFTER = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available "
    "FROM products WHERE sku > ? ORDER BY sku LIMIT ?"
)
# The kiosk's browsing (categories, search within a category, paging). NULL parameters mean "any".
_Q_BROWSE = (
    "SELECT sku, name, price, currency, unit_price, unit_label, former_price, promotion, barcode, origin, locale, "
    "category, image_url, on_shelf, available FROM products "
    "WHERE (:category IS NULL OR category = :category) AND (:text IS NULL OR name LIKE :contains ESCAPE '\\' "
    "OR sku LIKE :prefix ESCAPE '\\' OR barcode LIKE :prefix ESCAPE '\\') "
    "ORDER BY (:text IS NOT NULL AND (sku = :text OR IFNULL(barcode, '') = :text)) DESC, name, sku "
    "LIMIT :limit OFFSET :offset"
)
_Q_BROWSE_COUNT = (
    "SELECT COUNT(*) FROM products "
    "WHERE (:category IS NULL OR category = :category) AND (:text IS NULL OR name LIKE :contains ESCAPE '\\' "
    "OR sku LIKE :prefix ESCAPE '\\' OR barcode LIKE :prefix ESCAPE '\\')"
)
_Q_CATEGORIES = (
    "SELECT category, COUNT(*) FROM products WHERE category IS NOT NULL GROUP BY category ORDER BY category LIMIT ?"
)
MAX_CATEGORIES = 500

Listener = Callable[[list[str]], Awaitable[None] | None]
Row = tuple[str | int | None, ...]


# -- validation -----------------------------------------------------------------------------------


def gtin_check_digit_ok(code: str) -> bool:
    """GS1 mod-10 check digit (EAN-13, UPC-A, EAN-8, GTIN-14): weights 3,1,3,... from the right of the body."""
    digits = [ord(c) - 48 for c in code]
    *body, check = digits
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def canonical_decimal(value: Decimal) -> Decimal:
    """Drop trailing zeros without going to exponent form: 12.80 -> 12.8, 100 -> 100, -0 -> 0."""
    if value.is_zero():
        return Decimal(0)
    return Decimal(format(value.normalize(), "f"))


def decimal_text(value: Decimal) -> str:
    """The database and CSV form: plain digits, never an exponent."""
    return format(value, "f")


def _parse_decimal(value: object) -> Decimal:
    if isinstance(value, str):
        if not DECIMAL_RE.fullmatch(value):
            raise ValueError(
                'must be a decimal string such as "12.80": not negative, at most 9 digits before the point '
                f"and {MAX_DECIMALS} after it"
            )
        return canonical_decimal(Decimal(value))
    if isinstance(value, Decimal):  # from Python code; the wire only carries strings
        if not value.is_finite() or value < 0 or value >= MAX_DECIMAL:
            raise ValueError("must be a finite amount, 0 <= amount < 1,000,000,000")
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
            raise ValueError(f"at most {MAX_DECIMALS} decimals")
        return canonical_decimal(value)
    # A JSON number would arrive as a float, and floats do not hold cents exactly.
    raise ValueError('must be a decimal string such as "12.80", not a number')


def _check_text(max_len: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise ValueError(f"at most {max_len} characters, got {len(value)}")
        if not TEXT_RE.fullmatch(value):
            raise ValueError("must contain something besides white space, and no control characters")
        return value

    return check


def _check_pattern(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return check


def _check_image_url(value: str) -> str:
    if len(value) > IMAGE_URL_MAX or not IMAGE_URL_RE.fullmatch(value):
        raise ValueError(f"must be an https:// URL of at most {IMAGE_URL_MAX} characters, without spaces or quotes")
    return value


def _check_barcode(value: str) -> str:
    if not BARCODE_RE.fullmatch(value):
        raise ValueError("must be 4 to 20 digits (EAN-13, UPC-A, EAN-8 or a store code)")
    if len(value) in (12, 13) and not gtin_check_digit_ok(value):
        kind = "UPC-A" if len(value) == 12 else "EAN-13"
        raise ValueError(f"{kind} check digit is wrong")
    return value


Amount = Annotated[
    Decimal,
    PlainValidator(_parse_decimal),
    PlainSerializer(decimal_text, return_type=str, when_used="json"),
]
Sku = Annotated[str, AfterValidator(_check_pattern(SKU_RE, "1-64 characters of A-Z a-z 0-9 . _ : -, "
                                                           "starting with a letter or digit"))]
Currency = Annotated[str, AfterValidator(_check_pattern(CURRENCY_RE, "an ISO 4217 code of 3 capital letters"))]
Barcode = Annotated[str, AfterValidator(_check_barcode)]
Locale = Annotated[str, AfterValidator(_check_pattern(LOCALE_RE, "a language tag such as zh-CN or en"))]
TagId = Annotated[str, AfterValidator(_check_pattern(TAG_ID_RE, "16 lowercase hex characters"))]


class Product(BaseModel):
    """One product as the catalog holds it; immutable, validated on construction (pydantic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Sku = Field(description="The retailer's stock-keeping unit, the catalog's key.")
    name: Annotated[str, AfterValidator(_check_text(NAME_MAX))] = Field(
        description="Display name, any script, 1-200 characters."
    )
    price: Amount = Field(description='Shelf price as a decimal string ("12.80"), at most 4 decimals.')
    currency: Currency = Field(description="ISO 4217 code: CNY, EUR, USD ...")
    unit_price: Amount | None = Field(None, description="Price per unit_label; given together with unit_label.")
    unit_label: Annotated[str, AfterValidator(_check_text(UNIT_LABEL_MAX))] | None = Field(
        None, description='What unit_price is per: "500 g", "kg", "100 ml", "斤".'
    )
    former_price: Amount | None = Field(None, description="The struck-through former price, if shown.")
    promotion: Annotated[str, AfterValidator(_check_text(PROMOTION_MAX))] | None = Field(
        None, description='Promotion text for the tag: "第二件半价", "2 for 1".'
    )
    barcode: Barcode | None = Field(
        None, description="Digits only; EAN-13 and UPC-A (13 and 12 digits) must have a valid check digit."
    )
    origin: Annotated[str, AfterValidator(_check_text(ORIGIN_MAX))] | None = Field(
        None, description="Country or region of origin, free text."
    )
    locale: Locale | None = Field(None, description="Language of the texts (zh-CN, en); the store's when absent.")
    category: Annotated[str, AfterValidator(_check_text(CATEGORY_MAX))] | None = Field(
        None, description='Kiosk category, any script, 1-64 characters: "乳制品 Dairy", "食品/乳制品".'
    )
    image_url: Annotated[str, AfterValidator(_check_image_url)] | None = Field(
        None, description="https URL of the product picture, shown by the kiosk page; never fetched by the agent."
    )
    # Strict like the JSON Schema (a boolean, never "yes" or 1); CSV cells are converted by catalog_csv.
    on_shelf: bool = Field(
        True, strict=True, description='On the store\'s shelves; false: online only ("endless aisle").'
    )
    available: bool = Field(
        True, strict=True, description="Can be ordered; false: shown but not orderable (out of stock)."
    )

    @model_validator(mode="after")
    def _unit_price_has_a_unit(self) -> Product:
        if (self.unit_price is None) != (self.unit_label is None):
            raise ValueError("unit_price and unit_label go together: give both or neither")
        return self

    def to_row(self) -> Row:
        """The product as the first `products` columns (BASE_COLUMNS), decimals as canonical strings."""
        return (
            self.sku,
            self.name,
            decimal_text(self.price),
            self.currency,
            None if self.unit_price is None else decimal_text(self.unit_price),
            self.unit_label,
            None if self.former_price is None else decimal_text(self.former_price),
            self.promotion,
            self.barcode,
            self.origin,
            self.locale,
        )

    def kiosk_row(self) -> Row:
        """The columns of migration 7 (KIOSK_COLUMNS), booleans as 0/1 like SQLite returns them."""
        return (self.category, self.image_url, int(self.on_shelf), int(self.available))

    def full_row(self) -> Row:
        """Every stored column (COLUMNS): what an upsert compares and writes, and what CSV exports."""
        return self.to_row() + self.kiosk_row()

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Product:
        """Rebuild from stored columns without validating again (they were validated on the way in)."""
        return cls.model_construct(
            sku=row[0],
            name=row[1],
            price=Decimal(row[2]),
            currency=row[3],
            unit_price=None if row[4] is None else Decimal(row[4]),
            unit_label=row[5],
            former_price=None if row[6] is None else Decimal(row[6]),
            promotion=row[7],
            barcode=row[8],
            origin=row[9],
            locale=row[10],
            category=row[11],
            image_url=row[12],
            on_shelf=bool(row[13]),
            available=bool(row[14]),
        )


@dataclass(frozen=True)
class CatalogEntry:
    product: Product
    rev: int
    updated_ms: int


@dataclass(frozen=True)
class PairingProblem:
    index: int  # position in the list given to pair_tags
    column: str  # "tag_id" or "sku"
    message: str


@dataclass(frozen=True)
class PairingResult:
    changed: builtins.list[str]  # tag ids whose product changed
    unchanged: int
    problems: builtins.list[PairingProblem]


# -- the service ----------------------------------------------------------------------------------


def _next_rev(conn: sqlite3.Connection) -> int:
    conn.execute(
        "INSERT INTO counters(name, value) VALUES ('catalog_rev', 1) "
        "ON CONFLICT(name) DO UPDATE SET value = value + 1"
    )
    return int(conn.execute("SELECT value FROM counters WHERE name = 'catalog_rev'").fetchone()[0])


def _clamp(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


class ProductCatalog:
    def __init__(self, db: DurableStore) -> None:
        self._db = db
        self._listeners: builtins.list[Listener] = []
        self._pairing_listeners: builtins.list[Listener] = []

    # -- listeners ----------------------------------------------------------------------------

    def on_change(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(skus)` after each commit that changed (or deleted) products; returns an unsubscribe."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def on_pairing_change(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(tag_ids)` after tags got another product or none: `pair_tags`, or their product deleted.

        Needed because deleting a product clears `tags.sku` (ON DELETE SET NULL): by the time `on_change`
        listeners hear of the deleted sku, its tags can no longer be found by it.
        """
        self._pairing_listeners.append(callback)
        return lambda: self._pairing_listeners.remove(callback) if callback in self._pairing_listeners else None

    async def _notify(self, listeners: Sequence[Listener], keys: builtins.list[str]) -> None:
        if not keys:
            return
        for listener in builtins.list(listeners):
            try:
                outcome = listener(builtins.list(keys))
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("catalog listener %r failed on %d keys", listener, len(keys))

    # -- writes -------------------------------------------------------------------------------

    async def upsert(self, products: Sequence[Product]) -> builtins.list[str]:
        """Insert or replace products; returns the skus whose content changed (unchanged rows are not written).

        A sku given twice counts once, with its last content. Up to WRITE_CHUNK products are one transaction.
        """
        latest: dict[str, Row] = {}
        for product in products:
            latest[product.sku] = product.full_row()
        rows = builtins.list(latest.values())
        changed: builtins.list[str] = []
        for start in range(0, len(rows), WRITE_CHUNK):
            chunk = rows[start : start + WRITE_CHUNK]
            changed.extend(await self._db.write(functools.partial(self._upsert_job, rows=chunk)))
        await self._notify(self._listeners, changed)
        return changed

    @staticmethod
    def _upsert_job(conn: sqlite3.Connection, rows: builtins.list[Row]) -> builtins.list[str]:
        skus = json.dumps([row[0] for row in rows])
        stored = {
            r[0]: tuple(r)
            for r in conn.execute(_Q_BY_SKUS, (skus,))
        }
        dirty = [row for row in rows if stored.get(row[0]) != row]
        if not dirty:
            return []
        rev = _next_rev(conn)
        now = now_ms()
        conn.executemany(
            "INSERT INTO products(sku, name, price, currency, unit_price, unit_label, former_price, promotion, "
            "barcode, origin, locale, category, image_url, on_shelf, available, rev, updated_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(sku) DO UPDATE SET name = excluded.name, price = excluded.price, "
            "currency = excluded.currency, unit_price = excluded.unit_price, unit_label = excluded.unit_label, "
            "former_price = excluded.former_price, promotion = excluded.promotion, barcode = excluded.barcode, "
            "origin = excluded.origin, locale = excluded.locale, category = excluded.category, "
            "image_url = excluded.image_url, on_shelf = excluded.on_shelf, available = excluded.available, "
            "rev = excluded.rev, updated_ms = excluded.updated_ms",
            [(*row, rev, now) for row in dirty],
        )
        return [str(row[0]) for row in dirty]

    async def delete(self, skus: Iterable[str]) -> builtins.list[str]:
        """Delete products; returns the skus that existed. Their tags become unpaired (see on_pairing_change)."""
        wanted = builtins.list(dict.fromkeys(skus))
        deleted: builtins.list[str] = []
        unpaired: builtins.list[str] = []
        for start in range(0, len(wanted), WRITE_CHUNK):
            chunk = json.dumps(wanted[start : start + WRITE_CHUNK])
            gone, tags = await self._db.write(functools.partial(self._delete_job, skus_json=chunk))
            deleted.extend(gone)
            unpaired.extend(tags)
        await self._notify(self._listeners, deleted)
        await self._notify(self._pairing_listeners, unpaired)
        return deleted

    @staticmethod
    def _delete_job(conn: sqlite3.Connection, skus_json: str) -> tuple[builtins.list[str], builtins.list[str]]:
        gone = [str(r[0]) for r in conn.execute(
            "SELECT sku FROM products WHERE sku IN (SELECT value FROM json_each(?)) ORDER BY sku", (skus_json,)
        )]
        if not gone:
            return [], []
        tags = [str(r[0]) for r in conn.execute(
            "SELECT tag_id FROM tags WHERE sku IN (SELECT value FROM json_each(?)) ORDER BY tag_id", (skus_json,)
        )]
        # The foreign key (ON DELETE SET NULL) unpairs the tags.
        conn.execute("DELETE FROM products WHERE sku IN (SELECT value FROM json_each(?))", (skus_json,))
        return gone, tags

    async def pair_tags(self, pairs: Sequence[tuple[str, str | None]]) -> PairingResult:
        """Pair tags with products (`None` unpairs). Unknown tags or products are reported, not fatal.

        Existence is checked inside the write transaction, so a product deleted meanwhile cannot be paired.
        """
        problems: builtins.list[PairingProblem] = []
        valid: builtins.list[tuple[int, str, str | None]] = []
        for index, (tag_id, sku) in enumerate(pairs):
            if not TAG_ID_RE.fullmatch(tag_id):
                problems.append(PairingProblem(index, "tag_id", f"{tag_id!r} is not 16 lowercase hex characters"))
            elif sku is not None and not SKU_RE.fullmatch(sku):
                problems.append(PairingProblem(index, "sku", f"{sku!r} is not a valid sku"))
            else:
                valid.append((index, tag_id, sku))

        def job(conn: sqlite3.Connection) -> tuple[builtins.list[str], int, builtins.list[PairingProblem]]:
            changed: builtins.list[str] = []
            unchanged = 0
            found: builtins.list[PairingProblem] = []
            for index, tag_id, sku in valid:
                row = conn.execute("SELECT sku, adopted FROM tags WHERE tag_id = ?", (tag_id,)).fetchone()
                if row is None:
                    found.append(PairingProblem(index, "tag_id", f"no tag {tag_id}: no base station has reported it"))
                    continue
                if sku is not None and conn.execute("SELECT 1 FROM products WHERE sku = ?", (sku,)).fetchone() is None:
                    found.append(PairingProblem(index, "sku", f"no product {sku} in the catalog"))
                    continue
                if row[0] == sku and (row[1] or sku is None):
                    unchanged += 1
                    continue
                # A pairing is the technician's (or the cloud's) explicit decision: it adopts a discovered tag.
                conn.execute("UPDATE tags SET sku = ?, adopted = adopted OR ? WHERE tag_id = ?",
                             (sku, sku is not None, tag_id))
                if tag_id not in changed:
                    changed.append(tag_id)
            return changed, unchanged, found

        changed, unchanged, found = await self._db.write(job) if valid else ([], 0, [])
        await self._notify(self._pairing_listeners, changed)
        return PairingResult(changed, unchanged, sorted(problems + found, key=lambda p: p.index))

    # -- reads --------------------------------------------------------------------------------

    def get(self, sku: str) -> Product | None:
        entry = self.get_entry(sku)
        return None if entry is None else entry.product

    def get_entry(self, sku: str) -> CatalogEntry | None:
        """The product with its revision and the time it last changed."""
        row = self._db.read(
            lambda conn: conn.execute(_Q_ENTRY, (sku,)).fetchone()
        )
        if row is None:
            return None
        return CatalogEntry(Product.from_row(row), int(row[15]), int(row[16]))

    def get_many(self, skus: Iterable[str]) -> dict[str, Product]:
        """The products of those skus that exist (at most MAX_PAGE per call are looked up)."""
        wanted = json.dumps(builtins.list(dict.fromkeys(skus))[:MAX_PAGE])
        rows = self._db.read(
            lambda conn: conn.execute(_Q_BY_SKUS, (wanted,)).fetchall()
        )
        return {row[0]: Product.from_row(row) for row in rows}

    def find_by_barcode(self, code: str) -> Product | None:
        """The product with this barcode (lowest sku if several share it).

        A UPC-A code read as a 13-digit EAN (a leading 0) finds the 12-digit UPC-A and vice versa.
        """
        code = code.strip()
        if not BARCODE_RE.fullmatch(code):
            return None
        forms = [code]
        if len(code) == 13 and code.startswith("0"):
            forms.append(code[1:])
        elif len(code) == 12:
            forms.append("0" + code)
        row = self._db.read(lambda conn: conn.execute(_Q_BY_BARCODES, (json.dumps(forms),)).fetchone())
        return None if row is None else Product.from_row(row)

    def search(self, text: str, limit: int = 20) -> builtins.list[Product]:
        """Products whose name contains `text`, or whose sku or barcode starts with it; exact hits first."""
        text = text.strip()[:NAME_MAX]
        if not text:
            return []
        pattern = like_escape(text)
        rows = self._db.read(
            lambda conn: conn.execute(
                _Q_SEARCH,
                {"contains": f"%{pattern}%", "prefix": f"{pattern}%", "text": text, "limit": _clamp(limit)},
            ).fetchall()
        )
        return [Product.from_row(row) for row in rows]

    def browse(
        self, *, category: str | None = None, text: str | None = None, offset: int = 0, limit: int = 24
    ) -> tuple[builtins.list[Product], int]:
        """A page of products in one category (None: all) matching `text` like `search`, and how many match.

        Name order, exact sku/barcode hits first. Any script: `牛奶` finds "光明 鲜牛奶" (LIKE is a substring
        match on code points; it ignores case for ASCII letters only).
        """
        text = (text or "").strip()[:NAME_MAX] or None
        pattern = None if text is None else like_escape(text)
        params: dict[str, Any] = {
            "category": category,
            "text": text,
            "contains": None if pattern is None else f"%{pattern}%",
            "prefix": None if pattern is None else f"{pattern}%",
            "limit": _clamp(limit),
            "offset": max(0, int(offset)),
        }

        def query(conn: sqlite3.Connection) -> tuple[builtins.list[Any], int]:
            rows = conn.execute(_Q_BROWSE, params).fetchall()
            total = int(conn.execute(_Q_BROWSE_COUNT, params).fetchone()[0])
            return rows, total

        rows, total = self._db.read(query)
        return [Product.from_row(row) for row in rows], total

    def categories(self) -> builtins.list[tuple[str, int]]:
        """Every category in use with its number of products, in name order (at most MAX_CATEGORIES)."""
        rows = self._db.read(lambda conn: conn.execute(_Q_CATEGORIES, (MAX_CATEGORIES,)).fetchall())
        return [(str(row[0]), int(row[1])) for row in rows]

    def list(self, offset: int = 0, limit: int = 100) -> builtins.list[Product]:
        """A page of products in sku order."""
        rows = self._db.read(
            lambda conn: conn.execute(_Q_PAGE, (_clamp(limit), max(0, int(offset)))).fetchall()
        )
        return [Product.from_row(row) for row in rows]

    def list_after(self, after: str | None, limit: int = 100) -> builtins.list[Product]:
        """The next page in sku order after `after` (None: from the start); stable under concurrent writes."""
        rows = self._db.read(
            lambda conn: conn.execute(_Q_AFTER, (after or "", _clamp(limit))).fetchall()
        )
        return [Product.from_row(row) for row in rows]

    def pairings_after(self, after: str | None, limit: int = 100) -> builtins.list[tuple[str, str | None]]:
        """`(tag_id, sku)` of every tag in tag_id order after `after` (sku None: not paired)."""
        rows = self._db.read(
            lambda conn: conn.execute(
                "SELECT tag_id, sku FROM tags WHERE tag_id > ? ORDER BY tag_id LIMIT ?", (after or "", _clamp(limit))
            ).fetchall()
        )
        return [(str(row[0]), None if row[1] is None else str(row[1])) for row in rows]

    def count(self) -> int:
        return int(self._db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]))
