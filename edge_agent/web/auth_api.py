"""Sign-in, first-run setup, sign-out, and the admin's user management, as JSON API.

`POST /api/auth/setup` and `/api/auth/login` are public (nothing else is: see auth.py); they set the session
cookie and answer the CSRF token the page then sends with every write. `GET /api/auth/me` tells a page who
is signed in. `/api/users` is the admin's (the same operations as `edge-agent user ...`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.services.web_sessions import WebSession, WebSessions
from edge_agent.services.web_users import (
    MAX_PASSWORD,
    Role,
    SetupLockedError,
    SignInStatus,
    UserError,
    WebUser,
    WebUsers,
)
from edge_agent.web.api_errors import api_error
from edge_agent.web.auth import (
    SESSION_COOKIE,
    clear_session_cookie,
    client_address,
    require,
    same_origin,
    set_session_cookie,
)

log = logging.getLogger(__name__)

Lang = Literal["en", "zh-CN"]
# At module level: with postponed annotations FastAPI resolves a parameter's annotation in the module's
# globals, so a dependency kept in a local variable would silently turn the parameter into a query string.
SignedIn = Annotated[WebSession, Depends(require(Role.STAFF))]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class SetupBody(_Body):
    token: str = Field(min_length=1, max_length=64, description="The one-time setup token the agent printed.")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=12, max_length=MAX_PASSWORD)
    lang: Lang | None = None


class NewUserBody(_Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=12, max_length=MAX_PASSWORD)
    role: Role
    lang: Lang | None = None


class UserChangeBody(_Body):
    role: Role | None = None
    password: str | None = Field(None, min_length=12, max_length=MAX_PASSWORD)


class PasswordChangeBody(_Body):
    current: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new: str = Field(min_length=12, max_length=MAX_PASSWORD)


def user_json(user: WebUser) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": user.role.value,
        "created_ms": user.created_ms,
        "last_sign_in_ms": user.last_sign_in_ms,
        "lang": user.lang,
    }


def _check_origin(request: Request) -> None:
    # Sign-in and setup have no session yet, so no CSRF token: refusing other sites' Origin stops a page
    # elsewhere from signing the technician's browser into an account of its choosing.
    if not same_origin(request):
        raise api_error(403, "cross_origin", "requests from other sites are refused")


def auth_router(users: WebUsers, sessions: WebSessions) -> APIRouter:
    router = APIRouter(prefix="/api/auth", tags=["sign-in"])

    async def signed_in(request: Request, user: WebUser) -> JSONResponse:
        token, session = await sessions.start(user.username, client_address(request))
        response = JSONResponse({"user": user_json(user), "csrf": session.csrf})
        set_session_cookie(response, request, token)
        return response

    @router.get("/state")
    def state() -> dict[str, Any]:
        """Whether the first-run setup is still to be done (no account exists)."""
        return {"setup_needed": users.count() == 0}

    @router.post("/setup", responses={400: {}, 403: {}, 429: {}})
    async def setup(body: SetupBody, request: Request) -> JSONResponse:
        _check_origin(request)
        try:
            user = await users.complete_setup(
                body.token, body.username, body.password, client=client_address(request), lang=body.lang
            )
        except SetupLockedError as exc:
            raise api_error(429, "locked_out", str(exc), retry_after_s=exc.seconds_left) from None
        except UserError as exc:
            raise api_error(400, "setup_refused", str(exc)) from None
        return await signed_in(request, user)

    @router.post("/login", responses={401: {}, 403: {}, 429: {}})
    async def login(body: LoginBody, request: Request) -> JSONResponse:
        _check_origin(request)
        result = await users.sign_in(body.username, body.password, client_address(request))
        if result.status is SignInStatus.LOCKED_OUT:
            return JSONResponse(
                {"detail": {"error": "locked_out", "message": f"too many failed attempts; try again in "
                            f"{result.seconds_left} s", "retry_after_s": result.seconds_left}},
                status_code=429,
                headers={"Retry-After": str(result.seconds_left)},
            )
        if result.status is not SignInStatus.OK or result.user is None:
            raise api_error(401, "wrong", "wrong user name or password")
        log.info("web user %s signed in from %s", result.user.username, client_address(request))
        return await signed_in(request, result.user)

    @router.post("/logout")
    async def logout(request: Request, session: SignedIn) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await sessions.end(token)
        response = JSONResponse({"signed_out": True})
        clear_session_cookie(response, request)
        return response

    @router.get("/me")
    def me(session: SignedIn) -> dict[str, Any]:
        user = users.get(session.username)
        return {
            "username": session.username,
            "role": session.role.value,
            "csrf": session.csrf,
            "lang": user.lang if user else None,
        }

    @router.post("/password", responses={400: {}, 401: {}})
    async def change_password(
        body: PasswordChangeBody, request: Request, session: SignedIn
    ) -> dict[str, Any]:
        check = await users.sign_in(session.username, body.current, client_address(request))
        if check.status is not SignInStatus.OK:
            status = 401 if check.status is SignInStatus.WRONG else 429
            raise api_error(status, "wrong", "the current password is wrong")
        try:
            await users.set_password(session.username, body.new)
        except UserError as exc:
            raise api_error(400, "weak_password", str(exc)) from None
        ended = await sessions.end_user(session.username, keep=session.token_hash)
        return {"changed": True, "other_sessions_ended": ended}

    return router


def users_router(users: WebUsers, sessions: WebSessions) -> APIRouter:
    router = APIRouter(prefix="/api/users", tags=["users"], dependencies=[Depends(require(Role.ADMIN))])

    @router.get("")
    def list_users() -> dict[str, Any]:
        return {"users": [user_json(u) for u in users.list()]}

    @router.post("", status_code=201, responses={400: {}, 409: {}})
    async def add_user(body: NewUserBody) -> dict[str, Any]:
        if users.get(body.username) is not None:
            raise api_error(409, "exists", f"user {body.username} exists already")
        try:
            user = await users.add(body.username, body.password, body.role, lang=body.lang)
        except UserError as exc:
            raise api_error(400, "refused", str(exc)) from None
        return user_json(user)

    @router.patch("/{username}", responses={400: {}, 404: {}})
    async def change_user(username: str, body: UserChangeBody) -> dict[str, Any]:
        if users.get(username) is None:
            raise api_error(404, "not_found", f"no user {username}")
        try:
            if body.role is not None:
                await users.set_role(username, body.role)
            if body.password is not None:
                await users.set_password(username, body.password)
        except UserError as exc:
            raise api_error(400, "refused", str(exc)) from None
        await sessions.end_user(username)  # a new role or password applies to fresh sessions only
        user = users.get(username)
        assert user is not None
        return user_json(user)

    @router.delete("/{username}", responses={400: {}, 404: {}})
    async def remove_user(username: str, session: Annotated[WebSession, Depends(require(Role.ADMIN))]) -> Response:
        if username == session.username:
            raise api_error(400, "refused", "you cannot remove yourself; another admin can")
        try:
            removed = await users.remove(username)
        except UserError as exc:
            raise api_error(400, "refused", str(exc)) from None
        if not removed:
            raise api_error(404, "not_found", f"no user {username}")
        return Response(status_code=204)

    return router
