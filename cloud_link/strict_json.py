"""Parsing untrusted JSON strictly: no NaN or Infinity, bounded nesting, one clear error type.

Python's json module accepts NaN/Infinity (not JSON) and raises RecursionError on very deep nesting;
both would otherwise surface later, far from the input, as a crash or an unencodable payload.
"""

from __future__ import annotations

import json
from typing import Any


class StrictJsonError(ValueError):
    """The bytes are not strict JSON."""


def _reject_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not valid JSON")


def loads_strict(raw: bytes | str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except StrictJsonError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StrictJsonError(str(exc)) from None
    except RecursionError:
        raise StrictJsonError("nested too deeply") from None
