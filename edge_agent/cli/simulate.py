"""`edge-agent simulate ...`: the device emulators (firmware_bridge and devices/simulators), each its own process."""

from __future__ import annotations

import argparse
from typing import Any

from edge_agent.logging_setup import setup_logging


def add_parsers(sub: Any) -> None:
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
    dev.set_defaults(handler=_mqtt_device)
    from firmware_bridge.emulators.base_station import add_arguments as add_base_station_arguments  # noqa: PLC0415

    bs = sim_sub.add_parser("base-station", help="a radio base station with simulated e-ink tags, on a pty or TCP")
    add_base_station_arguments(bs)
    bs.set_defaults(handler=_base_station)
    from firmware_bridge.emulators.kerong import add_arguments as add_lock_board_arguments  # noqa: PLC0415

    lb = sim_sub.add_parser("lock-board", help="Kerong RS485 lock boards with simulated people, on a pty or TCP")
    add_lock_board_arguments(lb)
    lb.set_defaults(handler=_lock_board)
    from firmware_bridge.emulators.scanner import add_arguments as add_scanner_arguments  # noqa: PLC0415

    scanner = sim_sub.add_parser("serial-scanner", help="a serial barcode scanner, on a pty or TCP")
    add_scanner_arguments(scanner)
    scanner.set_defaults(handler=_serial_scanner)
    wifi = sim_sub.add_parser("wifi-labels", help="Wi-Fi e-ink labels on the in-store broker")
    wifi.add_argument("--host", default="127.0.0.1")
    wifi.add_argument("--port", type=int, default=1883)
    wifi.add_argument("--prefix", default="store/v1", help="in-store topic prefix")
    wifi.add_argument("--count", type=int, default=10, help="number of labels")
    wifi.add_argument("--seed", type=int, default=1)
    wifi.add_argument("--checkin", type=float, default=30.0, help="check-in interval, seconds")
    wifi.set_defaults(handler=_wifi_labels)


def _base_station(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    from firmware_bridge.emulators.base_station import run_base_station  # noqa: PLC0415

    return run_base_station(args)


def _lock_board(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    from firmware_bridge.emulators.kerong import run_lock_board  # noqa: PLC0415

    return run_lock_board(args)


def _serial_scanner(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    from firmware_bridge.emulators.scanner import run_scanner  # noqa: PLC0415

    return run_scanner(args)


def _wifi_labels(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    from devices.simulators.wifi_labels import run_wifi_labels  # noqa: PLC0415

    return run_wifi_labels(args.host, args.port, args.prefix, args.count, args.seed, checkin_interval=args.checkin)


def _mqtt_device(args: argparse.Namespace) -> int:
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
