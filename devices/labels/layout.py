"""Where things go on a label: boxes in the label's logical (upright) orientation, per template and panel.

The "price" template, landscape (and the square 1.54"):

    +--------------------------------------------+
    | product name, wrapped over up to N lines   |
    |--------------------------------------------|   rule
    | [PROMO]  former price struck     +-------+ |   promo row   \
    | 12.80  (big price)               |  QR   | |   price        > dynamic: redrawn on a price change
    | unit price / 500 g               |       | |   unit line   /
    | origin · barcode                 +-------+ |   footer
    +--------------------------------------------+

Portrait (a tag mounted upright) stacks the same rows full width with the QR code centred below the unit
line. Without a promotion the price also takes the promo row. Sizes come per panel class (small 2.13",
square 1.54", medium 2.9", large 4.2" and up) at a reference resolution and scale with the panel.

Everything inside `Layout.dynamic` depends on the price (price, unit price, former price, promotion);
everything outside it does not, which is what lets the renderer cache the rest (render.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from devices.labels.fonts import Style, metrics
from firmware_bridge.tag_types import TagType

ROTATIONS = (0, 90, 180, 270)
TEMPLATES = ("price",)


class LayoutError(ValueError):
    """No layout for this template, rotation or panel."""


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def corners(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), right and bottom exclusive: Pillow's box convention."""
        return self.x, self.y, self.x + self.w, self.y + self.h

    def union(self, other: Box) -> Box:
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1, y1 = max(self.right, other.right), max(self.bottom, other.bottom)
        return Box(x0, y0, x1 - x0, y1 - y0)

    def contains(self, other: Box) -> bool:
        return self.x <= other.x and self.y <= other.y and other.right <= self.right and other.bottom <= self.bottom


@dataclass(frozen=True)
class Layout:
    width: int  # logical (upright) size
    height: int
    size_class: str
    name: Box
    name_size: int  # font size to try first, shrinking down to name_min_size
    name_min_size: int
    rule_y: int  # a one-pixel line under the name
    promo: Box  # promotion banner and struck-through former price
    promo_size: int
    price: Box
    price_size: int  # largest size of the price's integer part
    price_min_size: int
    unit: Box
    unit_size: int
    footer: Box  # origin, barcode or sku
    footer_size: int
    footer_min_size: int
    footer_lines: int
    qr: Box | None  # the QR code and its quiet zone (square), when the label has a scan link

    @property
    def dynamic(self) -> Box:
        """The area a price change redraws."""
        return self.promo.union(self.price).union(self.unit)


@dataclass(frozen=True)
class _Spec:
    ref: int  # reference short side the sizes below are for
    margin: int
    gap: int
    name_size: int
    name_min: int
    name_lines: int
    promo_size: int
    price_size: int
    price_min: int
    price_box: int  # portrait only: height of the price row
    unit_size: int
    small_size: int
    small_min: int
    footer_lines: int
    qr_max: int
    qr_low: bool = False  # QR code in the bottom corner only, under a full-width price (square panels)


# Tuned by eye on the reference panels (tests/reference/labels/*.png).
_SPECS: dict[tuple[str, bool], _Spec] = {
    # (size class, portrait)
    ("small", False): _Spec(122, 3, 2, 16, 11, 2, 12, 44, 14, 0, 12, 10, 8, 1, 70),
    ("small", True): _Spec(122, 3, 2, 16, 11, 3, 12, 38, 14, 44, 12, 10, 8, 2, 112),
    ("square", False): _Spec(200, 5, 3, 20, 12, 2, 15, 64, 16, 0, 15, 12, 9, 2, 72, qr_low=True),
    ("medium", False): _Spec(128, 4, 2, 18, 12, 2, 13, 52, 14, 0, 13, 11, 8, 1, 76),
    ("medium", True): _Spec(128, 4, 2, 18, 12, 3, 13, 42, 14, 48, 13, 11, 8, 2, 120),
    ("large", False): _Spec(300, 8, 4, 30, 16, 3, 22, 110, 24, 0, 22, 16, 11, 2, 130),
    ("large", True): _Spec(300, 8, 4, 26, 16, 3, 22, 90, 24, 84, 20, 14, 11, 2, 160),
}


def logical_size(tag_type: TagType, rotation: int) -> tuple[int, int]:
    check_rotation(rotation)
    if rotation in (90, 270):
        return tag_type.height, tag_type.width
    return tag_type.width, tag_type.height


def check_rotation(rotation: int) -> None:
    if rotation not in ROTATIONS:
        raise LayoutError(f"rotation must be one of {ROTATIONS}, not {rotation!r}")


def size_class(tag_type: TagType) -> str:
    short, long = sorted((tag_type.width, tag_type.height))
    if long <= short * 1.2:
        return "square"
    if tag_type.diagonal_in < 2.5:
        return "small"
    if tag_type.diagonal_in < 3.5:
        return "medium"
    return "large"


def _lh(style: Style, size: int) -> int:
    return metrics(style, size)[2]


@functools.lru_cache(maxsize=256)
def label_layout(tag_type: TagType, rotation: int = 0, template: str = "price", *, qr: bool = False) -> Layout:
    """The boxes of a template on a tag type mounted at a rotation, in logical coordinates."""
    if template not in TEMPLATES:
        raise LayoutError(f"unknown label template {template!r} (known: {', '.join(TEMPLATES)})")
    w, h = logical_size(tag_type, rotation)
    cls = size_class(tag_type)
    portrait = h > w * 1.2
    spec = _SPECS[(cls, portrait and cls != "square")]
    k = min(w, h) / spec.ref

    def s(v: int) -> int:
        return max(1, round(v * k))

    m, g = s(spec.margin), s(spec.gap)
    name_size, name_min = s(spec.name_size), s(spec.name_min)
    promo_size, unit_size = s(spec.promo_size), s(spec.unit_size)
    small_size, small_min = s(spec.small_size), s(spec.small_min)
    price_size, price_min = s(spec.price_size), s(spec.price_min)

    name = Box(m, m, w - 2 * m, spec.name_lines * _lh(Style.REGULAR, name_size))
    rule_y = name.bottom + g
    top = rule_y + 1 + g
    footer_h = spec.footer_lines * _lh(Style.REGULAR, small_size)
    unit_h = _lh(Style.REGULAR, unit_size)
    promo_h = _lh(Style.BOLD, promo_size)
    qr_box: Box | None = None
    if not portrait and spec.qr_low:
        # Price full width; the unit line and footer share the bottom band with the QR code.
        side = s(spec.qr_max) if qr else 0
        band = max(side, unit_h + footer_h)
        col_w = w - 2 * m - (side + g if qr else 0)
        if qr:
            qr_box = Box(w - m - side, h - m - side, side, side)
        footer = Box(m, h - m - footer_h, col_w, footer_h)
        unit = Box(m, h - m - band, col_w, unit_h)
        promo = Box(m, top, w - 2 * m, promo_h)
        price = Box(m, promo.bottom, w - 2 * m, unit.y - g - promo.bottom)
    elif not portrait:
        col_w = w - 2 * m
        if qr:
            side = min(s(spec.qr_max), h - m - top)
            qr_box = Box(w - m - side, h - m - side, side, side)
            col_w = qr_box.x - g - m
        footer = Box(m, h - m - footer_h, col_w, footer_h)
        unit = Box(m, footer.y - unit_h, col_w, unit_h)
        promo = Box(m, top, col_w, promo_h)
        price = Box(m, promo.bottom, col_w, unit.y - promo.bottom)
    else:
        promo = Box(m, top, w - 2 * m, promo_h)
        footer = Box(m, h - m - footer_h, w - 2 * m, footer_h)
        if qr:
            price = Box(m, promo.bottom, w - 2 * m, s(spec.price_box))
            unit = Box(m, price.bottom, w - 2 * m, unit_h)
            room = footer.y - g - (unit.bottom + g)
            side = min(s(spec.qr_max), w - 2 * m, room)
            qr_box = Box((w - side) // 2, unit.bottom + g + (room - side) // 2, side, side)
        else:
            unit = Box(m, footer.y - g - unit_h, w - 2 * m, unit_h)
            price = Box(m, promo.bottom, w - 2 * m, unit.y - promo.bottom)
    if price.h <= 0 or price.w <= 0:
        raise LayoutError(f"{tag_type.name} at {rotation} degrees is too small for the {template!r} template")
    return Layout(
        width=w,
        height=h,
        size_class=cls,
        name=name,
        name_size=name_size,
        name_min_size=name_min,
        rule_y=rule_y,
        promo=promo,
        promo_size=promo_size,
        price=price,
        price_size=price_size,
        price_min_size=price_min,
        unit=unit,
        unit_size=unit_size,
        footer=footer,
        footer_size=small_size,
        footer_min_size=small_min,
        footer_lines=spec.footer_lines,
        qr=qr_box,
    )
