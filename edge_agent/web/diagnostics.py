"""`GET /api/diagnostics.zip` (technician): what a remote engineer needs to look at a store's agent.

The bundle holds:
- `logs/recent.log`: the last lines logged (logging_setup.RecentLogs, in memory; journald has the rest), and
  the tail of a log file if the agent also logs to one;
- `config/agent.toml` and `config/parsed.json`: the configuration file and the running configuration, with
  any secret-looking key redacted (the file holds no secrets by design; this is belt and braces);
- `database.json`: tables and row counts, file sizes (database, WAL), schema version, outbox figures;
- `versions.json`: agent, Python, SQLite, key libraries, the OS, Mosquitto and Chromium when installed;
- `health.json` (what /healthz answers) and `metrics.txt` (what /metrics answers);
- `README.txt`: what is in it and what never is.

Never in it: password hashes, session tokens (or their hashes), CSRF tokens, pickup codes or their MACs, the
setup token, the store key, or anything from the environment. Tables are counted, never dumped; and every
text member is scrubbed of the setup token and of the secrets the agent reads from its environment.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import io
import json
import logging
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest

from cloud_link.outbox import Outbox
from edge_agent import __version__
from edge_agent.config import redacted
from edge_agent.logging_setup import RECENT_LOGS
from edge_agent.secrets import ALL_SECRETS, SecretError, read_secret
from edge_agent.services.config_store import REDACTED, redact, redact_toml_text
from edge_agent.services.web_users import Role, WebUsers
from edge_agent.storage.stats import database_stats
from edge_agent.web.admin_context import AdminServices
from edge_agent.web.auth import require

LOG_FILE_TAIL_BYTES = 5 * 1024 * 1024
LIBRARIES = (
    "fastapi", "starlette", "uvicorn", "pydantic", "paho-mqtt", "pyserial", "sqlite-utils", "pillow", "qrcode",
    "babel", "gpiozero", "prometheus-client", "argon2-cffi", "uuid-utils", "swagger-ui-py",
)
README = """Store Edge Agent diagnostics bundle

logs/recent.log      the last lines the agent logged (in memory; the journal has the full log:
                     journalctl -u edge-agent)
logs/<file>          the tail of the log file, when the agent logs to one
config/agent.toml    the configuration file, secret-looking keys redacted
config/parsed.json   the configuration the agent is running with, secret-looking keys redacted
database.json        tables with row counts, file sizes, schema version, outbox figures
versions.json        agent, Python, SQLite, libraries, OS, Mosquitto, Chromium
health.json          what /healthz answers
metrics.txt          what /metrics answers

Never included: password hashes, session or CSRF tokens, pickup codes or their MACs, the setup token,
the store key, environment variables or credentials.
"""


def _command_version(argv: list[str]) -> str | None:
    """First line a program prints about its version; None when it is not installed or says nothing."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        if line.strip():
            return line.strip()[:200]
    return None


@functools.cache
def _external_versions() -> dict[str, str | None]:
    # Once per process: the answer does not change while the agent runs, and Chromium takes a moment.
    return {
        "mosquitto": _command_version(["mosquitto", "-h"]),
        "chromium": _command_version(["chromium", "--version"]) or _command_version(["chromium-browser", "--version"]),
    }


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def versions() -> dict[str, Any]:
    libraries: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = None
    return {
        "agent": __version__,
        "python": sys.version,
        "sqlite": sqlite3.sqlite_version,
        "libraries": libraries,
        "os": _os_release(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        **_external_versions(),
    }


def outbox_figures(outbox: Outbox) -> dict[str, Any]:
    stats = outbox.stats()
    return {
        "events": stats.events, "bytes": stats.bytes, "last_seq": stats.last_seq, "oldest_ms": stats.oldest_ms,
        "max_bytes": outbox.max_bytes, "alarm_active": outbox.alarm_active,
    }


def _log_file_tails() -> dict[str, bytes]:
    """The tail of each file the root logger writes to (none with the default journald set-up)."""
    tails: dict[str, bytes] = {}
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            try:
                with path.open("rb") as handle:
                    handle.seek(max(0, path.stat().st_size - LOG_FILE_TAIL_BYTES))
                    tails[path.name] = handle.read()
            except OSError:
                continue
    return tails


def _secrets_to_scrub(users: WebUsers | None) -> list[str]:
    found: list[str] = []
    if users is not None:
        token = users.setup_token()
        if token:
            found.append(token)
    for spec in ALL_SECRETS:
        try:
            value = read_secret(spec)
        except SecretError:
            continue
        if value and len(value) >= 4:
            found.append(value)
    return found


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str).encode("utf-8")


@dataclass(frozen=True)
class LiveFigures:
    """What the bundle reads through the agent's shared database reader: taken on the event loop's thread
    (where every other read of that connection happens) before the rest is built in a worker thread."""

    health: dict[str, Any]
    outbox: dict[str, Any]
    secrets: list[str]


def build_bundle(admin: AdminServices, live: LiveFigures, registry: CollectorRegistry | None) -> bytes:
    members: dict[str, bytes] = {"README.txt": README.encode()}
    members["logs/recent.log"] = ("\n".join(RECENT_LOGS.snapshot()) + "\n").encode("utf-8")
    for name, tail in _log_file_tails().items():
        members[f"logs/{name}"] = tail
    if admin.config_path is not None:
        try:
            text = admin.config_path.read_text(encoding="utf-8", errors="replace")
            members["config/agent.toml"] = redact_toml_text(text).encode("utf-8")
        except OSError as exc:
            members["config/agent.toml"] = f"# cannot read {admin.config_path}: {exc.strerror}\n".encode()
    members["config/parsed.json"] = _json(redact(redacted(admin.config)))
    try:
        members["database.json"] = _json({**database_stats(admin.db.path), "outbox": live.outbox})
    except (sqlite3.Error, OSError) as exc:
        members["database.json"] = _json({"error": str(exc)})
    members["versions.json"] = _json(versions())
    members["health.json"] = _json(live.health)
    if registry is not None:
        members["metrics.txt"] = generate_latest(registry)
    secrets = live.secrets
    buffer = io.BytesIO()
    stamp = time.gmtime()[:6]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            for secret in secrets:
                data = data.replace(secret.encode("utf-8"), REDACTED.encode())  # noqa: PLW2901
            bundle.writestr(zipfile.ZipInfo(name, date_time=stamp), data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def diagnostics_router(
    admin: AdminServices,
    outbox: Outbox,
    users: WebUsers | None,
    health: Callable[[], dict[str, Any]],
    registry: CollectorRegistry | None = None,
) -> APIRouter:
    router = APIRouter(tags=["diagnostics"], dependencies=[Depends(require(Role.TECHNICIAN))])

    @router.get(
        "/api/diagnostics.zip",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "The diagnostics bundle."}},
    )
    async def diagnostics_bundle() -> Response:
        """A zip of recent logs, the redacted configuration, database figures, versions, health and metrics."""
        live = LiveFigures(health(), outbox_figures(outbox), _secrets_to_scrub(users))
        # Files, a read-only connection of its own, and asking Mosquitto and Chromium their versions: off the loop.
        body = await asyncio.to_thread(build_bundle, admin, live, registry)
        name = f"edge-agent-diagnostics-{admin.config.agent.store_id}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        return Response(
            body,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"', "Cache-Control": "no-store"},
        )

    return router
