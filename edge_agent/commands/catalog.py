"""The catalog's cloud commands: `catalog.upsert` and `catalog.delete` (docs/cloud-contract.md section 4.1).

Payload schemas: `cloud_link/schemas/command.catalog.upsert.json` and `command.catalog.delete.json`, which
tests/test_commands_catalog.py checks against these models. Validation errors reach the cloud as
`invalid_payload` with the field path (`products.3.price: ...`) through the CommandIntake; a command that
passes validation is applied whole (one transaction) or not at all.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandRegistry
from edge_agent.services.catalog import Product, ProductCatalog, Sku

MAX_PER_COMMAND = 1000


class CatalogUpsertPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    products: list[Product] = Field(
        min_length=1,
        max_length=MAX_PER_COMMAND,
        description="Products to insert or replace whole (optional fields left out are cleared); "
        "a sku given twice counts once, with its last content.",
    )


class CatalogDeletePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skus: list[Sku] = Field(
        min_length=1,
        max_length=MAX_PER_COMMAND,
        description="Products to delete; unknown skus are counted in not_found. Their tags become unpaired.",
    )


def register_catalog_commands(registry: CommandRegistry, catalog: ProductCatalog) -> None:
    async def upsert(payload: CatalogUpsertPayload) -> dict[str, Any]:
        changed = await catalog.upsert(payload.products)
        distinct = len({p.sku for p in payload.products})
        return {"changed": changed, "unchanged": distinct - len(changed)}

    async def delete(payload: CatalogDeletePayload) -> dict[str, Any]:
        deleted = await catalog.delete(payload.skus)
        return {"deleted": deleted, "not_found": len(set(payload.skus)) - len(deleted)}

    registry.register(
        "catalog.upsert",
        CatalogUpsertPayload,
        upsert,
        timeout=60,
        description="Insert or replace up to 1000 products; unchanged ones are not rewritten.",
    )
    registry.register(
        "catalog.delete",
        CatalogDeletePayload,
        delete,
        timeout=60,
        description="Delete up to 1000 products by sku.",
    )
