"""Label rendering: product content to the packed colour planes a tag shows (firmware_bridge.picture).

Pictures are drawn 1-bit, crisp (monochrome glyph rasterising, no anti-aliasing, no dithering), on colour
planes (black, then the accent) held as packed integer rows (devices.labels.bitmap): the very layout of the
raw picture format (rows padded to a byte, most significant bit leftmost, 1 = ink), which Pillow's mode
"1" `tobytes()` also produces. Labels are laid out in their logical (upright) orientation and turned to the
panel's native orientation (Pillow transposes) when the tag is mounted rotated. Accent ink clears the black
bit under it and black ink clears the accent bit, so a pixel never has both.

Speed (a store re-renders thousands of tags on a price change): everything that does not depend on the
price, the "static layer" (name, rule, footer, QR code), is drawn once per (content without price, tag
type, rotation, template, scan link) and kept packed in a byte-bounded LRU cache. A price change then only
redraws the dynamic area (price, unit price, promotion) from cached text bitmaps, as whole native rows at
rotation 0 (one contiguous splice per plane) or widened to whole bytes of the native rows otherwise, and
splices it into a copy of the static picture.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal

from PIL import Image

from devices.labels import fonts, money
from devices.labels.bitmap import Ink, Planes
from devices.labels.fonts import EMPTY, Style, TextBitmap, metrics, place, span, text_bitmap
from devices.labels.layout import Box, Layout, LayoutError, check_rotation, label_layout
from devices.labels.money import MoneyParts, format_money, money_parts, parse_locale, unit_price_text
from devices.labels.qr import QRCodeError, module_size, qr_bitmap
from firmware_bridge.picture import picture_hash
from firmware_bridge.tag_types import Colours, TagType

log = logging.getLogger(__name__)

# Preview colours: what the panel's pigments look like.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (200, 16, 16),
    "yellow": (245, 200, 0),
}

ELLIPSIS = "…"

# "Origin" in the label's language; anything else falls back to English.
_ORIGIN_LABEL = {
    "zh": "产地",
    "ja": "原産地",
    "ko": "원산지",
    "en": "Origin",
    "de": "Herkunft",
    "fr": "Origine",
    "es": "Origen",
    "it": "Origine",
    "nl": "Herkomst",
    "pt": "Origem",
}

# Characters a CJK line must not start with (simplified kinsoku): they stay with the preceding character.
_NO_LINE_START = frozenset("，。、；：？！）》」』】〕〉”’…‥·・,.;:!?)]}%")


class LabelError(ValueError):
    """Content that cannot be rendered: bad values, unknown template, a scan link too long for its QR box."""


@dataclass(frozen=True)
class LabelContent:
    """What a price label shows. Amounts are Decimal, never float."""

    sku: str
    name: str  # any script; Chinese is the common case
    price: Decimal
    currency: str  # ISO 4217
    unit_price: Decimal | None = None
    unit_label: str | None = None  # "500 g", "kg", "100 ml"
    former_price: Decimal | None = None  # struck through while a promotion is on
    promotion: str | None = None  # short text: "限时特价", "2 for 1"
    barcode: str | None = None
    origin: str | None = None
    locale: str = "zh_CN"  # zh_CN or zh-CN

    def __post_init__(self) -> None:
        amounts = {"price": self.price, "unit_price": self.unit_price, "former_price": self.former_price}
        for field, value in amounts.items():
            if value is None and field != "price":
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise LabelError(f"{field} must be a finite, non-negative Decimal, not {value!r}")
        if not (len(self.currency) == 3 and self.currency.isascii() and self.currency.isalpha()):
            raise LabelError(f"currency must be an ISO 4217 code such as CNY, not {self.currency!r}")


def _clean(text: str | None) -> str:
    """Text as drawn: control and format characters dropped, runs of white space made one space."""
    if not text:
        return ""
    kept = "".join(c for c in text if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf"))
    return " ".join(kept.split())


# -- drawing ------------------------------------------------------------------------------------------------


def _text(planes: Planes, ink: Ink, x: int, baseline: int, text: TextBitmap, *, clip: Box | None = None) -> None:
    """A text bitmap with its pen origin at (x, baseline)."""
    if text.bitmap is not None:
        planes.blit(ink, x + text.left, baseline + text.top, text.bitmap, None if clip is None else clip.corners)


def _fill(planes: Planes, ink: Ink, box: Box, *, clip: Box | None = None) -> None:
    planes.fill(ink, box.corners, None if clip is None else clip.corners)


# -- text fitting -------------------------------------------------------------------------------------------


def _breaks_anywhere(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _tokens(text: str) -> list[str]:
    """Break opportunities: after every wide (CJK) character, after spaces; trailing spaces stay on tokens."""
    tokens: list[str] = []
    word = ""
    for char in text:
        if char in _NO_LINE_START and not word and tokens:
            tokens[-1] += char
        elif char == " ":
            tokens.append(word + char)
            word = ""
        elif _breaks_anywhere(char):
            if word:
                tokens.append(word)
                word = ""
            tokens.append(char)
        else:
            word += char
    if word:
        tokens.append(word)
    return tokens


def _fits(text: str, style: Style, size: int, width: int) -> bool:
    return span(text, style, size) <= width


def _hard_break(token: str, style: Style, size: int, width: int) -> list[str]:
    """A word longer than the line, cut between characters."""
    pieces: list[str] = []
    piece = ""
    for char in token:
        if piece and not _fits(piece + char, style, size, width):
            pieces.append(piece)
            piece = ""
        piece += char
    if piece:
        pieces.append(piece)
    return pieces


def _wrap(text: str, style: Style, size: int, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for token in _tokens(text):
        if _fits((line + token).rstrip(), style, size, width):
            line += token
            continue
        if line:
            lines.append(line.rstrip())
        line = ""
        if _fits(token.rstrip(), style, size, width):
            line = token
        else:
            *whole, line = _hard_break(token, style, size, width)
            lines.extend(p.rstrip() for p in whole)
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _ellipsize(text: str, style: Style, size: int, width: int) -> str:
    if _fits(text, style, size, width):
        return text
    while text and not _fits(text.rstrip() + ELLIPSIS, style, size, width):
        text = text[:-1]
    return text.rstrip() + ELLIPSIS if text else ""


@functools.lru_cache(maxsize=4096)
def fit_block(
    text: str, style: Style, max_size: int, min_size: int, *, width: int, height: int
) -> tuple[int, tuple[str, ...]]:
    """The largest size (down to min_size) at which `text` wraps into the box; at min_size the text is cut and
    ellipsized. Returns (size, lines)."""
    text = _clean(text)
    if not text:
        return max_size, ()
    for size in range(max_size, min_size - 1, -1):
        max_lines = height // metrics(style, size)[2]
        if max_lines < 1:
            continue
        lines = _wrap(text, style, size, width)
        if len(lines) <= max_lines:
            return size, tuple(lines)
    size = min_size
    max_lines = max(1, height // metrics(style, size)[2])
    lines = _wrap(text, style, size, width)
    kept = lines[:max_lines]
    # The last line kept takes the rest of the text, cut with an ellipsis (lines are substrings of the text).
    at = 0
    for line in kept[:-1]:
        at = text.index(line, at) + len(line)
    kept[-1] = _ellipsize(text[at:].strip(), style, size, width)
    return size, tuple(kept)


MIN_AMOUNT_SIZE = 7  # pixels: an amount shrinks down to this rather than being cut


@functools.lru_cache(maxsize=8192)
def fit_line(text: str, style: Style, max_size: int, min_size: int, width: int, *, cut: bool = True) -> TextBitmap:
    """One line of text at the largest size that fits `width`. At min_size, a text that still does not fit is
    ellipsized; unless `cut` is False (amounts: a cut price would be a wrong price), then it shrinks on down to
    MIN_AMOUNT_SIZE, and is left out (EMPTY) if even that is too wide."""
    text = _clean(text)
    if not text:
        return EMPTY
    floor = min_size if cut else min(min_size, MIN_AMOUNT_SIZE)
    size = max_size
    while size > floor and not _fits(text, style, size, width):
        size -= 1
    if _fits(text, style, size, width):
        return text_bitmap(text, style, size)
    return text_bitmap(_ellipsize(text, style, size, width), style, size) if cut else EMPTY


# -- the price ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def price_bitmap(parts: MoneyParts, size: int) -> TextBitmap:
    """A big price: the integer part at `size`, the minor units at half size raised to the top of the digits
    over a small decimal separator, currency symbols at half size on the baseline: `¥12.⁸⁰`, `12,⁸⁰ €`."""
    small = max(1, round(size * 0.5))
    gap = max(1, round(size * 0.06))
    big = text_bitmap(parts.integer, Style.BOLD, size)
    pieces: list[tuple[int, int, TextBitmap]] = []
    pen = 0
    prefix = parts.prefix.strip()
    if prefix:
        bm = text_bitmap(prefix, Style.BOLD, small)
        pieces.append((pen, 0, bm))
        pen += bm.advance + gap
    pieces.append((pen, 0, big))
    pen += big.advance
    if parts.fraction:
        # The separator small on the baseline, the minor units small with their tops level with the digits'.
        separator = text_bitmap(parts.decimal, Style.BOLD, small)
        pieces.append((pen, 0, separator))
        bm = text_bitmap(parts.fraction, Style.BOLD, small)
        pieces.append((pen, big.top - bm.top, bm))
        pen += max(bm.advance, separator.advance)
    suffix = parts.suffix.strip()
    if suffix:
        bm = text_bitmap(suffix, Style.BOLD, small)
        pen += gap
        pieces.append((pen, 0, bm))
        pen += bm.advance
    return place(pieces, pen)


@functools.lru_cache(maxsize=8192)
def fit_price(parts: MoneyParts, max_size: int, min_size: int, width: int, height: int) -> TextBitmap:
    """The price at the largest size that fits the box, from one measurement and a few steps down."""

    def fits(bm: TextBitmap) -> bool:
        return bm.span <= width and bm.height <= height

    bm = price_bitmap(parts, max_size)
    if fits(bm):
        return bm
    # Never cut a price: below min_size it goes on shrinking (a huge amount on a small tag).
    floor = min(min_size, MIN_AMOUNT_SIZE)
    scale = min(width / max(1, bm.span), height / max(1, bm.height))
    size = max(floor, min(max_size - 1, int(max_size * scale) + 1))
    bm = price_bitmap(parts, size)
    while size > floor and not fits(bm):
        size -= 1
        bm = price_bitmap(parts, size)
    return bm


# -- geometry between logical and native orientation --------------------------------------------------------

_TRANSPOSE = {
    90: Image.Transpose.ROTATE_270,  # Pillow's ROTATE_270 turns 90 degrees clockwise
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def rotate_box(corners: tuple[int, int, int, int], size: tuple[int, int], rotation: int) -> tuple[int, int, int, int]:
    """A box of an image of `size` after that image is turned `rotation` degrees clockwise."""
    x0, y0, x1, y1 = corners
    w, h = size
    if rotation == 90:
        return h - y1, x0, h - y0, x1
    if rotation == 180:
        return w - x1, h - y1, w - x0, h - y0
    if rotation == 270:
        return y0, w - x1, y1, w - x0
    return corners


def to_native(image: Image.Image, rotation: int) -> Image.Image:
    """A logical (upright) picture turned to the panel's native orientation: `rotation` degrees clockwise."""
    return image.transpose(_TRANSPOSE[rotation]) if rotation else image


# -- the static layer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Static:
    raw: bytes  # the static layer as a packed native picture
    region: Box  # logical area a price change redraws: the dynamic box widened to whole bytes on the panel
    native: tuple[int, int, int, int]  # that area on the panel, left edge on a byte boundary
    region_planes: tuple[int, ...]  # the static layer's pixels in `region`, per plane (Planes ints)
    contiguous: bool  # region = whole native rows, same orientation: its packed planes splice in one piece
    qr_origin: tuple[int, int, int] | None  # (x, y, module px) of the QR code, logical

    @property
    def nbytes(self) -> int:
        return len(self.raw) + sum(p.bit_length() // 8 + 32 for p in self.region_planes) + 300


class _ByteLRU:
    """A least-recently-used cache bounded by the bytes its values hold."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[object, _Static] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> _Static | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: object, value: _Static) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


STATIC_CACHE = _ByteLRU(64 * 1024 * 1024)  # ~5,000 static layers of 2.9" two-colour tags


def _origin_label(locale: str) -> str:
    return _ORIGIN_LABEL.get(parse_locale(locale).language, _ORIGIN_LABEL["en"])


def _footer_lines(content: LabelContent, layout: Layout) -> list[str]:
    origin = _clean(content.origin)
    origin_text = f"{_origin_label(content.locale)}: {origin}" if origin else ""
    code = _clean(content.barcode)
    sku = _clean(content.sku)
    code_text = f"{code} · {sku}" if code and code != sku else (code or sku)
    lines = [t for t in (origin_text, code_text) if t]
    if layout.footer_lines < 2 and len(lines) > 1:
        return [" · ".join(lines)]
    return lines


def _draw_static(
    planes: Planes, content: LabelContent, layout: Layout, scan_url: str | None
) -> tuple[int, int, int] | None:
    # Name: wrapped, shrunk, ellipsized to stay inside its box.
    box = layout.name
    size, lines = fit_block(
        content.name, Style.REGULAR, layout.name_size, layout.name_min_size, width=box.w, height=box.h
    )
    ascent, _, line_height = metrics(Style.REGULAR, size)
    for i, line in enumerate(lines):
        bitmap = text_bitmap(line, Style.REGULAR, size)
        _text(planes, Ink.BLACK, box.x, box.y + i * line_height + ascent, bitmap, clip=box)
    _fill(planes, Ink.BLACK, Box(layout.name.x, layout.rule_y, layout.name.w, 1))
    # Footer: origin and codes, bottom-aligned in their box.
    box = layout.footer
    texts = _footer_lines(content, layout)
    ascent, _, line_height = metrics(Style.REGULAR, layout.footer_size)
    for i, text in enumerate(texts):
        bitmap = fit_line(text, Style.REGULAR, layout.footer_size, layout.footer_min_size, box.w)
        row = layout.footer_lines - len(texts) + i
        _text(planes, Ink.BLACK, box.x, box.y + row * line_height + ascent, bitmap, clip=box)
    # QR code: module-exact, centred in its box, which leaves the quiet zone around it.
    if scan_url is None or layout.qr is None:
        return None
    box = layout.qr
    try:
        module = module_size(scan_url, box.w)
    except QRCodeError as exc:
        raise LabelError(f"scan link does not fit its {box.w} px QR box: {exc}") from None
    code = qr_bitmap(scan_url, module)
    x, y = box.x + (box.w - code.width) // 2, box.y + (box.h - code.height) // 2
    planes.blit(Ink.BLACK, x, y, code)
    return x, y, module


def _static_layer(
    content: LabelContent, tag_type: TagType, rotation: int, template: str, scan_url: str | None
) -> _Static:
    key = (
        content.sku, content.name, content.barcode, content.origin, content.locale,
        tag_type, rotation, template, scan_url,
    )  # fmt: skip
    cached = STATIC_CACHE.get(key)
    if cached is not None:
        return cached
    layout = label_layout(tag_type, rotation, template, qr=scan_url is not None)
    w, h = layout.width, layout.height
    planes = Planes((0, 0, w, h), [0] * tag_type.colours.planes)
    qr_origin = _draw_static(planes, content, layout, scan_url)
    logical = [planes.packed(i) for i in range(len(planes.planes))]
    if rotation:
        raw = b"".join(to_native(Image.frombytes("1", (w, h), plane), rotation).tobytes() for plane in logical)
    else:
        raw = b"".join(logical)
    dynamic = layout.dynamic
    if rotation == 0:
        # Whole rows: the redrawn area is one contiguous run of bytes of each plane.
        region = Box(0, dynamic.y, w, dynamic.h)
        native = (0, dynamic.y, w, dynamic.bottom)
        stride = planes.stride
        keep = (1 << (region.h * stride)) - 1
        region_planes = tuple((p >> ((h - region.bottom) * stride)) & keep for p in planes.planes)
    else:
        # The dynamic box on the panel, widened to whole bytes so that its packed rows splice in.
        nx0, ny0, nx1, ny1 = rotate_box(dynamic.corners, (w, h), rotation)
        nx0, nx1 = nx0 // 8 * 8, min(tag_type.width, (nx1 + 7) // 8 * 8)
        native = (nx0, ny0, nx1, ny1)
        lx0, ly0, lx1, ly1 = rotate_box(native, (tag_type.width, tag_type.height), (360 - rotation) % 360)
        region = Box(lx0, ly0, lx1 - lx0, ly1 - ly0)
        region_planes = tuple(
            int.from_bytes(Image.frombytes("1", (w, h), plane).crop(region.corners).tobytes(), "big")
            for plane in logical
        )
    static = _Static(raw, region, native, region_planes, rotation == 0, qr_origin)
    STATIC_CACHE.put(key, static)
    return static


# -- the dynamic part ---------------------------------------------------------------------------------------


def _draw_dynamic(planes: Planes, content: LabelContent, layout: Layout, colours: Colours) -> None:
    promo_on = content.promotion is not None or content.former_price is not None
    # Price: the promo row's space too when there is no promotion.
    box = layout.price if promo_on else layout.promo.union(layout.price)
    parts = money_parts(content.price, content.currency, content.locale)
    bitmap = fit_price(parts, layout.price_size, layout.price_min_size, box.w, box.h)
    ink = Ink.ACCENT if promo_on and colours is Colours.BWR else Ink.BLACK
    top = box.y + (box.h - bitmap.height) // 2
    _text(planes, ink, box.x - bitmap.x_extent[0], top - bitmap.top, bitmap, clip=box)
    # Unit price.
    if content.unit_price is not None:
        box = layout.unit
        label = _clean(content.unit_label) or None
        text = unit_price_text(content.unit_price, content.currency, content.locale, label)
        bitmap = fit_line(text, Style.REGULAR, layout.unit_size, layout.unit_size * 2 // 3, box.w, cut=False)
        _text(planes, Ink.BLACK, box.x, box.y + metrics(Style.REGULAR, layout.unit_size)[0], bitmap, clip=box)
    if promo_on:
        _draw_promotion(planes, content, layout, colours)


def _draw_promotion(planes: Planes, content: LabelContent, layout: Layout, colours: Colours) -> None:
    box = layout.promo
    size = layout.promo_size
    min_size = max(6, size * 2 // 3)
    x = box.x
    promotion = _clean(content.promotion)
    if promotion:
        # A banner: white text knocked out of accent (of black on black/white panels); black text on yellow.
        pad = max(2, size // 4)
        bitmap = fit_line(promotion, Style.BOLD, size, min_size, box.w * 3 // 5 - 2 * pad)
        banner = Box(x, box.y, bitmap.span + 2 * pad, box.h)
        _fill(planes, Ink.BLACK if colours is Colours.BW else Ink.ACCENT, banner, clip=box)
        ascent, _, line_height = metrics(Style.BOLD, size)
        baseline = box.y + (box.h - line_height) // 2 + ascent
        text_ink = Ink.BLACK if colours is Colours.BWY else Ink.PAPER
        _text(planes, text_ink, x + pad - bitmap.x_extent[0], baseline, bitmap, clip=banner)
        x = banner.right + max(3, size // 2)
    if content.former_price is not None and x < box.right:
        text = format_money(content.former_price, content.currency, content.locale)
        bitmap = fit_line(text, Style.REGULAR, size, min_size, box.right - x, cut=False)
        # Red on red panels; yellow is too pale for thin text, so black there.
        ink = Ink.ACCENT if colours is Colours.BWR else Ink.BLACK
        ascent, _, line_height = metrics(Style.REGULAR, size)
        baseline = box.y + (box.h - line_height) // 2 + ascent
        _text(planes, ink, x, baseline, bitmap, clip=box)
        if bitmap.bitmap is not None:
            thickness = max(1, size // 10)
            mid = baseline + bitmap.top + bitmap.height // 2 - thickness // 2
            _fill(planes, ink, Box(x + bitmap.x_extent[0] - 1, mid, bitmap.span + 2, thickness), clip=box)


# -- the result ---------------------------------------------------------------------------------------------


class RenderedLabel:
    """A rendered label: `raw` is ready for firmware_bridge.picture.encode_picture, `hash` is its picture hash."""

    __slots__ = ("_image", "hash", "layout", "qr_origin", "raw", "rotation", "tag_type")

    def __init__(
        self, raw: bytes, tag_type: TagType, rotation: int, layout: Layout, qr_origin: tuple[int, int, int] | None
    ) -> None:
        self.raw = raw
        self.hash = picture_hash(raw)
        self.tag_type = tag_type
        self.rotation = rotation
        self.layout = layout  # logical coordinates
        self.qr_origin = qr_origin  # (x, y, module px), logical coordinates
        self._image: Image.Image | None = None

    @property
    def image(self) -> Image.Image:
        """The picture as the panel shows it (native orientation), a "P" image in true colours; made from `raw`."""
        if self._image is None:
            self._image = picture_image(self.raw, self.tag_type)
        return self._image

    def upright_image(self) -> Image.Image:
        """The picture the way a shopper reads it (logical orientation)."""
        if not self.rotation:
            return self.image
        return self.image.transpose(_TRANSPOSE[(360 - self.rotation) % 360])

    def preview_png(self, *, upright: bool = False, scale: int = 1) -> bytes:
        """A PNG of the picture in true colours, native orientation unless `upright`, optionally enlarged."""
        image = self.upright_image() if upright else self.image
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()


def picture_image(raw: bytes, tag_type: TagType) -> Image.Image:
    """A raw picture (packed planes) as a "P" image with the panel's colours: for previews and tests."""
    if len(raw) != tag_type.raw_bytes:
        raise LabelError(f"picture of {len(raw)} bytes, a {tag_type.name} picture has {tag_type.raw_bytes}")
    size = (tag_type.width, tag_type.height)
    image = Image.new("P", size, 0)
    accent = tag_type.colours.accent or "red"
    image.putpalette([*PALETTE["white"], *PALETTE["black"], *PALETTE[accent]])
    image.paste(1, (0, 0), Image.frombytes("1", size, raw[: tag_type.plane_bytes]))
    if tag_type.colours.planes == 2:
        image.paste(2, (0, 0), Image.frombytes("1", size, raw[tag_type.plane_bytes :]))
    return image


def render_label(
    content: LabelContent,
    tag_type: TagType,
    *,
    rotation: int = 0,
    scan_url: str | None = None,
    template: str = "price",
) -> RenderedLabel:
    """Draw a label for a tag type mounted at `rotation` (degrees clockwise the upright picture is turned on the
    panel: a tag hung turned 90 degrees counter-clockwise needs 90), with a QR code of `scan_url` if given."""
    try:
        check_rotation(rotation)
        layout = label_layout(tag_type, rotation, template, qr=scan_url is not None)
    except LayoutError as exc:
        raise LabelError(str(exc)) from None
    static = _static_layer(content, tag_type, rotation, template, scan_url)
    region = static.region
    planes = Planes((region.x, region.y, region.w, region.h), list(static.region_planes))
    _draw_dynamic(planes, content, layout, tag_type.colours)
    # Splice the redrawn area into the static picture.
    nx0, ny0, nx1, _ = static.native
    stride = (tag_type.width + 7) // 8
    out = bytearray(static.raw)
    for index in range(len(planes.planes)):
        start = index * tag_type.plane_bytes + ny0 * stride + nx0 // 8
        if static.contiguous:
            packed = planes.packed(index)
            out[start : start + len(packed)] = packed
            continue
        image = Image.frombytes("1", (region.w, region.h), planes.packed(index))
        packed = to_native(image, rotation).tobytes()
        row_bytes = (nx1 - nx0 + 7) // 8
        for row in range(len(packed) // row_bytes):
            at = start + row * stride
            out[at : at + row_bytes] = packed[row * row_bytes : (row + 1) * row_bytes]
    return RenderedLabel(bytes(out), tag_type, rotation, layout, static.qr_origin)


def clear_caches() -> None:
    """Forget every cached layer, text and price bitmap (tests, benchmarks measuring a cold start)."""
    STATIC_CACHE.clear()
    for cached in (fit_block, fit_line, price_bitmap, fit_price, label_layout):
        cached.cache_clear()
    fonts.clear_caches()
    money.clear_caches()


__all__ = [
    "PALETTE",
    "Ink",
    "LabelContent",
    "LabelError",
    "RenderedLabel",
    "clear_caches",
    "picture_image",
    "render_label",
    "rotate_box",
]
