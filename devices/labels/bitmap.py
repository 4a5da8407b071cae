"""1-bit bitmaps as packed integer rows: the drawing surface of label rendering.

Row j of a bitmap is an int whose bit (width - 1 - i) is pixel i, 1 = ink: the packing of the picture format
(firmware_bridge.picture) read as a big-endian number. A whole area is one int of `stride` bits a row, so
OR-ing a text into a colour plane, clearing the other plane under it, or filling a banner are each one big
integer operation in C, where a Pillow call costs microseconds of Python before it touches a pixel.
"""

from __future__ import annotations

import enum
import functools

from PIL import Image


class Bitmap:
    """A 1-bit picture as packed rows: row j is an int whose bit (width - 1 - i) is pixel i (1 = ink).

    Python's big integers make OR, AND-NOT and shifts of whole areas single C operations, which is what keeps
    drawing a label far below a millisecond (a Pillow call costs microseconds of Python before any pixel).
    """

    __slots__ = ("_spread", "height", "rows", "width")

    def __init__(self, width: int, height: int, rows: tuple[int, ...]) -> None:
        self.width = width
        self.height = height
        self.rows = rows
        self._spread: dict[int, int] = {}

    @classmethod
    def from_image(cls, image: Image.Image) -> Bitmap:
        """From a mode "1" image (Pillow packs rows to whole bytes, leftmost pixel in the top bit)."""
        w, h = image.size
        data = image.convert("1").tobytes()
        row_bytes = (w + 7) // 8
        pad = row_bytes * 8 - w
        rows = tuple(int.from_bytes(data[j * row_bytes : (j + 1) * row_bytes], "big") >> pad for j in range(h))
        return cls(w, h, rows)

    def to_image(self) -> Image.Image:
        row_bytes = (self.width + 7) // 8
        pad = row_bytes * 8 - self.width
        data = b"".join((r << pad).to_bytes(row_bytes, "big") for r in self.rows)
        return Image.frombytes("1", (self.width, self.height), data)

    def spread(self, stride: int) -> int:
        """All rows as one int, `stride` bits a row (stride >= width, a multiple of 8), first row in the top
        bits: the packed rows of an image `stride` pixels wide with this bitmap at its left edge. Cached."""
        value = self._spread.get(stride)
        if value is None:
            shift = stride - self.width
            row_bytes = stride // 8
            value = int.from_bytes(b"".join((r << shift).to_bytes(row_bytes, "big") for r in self.rows), "big")
            self._spread[stride] = value
        return value

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> Bitmap:
        """The part inside (x0, y0, x1, y1), already clamped to the bitmap."""
        w = x1 - x0
        shift = self.width - x1
        mask = (1 << w) - 1
        return Bitmap(w, y1 - y0, tuple((r >> shift) & mask for r in self.rows[y0:y1]))


def compose(placed: list[tuple[int, int, Bitmap]]) -> tuple[Bitmap, int, int] | None:
    """Bitmaps at (x, y) ORed into one; returns it with its top left corner, None when there is nothing."""
    if not placed:
        return None
    x0 = min(x for x, _, _ in placed)
    y0 = min(y for _, y, _ in placed)
    x1 = max(x + b.width for x, _, b in placed)
    y1 = max(y + b.height for _, y, b in placed)
    width = x1 - x0
    rows = [0] * (y1 - y0)
    for x, y, b in placed:
        shift = width - (x - x0) - b.width
        j = y - y0
        for r in b.rows:
            if r:
                rows[j] |= r << shift
            j += 1
    return Bitmap(width, y1 - y0, tuple(rows)), x0, y0


class Ink(enum.Enum):
    PAPER = 0
    BLACK = 1
    ACCENT = 2


@functools.lru_cache(maxsize=1024)
def _repunit(stride: int, rows: int) -> int:
    """1 at the bottom bit of each of `rows` rows of `stride` bits: multiplying a row by it repeats the row."""
    return ((1 << (stride * rows)) - 1) // ((1 << stride) - 1)


class Planes:
    """The colour planes (black, then accent) of an area of a label, each one int of packed rows.

    Coordinates are the label's (logical) ones; the area is (x, y, width, height) of it, `stride` bits a row.
    Black ink clears the accent bit under it and accent ink clears the black bit, so a pixel never has both.
    Nothing is ever drawn outside the area (or outside a clip box).
    """

    __slots__ = ("height", "planes", "stride", "width", "x", "y")

    def __init__(self, area: tuple[int, int, int, int], planes: list[int]) -> None:
        self.x, self.y, self.width, self.height = area
        self.stride = (self.width + 7) // 8 * 8
        self.planes = planes

    def _clip(self, clip: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.x, self.y, self.x + self.width, self.y + self.height
        if clip is not None:
            x0, y0, x1, y1 = max(x0, clip[0]), max(y0, clip[1]), min(x1, clip[2]), min(y1, clip[3])
        return x0, y0, x1, y1

    def _apply(self, ink: Ink, value: int) -> None:
        planes = self.planes
        if len(planes) == 1:
            planes[0] = planes[0] & ~value if ink is Ink.PAPER else planes[0] | value
        elif ink is Ink.BLACK:
            planes[0] |= value
            if planes[1]:
                planes[1] &= ~value
        elif ink is Ink.ACCENT:
            planes[1] |= value
            if planes[0]:
                planes[0] &= ~value
        else:
            planes[0] &= ~value
            planes[1] &= ~value

    def fill(self, ink: Ink, box: tuple[int, int, int, int], clip: tuple[int, int, int, int] | None = None) -> None:
        """Fill (left, top, right, bottom), right and bottom exclusive."""
        cx0, cy0, cx1, cy1 = self._clip(clip)
        x0, y0, x1, y1 = max(box[0], cx0), max(box[1], cy0), min(box[2], cx1), min(box[3], cy1)
        if x1 <= x0 or y1 <= y0:
            return
        row = ((1 << (x1 - x0)) - 1) << (self.stride - (x1 - self.x))
        self._apply(ink, (row * _repunit(self.stride, y1 - y0)) << ((self.y + self.height - y1) * self.stride))

    def blit(self, ink: Ink, x: int, y: int, bitmap: Bitmap, clip: tuple[int, int, int, int] | None = None) -> None:
        """Ink where `bitmap` is set, its top left corner at (x, y)."""
        cx0, cy0, cx1, cy1 = self._clip(clip)
        x0, y0 = max(x, cx0), max(y, cy0)
        x1, y1 = min(x + bitmap.width, cx1), min(y + bitmap.height, cy1)
        if x1 <= x0 or y1 <= y0:
            return
        if (x0, y0, x1, y1) != (x, y, x + bitmap.width, y + bitmap.height):
            bitmap = bitmap.crop(x0 - x, y0 - y, x1 - x, y1 - y)
            x, y = x0, y0
        # Bit of pixel (i, j) of the spread bitmap moves to pixel (x + i, y + j) of the area: see Bitmap.spread.
        shift = (self.y + self.height - y - bitmap.height) * self.stride - (x - self.x)
        value = bitmap.spread(self.stride)
        self._apply(ink, value << shift if shift >= 0 else value >> -shift)

    def packed(self, index: int) -> bytes:
        """A plane in the picture format: rows of stride / 8 bytes, leftmost pixel in the top bit."""
        return self.planes[index].to_bytes(self.height * self.stride // 8, "big")
