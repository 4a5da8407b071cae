"""`edge-agent`: every entry point of the agent, one module per command group (argparse subparsers).

    run, check-config            cli/run.py           the agent itself (the systemd unit), a configuration check
    simulate ...                 cli/simulate.py      the device emulators
    audit verify                 cli/audit.py         the door audit log's hash chain
    locker-staff ...             cli/locker_staff.py  staff PINs and courier codes
    user ..., setup-token        cli/users.py         the web UI's accounts
    cloud-watch                  cli/cloud_watch.py   what arrives on a cloud broker

Each module's `add_parsers(sub)` adds its subcommands and sets `handler` (args -> exit status). Heavy imports
(the runtime, argon2) stay inside the handlers, so `check-config` and `--help` stay light.
"""

from __future__ import annotations

import argparse

from edge_agent import __version__
from edge_agent.cli import audit, cloud_watch, locker_staff, run, simulate, users
from edge_agent.cli.common import EXIT_FAILURE

GROUPS = (run, simulate, audit, locker_staff, users, cloud_watch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Store Edge Agent")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_FAILURE
    return int(handler(args))
