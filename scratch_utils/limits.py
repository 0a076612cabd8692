"""Resource limits shared by ``prepare``, ``predict`` and the app (no heavy imports: the CLI reads them)."""
from __future__ import annotations

from .errors import PhotoTooLarge

# Pixel budget per photo, checked from the header before any pixel is decoded: inspection
# photos are 2-24 MP; a 168 KB PNG can declare 150 MP and hold a CPU for half a minute.
DEFAULT_MAX_MEGAPIXELS = 40.0
# How long an upload may queue for the model before the app answers 503 with Retry-After.
DEFAULT_MAX_WAIT_S = 10.0


def check_pixel_budget(size: tuple[int, int], max_megapixels: float | None) -> None:
    """PhotoTooLarge when ``size`` = (width, height) is over ``max_megapixels`` (None: no limit)."""
    width, height = size
    if max_megapixels is not None and width * height > max_megapixels * 1e6:
        raise PhotoTooLarge(width, height, max_megapixels)


def flat_png_bytes(width: int, height: int, value: int = 128) -> bytes:
    """A greyscale PNG of one value, written row by row without holding its pixels: a file of
    a few hundred KB that declares ``width`` x ``height`` (what the pixel budget guards
    against; the tests and the serve benchmark send it)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes([value]) * width           # filter byte 0, then the row
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))
