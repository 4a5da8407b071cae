"""The locker screen's staff API: staff and couriers sign in, load parcels; staff see tasks and retrieve.

Contract (docs/operations.md, "Staff and courier sign-in"), all under `/locker/{bank}/api/staff`:
- `POST sign-in` `{"kind": "staff", "staff_number", "pin"}` or `{"kind": "courier", "code"}` -> 200
  `{"token", "role", "actor", "idle_s"}`; 401 `{"status": "wrong", "message"}` for every failure alike;
  429 `{"status": "locked_out", "message", "seconds_left"}` with Retry-After.
- `POST sign-out`, `POST load` `{"order_id"}` (staff or courier), `GET tasks` and `POST retrieve`
  `{"order_id"}` (staff only: a courier gets 403). A missing, expired or other bank's token: 401
  `{"status": "signed_out", "message"}`. A refused load or retrieval: 409 `{"status": "error", "message"}`.

The token comes in an `Authorization: Bearer` header that the page's JavaScript sets; it is never a cookie, so
a browser never sends it by itself and another site cannot make the screen act: there is no CSRF surface.
Every door these endpoints open is audited by the locker service with the session's actor (`staff:1234`,
`courier:c-17`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.locker_sessions import Session
from edge_agent.services.locker_staff import LockerStaff, SignInStatus
from edge_agent.services.lockers import LockerError, LockerService
from edge_agent.web.locker_api import check_bank
from edge_agent.web.responses import NO_STORE

MSG_WRONG = "Sign-in failed. Please check and try again."
MSG_SIGNED_OUT = "Please sign in again."
MSG_FORBIDDEN = "Only store staff can do this. Please ask a member of staff."


class StaffSignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["staff"]
    # Loose on purpose, as the customer's code entry: whatever was typed is checked and counted by the service.
    staff_number: str = Field(max_length=32, description="The staff number as typed.")
    pin: str = Field(max_length=32, description="The PIN as typed.")


class CourierSignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["courier"]
    code: str = Field(max_length=32, description="The one-time courier code as typed.")


SignIn = Annotated[StaffSignIn | CourierSignIn, Field(discriminator="kind")]


class OrderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(min_length=1, max_length=128, description="The order id, scanned or typed.")


def _signed_out() -> JSONResponse:
    return JSONResponse(
        {"status": "signed_out", "message": MSG_SIGNED_OUT}, status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="locker-staff"', **NO_STORE},
    )


def _error(message: str, status_code: int = 409) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status_code, headers=NO_STORE)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        return None
    return token


def locker_staff_router(lockers: LockerService, staff: LockerStaff) -> APIRouter:
    router = APIRouter(prefix="/locker/{bank_id}/api/staff", tags=["locker screen: staff"])

    def session_of(request: Request, bank_id: str) -> Session | None:
        token = _bearer(request)
        return None if token is None else staff.session(token, bank_id)

    @router.post("/sign-in")
    async def sign_in(bank_id: str, entry: Annotated[SignIn, Body()]) -> JSONResponse:
        check_bank(lockers, bank_id)
        if isinstance(entry, StaffSignIn):
            result = await staff.sign_in_staff(bank_id, entry.staff_number.strip(), entry.pin.strip())
        else:
            result = await staff.sign_in_courier(bank_id, entry.code.strip())
        if result.status is SignInStatus.LOCKED_OUT:
            seconds = max(1, result.seconds_left)
            return JSONResponse(
                {"status": "locked_out", "message": f"Too many failed sign-ins. Please try again in {seconds} seconds.",
                 "seconds_left": seconds},
                status_code=429, headers={"Retry-After": str(seconds), **NO_STORE},
            )
        if result.status is not SignInStatus.OK or result.session is None:
            return JSONResponse({"status": "wrong", "message": MSG_WRONG}, status_code=401, headers=NO_STORE)
        session = result.session
        body = {"token": result.token, "role": session.role, "actor": session.actor,
                "idle_s": int(staff.sessions.idle_s)}
        return JSONResponse(body, headers=NO_STORE)

    @router.post("/sign-out")
    async def sign_out(bank_id: str, request: Request) -> JSONResponse:
        check_bank(lockers, bank_id)
        token = _bearer(request)
        if token is None or staff.session(token, bank_id) is None:
            return _signed_out()
        staff.sign_out(token)
        return JSONResponse({"status": "signed_out"}, headers=NO_STORE)

    @router.post("/load")
    async def load(bank_id: str, request: Request, entry: OrderEntry) -> JSONResponse:
        check_bank(lockers, bank_id)
        session = session_of(request, bank_id)
        if session is None:
            return _signed_out()
        try:
            started = await lockers.start_load(entry.order_id.strip(), session.actor, bank=bank_id)
        except LockerError as exc:
            return _error(str(exc))
        return JSONResponse({"status": "ok", "compartment": started.compartment, "message": started.message,
                             "door": started.door},
                            headers=NO_STORE)

    @router.get("/tasks")
    async def tasks(bank_id: str, request: Request) -> JSONResponse:
        check_bank(lockers, bank_id)
        session = session_of(request, bank_id)
        if session is None:
            return _signed_out()
        if session.role != "staff":
            return JSONResponse({"status": "forbidden", "message": MSG_FORBIDDEN}, status_code=403, headers=NO_STORE)
        retrievals: list[dict[str, Any]] = [
            {"order_id": p.order_id, "compartment": p.compartment,
             "message": f"Take order {p.order_id} out of door {p.compartment}."}
            for p in lockers.retrievals(bank_id)
        ]
        alarms = [
            {"kind": a.kind, "compartment": a.compartment, "since_ms": a.since_ms, "message": a.message}
            for a in lockers.open_alarms(bank_id)
        ]
        return JSONResponse({"retrievals": retrievals, "alarms": alarms}, headers=NO_STORE)

    @router.post("/retrieve")
    async def retrieve(bank_id: str, request: Request, entry: OrderEntry) -> JSONResponse:
        check_bank(lockers, bank_id)
        session = session_of(request, bank_id)
        if session is None:
            return _signed_out()
        if session.role != "staff":
            return JSONResponse({"status": "forbidden", "message": MSG_FORBIDDEN}, status_code=403, headers=NO_STORE)
        order_id = entry.order_id.strip()
        pickup = lockers.pickup(order_id)
        if pickup is not None and pickup.compartment is not None:
            bank = next((c.spec.bank for c in lockers.compartments() if c.spec.id == pickup.compartment), None)
            if bank is not None and bank != bank_id:
                # start_retrieval knows no bank: staff at this screen must not open a door of another bank.
                return _error(f"Order {order_id} is in locker {bank}. Please retrieve it at that locker's screen.")
        try:
            started = await lockers.start_retrieval(order_id, session.actor)
        except LockerError as exc:
            return _error(str(exc))
        return JSONResponse({"status": "ok", "compartment": started.compartment, "message": started.message,
                             "door": started.door},
                            headers=NO_STORE)

    return router
