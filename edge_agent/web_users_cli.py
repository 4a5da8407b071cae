"""`edge-agent user ...` and `edge-agent setup-token`: the web UI's accounts, from a shell on the box.

Runs against the agent's database (safe while the agent runs: SQLite WAL, and the agent reads the account and
its role at every request, so a removed user or a new password applies at once). Run it as the agent's user
(`sudo -u edge-agent`), so that the files keep their owner. A password is read with getpass (twice) or as one
line from stdin (`--password-stdin`), never from the command line, where it would land in the shell history
and in `ps`. A new password or a removal ends the user's web sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import TextIO

from edge_agent.services.web_sessions import WebSessions
from edge_agent.services.web_users import MIN_PASSWORD, Role, UserError, WebUsers
from edge_agent.storage import Database, StorageError

EXIT_OK, EXIT_FAILURE = 0, 1


def _read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.username} (at least {MIN_PASSWORD} characters): ")
    if getpass.getpass("The same password again: ") != first:
        raise UserError("the two passwords differ; nothing changed")
    return first


def _iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _user(args: argparse.Namespace, db: Database, out: TextIO, stdin: TextIO) -> int:
    users = WebUsers(db)
    sessions = WebSessions(db)
    if args.user_command == "add":
        if users.get(args.username) is not None:
            raise UserError(f"user {args.username} exists already (`edge-agent user passwd` sets a new password)")
        user = await users.add(args.username, _read_password(args, stdin), Role(args.role), lang=args.lang)
        print(f"user {user.username} added with role {user.role.value}", file=out)
    elif args.user_command == "passwd":
        if users.get(args.username) is None:
            raise UserError(f"no user {args.username}")
        await users.set_password(args.username, _read_password(args, stdin))
        ended = await sessions.end_user(args.username)
        print(f"password of {args.username} changed; {ended} web session(s) ended", file=out)
    elif args.user_command == "list":
        for user in users.list():
            print(f"{user.username}\t{user.role.value}\tlast sign-in: {_iso(user.last_sign_in_ms)}", file=out)
    else:
        if not await users.remove(args.username):  # deletes the user's sessions in the same transaction
            raise UserError(f"no user {args.username}")
        print(f"user {args.username} removed; their web sessions ended", file=out)
    return EXIT_OK


async def _setup_token(db: Database, out: TextIO, errors: TextIO) -> int:
    users = WebUsers(db)
    token = await users.ensure_setup_token()
    if token is None:
        print(f"setup is done: {users.count()} web account(s) exist, so there is no setup token; an admin adds "
              "accounts in the web UI or with `edge-agent user add`", file=errors)
        return EXIT_FAILURE
    print(token, file=out)
    return EXIT_OK


def web_users_main(
    args: argparse.Namespace, data_dir: Path, *, out: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    name = "setup-token" if args.command == "setup-token" else "user"
    stream = sys.stdout if out is None else out
    errors = sys.stderr if out is None else out
    if not Path(data_dir).is_dir():
        print(f"{name}: no data directory {data_dir} (agent.data_dir)", file=errors)
        return EXIT_FAILURE
    try:
        db = Database(Path(data_dir))
    except (StorageError, OSError) as exc:
        print(f"{name}: cannot open the database in {data_dir}: {exc}", file=errors)
        return EXIT_FAILURE
    try:
        if args.command == "setup-token":
            return asyncio.run(_setup_token(db, stream, errors))
        return asyncio.run(_user(args, db, stream, sys.stdin if stdin is None else stdin))
    except UserError as exc:
        print(f"{name}: {exc}", file=errors)
        return EXIT_FAILURE
    except (EOFError, KeyboardInterrupt):
        print(f"{name}: cancelled; nothing changed", file=errors)
        return EXIT_FAILURE
    finally:
        db.close()
