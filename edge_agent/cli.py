"""`edge-agent`: run the agent, check a configuration, run device simulators, manage locker staff and the
web UI's accounts."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__, event_loop
from edge_agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from edge_agent.logging_setup import setup_logging
from edge_agent.secrets import missing_secrets

if TYPE_CHECKING:
    from edge_agent.runtime import Agent

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2

log = logging.getLogger("edge_agent")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Store Edge Agent")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the agent (what the systemd unit starts)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")

    check = sub.add_parser("check-config", help="validate a configuration file; exit 2 if invalid")
    check.add_argument("file", type=Path, nargs="?", default=None)
    check.add_argument("--config", type=Path, default=None, help="same as FILE")
    check.add_argument("--no-secrets", action="store_true", help="skip checking that required secrets are set")

    sim = sub.add_parser("simulate", help="run a device emulator")
    sim_sub = sim.add_subparsers(dest="device", required=True)
    dev = sim_sub.add_parser("mqtt-device", help="a Wi-Fi device publishing on the in-store broker")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=1883)
    dev.add_argument("--prefix", default="store/v1", help="in-store topic prefix")
    dev.add_argument("--device-id", default="sim-device-1")
    dev.add_argument("--interval", type=float, default=2.0, help="seconds between telemetry messages")
    dev.add_argument("--count", type=int, default=0, help="stop after this many telemetry messages (0: never)")
    dev.add_argument("--bad-every", type=int, default=0, help="also send a malformed message every N (fault knob)")
    dev.add_argument("--kind", choices=("sensor", "scanner", "kiosk", "tablet"), default="sensor",
                     help="sensor: telemetry and button events; scanner/kiosk/tablet: announce, scans, taps, commands")
    dev.add_argument("--kiosk-id", default=None, help="announce this kiosk: the scans go into its cart")
    dev.add_argument("--codes", default=None, help="comma-separated codes to scan in turn (default: sample EAN-13s)")
    from firmware_bridge.base_station.emulator import add_arguments as add_base_station_arguments  # noqa: PLC0415

    bs = sim_sub.add_parser("base-station", help="a radio base station with simulated e-ink tags, on a pty or TCP")
    add_base_station_arguments(bs)
    from firmware_bridge.kerong_emulator import add_arguments as add_lock_board_arguments  # noqa: PLC0415

    lb = sim_sub.add_parser("lock-board", help="Kerong RS485 lock boards with simulated people, on a pty or TCP")
    add_lock_board_arguments(lb)
    from firmware_bridge.scanner_emulator import add_arguments as add_scanner_arguments  # noqa: PLC0415

    scanner = sim_sub.add_parser("serial-scanner", help="a serial barcode scanner, on a pty or TCP")
    add_scanner_arguments(scanner)
    wifi = sim_sub.add_parser("wifi-labels", help="Wi-Fi e-ink labels on the in-store broker")
    wifi.add_argument("--host", default="127.0.0.1")
    wifi.add_argument("--port", type=int, default=1883)
    wifi.add_argument("--prefix", default="store/v1", help="in-store topic prefix")
    wifi.add_argument("--count", type=int, default=10, help="number of labels")
    wifi.add_argument("--seed", type=int, default=1)
    wifi.add_argument("--checkin", type=float, default=30.0, help="check-in interval, seconds")
    audit = sub.add_parser("audit", help="the door-opening audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the audit log's hash chain; exit 1 if it is broken")
    verify.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
    verify.add_argument("--data-dir", type=Path, default=None, help="the agent's data directory (else from config)")

    # Every locker-staff subcommand finds the database like `audit verify` does.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
    where.add_argument("--data-dir", type=Path, default=None, help="the agent's data directory (else from config)")
    staff = sub.add_parser("locker-staff", help="staff PINs and one-time courier codes for the locker screens")
    staff_sub = staff.add_subparsers(dest="staff_command", required=True)
    add = staff_sub.add_parser("add", parents=[where], help="add a staff member (PIN asked twice, or --pin-stdin)")
    add.add_argument("number", help="staff number, 3-8 digits")
    add.add_argument("--name", default=None, help="name shown by `list`")
    add.add_argument("--pin-stdin", action="store_true", help="read the PIN as one line from stdin")
    add.add_argument("--replace", action="store_true", help="set a new PIN (and name) for an existing number")
    staff_sub.add_parser("list", parents=[where], help="list staff numbers and names (never PINs)")
    remove = staff_sub.add_parser("remove", parents=[where], help="remove a staff member; their sessions end")
    remove.add_argument("number")
    courier = staff_sub.add_parser("courier-code", parents=[where], help="print a fresh one-time courier code, once")
    courier.add_argument("courier_id", help="the courier, as the audit log names it (courier:<id>)")
    courier.add_argument("--valid-hours", type=float, default=12.0, help="hours the code is valid (default 12)")

    # The web UI's accounts (edge_agent/web_users_cli.py); passwords never on the command line.
    user = sub.add_parser("user", help="accounts of the technician web UI")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    user_add = user_sub.add_parser("add", parents=[where], help="add an account (password asked twice, or stdin)")
    user_add.add_argument("username")
    user_add.add_argument("--role", required=True, choices=("staff", "technician", "admin"),
                          help="staff: lockers and alarms; technician: devices, pairing, tests; admin: users, config")
    user_add.add_argument("--lang", choices=("en", "zh-CN"), default=None, help="the UI's language for this user")
    user_add.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    passwd = user_sub.add_parser("passwd", parents=[where], help="set a new password; the user's sessions end")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    user_sub.add_parser("list", parents=[where], help="list accounts and roles (never passwords)")
    user_remove = user_sub.add_parser("remove", parents=[where], help="remove an account; its sessions end")
    user_remove.add_argument("username")
    sub.add_parser("setup-token", parents=[where],
                   help="print the one-time setup token that creates the first admin (exit 1 once an account exists)")

    watch = sub.add_parser("cloud-watch", help="print what arrives on a (cloud) MQTT broker")
    watch.add_argument("--host", default="127.0.0.1")
    watch.add_argument("--port", type=int, default=1883)
    watch.add_argument("--topic", default="retail/#")
    watch.add_argument("--ca-file", default=None, help="use TLS with this CA bundle")
    return parser


def _check_config(path: Path, check_secrets: bool) -> int:
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


def _run(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        setup_logging("INFO")
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("refusing to start: %s is invalid", path)
        return EXIT_BAD_CONFIG
    setup_logging(config.agent.log_level)
    from edge_agent.runtime import Agent, StartupError  # noqa: PLC0415 - keeps check-config fast and light

    try:
        agent = Agent(config, extra_tasks=(_freeze_start_up_objects,), config_path=path)
    except StartupError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        log.error("refusing to start: required secrets are missing")
        return EXIT_BAD_CONFIG
    from edge_agent.storage import StorageError  # noqa: PLC0415

    try:
        event_loop.run(agent.run(), config.agent.event_loop)
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


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config)
    if args.command == "check-config":
        target = args.file or args.config or DEFAULT_CONFIG_PATH
        return _check_config(target, not args.no_secrets)
    if args.command == "simulate" and args.device == "base-station":
        setup_logging("INFO")
        from firmware_bridge.base_station.emulator import run_base_station  # noqa: PLC0415

        return run_base_station(args)
    if args.command == "simulate" and args.device == "lock-board":
        setup_logging("INFO")
        from firmware_bridge.kerong_emulator import run_lock_board  # noqa: PLC0415

        return run_lock_board(args)
    if args.command == "simulate" and args.device == "serial-scanner":
        setup_logging("INFO")
        from firmware_bridge.scanner_emulator import run_scanner  # noqa: PLC0415

        return run_scanner(args)
    if args.command == "simulate" and args.device == "wifi-labels":
        setup_logging("INFO")
        from devices.simulators.wifi_labels import run_wifi_labels  # noqa: PLC0415

        return run_wifi_labels(
            args.host, args.port, args.prefix, args.count, args.seed, checkin_interval=args.checkin
        )
    if args.command == "simulate":
        setup_logging("INFO")
        from devices.simulators.mqtt_device import run_simulated_device  # noqa: PLC0415

        return run_simulated_device(
            host=args.host,
            port=args.port,
            prefix=args.prefix,
            device_id=args.device_id,
            interval=args.interval,
            count=args.count,
            bad_every=args.bad_every,
            kind=args.kind,
            kiosk_id=args.kiosk_id,
            **({"codes": tuple(c for c in args.codes.split(",") if c)} if args.codes else {}),
        )
    if args.command in ("audit", "locker-staff", "user", "setup-token"):
        data_dir = args.data_dir
        if data_dir is None:
            try:
                data_dir = load_config(args.config).agent.data_dir
            except ConfigError as exc:
                for problem in exc.problems:
                    print(problem, file=sys.stderr)
                return EXIT_BAD_CONFIG
        if args.command == "locker-staff":
            from edge_agent.locker_staff_cli import locker_staff_main  # noqa: PLC0415 - argon2 only when needed

            return locker_staff_main(args, data_dir)
        if args.command in ("user", "setup-token"):
            from edge_agent.web_users_cli import web_users_main  # noqa: PLC0415 - argon2 only when needed

            return web_users_main(args, data_dir)
        from edge_agent.services.audit import audit_verify_main  # noqa: PLC0415

        return audit_verify_main(data_dir)
    if args.command == "cloud-watch":
        from edge_agent.cloud_watch import run_cloud_watch  # noqa: PLC0415

        return run_cloud_watch(args.host, args.port, args.topic, args.ca_file)
    _build_parser().print_help()
    return EXIT_FAILURE
