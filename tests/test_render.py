
"""devices.labels: price labels drawn to the packed picture format, every tag type, rotation and colour set.

Reference pictures live in tests/reference/labels/ (PNG, native orientation, true colours) and as hashes
below. After a deliberate change of the look, regenerate both and look at the PNGs:

    UPDATE_LABEL_REFERENCES=1 .venv/bin/pytest tests/test_render.py -k reference

and paste the printed hashes into REFERENCE_HASHES.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import random
from decimal import Decimal
from pathlib import Path

import pytest
from babel import numbers as babel_numbers
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops

from devices.labels import fonts, money, render
from devices.labels.bitmap import Bitmap, Ink, Planes
from devices.labels.fonts import Style
from devices.labels.layout import ROTATIONS, label_layout
from devices.labels.qr import QUIET_MODULES, qr_matrix
from devices.labels.render import (
    LabelContent,
    LabelError,
    RenderedLabel,
    clear_caches,
    fit_block,
    picture_image,
    render_label,
    to_native,
)
from firmware_bridge.picture import encode_picture, picture_hash, pixel
from firmware_bridge.tag_types import TAG_TYPES, TAG_TYPES_BY_NAME, Colours, TagType

REFERENCE_DIR = Path(__file__).parent / "reference" / "labels"
URL = "https://shop.example.com/s/Ab3dE7kQ"
TAGS = list(TAG_TYPES.values())
T29 = TAG_TYPES_BY_NAME["2.9-bwr"]

ZH = LabelContent(
    sku="100234",
    name="农夫山泉 饮用天然水 550ml×24瓶 整箱装",
    price=Decimal("12.80"),
    currency="CNY",
    unit_price=Decimal("2.56"),
    unit_label="500 g",
    former_price=Decimal("15.80"),
    promotion="限时特价",
    barcode="6901234567890",
    origin="浙江杭州",
    locale="zh_CN",
)
DE = LabelContent(
    sku="A-77",
    name="Bio Vollmilch 3,8 % Fett, frisch pasteurisiert",
    price=Decimal("1.29"),
    currency="EUR",
    unit_price=Decimal("1.29"),
    unit_label="l",
    barcode="4001234567891",
    origin="Bayern",
    locale="de_DE",
)
PLAIN = dataclasses.replace(ZH, former_price=None, promotion=None)

fonts_installed = pytest.mark.skipif(
    fonts.family_face("cjk") is None or fonts.family_face("sans") is None,
    reason="tag fonts not installed (fonts-wqy-zenhei, fonts-dejavu-core): pictures differ",
)


def upright(label: RenderedLabel) -> Image.Image:
    return label.upright_image()


def ink_box(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Bounding box of every non-white pixel (palette index != 0) in an area of a "P" picture."""
    area = image.crop(box) if box else image
    found = area.point(lambda v: 255 if v else 0).getbbox()
    if found is None or box is None:
        return found
    return found[0] + box[0], found[1] + box[1], found[2] + box[0], found[3] + box[1]


def full_render(content: LabelContent, tag_type: TagType, rotation: int, scan_url: str | None) -> bytes:
    """The same label drawn in one piece, without the static layer cache and the splice."""
    layout = label_layout(tag_type, rotation, "price", qr=scan_url is not None)
    planes = Planes((0, 0, layout.width, layout.height), [0] * tag_type.colours.planes)
    render._draw_static(planes, content, layout, scan_url)
    render._draw_dynamic(planes, content, layout, tag_type.colours)
    out = b""
    for i in range(tag_type.colours.planes):
        image = Image.frombytes("1", (layout.width, layout.height), planes.packed(i))
        out += to_native(image, rotation).tobytes()
    return out


# -- the picture format ---------------------------------------------------------------------------------------


def test_pillow_mode_1_packing_is_the_picture_format() -> None:
    tiny = TagType(0xF0, "test-10x3-bw", 0.5, 10, 3, Colours.BW)
    image = Image.new("1", (10, 3), 0)
    for xy in ((0, 0), (9, 0), (1, 1), (8, 2)):
        image.putpixel(xy, 1)
    raw = image.tobytes()
    assert raw == bytes.fromhex("8040 4000 0080")  # rows padded to 2 bytes, leftmost pixel in the top bit
    assert [pixel(raw, tiny, x, y) for x, y in ((0, 0), (9, 0), (1, 1), (8, 2), (2, 2))] == [
        "black", "black", "black", "black", "white",
    ]  # fmt: skip
    bitmap = Bitmap.from_image(image)
    assert bitmap.rows == (0b1000000001, 0b0100000000, 0b0000000010)
    assert bitmap.to_image().tobytes() == raw
    planes = Planes((0, 0, 10, 3), [bitmap.spread(16)])
    assert planes.packed(0) == raw


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    area=st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 70), st.integers(1, 40)),
    two=st.booleans(),
)
def test_planes_draw_like_pillow(seed: int, area: tuple[int, int, int, int], two: bool) -> None:
    """Blits and fills on packed int planes give the pixels Pillow's paste gives, clipped, inks exclusive."""
    rng = random.Random(seed)
    ax, ay, aw, ah = area
    n = 2 if two else 1
    planes = Planes(area, [0] * n)
    ref = [Image.new("1", (aw, ah), 0) for _ in range(n)]
    values = {Ink.PAPER: (0, 0), Ink.BLACK: (1, 0), Ink.ACCENT: (0, 1)} if two else {Ink.PAPER: (0,), Ink.BLACK: (1,)}
    for _ in range(8):
        ink = rng.choice(list(values))
        x, y = rng.randrange(ax - 10, ax + aw + 5), rng.randrange(ay - 10, ay + ah + 5)
        clip = None
        if rng.random() < 0.5:
            cx, cy = rng.randrange(ax - 5, ax + aw), rng.randrange(ay - 5, ay + ah)
            clip = (cx, cy, cx + rng.randrange(1, 40), cy + rng.randrange(1, 30))
        cx0, cy0, cx1, cy1 = clip or (ax, ay, ax + aw, ay + ah)
        cx0, cy0, cx1, cy1 = max(cx0, ax), max(cy0, ay), min(cx1, ax + aw), min(cy1, ay + ah)
        if rng.random() < 0.5:
            w, h = rng.randrange(1, 30), rng.randrange(1, 20)
            mask = Image.frombytes("1", (w, h), rng.randbytes((w + 7) // 8 * h))
            planes.blit(ink, x, y, Bitmap.from_image(mask), clip)
            clipped = Image.new("1", (aw, ah), 0)
            clipped.paste(mask, (x - ax, y - ay))
        else:
            box = (x, y, x + rng.randrange(0, 30), y + rng.randrange(0, 20))
            planes.fill(ink, box, clip)
            clipped = Image.new("1", (aw, ah), 0)
            clipped.paste(1, (box[0] - ax, box[1] - ay, box[2] - ax, box[3] - ay))
        keep = Image.new("1", (aw, ah), 0)
        if cx1 > cx0 and cy1 > cy0:
            keep.paste(1, (cx0 - ax, cy0 - ay, cx1 - ax, cy1 - ay))
        region = Image.new("1", (aw, ah), 0)
        region.paste(clipped, (0, 0), keep)
        for plane, value in zip(ref, values[ink], strict=True):
            plane.paste(value, (0, 0), region)
    for i in range(n):
        assert planes.packed(i) == ref[i].tobytes()


# -- every tag type, every rotation -------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.name)
def test_every_tag_type_and_rotation(tag: TagType, rotation: int) -> None:
    for content in (ZH, DE):
        label = render_label(content, tag, rotation=rotation, scan_url=URL)
        assert len(label.raw) == tag.raw_bytes
        assert label.image.size == (tag.width, tag.height)
        assert label.image.mode == "P"
        size = upright(label).size
        assert size == ((tag.height, tag.width) if rotation in (90, 270) else (tag.width, tag.height))
        if tag.colours.planes == 2:
            black, accent = label.raw[: tag.plane_bytes], label.raw[tag.plane_bytes :]
            overlap = int.from_bytes(black, "big") & int.from_bytes(accent, "big")
            assert overlap == 0, "a pixel with both black and accent bits"
        # The price change path (cached static layer, spliced area) draws what a one-piece drawing draws.
        assert label.raw == full_render(content, tag, rotation, URL)
        assert render_label(content, tag, rotation=rotation).raw == full_render(content, tag, rotation, None)


@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.name)
def test_rotation_turns_the_same_picture(tag: TagType) -> None:
    """180 degrees is 0 turned around, 270 is 90 turned around: upright they are the same picture."""
    for a, b in ((0, 180), (90, 270)):
        pa = render_label(ZH, tag, rotation=a, scan_url=URL)
        pb = render_label(ZH, tag, rotation=b, scan_url=URL)
        assert pa.raw != pb.raw or tag.width == tag.height
        assert upright(pa).tobytes() == upright(pb).tobytes()


def test_rotation_90_is_a_clockwise_quarter_turn() -> None:
    label = render_label(ZH, T29, rotation=90, scan_url=URL)
    logical = upright(label)
    assert logical.size == (128, 296)
    # Logical top left (the name) lands at the native top right after a clockwise quarter turn.
    assert ink_box(label.image, (T29.width - 60, 0, T29.width, 60)) is not None
    assert logical.transpose(Image.Transpose.ROTATE_270).tobytes() == label.image.tobytes()


def test_deterministic_across_cache_states() -> None:
    first = render_label(ZH, T29, scan_url=URL).raw
    clear_caches()
    assert render_label(ZH, T29, scan_url=URL).raw == first
    render_label(DE, T29, scan_url=URL)
    assert render_label(ZH, T29, scan_url=URL).raw == first


def test_price_change_reuses_the_static_layer() -> None:
    clear_caches()
    render_label(PLAIN, T29, scan_url=URL)
    assert render.STATIC_CACHE.misses == 1
    for cents in range(1000, 1010):
        render_label(dataclasses.replace(PLAIN, price=Decimal(cents) / 100), T29, scan_url=URL)
    assert render.STATIC_CACHE.misses == 1
    assert render.STATIC_CACHE.hits == 10


def test_static_cache_is_bounded() -> None:
    cache = render._ByteLRU(100_000)
    saved, render.STATIC_CACHE = render.STATIC_CACHE, cache
    try:
        for i in range(40):
            render_label(dataclasses.replace(PLAIN, sku=f"s{i}"), T29, scan_url=URL)
        assert cache.bytes <= 100_000
        assert 1 <= len(cache) < 40
    finally:
        render.STATIC_CACHE = saved


def test_price_change_delta_is_small() -> None:
    before = render_label(PLAIN, T29, scan_url=URL)
    after = render_label(
        dataclasses.replace(PLAIN, price=Decimal("13.50"), unit_price=Decimal("2.70")), T29, scan_url=URL
    )
    enc = encode_picture(after.raw, before.raw)
    assert enc.base_hash == before.hash
    assert len(enc.data) < T29.raw_bytes // 10


# -- names stay in their box ----------------------------------------------------------------------------------

LONG_NAMES = [
    "伊利金典有机纯牛奶250ml×12盒礼盒装（新老包装随机发货），" * 5,
    "Extra virgin olive oil from the sunny hills of Andalusia, cold pressed, first harvest, unfiltered " * 3,
    "Donaudampfschifffahrtsgesellschaftskapitänsmützenhalterungsschraubenzieherset",
    "农夫山泉 Nongfu Spring 天然水 Natural Water 550ml × 24 瓶 bottles 整箱装 case of twenty four",
    "x",
]


@pytest.mark.parametrize("rotation", [0, 90])
@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.name)
def test_long_names_stay_inside_their_box(tag: TagType, rotation: int) -> None:
    layout = label_layout(tag, rotation, "price", qr=True)
    box = layout.name
    for name in LONG_NAMES:
        label = render_label(dataclasses.replace(PLAIN, name=name), tag, rotation=rotation, scan_url=URL)
        image = upright(label)
        # Above the rule under the name, nothing but the name is drawn: all that ink must be inside its box.
        found = ink_box(image, (0, 0, layout.width, layout.rule_y))
        assert found is not None
        assert box.x <= found[0] and box.y <= found[1] and found[2] <= box.right and found[3] <= box.bottom, (
            name, found, box,
        )  # fmt: skip


def test_wrapping_rules() -> None:
    # A short name keeps the largest size and one line.
    size, lines = fit_block("牛奶", Style.REGULAR, 18, 12, width=280, height=44)
    assert (size, lines) == (18, ("牛奶",))
    # Chinese wraps between characters, Latin between words; every line fits.
    size, lines = fit_block("有机纯牛奶" * 6, Style.REGULAR, 18, 12, width=150, height=44)
    assert len(lines) >= 2 and "".join(lines) == "有机纯牛奶" * 6
    assert len(lines) * fonts.metrics(Style.REGULAR, size)[2] <= 44
    assert all(fonts.span(line, Style.REGULAR, size) <= 150 for line in lines)
    size, lines = fit_block("Organic whole milk fresh", Style.REGULAR, 18, 12, width=150, height=44)
    assert all(not line.startswith(" ") and not line.endswith(" ") for line in lines)
    assert " ".join(lines) == "Organic whole milk fresh"
    # Closing punctuation never starts a line.
    for width in range(60, 200, 7):
        _, lines = fit_block("牛奶，面包。鸡蛋、苹果！" * 3, Style.REGULAR, 18, 12, width=width, height=400)
        assert all(line[0] not in "，。、！" for line in lines)
    # Too long for the box even at the smallest size: cut, with an ellipsis, within the lines that fit.
    size, lines = fit_block("很长的名字" * 40, Style.REGULAR, 18, 12, width=150, height=44)
    assert size == 12 and lines[-1].endswith("…")
    assert len(lines) * fonts.metrics(Style.REGULAR, 12)[2] <= 44


def test_shrinking_before_cutting() -> None:
    size, lines = fit_block("有机纯牛奶" * 4, Style.REGULAR, 18, 12, width=120, height=44)
    assert 12 <= size < 18
    assert not lines[-1].endswith("…")


# -- money ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("12.80", "CNY", "zh_CN", "¥12.80"),
        ("12.8", "CNY", "zh-CN", "¥12.80"),
        ("12.80", "EUR", "de_DE", "12,80 €"),
        ("1234.5", "EUR", "de_DE", "1.234,50 €"),
        ("12.80", "USD", "en_US", "$12.80"),
        ("1280", "JPY", "ja_JP", "¥1,280"),  # the full-width yen sign, folded
        ("1280.4", "JPY", "ja_JP", "¥1,280"),
        ("3.5", "GBP", "en_GB", "£3.50"),
        ("1234567.5", "INR", "en_IN", "₹12,34,567.50"),
        # Swiss grouping: the ASCII apostrophe, as the locked Babel (2.19, CLDR data) prints it; Babel before
        # 2.19 printed the typographic apostrophe (U+2019). Which one a store shows changes only with a reviewed scripts/lock.
        ("1234.5", "CHF", "de_CH", "CHF 1'234.50"),
        ("12800", "KRW", "ko_KR", "₩12,800"),
        ("9.99", "EUR", "fr_FR", "9,99 €"),
        ("12.80", "CNY", "xx_YY", "CN¥12.80"),  # unknown locale: en_US conventions
    ],
)
def test_money_formats(amount: str, currency: str, locale: str, expected: str) -> None:
    assert money.format_money(Decimal(amount), currency, locale) == expected


def test_money_parts() -> None:
    assert money.money_parts(Decimal("12.8"), "CNY", "zh_CN") == money.MoneyParts("¥", "12", ".", "80", "")
    assert money.money_parts(Decimal("1234.5"), "EUR", "de_DE") == money.MoneyParts("", "1.234", ",", "50", " €")
    assert money.money_parts(Decimal("1280"), "JPY", "ja_JP") == money.MoneyParts("¥", "1,280", "", "", "")
    assert money.unit_price_text(Decimal("2.56"), "CNY", "zh_CN", "500 g") == "¥2.56 / 500 g"
    assert money.unit_price_text(Decimal("2.5"), "EUR", "de_DE", "kg") == "2,50 € / kg"
    assert money.unit_price_text(Decimal("2.5"), "EUR", "de_DE", None) == "2,50 €"


@settings(max_examples=300, deadline=None)
@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False),
    currency=st.sampled_from(["CNY", "EUR", "USD", "JPY", "KRW", "INR", "CHF", "BHD", "GBP"]),
    locale=st.sampled_from(["zh_CN", "en_US", "de_DE", "de_CH", "fr_FR", "ja_JP", "en_IN", "ar_EG", "nl_NL", "pt_BR"]),
)
def test_fast_money_formatting_matches_babel(amount: Decimal, currency: str, locale: str) -> None:
    expected = money.display_form(babel_numbers.format_currency(amount, currency, locale=locale))
    assert money.format_money(amount, currency, locale) == expected
    parts = money.money_parts(amount, currency, locale)
    assert parts.text == expected


@pytest.mark.parametrize(
    ("content", "tag_name"),
    [
        (dataclasses.replace(DE, currency="JPY", price=Decimal("1280"), locale="ja_JP"), "2.9-bwr"),
        (dataclasses.replace(DE, currency="USD", price=Decimal("0.99"), locale="en_US"), "2.13-bwr"),
        (dataclasses.replace(ZH, price=Decimal("999999999.99"), former_price=Decimal("999999999.99")), "1.54-bw"),
    ],
)
def test_prices_are_never_cut(content: LabelContent, tag_name: str) -> None:
    tag = TAG_TYPES_BY_NAME[tag_name]
    label = render_label(content, tag, scan_url=URL)
    layout = label.layout
    parts = money.money_parts(content.price, content.currency, content.locale)
    box = layout.price if content.promotion or content.former_price else layout.promo.union(layout.price)
    bitmap = render.fit_price(parts, layout.price_size, layout.price_min_size, box.w, box.h)
    assert bitmap.span <= box.w and bitmap.height <= box.h
    found = ink_box(upright(label), box.corners)
    assert found is not None and bitmap.bitmap is not None
    assert (found[2] - found[0], found[3] - found[1]) == (bitmap.width, bitmap.height)


# -- colours -------------------------------------------------------------------------------------------------


def colours_in(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> set[int]:
    area = image.crop(box) if box else image
    return {index for _, index in area.getcolors(maxcolors=4) or [] if isinstance(index, int)}


def test_promotion_uses_the_accent_on_red_panels() -> None:
    label = render_label(ZH, T29, scan_url=URL)
    promo = label.layout.promo.corners
    assert 2 in colours_in(upright(label), promo)  # red banner and former price
    assert 2 in colours_in(upright(label), label.layout.price.corners)  # the promotion price in red
    plain = render_label(PLAIN, T29, scan_url=URL)
    assert plain.raw[T29.plane_bytes :] == bytes(T29.plane_bytes)  # no accent at all without a promotion
    assert colours_in(plain.image) == {0, 1}


def test_promotion_on_yellow_panels_is_black_on_yellow() -> None:
    bwy = TAG_TYPES_BY_NAME["2.9-bwy"]
    label = render_label(ZH, bwy, scan_url=URL)
    assert colours_in(upright(label), label.layout.promo.corners) == {0, 1, 2}
    assert colours_in(upright(label), label.layout.price.corners) == {0, 1}  # no thin yellow text
    assert picture_image(label.raw, bwy).getpalette()[6:9] == [245, 200, 0]  # type: ignore[index]


def test_promotion_on_black_white_panels_is_inverse() -> None:
    bw = TAG_TYPES_BY_NAME["1.54-bw"]
    label = render_label(ZH, bw, scan_url=URL)
    assert len(label.raw) == bw.plane_bytes
    promo = label.layout.promo
    image = upright(label)
    banner = image.crop((promo.x, promo.y, promo.x + 2, promo.bottom))
    assert colours_in(banner) == {1}  # the banner's left edge is solid black
    plain = render_label(PLAIN, bw, scan_url=URL)
    assert ink_box(upright(plain), promo.corners) is None or promo.union(plain.layout.price) is not None


# -- QR code ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0, 90, 180])
@pytest.mark.parametrize("tag", TAGS, ids=lambda t: t.name)
def test_qr_code_is_module_exact(tag: TagType, rotation: int) -> None:
    url = f"https://shop.example.com/s/{tag.code:02x}{rotation}qr"
    label = render_label(ZH, tag, rotation=rotation, scan_url=url)
    assert label.qr_origin is not None
    x0, y0, module = label.qr_origin
    assert module >= 2
    matrix = qr_matrix(url)
    n = len(matrix)
    image = upright(label)
    cells = image.crop((x0, y0, x0 + n * module, y0 + n * module))
    # Every module is a solid module x module square of its colour.
    small = cells.resize((n, n), Image.Resampling.NEAREST)
    assert small.resize(cells.size, Image.Resampling.NEAREST).tobytes() == cells.tobytes()
    assert [[small.getpixel((c, r)) == 1 for c in range(n)] for r in range(n)] == [list(row) for row in matrix]
    # The quiet zone around it is white.
    q = QUIET_MODULES * module
    assert colours_in(image, (x0 - q, y0 - q, x0 + n * module + q, y0 + n * module + q)) == {0, 1}
    around = image.crop((x0 - q, y0 - q, x0 + n * module + q, y0 + n * module + q))
    around.paste(0, (q, q, q + n * module, q + n * module))
    assert colours_in(around) == {0}


def test_qr_matrix_is_cached_and_ecc_m() -> None:
    assert qr_matrix(URL) is qr_matrix(URL)
    assert len(qr_matrix(URL)) == 29  # 35 characters at ECC M: version 3 (version 2 holds 26)


def test_scan_link_too_long_for_its_box() -> None:
    with pytest.raises(LabelError, match="QR box"):
        render_label(PLAIN, T29, scan_url="https://shop.example.com/s/" + "x" * 400)


# -- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"price": Decimal("-1")},
        {"price": 12.8},
        {"price": Decimal("NaN")},
        {"former_price": Decimal("Infinity")},
        {"unit_price": "2.56"},
        {"currency": "yuan"},
        {"currency": "€UR"},
    ],
)
def test_bad_content_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(LabelError):
        dataclasses.replace(PLAIN, **changes)  # type: ignore[arg-type]


def test_bad_rotation_and_template() -> None:
    with pytest.raises(LabelError, match="rotation"):
        render_label(PLAIN, T29, rotation=45)
    with pytest.raises(LabelError, match="template"):
        render_label(PLAIN, T29, template="poster")


def test_control_characters_and_empty_texts() -> None:
    odd = dataclasses.replace(
        PLAIN, name="牛奶\n\t\x00\u200b  Milk", promotion=" ", origin="", barcode=None, unit_label="\x07kg"
    )
    for tag in TAGS:
        assert len(render_label(odd, tag, scan_url=URL).raw) == tag.raw_bytes


def test_missing_fonts_fall_back_to_pillows_font(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = (fonts.FontFace("/nonexistent/font.ttf"),)
    monkeypatch.setattr(fonts, "_CANDIDATES", {"sans": missing, "sans-bold": missing, "cjk": missing})
    clear_caches()
    try:
        with caplog.at_level(logging.WARNING, logger="devices.labels.fonts"):
            for tag in TAGS:
                label = render_label(ZH, tag, scan_url=URL)
                assert len(label.raw) == tag.raw_bytes
        warnings = [r for r in caplog.records if "no " in r.getMessage() and "font found" in r.getMessage()]
        assert len(warnings) == 3  # once per family, not once per label
    finally:
        monkeypatch.undo()
        clear_caches()


# -- previews and reference pictures --------------------------------------------------------------------------


def test_preview_png_is_the_picture_in_true_colours() -> None:
    label = render_label(ZH, T29, scan_url=URL)
    png = Image.open(io.BytesIO(label.preview_png()))
    assert png.size == (296, 128)
    rgb = png.convert("RGB")
    assert {c for _, c in rgb.getcolors(maxcolors=8) or []} == {(255, 255, 255), (0, 0, 0), (200, 16, 16)}
    big = Image.open(io.BytesIO(label.preview_png(upright=True, scale=2)))
    assert big.size == (592, 256)


REFERENCE_CASES: dict[str, tuple[LabelContent, str, int]] = {
    "1.54-bw": (ZH, "1.54-bw", 0),
    "2.13-bwr": (ZH, "2.13-bwr", 0),
    "2.9-bwr": (ZH, "2.9-bwr", 0),
    "2.9-bwr-plain-de": (DE, "2.9-bwr", 0),
    "2.9-bwr-portrait": (ZH, "2.9-bwr", 90),
    "2.9-bwy": (ZH, "2.9-bwy", 0),
    "4.2-bwr": (ZH, "4.2-bwr", 0),
    "7.5-bwr": (DE, "7.5-bwr", 0),
}
REFERENCE_HASHES: dict[str, str] = {
    "1.54-bw": "aeb10d35a0ffac23",
    "2.13-bwr": "bd6a31df32c86442",
    "2.9-bwr": "a8dac1cb505f2a98",
    "2.9-bwr-plain-de": "4a2cb76eb5c665a6",
    "2.9-bwr-portrait": "a29b2a156253f548",
    "2.9-bwy": "29f8f49e999b372c",
    "4.2-bwr": "f4ad20141fca285d",
    "7.5-bwr": "5fb6224afb90748b",
}


@fonts_installed
@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_reference_pictures(case: str) -> None:
    content, tag_name, rotation = REFERENCE_CASES[case]
    tag = TAG_TYPES_BY_NAME[tag_name]
    label = render_label(content, tag, rotation=rotation, scan_url=URL)
    path = REFERENCE_DIR / f"{case}.png"
    if os.environ.get("UPDATE_LABEL_REFERENCES"):
        REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_bytes(label.preview_png())
        print(f'    "{case}": "{label.hash.hex()}",')
        return
    assert label.hash.hex() == REFERENCE_HASHES[case], f"{case}: picture changed, now {label.hash.hex()}"
    reference = Image.open(path).convert("RGB")
    assert reference.tobytes() == label.image.convert("RGB").tobytes()


def colour_mask(rgb: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """Mode "1" mask of the pixels of one colour."""
    channels = [
        band.point(lambda v, want=want: 255 if v == want else 0).convert("1")
        for band, want in zip(rgb.split(), colour, strict=True)
    ]
    return ImageChops.logical_and(ImageChops.logical_and(channels[0], channels[1]), channels[2])


@fonts_installed
def test_reference_pngs_hold_the_listed_pictures() -> None:
    """Each stored PNG, read back into packed planes, has the hash listed for it: the two never drift apart."""
    for case, (_, tag_name, _) in REFERENCE_CASES.items():
        tag = TAG_TYPES_BY_NAME[tag_name]
        rgb = Image.open(REFERENCE_DIR / f"{case}.png").convert("RGB")
        raw = colour_mask(rgb, render.PALETTE["black"]).tobytes()
        if tag.colours.accent is not None:
            raw += colour_mask(rgb, render.PALETTE[tag.colours.accent]).tobytes()
        assert picture_hash(raw).hex() == REFERENCE_HASHES[case], case
