"""What every `edge-agent` command group shares: exit codes, finding the agent's database, and times as text."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edge_agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

if TYPE_CHECKING:
    from edge_agent.storage import Database

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2


def where_parser() -> argparse.ArgumentParser:
    """The parent of every subcommand that works on the agent's database: where to find it."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
    where.add_argument("--data-dir", type=Path, default=None, help="the agent's data directory (else from config)")
    return where


def data_dir_of(args: argparse.Namespace) -> Path | None:
    """`--data-dir`, else the configuration's `agent.data_dir`; None (problems printed) when the configuration
    is invalid."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    try:
        return load_config(args.config).agent.data_dir
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


class StoreUnavailableError(Exception):
    """The data directory or its database cannot be opened (the message says which and why)."""


@contextlib.contextmanager
def open_store(name: str, data_dir: Path) -> Iterator[Database]:
    """The agent's database for a command run from a shell (safe while the agent runs: SQLite WAL)."""
    from edge_agent.storage import Database, StorageError  # noqa: PLC0415 - `check-config` stays light

    if not Path(data_dir).is_dir():
        raise StoreUnavailableError(f"{name}: no data directory {data_dir} (agent.data_dir)")
    try:
        db = Database(Path(data_dir))
    except (StorageError, OSError) as exc:
        raise StoreUnavailableError(f"{name}: cannot open the database in {data_dir}: {exc}") from None
    try:
        yield db
    finally:
        db.close()


def streams(out: TextIO | None) -> tuple[TextIO, TextIO]:
    """(output, errors): stdout and stderr, or both `out` (tests read one stream)."""
    return (sys.stdout, sys.stderr) if out is None else (out, out)


StoreJob = Callable[["Database", TextIO, TextIO], Coroutine[Any, Any, int]]


def run_on_store(
    name: str, args: argparse.Namespace, job: StoreJob, *, refused: tuple[type[Exception], ...],
    out: TextIO | None = None,
) -> int:
    """Run `job(db, output, errors)` on the agent's database: the exit status, or 1 with one line saying why
    (`refused`: the errors that are the user's, printed as `name: message`; a cancelled prompt changes nothing)."""
    stream, errors = streams(out)
    data_dir = data_dir_of(args)
    if data_dir is None:
        return EXIT_BAD_CONFIG
    try:
        with open_store(name, data_dir) as db:
            return asyncio.run(job(db, stream, errors))
    except StoreUnavailableError as exc:
        print(exc, file=errors)
    except refused as exc:
        print(f"{name}: {exc}", file=errors)
    except (EOFError, KeyboardInterrupt):
        print(f"{name}: cancelled; nothing changed", file=errors)
    return EXIT_FAILURE


def iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
