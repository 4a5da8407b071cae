"""Answers to requests whose body or parameters do not validate: where and what, never the input itself.

FastAPI's default 422 echoes each invalid input back in `detail[].input`: a 50 MB body comes back whole, a
password posted to a sign-in form is returned in the answer, and an input that JSON cannot carry (a string
with a lone surrogate, `"\\ud800"`) makes encoding the answer fail, so the client gets a 500. This handler
keeps each error's location, message and type, truncated and made safe to encode, and at most 20 of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ERRORS = 20
MAX_TEXT = 200


def _safe(value: Any, limit: int = MAX_TEXT) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes "?"


def validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [_safe(part, 64) for part in error.get("loc", ())][:10],
            "msg": _safe(error.get("msg", "")),
            "type": _safe(error.get("type", ""), 64),
        }
        for error in exc.errors()[:MAX_ERRORS]
    ]


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=422)


def install_validation_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _answer)
