"""SQL LIKE patterns from text a user typed: `%`, `_` and the escape character itself match only themselves
(queries use `LIKE ? ESCAPE '\\'`)."""

from __future__ import annotations


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_contains(text: str) -> str:
    """A pattern that matches any value containing `text`."""
    return "%" + like_escape(text) + "%"
