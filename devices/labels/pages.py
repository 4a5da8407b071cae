"""Task pages: what a shelf tag shows instead of its price while it takes part in a task.

- `PickPage`: pick-to-light. A band says "PICK" and the product's name; below it, per open pick line on this
  tag (up to three, then "+N more"), the quantity to take (the biggest thing on the page), the order reference
  and the picker (name and LED colour written out: the panels have no green or blue). Two pick lists sharing
  the tag show both entries.
- `SlotPage`: a pickup-shelf slot. Empty: the shelf and slot name, as big as the panel allows, so staff find
  it. Holding an order: the slot in the band, the order reference, the customer's masked name (`王** 1234`)
  and the hold deadline.

Both are plain frozen data (picklable: they travel to the render pool's worker processes) and are drawn 1-bit
on the same colour planes as price labels (devices.labels.render), in the label's logical orientation, then
turned to the panel's. The band is the accent colour on two-plane panels and black on black-and-white ones.

Speed: text is sized by measuring it once at a reference size and scaling (`_fit_size`), not by stepping down
one pixel at a time from the box's height: on a 7.5" panel that loop rasterised every glyph at a hundred
sizes (over a second cold). Every text is clipped to its box, so nothing is drawn outside the panel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image

from devices.labels.bitmap import Ink, Planes
from devices.labels.fonts import Style, extent, metrics, span, text_bitmap
from devices.labels.layout import Box, check_rotation, logical_size
from devices.labels.render import ELLIPSIS, LabelError, picture_image, to_native
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import TagType

PICKER_COLOURS = ("red", "green", "blue", "white")
MAX_ENTRIES = 3  # pick entries drawn in full; more become "+N more"
MIN_TEXT = 8  # pixels: the smallest text size before a text is cut

_WORDS = {
    "zh": {"pick": "拣货", "slot": "货位", "until": "保留至", "empty": "空", "more": "另有 {n} 单"},
    "en": {"pick": "PICK", "slot": "Slot", "until": "Hold until", "empty": "empty", "more": "+{n} more"},
}
_COLOUR_WORDS = {
    "zh": {"red": "红", "green": "绿", "blue": "蓝", "white": "白"},
    "en": {"red": "RED", "green": "GREEN", "blue": "BLUE", "white": "WHITE"},
}


@dataclass(frozen=True)
class PickEntry:
    quantity: int
    order_ref: str  # what staff read: the order id, or its short form
    picker: str  # picker's name or id
    colour: str  # the LED colour of this picker: one of PICKER_COLOURS


@dataclass(frozen=True)
class PickPage:
    product_name: str
    entries: tuple[PickEntry, ...]
    locale: str = "zh_CN"


@dataclass(frozen=True)
class SlotPage:
    shelf: str  # the shelf's name, e.g. "B"
    slot: str  # the slot's number or name, e.g. "7"
    order_ref: str | None = None  # None: the slot is empty
    customer: str | None = None  # already masked: "王** 1234"
    hold_until: str | None = None  # already formatted for the store's time zone
    locale: str = "zh_CN"


TaskPage = PickPage | SlotPage


class RenderedPage:
    """A rendered task page: `raw` (packed native planes, as a price label's) and its picture hash."""

    __slots__ = ("hash", "raw", "rotation", "tag_type")

    def __init__(self, raw: bytes, tag_type: TagType, rotation: int) -> None:
        self.raw = raw
        self.hash = picture_hash(raw)
        self.tag_type = tag_type
        self.rotation = rotation

    @property
    def image(self) -> Image.Image:
        """The picture as the panel shows it (native orientation), in true colours."""
        return picture_image(self.raw, self.tag_type)

    def upright_image(self) -> Image.Image:
        """The picture the way staff read it (logical orientation)."""
        return from_native(self.image, self.rotation)


def from_native(image: Image.Image, rotation: int) -> Image.Image:
    """The inverse of render.to_native: a panel picture turned back upright."""
    return to_native(image, (360 - rotation) % 360) if rotation else image


def _lang(locale: str) -> str:
    return "zh" if locale.replace("-", "_").lower().startswith("zh") else "en"


def _clean(text: str) -> str:
    """One line of text: control characters dropped, white space runs made one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


# -- text fitting -------------------------------------------------------------------------------------------

_REF_SIZE = 32  # pixels: texts are measured once at this size, then scaled


def _size_for_height(height: int) -> int:
    """The largest size whose line height (ascent + descent) fits `height`."""
    size = max(1, int(height / 1.22))
    while size > 1 and metrics(Style.BOLD, size)[2] > height:
        size -= 1
    return size


@functools.lru_cache(maxsize=4096)
def _fit_size(text: str, style: Style, max_size: int, min_size: int, width: int) -> int:
    """The largest size <= max_size at which `text` fits `width`, or min_size if none does (the caller cuts).
    Glyph widths scale almost linearly with size, so one measurement gives a guess a pixel or two off."""
    if max_size <= min_size:
        return max(1, max_size)
    measured = span(text, style, _REF_SIZE)
    if measured <= 0:
        return max_size
    size = max(min_size, min(max_size, _REF_SIZE * width // measured + 1))
    while size > min_size and span(text, style, size) > width:
        size -= 1
    while size < max_size and span(text, style, size + 1) <= width:
        size += 1
    return size


def _cut(text: str, style: Style, size: int, width: int, *, keep_end: bool) -> str:
    """`text` cut with an ellipsis to fit `width`: at the end, or at the start when its end is what matters
    (an order reference's last digits)."""
    if span(text, style, size) <= width:
        return text
    while text and span(ELLIPSIS + text if keep_end else text + ELLIPSIS, style, size) > width:
        text = text[1:] if keep_end else text[:-1]
    if not text:
        return ""
    return ELLIPSIS + text.lstrip() if keep_end else text.rstrip() + ELLIPSIS


def _text(
    planes: Planes,
    ink: Ink,
    box: Box,
    text: str,
    *,
    style: Style,
    max_size: int,
    centre: bool = False,
    keep_end: bool = False,
    shrink: float = 0.0,
) -> int:
    """One line of text in `box`, vertically centred, as large as fits both the box's height and width (down
    to `shrink` times that size, at least MIN_TEXT, then cut with an ellipsis), clipped to the box. Returns
    the size used (0: nothing drawn)."""
    text = _clean(text)
    if not text or box.w <= 0 or box.h <= 0:
        return 0
    max_size = max(1, min(max_size, _size_for_height(box.h)))
    min_size = min(max_size, max(MIN_TEXT, int(max_size * shrink)))
    size = _fit_size(text, style, max_size, min_size, box.w)
    text = _cut(text, style, size, box.w, keep_end=keep_end)
    bitmap = text_bitmap(text, style, size)
    if bitmap.bitmap is None:
        return 0
    ascent, descent, _ = metrics(style, size)
    lo, hi = extent(text, style, size)
    x = box.x - lo + ((box.w - (hi - lo)) // 2 if centre else 0)
    baseline = box.y + (box.h - ascent - descent) // 2 + ascent
    planes.blit(ink, x + bitmap.left, baseline + bitmap.top, bitmap.bitmap, box.corners)
    return size


def _accent(tag_type: TagType) -> Ink:
    return Ink.ACCENT if tag_type.colours.planes == 2 else Ink.BLACK


def _band(planes: Planes, tag_type: TagType, box: Box, text: str, *, shrink: float) -> None:
    """The top band, in the accent colour (black on a black-and-white panel), with `text` in paper colour."""
    planes.fill(_accent(tag_type), box.corners)
    edge = max(1, box.h // 10)
    inner = Box(box.x + max(2, box.w // 40), box.y + edge, box.w - 2 * max(2, box.w // 40), box.h - 2 * edge)
    _text(planes, Ink.PAPER, inner, text, style=Style.BOLD, max_size=inner.h, shrink=shrink)


# -- pick page ----------------------------------------------------------------------------------------------


def _pick_entry(planes: Planes, box: Box, entry: PickEntry, lang: str, tag_type: TagType) -> None:
    """One pick line: the quantity big, the order reference and the picker beside it (or under it on a narrow
    box). The other texts never grow past 60% of the quantity's size, so the quantity reads first."""
    qty = f"×{entry.quantity}"
    who = f"{_COLOUR_WORDS[lang].get(entry.colour, entry.colour)} · {entry.picker}"
    gap = max(2, box.h // 12)
    if box.w >= 2 * box.h:  # wide: quantity on the left, two lines on the right
        qty_box = Box(box.x, box.y, min(box.w * 2 // 5, box.h * 2), box.h)
        qty_size = _text(planes, Ink.BLACK, qty_box, qty, style=Style.BOLD, max_size=box.h)
        right = Box(qty_box.right + gap, box.y, box.w - qty_box.w - gap, box.h)
        small = max(MIN_TEXT, qty_size * 3 // 5)
        ref_box = Box(right.x, right.y, right.w, right.h * 11 // 20)
        who_box = Box(right.x, ref_box.bottom, right.w, right.h - ref_box.h)
    else:  # narrow: three stacked lines
        qty_box = Box(box.x, box.y, box.w, box.h * 11 // 20)
        qty_size = _text(planes, Ink.BLACK, qty_box, qty, style=Style.BOLD, max_size=box.h, centre=True)
        small = max(MIN_TEXT, qty_size * 3 // 5)
        ref_box = Box(box.x, qty_box.bottom, box.w, (box.h - qty_box.h) * 11 // 20)
        who_box = Box(box.x, ref_box.bottom, box.w, box.bottom - ref_box.bottom)
    _text(planes, Ink.BLACK, ref_box, entry.order_ref, style=Style.BOLD, max_size=small, keep_end=True, shrink=0.7)
    _text(planes, _accent(tag_type), who_box, who, style=Style.REGULAR, max_size=small, shrink=0.7)


def _draw_pick(planes: Planes, page: PickPage, w: int, h: int, tag_type: TagType) -> None:
    lang = _lang(page.locale)
    words = _WORDS[lang]
    pad = max(2, min(w, h) // 40)
    band = max(14, min(72, h // 6))
    # The band says at a glance that this tag is in a task, not showing a price.
    _band(planes, tag_type, Box(0, 0, w, band), f"{words['pick']} {page.product_name}", shrink=0.75)
    body = Box(pad, band + pad, w - 2 * pad, h - band - 2 * pad)
    shown = page.entries[:MAX_ENTRIES]
    extra = len(page.entries) - len(shown)
    if extra:
        footer = Box(body.x, body.bottom - max(10, min(body.h // 6, 40)), body.w, max(10, min(body.h // 6, 40)))
        _text(planes, Ink.BLACK, footer, words["more"].format(n=extra), style=Style.BOLD, max_size=footer.h)
        body = Box(body.x, body.y, body.w, footer.y - body.y)
    if not shown:
        _text(planes, Ink.BLACK, body, page.product_name, style=Style.BOLD, max_size=body.h // 3)
        return
    row_h = body.h // len(shown)
    rule = max(1, row_h // 40)
    for i, entry in enumerate(shown):
        y = body.y + i * row_h
        if i:  # a thin rule between entries of different orders
            planes.fill(Ink.BLACK, (body.x, y - rule // 2 - rule % 2, body.right, y + rule // 2))
        inner = Box(body.x, y + rule, body.w, row_h - 2 * rule)
        _pick_entry(planes, inner, entry, lang, tag_type)


# -- slot page ----------------------------------------------------------------------------------------------


def _draw_slot(planes: Planes, page: SlotPage, w: int, h: int, tag_type: TagType) -> None:
    words = _WORDS[_lang(page.locale)]
    pad = max(2, min(w, h) // 40)
    place = f"{page.shelf}-{page.slot}"
    if page.order_ref is None:
        # Empty: the slot's name is the page; a small caption under it.
        big = Box(pad, pad, w - 2 * pad, (h - 2 * pad) * 7 // 10)
        size = _text(planes, Ink.BLACK, big, place, style=Style.BOLD, max_size=big.h, centre=True)
        caption = Box(pad, big.bottom, w - 2 * pad, h - pad - big.bottom)
        cap_size = max(MIN_TEXT, min(caption.h, size // 3))
        cap = f"{words['slot']} · {words['empty']}"
        _text(planes, _accent(tag_type), caption, cap, style=Style.REGULAR, max_size=cap_size, centre=True)
        return
    band = max(16, min(96, h // 4))
    _band(planes, tag_type, Box(0, 0, w, band), f"{words['slot']} {place}", shrink=0.4)
    body = Box(pad, band + pad, w - 2 * pad, h - band - 2 * pad)
    ref = Box(body.x, body.y, body.w, body.h * 2 // 5)
    size = _text(planes, Ink.BLACK, ref, page.order_ref, style=Style.BOLD, max_size=ref.h, keep_end=True, shrink=0.15)
    # Sized from the reference's box, not its text: readable even when a long reference had to shrink.
    small = max(MIN_TEXT, max(size, ref.h // 3) * 3 // 4)
    customer = Box(body.x, ref.bottom, body.w, body.h * 3 // 10)
    _text(planes, Ink.BLACK, customer, page.customer or "", style=Style.REGULAR, max_size=small, shrink=0.7)
    until = Box(body.x, customer.bottom, body.w, body.bottom - customer.bottom)
    if page.hold_until:
        text = f"{words['until']} {page.hold_until}"
        _text(planes, _accent(tag_type), until, text, style=Style.REGULAR, max_size=small, shrink=0.4)


def render_page(page: TaskPage, tag_type: TagType, *, rotation: int = 0) -> RenderedPage:
    """Draw a task page for a tag type mounted at `rotation` (as render_label does for prices)."""
    try:
        check_rotation(rotation)
    except ValueError as exc:
        raise LabelError(str(exc)) from None
    w, h = logical_size(tag_type, rotation)
    planes = Planes((0, 0, w, h), [0] * tag_type.colours.planes)
    if isinstance(page, PickPage):
        _draw_pick(planes, page, w, h, tag_type)
    else:
        _draw_slot(planes, page, w, h, tag_type)
    packed = [planes.packed(i) for i in range(len(planes.planes))]
    if rotation:
        raw = b"".join(to_native(Image.frombytes("1", (w, h), p), rotation).tobytes() for p in packed)
    else:
        raw = b"".join(packed)
    return RenderedPage(raw, tag_type, rotation)
