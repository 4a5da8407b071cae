"""Commands from the cloud: validated, executed at most once per `command_id`, answered durably.

Flow for each message on `.../commands` (docs/cloud-contract.md section 4):
1. size, JSON and envelope checks; a message without a usable `command_id` is answered with
   `command_id: null` and never stored;
2. the id is claimed in SQLite (durably) before anything runs; only then is the MQTT message
   acknowledged, so a crash before the claim means the broker delivers it again;
3. a repeat of a known id is not executed again: the stored result is published again, marked
   `duplicate`; an id claimed but never finished (the agent died mid-command) is answered with
   `interrupted` and not run;
4. unknown types and payloads that fail their schema get an `error` result; handlers run with a
   timeout; the result is stored with the id and published through the outbox (so it survives
   outages like any event).
Ids and results are kept at least `retention_days` (7 by default).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from cloud_link.events import EventError, encode_payload, now_ms
from cloud_link.outbox import Outbox, OutboxFullError
from cloud_link.ports import DurableStore
from mqtt_io.driver import Message
from mqtt_io.flow import IntakeFlow
from mqtt_io.strict_json import StrictJsonError, loads_strict

log = logging.getLogger(__name__)

COMMAND_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
COMMAND_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
RESULT_EVENT = "command.result"
CONTRACT_MAJOR = 1


class CommandFailedError(Exception):
    """Raised by a handler to answer with an error result carrying this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[[Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class CommandSpec:
    command_type: str
    payload_model: type[BaseModel]
    handler: Handler
    timeout: float = 30.0
    description: str = ""
    # Result fields sent once and never kept: the stored copy (answered to a repeated id) lacks them and
    # lists them in `result.redacted` (a one-time code the agent drew must not sit in the database for
    # the retention period).
    secret_result_keys: tuple[str, ...] = ()


class CommandRegistry:
    """Command types the agent understands; each issue's services add theirs here."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(
        self,
        command_type: str,
        payload_model: type[BaseModel],
        handler: Handler,
        *,
        timeout: float = 30.0,
        description: str = "",
        secret_result_keys: tuple[str, ...] = (),
    ) -> None:
        if not COMMAND_TYPE_RE.fullmatch(command_type):
            raise ValueError(f"invalid command type {command_type!r}")
        if command_type in self._specs:
            raise ValueError(f"command type {command_type!r} registered twice")
        self._specs[command_type] = CommandSpec(
            command_type, payload_model, handler, timeout, description, secret_result_keys
        )

    def get(self, command_type: str) -> CommandSpec | None:
        return self._specs.get(command_type)

    def types(self) -> list[str]:
        return sorted(self._specs)


class BadInputObserver(Protocol):
    def bad_input(self, source: str, reason: str) -> None: ...


class _NullBadInput:
    def bad_input(self, source: str, reason: str) -> None:
        pass


class _Envelope(BaseModel):
    # Unknown top-level fields are ignored: the contract lets the cloud add optional fields.
    model_config = ConfigDict(extra="ignore")
    v: int = CONTRACT_MAJOR
    command_id: str
    type: str
    payload: dict[str, Any] = {}
    ts: Any = None  # optional: the cloud's clock when it sent the command; any value is accepted (_sent_ms)


def _sent_ms(value: Any) -> int | None:
    """A command's optional `ts` (the cloud's clock when it sent it) in Unix ms; None when absent or unusable.
    Never a reason to refuse the command: it only informs the agent's clock (edge_agent.services.agent_clock)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class _Rejection:
    command_id: str | None
    command_type: str | None
    code: str
    message: str


def _error(code: str, message: str) -> dict[str, Any]:
    return {"status": "error", "error": {"code": code, "message": message}}


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class CommandIntake:
    def __init__(
        self,
        store: DurableStore,
        outbox: Outbox,
        registry: CommandRegistry,
        *,
        max_payload_bytes: int = 64 * 1024,
        retention_days: int = 7,
        queue_size: int = 256,
        observer: BadInputObserver | None = None,
        on_cloud_time: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.retention_ms = retention_days * 86_400_000
        # Unbounded, yet short: at `queue_size` waiting commands the cloud connection is not read until a
        # quarter are left (mqtt_io.flow). Dropping one instead would leave it unacknowledged and in
        # flight at the broker, which sends it again only on the next connection.
        self._queue: asyncio.Queue[tuple[Message, Callable[[], None]]] = asyncio.Queue()
        self._flow = IntakeFlow("command intake", queue_size, queue_size // 4)
        self._observer: BadInputObserver = observer or _NullBadInput()
        # Told the `ts` of every command that has one, before it runs: the cloud's time judges the wall clock.
        self._on_cloud_time = on_cloud_time
        self.executed = 0

    # -- intake (called from the MQTT callback; must not block) -------------------------------

    def submit(self, message: Message, ack: Callable[[], None]) -> None:
        self._queue.put_nowait((message, ack))
        self._flow.arrived(self._queue.qsize(), message.connection)

    @property
    def pauses(self) -> int:
        """How often commands came faster than they were handled, so the cloud connection was not read."""
        return self._flow.pauses

    async def run(self) -> None:
        """Handle queued commands one at a time (so at-most-once needs no locking)."""
        while True:
            message, ack = await self._queue.get()
            self._flow.taken(self._queue.qsize())
            try:
                await self.handle(message.payload)
            except OutboxFullError as exc:
                # Unacknowledged, it stays in flight at the broker until the next connection: make that now
                # (the session reconnects with its backoff, and the command comes again).
                log.error("command result could not be queued: %s; reconnecting for the broker to deliver it "
                          "again", exc)
                if message.connection is not None:
                    message.connection.abort("a command's result could not be stored")
                continue
            except Exception:
                log.exception("command handling failed unexpectedly; acknowledging to avoid a redelivery loop")
            try:
                ack()
            except Exception:
                log.exception("acknowledging a command failed")

    async def purge_loop(self, interval_s: float = 3600.0) -> None:
        while True:
            await self.purge()
            await asyncio.sleep(interval_s)

    async def purge(self) -> int:
        cutoff = now_ms() - self.retention_ms
        return await self._store.write(
            lambda conn: conn.execute("DELETE FROM commands WHERE received_ms < ?", (cutoff,)).rowcount
        )

    # -- one command --------------------------------------------------------------------------

    async def handle(self, raw: bytes) -> dict[str, Any]:
        """Process one raw command message; returns the result payload it published."""
        parsed = self._parse(raw)
        if isinstance(parsed, _Rejection):
            self._observer.bad_input("command", parsed.code)
            log.warning("rejected command %s: %s: %s", parsed.command_id, parsed.code, parsed.message)
            result = {
                "command_id": parsed.command_id,
                "type": parsed.command_type,
                **_error(parsed.code, parsed.message),
            }
            if parsed.command_id is not None:
                # Record the answer so a repeat gets the same one, without running anything.
                claimed, stored = await self._claim(parsed.command_id, parsed.command_type or "")
                if not claimed:
                    return await self._answer_repeat(parsed.command_id, parsed.command_type, stored)
                await self._finish(parsed.command_id, result)
            await self._publish(result)
            return result
        envelope = parsed
        sent = _sent_ms(envelope.ts)
        if sent is not None and self._on_cloud_time is not None:
            self._on_cloud_time(sent)
        claimed, stored = await self._claim(envelope.command_id, envelope.type)
        if not claimed:
            return await self._answer_repeat(envelope.command_id, envelope.type, stored)
        result = {"command_id": envelope.command_id, "type": envelope.type, **await self._execute(envelope)}
        await self._finish(envelope.command_id, self._kept(envelope.type, result))
        await self._publish(result)
        return result

    def _kept(self, command_type: str, result: dict[str, Any]) -> dict[str, Any]:
        """The copy of a result that is stored: without the command type's secret fields."""
        spec = self.registry.get(command_type)
        inner = result.get("result")
        if spec is None or not spec.secret_result_keys or not isinstance(inner, dict):
            return result
        secret = [k for k in spec.secret_result_keys if k in inner]
        if not secret:
            return result
        kept = {k: v for k, v in inner.items() if k not in secret}
        return {**result, "result": {**kept, "redacted": secret}}

    def _parse(self, raw: bytes) -> _Envelope | _Rejection:
        if len(raw) > self.max_payload_bytes:
            return _Rejection(None, None, "too_large",
                              f"command is {len(raw)} bytes, the limit is {self.max_payload_bytes}")
        try:
            doc = loads_strict(raw)
        except StrictJsonError as exc:
            return _Rejection(None, None, "malformed_json", f"not valid UTF-8 JSON: {exc}")
        if not isinstance(doc, dict):
            return _Rejection(None, None, "invalid_envelope",
                              f"a command must be a JSON object, got {type(doc).__name__}")
        cid = doc.get("command_id")
        command_id = cid if isinstance(cid, str) and COMMAND_ID_RE.fullmatch(cid) else None
        ctype = doc.get("type")
        command_type = ctype if isinstance(ctype, str) and len(ctype) <= 64 else None
        if command_id is None:
            return _Rejection(None, command_type, "invalid_envelope",
                              "command_id: required, 1-128 characters of A-Z a-z 0-9 . _ : -")
        try:
            envelope = _Envelope.model_validate(doc)
        except ValidationError as exc:
            return _Rejection(command_id, command_type, "invalid_envelope", describe_validation_error(exc))
        if envelope.v != CONTRACT_MAJOR:
            return _Rejection(command_id, command_type, "unsupported_version",
                              f"contract version {envelope.v} is not supported (this agent speaks {CONTRACT_MAJOR})")
        return envelope

    async def _execute(self, envelope: _Envelope) -> dict[str, Any]:
        spec = self.registry.get(envelope.type)
        if spec is None:
            self._observer.bad_input("command", "unknown_type")
            return _error("unknown_type", f"unknown command type {envelope.type!r}; known: "
                          + ", ".join(self.registry.types()))
        try:
            payload = spec.payload_model.model_validate(envelope.payload)
        except ValidationError as exc:
            self._observer.bad_input("command", "invalid_payload")
            return _error("invalid_payload", describe_validation_error(exc))
        self.executed += 1
        try:
            result = await asyncio.wait_for(spec.handler(payload), spec.timeout)
        except CommandFailedError as exc:
            return _error(exc.code, exc.message)
        except TimeoutError:
            return _error("timeout", f"{envelope.type} did not finish within {spec.timeout:.0f} s")
        except Exception as exc:
            log.exception("command %s (%s) failed", envelope.command_id, envelope.type)
            return _error("failed", f"{type(exc).__name__}: {exc}")
        try:
            if not isinstance(result, dict):
                raise EventError(f"a result must be a JSON object, got {type(result).__name__}")
            encode_payload({"result": result})
        except EventError as exc:
            log.error("command %s (%s) produced an unusable result: %s", envelope.command_id, envelope.type, exc)
            return _error("failed", f"the command ran but its result cannot be sent: {exc}")
        return {"status": "ok", "result": result}

    async def _claim(self, command_id: str, command_type: str) -> tuple[bool, tuple[str, str | None] | None]:
        received = now_ms()

        def job(conn: sqlite3.Connection) -> tuple[bool, tuple[str, str | None] | None]:
            row = conn.execute("SELECT status, result FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            if row is not None:
                return False, (str(row[0]), row[1])
            conn.execute(
                "INSERT INTO commands(command_id, type, received_ms, status, result) VALUES (?, ?, ?, 'running', NULL)",
                (command_id, command_type, received),
            )
            return True, None

        return await self._store.write(job)

    async def _finish(self, command_id: str, result: dict[str, Any]) -> None:
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        await self._store.write(
            lambda conn: conn.execute(
                "UPDATE commands SET status = 'done', result = ? WHERE command_id = ?", (text, command_id)
            )
        )

    async def _answer_repeat(
        self, command_id: str, command_type: str | None, stored: tuple[str, str | None] | None
    ) -> dict[str, Any]:
        status, text = stored if stored is not None else ("running", None)
        if status == "done" and text:
            result: dict[str, Any] = json.loads(text)
        else:
            # Claimed by an earlier run that died before finishing: it may or may not have taken
            # effect, and at-most-once means we do not run it again.
            result = {"command_id": command_id, "type": command_type,
                      **_error("interrupted", "the agent restarted while running this command; not run again")}
            await self._finish(command_id, result)
        log.info("command %s seen before: answering with the stored result", command_id)
        result["duplicate"] = True
        await self._publish(result)
        return result

    async def _publish(self, result: dict[str, Any]) -> None:
        await self._outbox.publish_to(self._outbox.topics.command_results, RESULT_EVENT, result)
