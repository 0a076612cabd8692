"""Uploads that attack the app, shared by its tests and by ``benchmarks/bench_serve.py``."""
import struct
import zlib


def flat_png_bytes(width: int, height: int, value: int = 128) -> bytes:
    """A greyscale PNG of one value, written row by row without holding its pixels: a file of
    a few hundred KB that declares ``width`` x ``height`` (what the pixel budget guards
    against; the tests and the serve benchmark send it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes([value]) * width           # filter byte 0, then the row
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))
