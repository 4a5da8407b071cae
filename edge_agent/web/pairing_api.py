"""Pairing tags with products (technician), and the catalog and pairings as CSV.

The pairing page is driven by a keyboard-wedge scanner (it types fast and ends with Enter): the technician
scans the tag's code, then the product's. `GET /api/pairing/lookup?code=` says what a scanned code is:
- a tag: its id (16 hex characters, any case, separators such as ':' or '-' ignored: what is printed on the
  tag's case), its scan code, or the scan link its QR code holds (`.../s/<scan code>`);
- a product: its barcode (EAN-13/UPC-A, either form) or its sku.
`POST /api/pairing` pairs through `ProductCatalog.pair_tags`, the very path of the cloud's `tag.pair`
command: the tag is adopted if it was only discovered, re-rendered and sent at technician priority, and the
usual `tag.*` events follow. `GET /api/pairing/preview` renders what a tag will show with a product (the label
service's renderer, the same request an update makes), before anything is sent.

CSV (edge_agent.services.catalog_csv): exports with a byte-order mark (Excel), imports of UTF-8 with or without
one, the request body being the file itself, at most MAX_UPLOAD_BYTES. Good rows are applied, bad rows reported
(row, column, message); a file that cannot be read as a table imports nothing (422).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from devices.labels.registry import TagRecord, TagRegistry
from edge_agent.services.catalog import Product, ProductCatalog, decimal_text
from edge_agent.services.catalog_csv import (
    CsvImportReport,
    export_pairings_csv,
    export_products_csv,
    import_pairings_csv,
    import_products_csv,
)
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.auth import require
from edge_agent.web.discovery_api import tag_json

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_CODE = 512
TAG_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SEPARATORS = re.compile(r"[\s:.\-]")
_SCAN_LINK = re.compile(r"/s/([0-9a-z]{4,32})/?(?:[?#].*)?$")
_CSV_BODY = {"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}}


def _refuse(status: int, error: str, message: str) -> HTTPException:
    return HTTPException(status, {"error": error, "message": message})


def product_json(product: Product) -> dict[str, Any]:
    def money(value: Decimal | None) -> str | None:
        return None if value is None else decimal_text(value)

    return {
        "sku": product.sku,
        "name": product.name,
        "price": money(product.price),
        "currency": product.currency,
        "unit_price": money(product.unit_price),
        "unit_label": product.unit_label,
        "barcode": product.barcode,
        "category": product.category,
    }


class PairBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag_id: str = Field(pattern=r"^[0-9a-fA-F]{16}$", description="The tag (16 hex characters).")
    sku: str | None = Field(max_length=64, description="The product; null unpairs the tag.")


def find_tag(tags: TagRegistry, code: str) -> TagRecord | None:
    """The tag a scanned code names: its id as printed, its scan link, or its scan code."""
    code = code.strip()
    bare = _SEPARATORS.sub("", code).lower()
    if TAG_ID_RE.fullmatch(bare):
        rec = tags.get(bare)
        if rec is not None:
            return rec
    link = _SCAN_LINK.search(code)
    if link is not None:
        return tags.by_scan_code(link.group(1).lower())
    if 4 <= len(bare) <= 32 and bare.isalnum():
        return tags.by_scan_code(bare)
    return None


def find_product(catalog: ProductCatalog, code: str) -> Product | None:
    code = code.strip()
    if not code:
        return None
    return catalog.find_by_barcode(code) or catalog.get(code)


class Pairing:
    def __init__(self, admin: AdminServices) -> None:
        self.admin = admin

    @property
    def tags(self) -> TagRegistry:
        return self.admin.labels.registry if self.admin.labels is not None else self.admin.tags

    def tag_view(self, rec: TagRecord) -> dict[str, Any]:
        view = tag_json(rec)
        product = self.admin.catalog.get(rec.sku) if rec.sku else None
        view["product"] = product_json(product) if product else None
        return view

    async def pair(self, body: PairBody) -> dict[str, Any]:
        tag_id = body.tag_id.lower()
        result = await self.admin.catalog.pair_tags([(tag_id, body.sku)])
        for problem in result.problems:
            if problem.column == "tag_id":
                raise _refuse(404, "unknown_tag", problem.message)
            if "no product" in problem.message:
                raise _refuse(404, "unknown_product", problem.message)
            raise _refuse(422, "invalid_sku", problem.message)
        rec = self.tags.get(tag_id)
        assert rec is not None
        return {"tag": self.tag_view(rec), "changed": bool(result.changed)}

    async def preview(self, tag_id: str, sku: str, scale: int) -> bytes:
        labels = self.admin.labels
        if labels is None:
            raise _refuse(409, "no_labels", "the agent drives no labels (no base station configured)")
        if self.tags.get(tag_id) is None:
            raise _refuse(404, "unknown_tag", f"no tag {tag_id}")
        if self.admin.catalog.get(sku) is None:
            raise _refuse(404, "unknown_product", f"no product {sku} in the catalog")
        png = await labels.render_preview_png(tag_id, sku, scale=scale)
        if png is None:
            raise _refuse(422, "cannot_render", f"tag {tag_id} is of a model the agent cannot draw for")
        return png


async def read_upload(request: Request) -> bytes:
    """The request body, refused past MAX_UPLOAD_BYTES without reading the rest."""
    too_large = _refuse(413, "too_large", f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; split it")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def report_answer(report: CsvImportReport) -> dict[str, Any]:
    if report.fatal:
        message = report.errors[0].message if report.errors else "the file cannot be read as a table"
        raise HTTPException(422, {"error": "csv_unreadable", "message": message, "report": report.to_dict()})
    return report.to_dict()


def _csv(text: str, filename: str) -> Response:
    return Response(
        text.encode("utf-8"), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def pairing_router(admin: AdminServices) -> APIRouter:
    pairing = Pairing(admin)
    catalog = admin.catalog
    router = APIRouter(tags=["pairing"], dependencies=[Depends(require(Role.TECHNICIAN))])

    @router.get("/api/pairing/lookup", summary="What a scanned or typed code is: a tag, a product, or nothing")
    def lookup(code: Annotated[str, Query(min_length=1, max_length=MAX_CODE)]) -> dict[str, Any]:
        tag = find_tag(pairing.tags, code)
        product = find_product(catalog, code)
        return {
            "code": code,
            "tag": pairing.tag_view(tag) if tag else None,
            "product": product_json(product) if product else None,
        }

    @router.get("/api/pairing/products", summary="Products by name (any script), sku or barcode prefix")
    def products(
        q: Annotated[str, Query(max_length=200)] = "", limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> dict[str, Any]:
        return {"products": [product_json(p) for p in catalog.search(q, limit)]}

    @router.get("/api/pairing/tags", summary="Tags by id, scan code or sku prefix")
    def tags(
        q: Annotated[str, Query(max_length=64)] = "", limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> dict[str, Any]:
        return {"tags": [pairing.tag_view(t) for t in pairing.tags.search(q, limit)]}

    @router.post("/api/pairing", summary="Pair a tag with a product (or unpair it), as the cloud's tag.pair does")
    async def pair(body: PairBody) -> dict[str, Any]:
        return await pairing.pair(body)

    @router.get(
        "/api/pairing/preview", summary="The picture a tag will show with a product, as PNG",
        response_class=Response, responses={200: {"content": {"image/png": {}}}},
    )
    async def preview(
        tag_id: Annotated[str, Query(pattern=r"^[0-9a-fA-F]{16}$")],
        sku: Annotated[str, Query(min_length=1, max_length=64)],
        scale: Annotated[int, Query(ge=1, le=4)] = 2,
    ) -> Response:
        png = await pairing.preview(tag_id.lower(), sku, scale)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get("/api/pairing/export.csv", summary="Every tag with its product: tag_id,sku",
                response_class=Response, responses={200: {"content": {"text/csv": {}}}})
    def export_pairings() -> Response:
        return _csv(export_pairings_csv(catalog), "pairings.csv")

    @router.get("/api/catalog/export.csv", summary="The whole catalog, every column",
                response_class=Response, responses={200: {"content": {"text/csv": {}}}})
    def export_catalog() -> Response:
        return _csv(export_products_csv(catalog), "catalog.csv")

    @router.post("/api/pairing/import", summary="Pair tags from a tag_id,sku CSV file (the body)",
                 openapi_extra=_CSV_BODY)
    async def import_pairings(request: Request) -> dict[str, Any]:
        return report_answer(await import_pairings_csv(catalog, await read_upload(request)))

    @router.post("/api/catalog/import", summary="Add or update products from a CSV file (the body)",
                 openapi_extra=_CSV_BODY)
    async def import_catalog(request: Request) -> dict[str, Any]:
        return report_answer(await import_products_csv(catalog, await read_upload(request)))

    return router
