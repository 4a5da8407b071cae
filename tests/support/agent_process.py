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


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough TOML for our config: nested tables of strings, numbers and booleans."""
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = ""
    if scalars:
        out += (f"[{prefix}]\n" if prefix else "") + "\n".join(scalars) + "\n\n"
    for key, value in tables:
        out += to_toml(value, f"{prefix}.{key}" if prefix else key)
    for key, items in arrays:  # arrays of tables: [[key]]
        for item in items:
            out += f"[[{key}]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in item.items()) + "\n"
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
