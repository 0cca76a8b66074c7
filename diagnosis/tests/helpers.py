"""Real image files for tests, made with Pillow (the datasets are used where the
behaviour depends on real photos; see test_datasets.py)."""

from __future__ import annotations

import io
import os
import struct
import zlib

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

RED = (220, 40, 40)  # the stand-in model calls this malignant (R - B high)
BLUE = (40, 40, 220)  # ... and this benign


def image_bytes(fmt: str = "JPEG", size=(64, 48), color=RED, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def noise_bytes(fmt: str = "JPEG", size=(256, 256), **save_kwargs) -> bytes:
    """Incompressible pixels: the file is about as large as the pixel data."""
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def upload_file(content: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid, complete 1-bit PNG of width x height black pixels: about 200 KB on
    disk, 1.6 gigapixels decoded. Written chunk by chunk so that the test never
    holds the decoded image in memory either."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    compressed = []
    for start in range(0, height, rows_per_block):
        compressed.append(compressor.compress(row * min(rows_per_block, height - start)))
    compressed.append(compressor.flush())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(compressed)) + chunk(b"IEND", b"")


def jpeg_with_exif(size=(64, 48), color=RED, orientation: int = 6) -> bytes:
    """A JPEG carrying camera EXIF, GPS coordinates and an orientation tag."""
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0110] = "CameraModel"  # Model
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "E", 4: (4.0, 53.0, 44.0)}  # GPSInfo
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


# The stand-in model's probability of malignancy is sigmoid(8 * (R - B) / 255) of the
# image's mean colour, so the redness steers it exactly (PNG keeps the colour lossless).
def redness_png(difference: int, size=(64, 64)) -> bytes:
    """A uniform PNG whose red exceeds its blue by `difference` (negative: bluer)."""
    red = 128 + difference // 2
    return image_bytes("PNG", size=size, color=(red, 100, red - difference))


def probability_for(difference: int) -> float:
    import math

    red = 128 + difference // 2
    return 1 / (1 + math.exp(-8 * (red - (red - difference)) / 255))


SKIN = (200, 170, 150)
DARK_RED = (150, 30, 30)


def lesion_on_skin_png(size=(224, 224), patch=(32, 32, 128, 128), background=SKIN, lesion=DARK_RED) -> bytes:
    """Skin colour with a darker red patch: passes the stand-in's image check (gate=True),
    unlike a uniform image, and the heat lands on the patch."""
    image = Image.new("RGB", size, background)
    image.paste(lesion, patch)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
