"""One line per record on stderr with level and logger name; journald adds the time itself."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "INFO") -> None:
    under_journal = "JOURNAL_STREAM" in os.environ
    # journald stamps every line; elsewhere (a terminal, CI) a timestamp helps.
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paho and uvicorn are chatty at INFO about things we log ourselves.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


class _OneLineFormatter(logging.Formatter):
    """Tracebacks and multi-line messages folded into one line, so journald keeps them together."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")
