"""Task pages: what a shelf tag shows instead of its price while it takes part in a task.

- `PickPage`: pick-to-light. The product's name and, per open pick line on this tag, the quantity to take,
  the order reference and the picker (name and LED colour, written out: the panels have no green or blue).
  Two pick lists sharing the tag show both entries.
- `SlotPage`: a pickup-shelf slot. Empty: the shelf and slot name, big, so staff find it. Holding an order:
  the order reference, the customer's masked name (`王** 1234`) and the hold deadline.

Both are plain frozen data (picklable: they travel to the render pool's worker processes) and are drawn 1-bit
on the same colour planes as price labels (devices.labels.render), in the label's logical orientation, then
turned to the panel's.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from devices.labels.bitmap import Ink, Planes
from devices.labels.fonts import Style, metrics
from devices.labels.layout import Box, check_rotation, logical_size
from devices.labels.render import LabelError, fit_block, fit_line, picture_image, to_native
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import TagType

PICKER_COLOURS = ("red", "green", "blue", "white")

_WORDS = {
    "zh": {"pick": "拣货", "take": "取", "slot": "货位", "until": "保留至", "empty": "空", "more": "另有"},
    "en": {"pick": "PICK", "take": "take", "slot": "Slot", "until": "Hold until", "empty": "empty", "more": "more"},
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


def _lang(locale: str) -> str:
    return "zh" if locale.replace("-", "_").lower().startswith("zh") else "en"


def _line(planes: Planes, ink: Ink, box: Box, text: str, style: Style, *, size: int, min_size: int = 8) -> int:
    """One line of text at the top of `box`, shrunk or cut to its width; returns the height used."""
    bitmap = fit_line(text, style, size, min(min_size, size), box.w)
    ascent, _, line_height = metrics(style, size)
    if bitmap.bitmap is not None:
        planes.blit(ink, box.x + bitmap.left, box.y + ascent + bitmap.top, bitmap.bitmap, box.corners)
    return line_height


def _accent(tag_type: TagType) -> Ink:
    return Ink.ACCENT if tag_type.colours.planes == 2 else Ink.BLACK


def _draw_pick(planes: Planes, page: PickPage, w: int, h: int, tag_type: TagType) -> None:
    words, colours = _WORDS[_lang(page.locale)], _COLOUR_WORDS[_lang(page.locale)]
    pad = max(2, w // 50)
    band = max(12, h // 5)
    # The band says at a glance that this tag is in a task, not a price.
    planes.fill(_accent(tag_type), (0, 0, w, band))
    title = f"{words['pick']} · {page.product_name}"
    bitmap = fit_line(title, Style.BOLD, max(8, band - 4), 8, w - 2 * pad)
    ascent, descent, _ = metrics(Style.BOLD, max(8, band - 4))
    if bitmap.bitmap is not None:
        planes.blit(Ink.PAPER, pad + bitmap.left, (band - ascent - descent) // 2 + ascent + bitmap.top, bitmap.bitmap)
    y = band + pad
    entries = page.entries
    rows = max(1, min(len(entries), 3))
    row_h = max(10, (h - y - pad) // rows)
    shown = entries if len(entries) <= rows else entries[: rows - 1]
    for entry in shown:
        box = Box(pad, y, w - 2 * pad, row_h)
        qty = f"×{entry.quantity}"
        size = max(8, min(row_h * 3 // 5, h // 3))
        qbm = fit_line(qty, Style.BOLD, size, 8, max(8, box.w // 3), cut=False)
        ascent, _, _ = metrics(Style.BOLD, size)
        if qbm.bitmap is not None:
            planes.blit(Ink.BLACK, box.x + qbm.left, box.y + ascent + qbm.top, qbm.bitmap, box.corners)
        rest = Box(box.x + max(qbm.width, box.w // 3) + pad, box.y, box.w - max(qbm.width, box.w // 3) - pad, row_h)
        small = max(8, min(row_h // 3, 20))
        used = _line(planes, Ink.BLACK, rest, entry.order_ref, Style.BOLD, size=small)
        who = f"{colours.get(entry.colour, entry.colour)} · {entry.picker}"
        below = Box(rest.x, rest.y + used, rest.w, row_h - used)
        _line(planes, _accent(tag_type), below, who, Style.REGULAR, size=small)
        y += row_h
    if len(entries) > len(shown):
        more = f"+{len(entries) - len(shown)} {words['more']}"
        _line(planes, Ink.BLACK, Box(pad, y, w - 2 * pad, row_h), more, Style.REGULAR, size=max(8, row_h // 3))


def _draw_slot(planes: Planes, page: SlotPage, w: int, h: int, tag_type: TagType) -> None:
    words = _WORDS[_lang(page.locale)]
    pad = max(2, w // 50)
    place = f"{page.shelf}-{page.slot}"
    if page.order_ref is None:
        size, lines = fit_block(place, Style.BOLD, max(10, h // 2), 8, width=w - 2 * pad, height=h // 2)
        _, _, line_height = metrics(Style.BOLD, size)
        y = (h - line_height * len(lines)) // 3
        for line in lines:
            _line(planes, Ink.BLACK, Box(pad, y, w - 2 * pad, line_height), line, Style.BOLD, size=size)
            y += line_height
        caption = f"{words['slot']} · {words['empty']}"
        _line(planes, Ink.BLACK, Box(pad, y + pad, w - 2 * pad, h - y), caption, Style.REGULAR, size=max(8, h // 8))
        return
    band = max(12, h // 5)
    planes.fill(_accent(tag_type), (0, 0, w, band))
    bitmap = fit_line(place, Style.BOLD, max(8, band - 4), 8, w - 2 * pad)
    ascent, descent, _ = metrics(Style.BOLD, max(8, band - 4))
    if bitmap.bitmap is not None:
        planes.blit(Ink.PAPER, pad + bitmap.left, (band - ascent - descent) // 2 + ascent + bitmap.top, bitmap.bitmap)
    y = band + pad
    rest = h - y - pad
    y += _line(planes, Ink.BLACK, Box(pad, y, w - 2 * pad, rest), page.order_ref, Style.BOLD, size=max(8, rest // 3))
    if page.customer:
        box = Box(pad, y, w - 2 * pad, h - y)
        y += _line(planes, Ink.BLACK, box, page.customer, Style.REGULAR, size=max(8, rest // 4))
    if page.hold_until:
        text = f"{words['until']} {page.hold_until}"
        _line(planes, _accent(tag_type), Box(pad, y, w - 2 * pad, h - y), text, Style.REGULAR, size=max(8, rest // 5))


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
