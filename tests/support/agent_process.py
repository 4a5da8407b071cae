"""The agent as a real process (`python -m edge_agent run`), for signals, systemd notify and crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig


def to_toml(data: dict[str, Any], prefix: str = "", header: str | None = None) -> str:
    """Enough TOML for our config: nested tables and arrays of tables (at any depth: `[[lockers.buses]]`) of
    strings, numbers, booleans and lists of them. `header` starts an array element's table."""
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = ""
    if header is not None:
        out += header + "\n" + "".join(f"{line}\n" for line in scalars) + "\n"
    elif scalars:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(scalars) + "\n\n"
    for key, value in tables:
        name = f"{prefix}.{key}" if prefix else key
        out += to_toml(value, name) if value else f"[{name}]\n\n"  # an empty table is still a table
    for key, items in arrays:
        name = f"{prefix}.{key}" if prefix else key
        for item in items:
            out += to_toml(item, name, header=f"[[{name}]]")
    return out


def write_config(config: AgentConfig, path: Path, **web: Any) -> Path:
    data = config.model_dump(mode="json", exclude_none=True)
    data["web"].update(web)
    path.write_text(to_toml(data))
    return path


def start_agent(config_path: Path, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config_path)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_http(port: int, path: str = "/healthz", timeout: float = 20.0) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"agent web server not up on {port}: {last}")
