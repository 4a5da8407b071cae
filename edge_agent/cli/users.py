"""`edge-agent user ...` and `edge-agent setup-token`: the web UI's accounts, from a shell on the box.

Runs against the agent's database (safe while the agent runs: SQLite WAL, and the agent reads the account and
its role at every request, so a removed user or a new password applies at once). Run it as the agent's user
(`sudo -u edge-agent`), so that the files keep their owner. A password is read with getpass (twice) or as one
line from stdin (`--password-stdin`), never from the command line, where it would land in the shell history
and in `ps`. A new password or a removal ends the user's web sessions.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.cli.common import EXIT_FAILURE, EXIT_OK, iso, run_on_store, where_parser

if TYPE_CHECKING:
    from edge_agent.storage import Database

# argon2 (through services.web_users) is imported when a subcommand runs, not for every `edge-agent` call.


def add_parsers(sub: Any) -> None:
    where = where_parser()
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
    user.set_defaults(handler=web_users_main)
    token = sub.add_parser("setup-token", parents=[where],
                           help="print the one-time setup token that creates the first admin (exit 1 once an "
                                "account exists)")
    token.set_defaults(handler=web_users_main)


def _read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    from edge_agent.services.web_users import MIN_PASSWORD, UserError  # noqa: PLC0415 - see above

    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.username} (at least {MIN_PASSWORD} characters): ")
    if getpass.getpass("The same password again: ") != first:
        raise UserError("the two passwords differ; nothing changed")
    return first


async def _user(args: argparse.Namespace, db: Database, out: TextIO, stdin: TextIO) -> int:
    from edge_agent.services.web_sessions import WebSessions  # noqa: PLC0415 - see above
    from edge_agent.services.web_users import Role, UserError, WebUsers  # noqa: PLC0415

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
            print(f"{user.username}\t{user.role.value}\tlast sign-in: {iso(user.last_sign_in_ms)}", file=out)
    else:
        if not await users.remove(args.username):  # deletes the user's sessions in the same transaction
            raise UserError(f"no user {args.username}")
        print(f"user {args.username} removed; their web sessions ended", file=out)
    return EXIT_OK


async def _setup_token(db: Database, out: TextIO, errors: TextIO) -> int:
    from edge_agent.services.web_users import WebUsers  # noqa: PLC0415 - see above

    users = WebUsers(db)
    token = await users.ensure_setup_token()
    if token is None:
        print(f"setup is done: {users.count()} web account(s) exist, so there is no setup token; an admin adds "
              "accounts in the web UI or with `edge-agent user add`", file=errors)
        return EXIT_FAILURE
    print(token, file=out)
    return EXIT_OK


def web_users_main(args: argparse.Namespace, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    from edge_agent.services.web_users import UserError  # noqa: PLC0415 - see above

    if args.command == "setup-token":
        return run_on_store("setup-token", args, _setup_token, refused=(UserError,), out=out)

    async def user(db: Database, stream: TextIO, errors: TextIO) -> int:
        return await _user(args, db, stream, sys.stdin if stdin is None else stdin)

    return run_on_store("user", args, user, refused=(UserError,), out=out)
