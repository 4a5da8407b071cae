"""Fonts and crisp 1-bit text for e-ink labels.

Text is drawn without anti-aliasing (FreeType's monochrome rasteriser, `fontmode "1"`): an e-ink pixel is
ink or paper, and grey edges would turn into ragged dithering.

Each style is a fallback chain of font faces, chosen per character: DejaVu Sans for Latin text and digits,
a CJK font (WenQuanYi Zen Hei, or Noto Sans CJK) for Chinese and other characters DejaVu lacks, and
Pillow's built-in font as the last resort, so a machine without the font packages still renders (once
logged). `scripts/lib/setup.sh` installs fonts-dejavu-core and fonts-wqy-zenhei.

Speed: FreeType font objects are cached, glyphs are rasterised once per (face, size, character) and a
string's bitmap is composed from them, cached per (string, style, size). Layout is Pillow's BASIC engine
(advances, no shaping) so that the same input gives the same bits with or without libraqm installed.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from devices.labels.bitmap import Bitmap, compose

log = logging.getLogger(__name__)

AnyFont = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class FontFace:
    """A font file and the face inside it (.ttc collections hold several); path None is Pillow's built-in."""

    path: str | None
    index: int = 0


BUILTIN = FontFace(None)

_DEJAVU = "/usr/share/fonts/truetype/dejavu"
# Candidates per family, first found wins. Only files of the Debian packages setup.sh installs come first.
_CANDIDATES: dict[str, tuple[FontFace, ...]] = {
    "sans": (
        FontFace(f"{_DEJAVU}/DejaVuSans.ttf"),
        FontFace("/usr/share/fonts/dejavu/DejaVuSans.ttf"),  # Fedora, Alpine layout
    ),
    "sans-bold": (
        FontFace(f"{_DEJAVU}/DejaVuSans-Bold.ttf"),
        FontFace("/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
    ),
    "cjk": (
        FontFace("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", 0),
        FontFace("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),  # index 2: Simplified Chinese
        FontFace("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 0),
        FontFace("/usr/share/fonts/truetype/arphic/uming.ttc", 0),
    ),
}


class Style(enum.StrEnum):
    REGULAR = "regular"
    BOLD = "bold"


_CHAINS: dict[Style, tuple[str, ...]] = {
    Style.REGULAR: ("sans", "cjk"),
    Style.BOLD: ("sans-bold", "cjk"),
}


@functools.cache
def family_face(family: str) -> FontFace | None:
    """The installed face of a family, or None (logged once per family)."""
    for face in _CANDIDATES[family]:
        if face.path is not None and os.path.isfile(face.path):
            return face
    log.warning(
        "no %s font found (looked for %s); labels fall back to other fonts. Install fonts-dejavu-core and "
        "fonts-wqy-zenhei",
        family,
        ", ".join(str(f.path) for f in _CANDIDATES[family]),
    )
    return None


@functools.cache
def chain(style: Style) -> tuple[FontFace, ...]:
    """The fallback chain of a style: installed faces in order, Pillow's built-in font last."""
    faces = [face for family in _CHAINS[style] if (face := family_face(family)) is not None]
    return (*faces, BUILTIN)


@functools.lru_cache(maxsize=256)
def font(face: FontFace, size: int) -> AnyFont:
    """The (cached) FreeType font object of a face at a pixel size."""
    if face.path is not None:
        try:
            return ImageFont.truetype(face.path, size, index=face.index, layout_engine=ImageFont.Layout.BASIC)
        except OSError as exc:
            log.warning("cannot load font %s: %s; using Pillow's built-in font", face.path, exc)
    return ImageFont.load_default(size)


@dataclass(frozen=True)
class Glyph:
    bitmap: Bitmap | None  # None for blank glyphs (spaces)
    left: int  # ink box relative to the pen position on the baseline
    top: int
    advance: float


_MISSING = "\U0010fffd"  # a private-use code point no font maps: it renders as the face's .notdef glyph


@functools.lru_cache(maxsize=32768)
def glyph(face: FontFace, size: int, char: str) -> Glyph:
    f = font(face, size)
    if isinstance(f, ImageFont.FreeTypeFont):
        left, top, right, bottom = (int(v) for v in f.getbbox(char, anchor="ls"))
        advance = float(f.getlength(char))
    else:  # Pillow without FreeType: a bitmap font with no anchors; its cell's bottom stands for the baseline
        left, top, right, bottom = (int(v) for v in f.getbbox(char))
        top, bottom = top - size, bottom - size
        advance = float(f.getlength(char))
    if right <= left or bottom <= top:
        return Glyph(None, 0, 0, advance)
    mask = Image.new("1", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(mask)
    draw.fontmode = "1"  # FreeType's monochrome rasteriser: no grey edges
    if isinstance(f, ImageFont.FreeTypeFont):
        draw.text((-left, -top), char, font=f, fill=1, anchor="ls")
    else:
        draw.text((-left, -top - size), char, font=f, fill=1)
    ink = mask.getbbox()  # the outline's box can be wider than the pixels the mono rasteriser sets
    if ink is None:
        return Glyph(None, 0, 0, advance)
    return Glyph(Bitmap.from_image(mask.crop(ink)), left + ink[0], top + ink[1], advance)


@functools.lru_cache(maxsize=65536)
def covers(face: FontFace, char: str) -> bool:
    """Whether a face has a glyph for a character: it must differ from the face's .notdef glyph."""
    if face.path is None:
        return True  # the last resort draws whatever it has
    probe = 24
    mine, notdef = glyph(face, probe, char), glyph(face, probe, _MISSING)
    if (mine.left, mine.top, mine.advance) != (notdef.left, notdef.top, notdef.advance):
        return True
    if mine.bitmap is None or notdef.bitmap is None:
        return (mine.bitmap is None) != (notdef.bitmap is None)
    return mine.bitmap.rows != notdef.bitmap.rows


@functools.lru_cache(maxsize=65536)
def face_for(style: Style, char: str) -> FontFace:
    faces = chain(style)
    if char.isspace():
        return faces[0]
    for face in faces:
        if covers(face, char):
            return face
    return faces[0]


@functools.lru_cache(maxsize=256)
def metrics(style: Style, size: int) -> tuple[int, int, int]:
    """(ascent, descent, line height) of a style at a size: fixed per style so that lines are evenly spaced."""
    ascent = round(size * 0.95)
    descent = round(size * 0.27)
    return ascent, descent, ascent + descent


@functools.lru_cache(maxsize=32768)
def styled_glyph(style: Style, size: int, char: str) -> Glyph:
    """The glyph a style draws for a character: one cache lookup for the fallback choice and the glyph."""
    return glyph(face_for(style, char), size, char)


def extent(text: str, style: Style, size: int) -> tuple[int, int]:
    """Horizontal span of a string from its pen origin, ink and advance together (`TextBitmap.x_extent`),
    from cached glyph metrics: what fitting needs, without drawing the string."""
    pen = 0.0
    lo = hi = 0
    for char in text:
        g = styled_glyph(style, size, char)
        if g.bitmap is not None:
            x = round(pen) + g.left
            lo = min(lo, x)
            hi = max(hi, x + g.bitmap.width)
        pen += g.advance
    return lo, max(hi, round(pen))


def span(text: str, style: Style, size: int) -> int:
    lo, hi = extent(text, style, size)
    return hi - lo


@dataclass(frozen=True, eq=False)
class TextBitmap:
    """A string drawn once: its ink, placed relative to the pen origin on the baseline."""

    bitmap: Bitmap | None  # None: no ink at all
    left: int
    top: int
    advance: int

    @property
    def width(self) -> int:
        return 0 if self.bitmap is None else self.bitmap.width

    @property
    def height(self) -> int:
        return 0 if self.bitmap is None else self.bitmap.height

    @property
    def x_extent(self) -> tuple[int, int]:
        """Horizontal span the string takes from its pen origin: ink and advance together."""
        if self.bitmap is None:
            return 0, self.advance
        return min(0, self.left), max(self.advance, self.left + self.bitmap.width)

    @property
    def span(self) -> int:
        lo, hi = self.x_extent
        return hi - lo


EMPTY = TextBitmap(None, 0, 0, 0)


def place(pieces: list[tuple[int, int, TextBitmap]], advance: int) -> TextBitmap:
    """Text bitmaps with their pen origins at (x, y) merged into one whose pen origin is (0, 0)."""
    composed = compose([(x + t.left, y + t.top, t.bitmap) for x, y, t in pieces if t.bitmap is not None])
    if composed is None:
        return TextBitmap(None, 0, 0, advance)
    bitmap, x0, y0 = composed
    return TextBitmap(bitmap, x0, y0, advance)


@functools.lru_cache(maxsize=16384)
def text_bitmap(text: str, style: Style, size: int) -> TextBitmap:
    """A string's 1-bit bitmap, composed from cached glyphs (per character font fallback, no kerning)."""
    placed: list[tuple[int, int, Bitmap]] = []
    pen = 0.0
    for char in text:
        g = styled_glyph(style, size, char)
        if g.bitmap is not None:
            placed.append((round(pen) + g.left, g.top, g.bitmap))
        pen += g.advance
    composed = compose(placed)
    if composed is None:
        return TextBitmap(None, 0, 0, round(pen))
    bitmap, x0, y0 = composed
    return TextBitmap(bitmap, x0, y0, round(pen))


def clear_caches() -> None:
    """Forget fonts and glyphs (tests; a font package installed while running)."""
    for cached in (family_face, chain, font, glyph, covers, face_for, styled_glyph, metrics, text_bitmap):
        cached.cache_clear()
