"""`edge-agent run` (what the systemd unit starts) and `edge-agent check-config`."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.cli.common import EXIT_BAD_CONFIG, EXIT_FAILURE, EXIT_OK
from edge_agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from edge_agent.logging_setup import setup_logging
from edge_agent.secrets import missing_secrets

if TYPE_CHECKING:
    from edge_agent.runtime import Agent

log = logging.getLogger("edge_agent")


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run the agent (what the systemd unit starts)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
    run.set_defaults(handler=lambda args: run_agent(args.config))

    check = sub.add_parser("check-config", help="validate a configuration file; exit 2 if invalid")
    check.add_argument("file", type=Path, nargs="?", default=None)
    check.add_argument("--config", type=Path, default=None, help="same as FILE")
    check.add_argument("--no-secrets", action="store_true", help="skip checking that required secrets are set")
    check.set_defaults(handler=_check_config_args)


def _check_config_args(args: argparse.Namespace) -> int:
    return check_config(args.file or args.config or DEFAULT_CONFIG_PATH, not args.no_secrets)


def check_config(path: Path, check_secrets: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_CONFIG
    problems = missing_secrets(config) if check_secrets else []
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_BAD_CONFIG
    print(f"{path}: OK")
    return EXIT_OK


async def _freeze_start_up_objects(agent: Agent) -> None:
    """Once started, move what start-up built (modules, the web app, models: ~80,000 objects) out of the
    garbage collector's way: it is never garbage, yet every full collection walked it, stalling the event
    loop 35-100 ms a few times a minute under load (bench.kiosk, scan links at 1,000 requests/s). Only in the
    real process: tests run many agents in one interpreter, and frozen cycles are never collected."""
    await agent.started.wait()
    gc.collect()
    gc.freeze()


def run_agent(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        setup_logging("INFO")
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("refusing to start: %s is invalid", path)
        return EXIT_BAD_CONFIG
    setup_logging(config.agent.log_level)
    from edge_agent.runtime import Agent, StartupError, run_on_loop  # noqa: PLC0415 - keeps check-config fast and light

    try:
        agent = Agent(config, extra_tasks=(_freeze_start_up_objects,), config_path=path)
    except StartupError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("refusing to start: required secrets are missing")
        return EXIT_BAD_CONFIG
    from edge_agent.storage import StorageError  # noqa: PLC0415

    try:
        run_on_loop(agent.run(), config.agent.event_loop)
    except StartupError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_FAILURE
    except StorageError as exc:
        # An older agent on a newer database, or a migration that failed: restarting will not help.
        log.error("refusing to start: database: %s", exc)
        return EXIT_BAD_CONFIG
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return EXIT_OK
