"""The cloud commands every agent answers: `ping` and `config.get`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_link.commands import CommandRegistry
from cloud_link.events import format_ts, now_ms
from edge_agent import __version__
from edge_agent.config import AgentConfig, redacted


class PingPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    echo: str | None = Field(None, max_length=256, description="Returned unchanged in the result.")


class ConfigGetPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    section: Literal[
        "agent", "web", "cloud", "outbox", "commands", "local_broker", "labels", "lockers", "base_stations",
        "scan_links", "kiosk", "kiosks", "picking",
    ] | None = Field(
        None, description="One section only; the whole configuration when absent."
    )


def register_builtin_commands(registry: CommandRegistry, config: AgentConfig, boot: Any) -> None:
    """`boot` is a zero-argument callable returning the agent's boot counter."""

    async def ping(payload: PingPayload) -> dict[str, Any]:
        result: dict[str, Any] = {"pong": True, "ts": format_ts(now_ms()), "boot": boot(), "version": __version__}
        if payload.echo is not None:
            result["echo"] = payload.echo
        return result

    async def config_get(payload: ConfigGetPayload) -> dict[str, Any]:
        # The configuration holds no secrets by design (they come from the environment).
        data = redacted(config)
        return {"config": data[payload.section] if payload.section else data}

    registry.register("ping", PingPayload, ping, timeout=5, description="Liveness check through the command path.")
    registry.register("config.get", ConfigGetPayload, config_get, timeout=5, description="The running configuration.")
