"""The agent's event loop (edge_agent/runtime.py): uvloop by default, asyncio's own when asked or missing."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest
import uvloop

from edge_agent.config import ConfigError, load_config
from edge_agent.runtime import describe_loop, run_on_loop


async def _running_loop_name() -> str:
    await asyncio.sleep(0)
    return describe_loop(asyncio.get_running_loop())


def test_uvloop_is_what_runs_by_default_and_names_itself() -> None:
    assert run_on_loop(_running_loop_name(), "uvloop") == f"uvloop {uvloop.__version__}"


def test_asyncio_when_asked() -> None:
    assert run_on_loop(_running_loop_name(), "asyncio").startswith("asyncio (")


def test_run_returns_the_result_and_raises_what_the_coroutine_raised() -> None:
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_on_loop(boom(), "uvloop")


def test_uvloop_missing_falls_back_to_asyncio_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="edge_agent.runtime"):
        name = run_on_loop(_running_loop_name(), "uvloop")
    assert name.startswith("asyncio (")
    assert "uvloop is not installed" in caplog.text


def test_the_setting_defaults_to_uvloop_and_refuses_other_loops(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nstore_id = "s1"\n')
    assert load_config(path).agent.event_loop == "uvloop"
    path.write_text('[agent]\nstore_id = "s1"\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [p for p in raised.value.problems if p.startswith("agent.event_loop")], raised.value.problems
