"""QR codes for labels: the tag's scan link, error correction M, drawn module-exact at an integer scale.

Both the module matrix and its scaled bitmap are cached per content: a tag's scan link never changes with
its price, and encoding a QR code costs more than drawing the whole rest of a label.
"""

from __future__ import annotations

import functools

import qrcode

from devices.labels.bitmap import Bitmap

QUIET_MODULES = 2  # quiet zone kept white around the code, in modules (see layout: small tags are tight)


class QRCodeError(ValueError):
    """The content does not fit in a QR code, or the code does not fit where it must go."""


@functools.lru_cache(maxsize=4096)
def qr_matrix(data: str) -> tuple[tuple[bool, ...], ...]:
    """The code's modules, row by row, True = dark; no quiet zone. Smallest version that holds `data` at ECC M."""
    code = qrcode.QRCode(version=None, error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    code.add_data(data)
    try:
        code.make(fit=True)
    except (ValueError, qrcode.exceptions.DataOverflowError) as exc:
        raise QRCodeError(f"{len(data)} characters do not fit in a QR code: {exc}") from None
    return tuple(tuple(bool(m) for m in row) for row in code.get_matrix())


def module_size(data: str, side: int) -> int:
    """The largest whole number of pixels per module that fits the code and its quiet zone in `side` pixels."""
    n = len(qr_matrix(data)) + 2 * QUIET_MODULES
    size = side // n
    if size < 1:
        raise QRCodeError(f"a {n - 2 * QUIET_MODULES}-module QR code (with its quiet zone) needs {n} px, not {side}")
    return size


@functools.lru_cache(maxsize=1024)
def qr_bitmap(data: str, module: int) -> Bitmap:
    """The code as a bitmap (1 = dark module), `module` pixels per module, without its quiet zone."""
    matrix = qr_matrix(data)
    n = len(matrix)
    rows: list[int] = []
    for row in matrix:
        value = int("".join(("1" if dark else "0") * module for dark in row), 2)
        rows.extend([value] * module)
    return Bitmap(n * module, n * module, tuple(rows))
