"""E-ink shelf labels: content to pictures (render), fonts, money formatting, QR codes, layouts.

`render_label(content, tag_type, rotation=..., scan_url=...)` gives the packed colour planes a tag shows
(`firmware_bridge.picture` format); encode them with `firmware_bridge.picture.encode_picture`.
"""

from devices.labels.layout import ROTATIONS, TEMPLATES, Box, Layout, label_layout
from devices.labels.money import format_money, money_parts, unit_price_text
from devices.labels.qr import qr_matrix
from devices.labels.render import (
    PALETTE,
    STATIC_CACHE,
    LabelContent,
    LabelError,
    RenderedLabel,
    clear_caches,
    picture_image,
    render_label,
)

__all__ = [
    "PALETTE",
    "ROTATIONS",
    "STATIC_CACHE",
    "TEMPLATES",
    "Box",
    "LabelContent",
    "LabelError",
    "Layout",
    "RenderedLabel",
    "clear_caches",
    "format_money",
    "label_layout",
    "money_parts",
    "picture_image",
    "qr_matrix",
    "render_label",
    "unit_price_text",
]
