"""Prices as a shopper reads them: per currency and locale, with Babel (CLDR data).

`¥12.80` (CNY, zh_CN), `12,80 €` (EUR, de_DE), `$12.80` (USD, en_US), `¥1,280` (JPY: no minor unit),
`₹12,34,567.50` (INR, en_IN). A Babel call costs ~40 µs, too much for thousands of re-renders a second, so the
format of each (currency, locale) is learnt from Babel once (symbols, separators, grouping), checked against
Babel on a set of probe amounts, and applied directly; a format that does not pass goes through Babel on
every call. Formatted strings are cached too.

Strings come out in the form a label draws: compatibility characters folded (NFKC: no-break spaces become
spaces, the full-width yen sign becomes ¥) and invisible direction marks dropped.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from babel import Locale, UnknownLocaleError
from babel import numbers as babel_numbers

log = logging.getLogger(__name__)

DEFAULT_LOCALE = "en_US"


@functools.lru_cache(maxsize=256)
def parse_locale(locale: str) -> Locale:
    """A Babel locale from `zh_CN`, `zh-CN` or `zh-Hans-CN`; an unknown one falls back to en_US (logged once)."""
    try:
        return Locale.parse(locale.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        log.warning("unknown locale %r (%s): labels use %s formatting", locale, exc, DEFAULT_LOCALE)
        return Locale.parse(DEFAULT_LOCALE)


def display_form(text: str) -> str:
    """What a label draws: NFKC-folded, without format characters (direction marks, zero-width joiners)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def _babel_money(amount: Decimal, currency: str, locale: str) -> str:
    return display_form(babel_numbers.format_currency(amount, currency, locale=parse_locale(locale)))


@dataclass(frozen=True)
class _Pattern:
    """A currency format learnt from Babel: symbols and grouping, applied without Babel's per-call parsing."""

    prefix: str
    suffix: str
    group: str
    decimal: str
    primary: int
    secondary: int
    quantum: Decimal

    def apply(self, amount: Decimal) -> str:
        digits = format(amount.quantize(self.quantum), "f")
        integer, _, fraction = digits.partition(".")
        groups = []
        if len(integer) > self.primary:
            groups.append(integer[-self.primary :])
            integer = integer[: -self.primary]
            while len(integer) > self.secondary:
                groups.append(integer[-self.secondary :])
                integer = integer[: -self.secondary]
        groups.append(integer)
        number = self.group.join(reversed(groups))
        if fraction:
            number += self.decimal + fraction
        return self.prefix + number + self.suffix


# Amounts the learnt pattern must format exactly as Babel does before it is trusted (rounding, grouping).
_PROBES = tuple(
    Decimal(v)
    for v in (
        "0", "0.5", "1", "9.99", "12.8", "12.805", "12.815", "99.995", "100", "999.5", "1000", "1234.5",
        "12345.678", "123456.7", "1234567.89", "100000000", "999999999.9999",
    )
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _pattern(currency: str, locale: str) -> _Pattern | None:
    """The fast pattern of a currency and locale, or None when Babel's output does not fit that mould."""
    sample = _babel_money(Decimal("1234567"), currency, locale)
    digits = [i for i, c in enumerate(sample) if c.isdigit()]
    if not digits:
        return None
    prefix, number, suffix = sample[: digits[0]], sample[digits[0] : digits[-1] + 1], sample[digits[-1] + 1 :]
    precision = babel_numbers.get_currency_precision(currency)
    decimal = ""
    if precision:
        decimal, number = number[-precision - 1], number[: -precision - 1]
    group = next((c for c in number if not c.isdigit()), ",")
    grouping = parse_locale(locale).currency_formats["standard"].grouping
    pattern = _Pattern(prefix, suffix, group, decimal, grouping[0], grouping[1], Decimal(1).scaleb(-precision))
    try:
        if all(pattern.apply(p) == _babel_money(p, currency, locale) for p in _PROBES):
            return pattern
    except (ArithmeticError, ValueError, IndexError):
        pass
    log.info("currency %s in locale %s is formatted by Babel on every call (no fast pattern)", currency, locale)
    return None


@functools.lru_cache(maxsize=16384)
def format_money(amount: Decimal, currency: str, locale: str) -> str:
    """An amount in a currency, the locale's way, rounded to the currency's minor unit."""
    pattern = _pattern(currency, locale) if amount >= 0 else None
    if pattern is not None:
        try:
            return pattern.apply(amount)
        except ArithmeticError:  # beyond the decimal context's precision: Babel knows what to do
            pass
    return _babel_money(amount, currency, locale)


@dataclass(frozen=True)
class MoneyParts:
    """A formatted amount split for a big price: prefix, integer part, decimal separator, minor units, suffix.

    `prefix + integer + decimal + fraction + suffix` is the formatted amount (`format_money`).
    """

    prefix: str
    integer: str
    decimal: str
    fraction: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.integer + self.decimal + self.fraction + self.suffix


@functools.lru_cache(maxsize=16384)
def money_parts(amount: Decimal, currency: str, locale: str) -> MoneyParts:
    text = format_money(amount, currency, locale)
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    if not digits:  # nothing numeric to split (cannot happen with CLDR patterns, but never crash)
        return MoneyParts("", text, "", "", "")
    first, last = digits[0], digits[-1]
    prefix, number, suffix = text[:first], text[first : last + 1], text[last + 1 :]
    integer, decimal, fraction = number, "", ""
    precision = babel_numbers.get_currency_precision(currency)
    if precision > 0 and len(number) > precision + 1:
        tail = number[-precision:]
        separator = number[-precision - 1]
        if tail.isdigit() and not separator.isdigit():
            integer, decimal, fraction = number[: -precision - 1], separator, tail
    return MoneyParts(prefix, integer, decimal, fraction, suffix)


@functools.lru_cache(maxsize=16384)
def unit_price_text(unit_price: Decimal, currency: str, locale: str, unit_label: str | None) -> str:
    """The unit price line: `¥2.56 / 500 g`, `2,56 € / kg`; just the amount when there is no unit label."""
    money = format_money(unit_price, currency, locale)
    return f"{money} / {unit_label}" if unit_label else money


def clear_caches() -> None:
    for cached in (parse_locale, _pattern, format_money, money_parts, unit_price_text):
        cached.cache_clear()
