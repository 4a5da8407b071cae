"""Parsing untrusted JSON strictly: no NaN or Infinity, bounded numbers and nesting, one clear error type.

Python's json module accepts NaN/Infinity (not JSON), turns `1e999` into infinity, raises RecursionError on
very deep nesting and a bare ValueError on an integer of more than 4,300 digits (Python's guard against
slow int conversion). Each would otherwise surface later, far from the input, as a crash, an unencodable
payload or a message retried for ever; here each is a StrictJsonError, which every intake already treats
as bad input.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Longer number literals than anything a device, a kiosk or the cloud has reason to send (an int64 has 19
# digits); it also keeps int() far from its quadratic cost.
MAX_NUMBER_CHARS = 64


class StrictJsonError(ValueError):
    """The bytes are not strict JSON."""


def _reject_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise StrictJsonError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise StrictJsonError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"{text} is out of range")
    return value


def loads_strict(raw: bytes | str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int, parse_float=_finite_float)
    except StrictJsonError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StrictJsonError(str(exc)) from None
    except RecursionError:
        raise StrictJsonError("nested too deeply") from None
    except ValueError as exc:  # anything else the parser refuses, never a crash of the caller
        raise StrictJsonError(str(exc)) from None
