"""One line per record on stderr with level and logger name; journald adds the time itself."""

from __future__ import annotations

import collections
import logging
import os
import re
import sys


def setup_logging(level: str = "INFO") -> None:
    under_journal = "JOURNAL_STREAM" in os.environ
    # journald stamps every line; elsewhere (a terminal, CI) a timestamp helps.
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler, RECENT_LOGS]
    root.setLevel(level)
    # paho and uvicorn are chatty at INFO about things we log ourselves.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class _OneLineFormatter(logging.Formatter):
    """Tracebacks and multi-line messages folded into one line, so journald keeps them together."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


RECENT_LOG_LINES = 5000
# A one-time setup token is logged on purpose (for whoever reads the console); the copy kept for the
# diagnostics bundle never holds it.
_SECRET_IN_LOG = re.compile(r"((?:setup[ _-]?)?token|password|passphrase|secret)(\s*[=:]?\s*)\S+", re.IGNORECASE)


class RecentLogs(logging.Handler):
    """The last `capacity` log lines in memory, for the diagnostics bundle (journald keeps the full log)."""

    def __init__(self, capacity: int = RECENT_LOG_LINES) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(_OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(_SECRET_IN_LOG.sub(r"\1\2<redacted>", self.format(record)))
        except Exception:  # a log line must never break the caller
            self.handleError(record)

    def snapshot(self) -> list[str]:
        return list(self.lines)


RECENT_LOGS = RecentLogs()


def install_recent_logs() -> RecentLogs:
    """Keep recent lines in memory without replacing the other handlers (setup_logging does this too)."""
    root = logging.getLogger()
    if RECENT_LOGS not in root.handlers:
        root.addHandler(RECENT_LOGS)
    return RECENT_LOGS
