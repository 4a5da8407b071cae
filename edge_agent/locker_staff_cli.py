"""`edge-agent locker-staff ...`: staff PINs and courier codes for the locker screens, from a shell.

Runs against the agent's database (safe while the agent runs: SQLite WAL, and the agent re-reads accounts at
every request). Run it as the agent's user (`sudo -u edge-agent`), so that the files keep their owner.
A PIN is read with getpass (twice) or as one line from stdin (`--pin-stdin`), never from the command line, where
it would land in the shell history and in `ps`. Courier codes need the store key, as the agent does
(`EDGE_AGENT_STORE_HMAC_KEY` or the credential `store-hmac-key` in `$CREDENTIALS_DIRECTORY`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import TextIO

from edge_agent.services.locker_staff import LockerStaff, StaffError
from edge_agent.services.pickup_codes import StoreKeyError, store_key
from edge_agent.storage import Database, StorageError

EXIT_OK, EXIT_FAILURE = 0, 1


def _read_pin(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.pin_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"PIN for staff {args.number} (6-12 digits): ")
    if getpass.getpass("The same PIN again: ") != first:
        raise StaffError("the two PINs differ; nothing changed")
    return first


async def _run(args: argparse.Namespace, db: Database, out: TextIO, stdin: TextIO) -> int:
    key = None
    if args.staff_command == "courier-code":
        key = store_key()  # raises StoreKeyError when missing: courier codes are MACs under this key
    staff = LockerStaff(db, key)
    if args.staff_command == "add":
        await staff.add_staff(args.number, _read_pin(args, stdin), args.name, replace=args.replace)
        print(f"staff {args.number} {'updated' if args.replace else 'added'}", file=out)
    elif args.staff_command == "list":
        for account in staff.list_staff():
            last = "never" if account.last_sign_in_ms is None else _iso(account.last_sign_in_ms)
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
        print(f"valid once, until {_iso(issued.valid_until_ms)}", file=out)
    return EXIT_OK


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def locker_staff_main(args: argparse.Namespace, data_dir: Path, *, out: TextIO | None = None,
                      stdin: TextIO | None = None) -> int:
    stream = sys.stdout if out is None else out
    errors = sys.stderr if out is None else out
    if not Path(data_dir).is_dir():
        print(f"locker-staff: no data directory {data_dir} (agent.data_dir)", file=errors)
        return EXIT_FAILURE
    try:
        db = Database(Path(data_dir))
    except (StorageError, OSError) as exc:
        print(f"locker-staff: cannot open the database in {data_dir}: {exc}", file=errors)
        return EXIT_FAILURE
    try:
        return asyncio.run(_run(args, db, stream, sys.stdin if stdin is None else stdin))
    except (StaffError, StoreKeyError) as exc:
        print(f"locker-staff: {exc}", file=errors)
        return EXIT_FAILURE
    except (EOFError, KeyboardInterrupt):
        print("locker-staff: cancelled; nothing changed", file=errors)
        return EXIT_FAILURE
    finally:
        db.close()
