"""Task pages (devices/labels/pages.py): pick pages and pickup-slot pages on every tag type and rotation.

What is asserted is what staff see: the picture's size, where ink is, which texts change which area, the
quantity drawn bigger than the order reference, "+N more", pages that differ from the price label, and accent
ink only where the panel has an accent plane. Pictures are read back upright from the raw planes the tag gets.
"""

from __future__ import annotations

import statistics
import time
from decimal import Decimal

import pytest
from PIL import Image, ImageChops

from devices.labels import fonts
from devices.labels.layout import logical_size
from devices.labels.pages import PickEntry, PickPage, RenderedPage, SlotPage, TaskPage, render_page
from devices.labels.render import LabelContent, LabelError, render_label
from firmware_bridge.tag_types import TAG_TYPES, TAG_TYPES_BY_NAME, TagType

ROTATIONS = (0, 90, 180, 270)
TYPES = list(TAG_TYPES.values())
LONG_NAME = "有机纯牛奶 250ml×12 盒装 特价促销 Organic whole milk family pack extra large"

ENTRY_A = PickEntry(3, "SO-20261123-0042", "李明", "green")
ENTRY_B = PickEntry(1, "SO-77", "Anna", "blue")


def _entries(n: int) -> tuple[PickEntry, ...]:
    return tuple(PickEntry(i + 1, f"SO-{1000 + i}", f"p{i}", "red") for i in range(n))


SAMPLES: dict[str, TaskPage] = {
    "pick-1": PickPage(LONG_NAME, (ENTRY_A,)),
    "pick-2-en": PickPage("Organic milk 1L", (ENTRY_A, ENTRY_B), locale="en"),
    "pick-5": PickPage("可乐 330ml", _entries(5)),
    "slot-empty": SlotPage("B", "7"),
    "slot-held": SlotPage("B", "7", "SO-20261123-0042", "王** 1234", "11-30 20:00"),
}


def _upright(page: RenderedPage) -> Image.Image:
    """0 paper, 1 black, 2 accent: a "P" image in the label's logical orientation."""
    return page.upright_image()


def _ink_box(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Bounding box of non-paper pixels, optionally inside `box` (returned in whole-image coordinates)."""
    region = image if box is None else image.crop(box)
    mask = region.point(lambda v: 255 if v else 0, "L")
    found = mask.getbbox()
    if found is None or box is None:
        return found
    return found[0] + box[0], found[1] + box[1], found[2] + box[0], found[3] + box[1]


def _diff_box(a: RenderedPage, b: RenderedPage) -> tuple[int, int, int, int] | None:
    """Where two pages of the same type and rotation differ, upright."""
    ia, ib = _upright(a).convert("L"), _upright(b).convert("L")
    return ImageChops.difference(ia, ib).getbbox()


def _count(image: Image.Image, value: int) -> int:
    return image.histogram()[value]


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_every_page_renders_the_panels_size_upright_with_its_band_on_top(tag_type: TagType, rotation: int) -> None:
    w, h = logical_size(tag_type, rotation)
    for name, sample in SAMPLES.items():
        page = render_page(sample, tag_type, rotation=rotation)
        assert len(page.raw) == tag_type.raw_bytes, name
        upright = _upright(page)
        assert upright.size == (w, h), name
        assert _ink_box(upright) is not None, name
        if name == "slot-empty":
            continue  # no band: the slot's name is the page
        # The band: the top rows are (nearly all) accent on two-plane panels, black on black-and-white ones.
        band_ink = 2 if tag_type.colours.planes == 2 else 1
        top = upright.crop((0, 0, w, 3))
        assert _count(top, band_ink) >= 0.9 * 3 * w, (name, rotation)
        # The bottom row is paper apart from text that may reach it: never a filled band.
        bottom = upright.crop((0, h - 1, w, h))
        assert _count(bottom, 0) >= 0.5 * w, (name, rotation)


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
def test_accent_ink_only_on_two_plane_panels(tag_type: TagType) -> None:
    for sample in SAMPLES.values():
        page = render_page(sample, tag_type, rotation=90)
        counts = _upright(page).histogram()
        if tag_type.colours.planes == 1:
            assert counts[2] == 0
            assert len(page.raw) == tag_type.plane_bytes
        elif not isinstance(sample, SlotPage) or sample.order_ref is not None:
            assert counts[2] > 0  # the band at least
            # No pixel is inked on both planes (black wins nowhere over accent, or the panel shows a mix).
            black = int.from_bytes(page.raw[: tag_type.plane_bytes], "big")
            accent = int.from_bytes(page.raw[tag_type.plane_bytes :], "big")
            assert black & accent == 0


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rotation", (0, 90))
def test_quantity_is_drawn_bigger_than_the_order_reference(tag_type: TagType, rotation: int) -> None:
    base = render_page(PickPage("牛奶", (PickEntry(3, "SO-1", "李明", "red"),)), tag_type, rotation=rotation)
    qty = render_page(PickPage("牛奶", (PickEntry(8, "SO-1", "李明", "red"),)), tag_type, rotation=rotation)
    ref = render_page(PickPage("牛奶", (PickEntry(3, "SO-7", "李明", "red"),)), tag_type, rotation=rotation)
    qty_box, ref_box = _diff_box(base, qty), _diff_box(base, ref)
    assert qty_box is not None and ref_box is not None
    # Both under the band, and the quantity's digit is taller than the reference's.
    band = max(14, min(72, logical_size(tag_type, rotation)[1] // 6))
    assert qty_box[1] >= band and ref_box[1] >= band
    assert qty_box[3] - qty_box[1] > 1.4 * (ref_box[3] - ref_box[1])


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
def test_a_second_entry_and_more_entries_show(tag_type: TagType) -> None:
    one = render_page(PickPage("牛奶", (ENTRY_A,)), tag_type)
    two = render_page(PickPage("牛奶", (ENTRY_A, ENTRY_B)), tag_type)
    assert one.hash != two.hash
    # Past three entries, the fourth and later are counted, not drawn: 5 and 6 entries differ only in the
    # "+N more" line at the bottom, and 3 entries have no such line at all.
    three = render_page(PickPage("牛奶", _entries(3)), tag_type)
    five = render_page(PickPage("牛奶", _entries(5)), tag_type)
    six = render_page(PickPage("牛奶", (*_entries(5), PickEntry(9, "SO-9", "x", "white"))), tag_type)
    changed = _diff_box(five, six)
    assert changed is not None
    h = tag_type.height
    assert changed[1] >= h * 2 // 3  # only the footer changed
    assert five.hash != three.hash
    assert _ink_box(_upright(five), (0, changed[1], tag_type.width, h)) is not None
    assert _ink_box(_upright(three), (0, changed[1], tag_type.width, h)) != _ink_box(
        _upright(five), (0, changed[1], tag_type.width, h)
    )


def test_order_reference_is_on_the_page_and_a_long_one_keeps_its_end() -> None:
    tag_type = TAG_TYPES_BY_NAME["2.9-bwr"]
    a = render_page(PickPage("牛奶", (PickEntry(3, "SO-1", "李明", "red"),)), tag_type)
    b = render_page(PickPage("牛奶", (PickEntry(3, "SO-2", "李明", "red"),)), tag_type)
    assert a.hash != b.hash
    # A reference too long for its box is cut at its start: its last digits (what staff match) still differ.
    long_a = render_page(PickPage("牛奶", (PickEntry(3, "SO-" + "9" * 60 + "01", "李明", "red"),)), tag_type)
    long_b = render_page(PickPage("牛奶", (PickEntry(3, "SO-" + "9" * 60 + "02", "李明", "red"),)), tag_type)
    long_c = render_page(PickPage("牛奶", (PickEntry(3, "XX-" + "9" * 60 + "01", "李明", "red"),)), tag_type)
    assert long_a.hash != long_b.hash
    assert long_a.hash == long_c.hash


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
def test_long_product_names_are_cut_not_overflowing(tag_type: TagType) -> None:
    a = render_page(PickPage(LONG_NAME, (ENTRY_A,)), tag_type, rotation=90)
    b = render_page(PickPage(LONG_NAME + " and a tail nobody will read", (ENTRY_A,)), tag_type, rotation=90)
    short = render_page(PickPage("牛奶", (ENTRY_A,)), tag_type, rotation=90)
    assert a.hash == b.hash  # cut with an ellipsis before the difference
    assert a.hash != short.hash
    # The name stays in the band: below it the pages are the same.
    changed = _diff_box(a, short)
    band = max(14, min(72, logical_size(tag_type, 90)[1] // 6))
    assert changed is not None and changed[3] <= band


def test_cjk_text_uses_a_cjk_font_and_latin_the_latin_font() -> None:
    cjk = fonts.face_for(fonts.Style.BOLD, "拣")
    latin = fonts.face_for(fonts.Style.BOLD, "P")
    assert cjk.path is not None and latin.path is not None and cjk != latin
    tag_type = TAG_TYPES_BY_NAME["4.2-bwr"]
    zh = render_page(PickPage("牛奶", (ENTRY_A,), locale="zh-CN"), tag_type)
    en = render_page(PickPage("牛奶", (ENTRY_A,), locale="en"), tag_type)
    assert zh.hash != en.hash  # "拣货" against "PICK", and the colour's name


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
def test_empty_slot_name_is_the_biggest_thing(tag_type: TagType) -> None:
    b7 = render_page(SlotPage("B", "7", locale="en"), tag_type)
    b8 = render_page(SlotPage("B", "8", locale="en"), tag_type)
    b7_zh = render_page(SlotPage("B", "7", locale="zh-CN"), tag_type)
    name_box, caption_box = _diff_box(b7, b8), _diff_box(b7, b7_zh)
    assert name_box is not None and caption_box is not None
    assert name_box[3] <= caption_box[1]  # name above caption
    assert name_box[3] - name_box[1] > 2 * (caption_box[3] - caption_box[1])


def test_held_slot_shows_order_customer_and_deadline() -> None:
    tag_type = TAG_TYPES_BY_NAME["2.9-bwr"]
    base = SlotPage("B", "7", "SO-42", "王** 1234", "11-30 20:00")
    page = render_page(base, tag_type)
    variants = [
        SlotPage("B", "7", "SO-43", "王** 1234", "11-30 20:00"),
        SlotPage("B", "7", "SO-42", "李** 1234", "11-30 20:00"),
        SlotPage("B", "7", "SO-42", "王** 1234", "12-01 20:00"),
        SlotPage("B", "8", "SO-42", "王** 1234", "11-30 20:00"),
    ]
    boxes = [_diff_box(page, render_page(v, tag_type)) for v in variants]
    assert all(box is not None for box in boxes)
    order, customer, deadline, place = (b for b in boxes if b is not None)
    assert place[3] <= order[1] and order[3] <= customer[1] and customer[3] <= deadline[1]  # top to bottom
    assert render_page(SlotPage("B", "7"), tag_type).hash != page.hash


@pytest.mark.parametrize("tag_type", TYPES, ids=lambda t: t.name)
def test_pages_differ_from_the_price_label_and_hash_deterministically(tag_type: TagType) -> None:
    content = LabelContent(sku="SKU-1", name="牛奶", price=Decimal("12.80"), currency="CNY")
    price = render_label(content, tag_type)
    page = render_page(PickPage("牛奶", (ENTRY_A,)), tag_type)
    assert page.hash != price.hash
    fonts.clear_caches()
    again = render_page(PickPage("牛奶", (ENTRY_A,)), tag_type)
    assert again.hash == page.hash and again.raw == page.raw


def test_bad_rotation_is_a_label_error() -> None:
    with pytest.raises(LabelError):
        render_page(SAMPLES["pick-1"], TYPES[0], rotation=45)


def test_rendering_is_fast_on_the_biggest_panel() -> None:
    """Cold, a first page rasterises its glyphs; warm, a page with new numbers costs little. The sizes are
    found by scaling one measurement, not by trying every size from the box's height down (which took a 7.5"
    rotated page over a second)."""
    tag_type = TAG_TYPES_BY_NAME["7.5-bwr"]
    fonts.clear_caches()
    start = time.perf_counter()
    render_page(PickPage(LONG_NAME, (ENTRY_A, ENTRY_B)), tag_type, rotation=90)
    cold = time.perf_counter() - start
    warm = []
    for i in range(10):
        page = PickPage(LONG_NAME, (PickEntry(i + 2, f"SO-{i}", "李明", "green"),))
        start = time.perf_counter()
        render_page(page, tag_type, rotation=90)
        warm.append(time.perf_counter() - start)
    # Measured about 50 ms cold and under 15 ms warm; the bounds leave room for a busy machine.
    assert cold < 0.6
    assert statistics.median(warm) < 0.05
