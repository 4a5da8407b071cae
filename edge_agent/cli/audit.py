"""`edge-agent audit verify`: check the door audit log's hash chain from a shell."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any, TextIO

from edge_agent.cli.common import EXIT_BAD_CONFIG, data_dir_of, where_parser


def add_parsers(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the door-opening audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", parents=[where_parser()],
                                  help="check the audit log's hash chain; exit 1 if it is broken")
    verify.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args)
    return EXIT_BAD_CONFIG if data_dir is None else audit_verify_main(data_dir)


def audit_verify_main(data_dir: Path, *, out: TextIO | None = None) -> int:
    """`edge-agent audit verify`: 0 when the chain is intact, 1 when broken (first bad seq printed), 2 on error.

    Opens the database read-only, so it neither migrates nor takes the writer: safe while the agent runs.
    """
    from edge_agent.services.audit import verify_file  # noqa: PLC0415 - every `edge-agent` call stays light
    from edge_agent.storage.database import DB_FILENAME  # noqa: PLC0415

    stream = sys.stdout if out is None else out
    path = Path(data_dir) / DB_FILENAME
    if not path.is_file():
        print(f"audit verify: no database at {path}", file=stream)
        return 2
    try:
        result = verify_file(path)
    except sqlite3.Error as exc:
        print(f"audit verify: cannot read {path}: {exc}", file=stream)
        return 2
    if result.ok:
        print(f"audit log intact: {result.rows} rows", file=stream)
        return 0
    print(
        f"audit log BROKEN at seq {result.first_bad_seq}: {result.reason} ({result.rows} rows before it verified)",
        file=stream,
    )
    return 1
