"""Hypothesis strategies for what a hostile client sends where JSON is expected (issue 14.7).

Beside well-formed values: integers of thousands of digits (past Python's 4,300-digit int conversion
limit), number literals that overflow a float (`1e999`), nesting deeper than the recursion limit, long
strings, and bytes that are not UTF-8. Every JSON intake must answer each with a clear rejection: no crash,
no 500, no message retried for ever.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)

HUGE_NUMBER = st.one_of(
    st.integers(4_000, 6_000).map(lambda n: b"9" * n),
    st.integers(4_000, 6_000).map(lambda n: b"-1" + b"0" * n),
    st.sampled_from([b"1e999", b"-1e400", b"1" + b"0" * 400 + b".5", b"0." + b"1" * 5000]),
)


def _embed(number: bytes, where: str) -> bytes:
    if where == "bare":
        return number
    if where == "list":
        return b"[1, " + number + b"]"
    return b'{"kind": "x", "data": {"seq": ' + number + b'}, "quantity": ' + number + b"}"


RAW: st.SearchStrategy[bytes] = st.one_of(
    VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(_embed, HUGE_NUMBER, st.sampled_from(["bare", "list", "object"])),
    st.integers(1_000, 60_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1_000, 60_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(10_000, 200_000).map(lambda n: b'{"text": "' + b"x" * n + b'"}'),
    st.binary(max_size=200),
    st.sampled_from([b"\xff\xfe{}", b'{"a": "\xc3\x28"}', b"\xed\xa0\x80", b'"\\ud800"', b"NaN", b"[Infinity]"]),
)
