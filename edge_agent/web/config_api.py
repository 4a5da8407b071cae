"""The configuration as JSON API (admin only): read, check, save, and the kept versions.

Saving validates exactly like `edge-agent check-config` and writes atomically (services/config_store.py).
The agent applies nothing while running, so every answer to a save lists the keys that differ from the
running configuration under `restart_needed`, and `applied_live` is empty. An agent built from an object
(no configuration file) answers 404 with `no_config_file`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.config import redacted
from edge_agent.services.config_store import (
    MAX_CONFIG_BYTES,
    ConfigConflictError,
    ConfigInvalidError,
    ConfigStore,
    ConfigStoreError,
    ConfigUnavailableError,
    ConfigWriteError,
    VersionNotFoundError,
    changed_keys,
    redact,
)
from edge_agent.services.web_users import Role
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.auth import require


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckBody(_Body):
    toml: str = Field(max_length=MAX_CONFIG_BYTES, description="The configuration file's text (TOML).")


class SaveBody(_Body):
    toml: str = Field(max_length=MAX_CONFIG_BYTES, description="The configuration file's new text (TOML).")
    base_version: str = Field(
        min_length=64, max_length=64, description="`version` of the text this edit started from (GET /api/config)."
    )


class RestoreBody(_Body):
    base_version: str = Field(min_length=64, max_length=64, description="`version` of the current file.")


RESTART_NOTE = (
    "The agent applies configuration changes at start-up only: restart it (systemctl restart edge-agent) "
    "for the keys under restart_needed to take effect."
)


def _http_error(exc: ConfigStoreError) -> HTTPException:
    if isinstance(exc, ConfigInvalidError):
        return HTTPException(
            422, {"error": exc.error, "message": str(exc), "problems": [p.as_dict() for p in exc.problems]}
        )
    if isinstance(exc, ConfigConflictError):
        return HTTPException(409, {"error": exc.error, "message": str(exc), "current_version": exc.current_version})
    if isinstance(exc, VersionNotFoundError | ConfigUnavailableError):
        return HTTPException(404, {"error": exc.error, "message": str(exc)})
    if isinstance(exc, ConfigWriteError):
        return HTTPException(503, {"error": exc.error, "message": str(exc)})
    return HTTPException(400, {"error": exc.error, "message": str(exc)})


_NO_FILE = HTTPException(
    404,
    {
        "error": "no_config_file",
        "message": "this agent was started from a configuration object, not a file: there is nothing to edit",
    },
)


def config_router(admin: AdminServices, store: ConfigStore | None = None) -> APIRouter:
    """Routes are plain `def`: file I/O and fsync run in FastAPI's worker threads, off the event loop."""
    router = APIRouter(prefix="/api/config", tags=["configuration"], dependencies=[Depends(require(Role.ADMIN))])
    if store is None and admin.config_path is not None:
        store = ConfigStore(admin.config_path, admin.config)

    def the_store() -> ConfigStore:
        if store is None:
            raise _NO_FILE
        return store

    @router.get("", responses={404: {}})
    def get_config() -> dict[str, Any]:
        """The file's text, its version (for `base_version`), the file as parsed (secret-looking keys
        redacted) with any problems it has, and the running configuration."""
        s = the_store()
        try:
            current = s.read()
        except ConfigStoreError as exc:
            raise _http_error(exc) from None
        parsed, problems = s.check(current.text)
        return {
            "path": str(s.path),
            "toml": current.text,
            "version": current.version,
            "parsed": redact(parsed.model_dump(mode="json")) if parsed is not None else None,
            "problems": [p.as_dict() for p in problems],
            "running": redact(redacted(admin.config)),
            "live_apply": False,
            "note": RESTART_NOTE,
        }

    @router.post("/check")
    def check_config(body: CheckBody) -> dict[str, Any]:
        """Validate text as `edge-agent check-config` would; problems by key path. Writes nothing."""
        s = the_store()
        parsed, problems = s.check(body.toml)
        return {
            "ok": parsed is not None,
            "problems": [p.as_dict() for p in problems],
            "restart_needed": [] if parsed is None else _differs_from_running(admin, parsed.model_dump(mode="json")),
        }

    @router.put("", responses={404: {}, 409: {}, 422: {}, 503: {}})
    def save_config(body: SaveBody) -> dict[str, Any]:
        """Validate, keep the current file as a version, and write the new text atomically."""
        try:
            result = the_store().save(body.toml, body.base_version)
        except ConfigStoreError as exc:
            raise _http_error(exc) from None
        return {**result.as_dict(), "note": RESTART_NOTE}

    @router.get("/versions", responses={404: {}})
    def list_versions() -> dict[str, Any]:
        """The kept previous versions, newest first (the last 10)."""
        s = the_store()
        return {"versions": [v.as_dict() for v in s.versions()], "kept": s.keep}

    @router.get("/versions/{version_id}", responses={404: {}})
    def get_version(version_id: str) -> dict[str, Any]:
        try:
            text = the_store().version_text(version_id)
        except ConfigStoreError as exc:
            raise _http_error(exc) from None
        return {"id": version_id, "toml": text}

    @router.post("/versions/{version_id}/restore", responses={404: {}, 409: {}, 422: {}, 503: {}})
    def restore_version(version_id: str, body: RestoreBody) -> dict[str, Any]:
        """Make a kept version the configuration file again (validated and written like a save)."""
        try:
            result = the_store().restore(version_id, body.base_version)
        except ConfigStoreError as exc:
            raise _http_error(exc) from None
        return {**result.as_dict(), "note": RESTART_NOTE}

    return router


def _differs_from_running(admin: AdminServices, new_data: dict[str, Any]) -> list[str]:
    return changed_keys(admin.config.model_dump(mode="json"), new_data)
