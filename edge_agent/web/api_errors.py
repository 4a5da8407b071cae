"""The web API's refusals: `{"detail": {"error": code, "message": text}}` with a 4xx/5xx status, for every router."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from fastapi import HTTPException


def api_error(status: int, error: str, message: str, **extra: Any) -> HTTPException:
    return HTTPException(status, {"error": error, "message": message, **extra})


def refuse(statuses: Mapping[str, int], code: str, message: str) -> NoReturn:
    """A service's refusal (its error code and message) as the API's answer; codes not in `statuses` are 409."""
    raise api_error(statuses.get(code, 409), code, message) from None
