"""The locker screen's JSON API: a customer's code in, a door message out.

A public shopper endpoint (no session, DESIGN.md section 7): it can only try a code. Each bank's screen
is one terminal for the code throttle (10 failures in 10 minutes, then growing lockouts), whoever sends
the request, so a phone on the store's Wi-Fi gains nothing over the screen. Answers never tell whether a
code exists. The screen itself (HTML) comes with the locker-screen work; it calls these endpoints.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.lockers import LockerService
from edge_agent.web.responses import collect_answer

BANK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Loose on purpose: whatever was typed is checked (and counted) by the service, not refused here,
    # so a malformed code costs an attempt like any wrong one.
    code: str = Field(max_length=64, description="The code as typed on the keypad.")


def is_bank(lockers: LockerService, bank_id: str) -> bool:
    """A well-formed id of a bank that has compartments (every locker page and endpoint checks it)."""
    return bool(BANK_RE.fullmatch(bank_id)) and any(c.spec.bank == bank_id for c in lockers.compartments())


def check_bank(lockers: LockerService, bank_id: str) -> None:
    if not is_bank(lockers, bank_id):
        raise HTTPException(status_code=404, detail="no such locker bank")


def _terminal(bank_id: str) -> str:
    return f"locker-screen:{bank_id}"


def locker_router(lockers: LockerService) -> APIRouter:
    router = APIRouter(prefix="/locker/{bank_id}/api", tags=["locker screen"])

    @router.post("/collect")
    async def collect(bank_id: str, entry: CodeEntry) -> JSONResponse:
        check_bank(lockers, bank_id)
        result = await lockers.collect(_terminal(bank_id), entry.code.strip(), bank=bank_id)
        status_code, headers, fields = collect_answer(result)
        # The screen shows the service's message (a shelf order: the screen says which slot, in its language).
        return JSONResponse({**fields, "message": result.message}, status_code=status_code, headers=headers)

    @router.get("/status")
    async def status(bank_id: str) -> dict[str, Any]:
        check_bank(lockers, bank_id)
        seconds = lockers.codes.lockout_seconds_left(_terminal(bank_id))
        return {"bank": bank_id, "locked_out": seconds > 0, "seconds_left": seconds}

    return router
