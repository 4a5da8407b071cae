"""`edge-agent locker-staff ...`: staff PINs and courier codes for the locker screens, from a shell.

Runs against the agent's database (safe while the agent runs: SQLite WAL, and the agent re-reads accounts at
every request). Run it as the agent's user (`sudo -u edge-agent`), so that the files keep their owner.
A PIN is read with getpass (twice) or as one line from stdin (`--pin-stdin`), never from the command line, where
it would land in the shell history and in `ps`. Courier codes need the store key, as the agent does
(`EDGE_AGENT_STORE_HMAC_KEY` or the credential `store-hmac-key` in `$CREDENTIALS_DIRECTORY`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.cli.common import EXIT_OK, iso, run_on_store, where_parser

if TYPE_CHECKING:
    from edge_agent.storage import Database

# argon2 (through services.locker_staff) is imported when a subcommand runs, not for every `edge-agent` call.


def add_parsers(sub: Any) -> None:
    where = where_parser()
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
    staff.set_defaults(handler=locker_staff_main)


def _read_pin(args: argparse.Namespace, stdin: TextIO) -> str:
    from edge_agent.services.locker_staff import StaffError  # noqa: PLC0415 - see above

    if args.pin_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"PIN for staff {args.number} (6-12 digits): ")
    if getpass.getpass("The same PIN again: ") != first:
        raise StaffError("the two PINs differ; nothing changed")
    return first


async def _run(args: argparse.Namespace, db: Database, out: TextIO, stdin: TextIO) -> int:
    from edge_agent.services.locker_staff import LockerStaff, StaffError  # noqa: PLC0415 - see above
    from edge_agent.services.pickup_codes import store_key  # noqa: PLC0415

    key = None
    if args.staff_command == "courier-code":
        key = store_key()  # raises StoreKeyError when missing: courier codes are MACs under this key
    staff = LockerStaff(db, key)
    if args.staff_command == "add":
        await staff.add_staff(args.number, _read_pin(args, stdin), args.name, replace=args.replace)
        print(f"staff {args.number} {'updated' if args.replace else 'added'}", file=out)
    elif args.staff_command == "list":
        for account in staff.list_staff():
            last = iso(account.last_sign_in_ms)
            print(f"{account.staff_number}\t{account.name or ''}\tlast sign-in: {last}", file=out)
    elif args.staff_command == "remove":
        if not await staff.remove_staff(args.number):
            raise StaffError(f"no staff number {args.number}")
        print(f"staff {args.number} removed", file=out)
    else:
        if not 0 < args.valid_hours <= 24 * 7:
            raise StaffError("--valid-hours must be more than 0 and at most 168 (7 days)")
        until = int(dt.datetime.now(dt.UTC).timestamp() * 1000 + args.valid_hours * 3600 * 1000)
        issued = await staff.issue_courier_code(args.courier_id, until)
        # Printed this once: the agent keeps only its HMAC.
        print(f"courier code for {args.courier_id}: {issued.code}", file=out)
        print(f"valid once, until {iso(issued.valid_until_ms)}", file=out)
    return EXIT_OK


def locker_staff_main(args: argparse.Namespace, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    from edge_agent.services.locker_staff import StaffError  # noqa: PLC0415 - see above
    from edge_agent.services.pickup_codes import StoreKeyError  # noqa: PLC0415

    async def staff(db: Database, stream: TextIO, errors: TextIO) -> int:
        return await _run(args, db, stream, sys.stdin if stdin is None else stdin)

    return run_on_store("locker-staff", args, staff, refused=(StaffError, StoreKeyError), out=out)
