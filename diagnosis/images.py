"""Checking uploaded image bytes and encoding them for storage.

Pillow decides what a file is from its bytes; the file name and the browser's
content type are ignored. The checks run cheapest first and the expensive full
decode runs last, after the header has shown the size is within the limits, so
that a decompression bomb is refused without being decoded.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from isal import isal_zlib
from PIL import Image, UnidentifiedImageError

from ml.preprocessing import load_rgb

# Pillow format name -> (name for people, MIME type for the file picker).
KNOWN_FORMATS = {
    "JPEG": ("JPEG", "image/jpeg"),
    "PNG": ("PNG", "image/png"),
    "BMP": ("BMP", "image/bmp"),
    "WEBP": ("WebP", "image/webp"),
}
# Pillow names some camera JPEGs "MPO" (a JPEG carrying a second, preview image).
FORMAT_ALIASES = {"MPO": "JPEG"}
THUMBNAIL_SIZE = (256, 256)
DOWNSCALE_ADVICE = "Downscale it (a dermoscopic photo needs far fewer pixels) and upload it again."


@dataclass(frozen=True)
class CheckedImage:
    """An upload that passed every check: decoded, upright RGB, metadata dropped."""

    image: Image.Image
    format: str  # Pillow's name for the uploaded format, e.g. "JPEG"
    size_bytes: int

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def accepted_formats_text() -> str:
    names = [KNOWN_FORMATS.get(f, (f, ""))[0] for f in settings.SKINCARE_ALLOWED_IMAGE_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def accepted_mime_types() -> str:
    """For the file picker's `accept` attribute: a hint only; the bytes still decide."""
    return ",".join(KNOWN_FORMATS[f][1] for f in settings.SKINCARE_ALLOWED_IMAGE_FORMATS if f in KNOWN_FORMATS)


def file_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    return f"{n / 1024:.1f} KB"


def megapixels(n: int) -> str:
    return f"{n / 1_000_000:g} megapixels"


def check_image(uploaded) -> CheckedImage:
    """Refuse anything but a complete image of an accepted format within the limits.

    `uploaded` is a Django UploadedFile (or any file object with `.size` or seekable).
    Raises ValidationError with a message the uploader can act on.
    """
    size = getattr(uploaded, "size", None)
    if size is None:
        uploaded.seek(0, io.SEEK_END)
        size = uploaded.tell()
    max_size = settings.SKINCARE_MAX_UPLOAD_SIZE
    if size == 0:
        raise ValidationError("The file is empty. Choose the photo again.", code="empty")
    if size > max_size:
        raise ValidationError(
            f"The file is {file_size(size)}; the limit is {file_size(max_size)}. "
            "Export the photo at a smaller size or higher compression and upload it again.",
            code="file_too_large",
        )

    uploaded.seek(0)
    max_pixels = settings.SKINCARE_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that speaks to the user.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(uploaded)  # reads the header only
    except UnidentifiedImageError:
        raise ValidationError(
            f"This file is not an image that can be read. Upload a {accepted_formats_text()} photo.",
            code="not_an_image",
        )
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fired on the header, before any pixel was decoded. Its message holds
        # the header's pixel count ("Image size (N pixels) exceeds limit..."): say the image's own size.
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        size_text = megapixels(int(counted.group(1))) if counted else f"over {megapixels(2 * Image.MAX_IMAGE_PIXELS)}"
        raise ValidationError(
            f"The image is {size_text}, too large to decode safely; "
            f"the limit is {megapixels(max_pixels)}. {DOWNSCALE_ADVICE}",
            code="too_many_pixels",
        )
    except Exception as exc:  # a header so broken that the format plugin itself fails
        raise ValidationError(
            f"The image file is damaged and cannot be read ({type(exc).__name__}). Export it again and re-upload it.",
            code="corrupt",
        )

    pil_format = FORMAT_ALIASES.get(image.format or "", image.format or "unknown")
    if pil_format not in settings.SKINCARE_ALLOWED_IMAGE_FORMATS:
        raise ValidationError(
            f"{image.format} images are not accepted. Convert the photo to {accepted_formats_text()} and upload it again.",
            code="unsupported_format",
        )

    width, height = image.size
    if width * height > max_pixels:
        raise ValidationError(
            f"The image is {width} x {height} pixels ({megapixels(width * height)}); "
            f"the limit is {megapixels(max_pixels)}. {DOWNSCALE_ADVICE}",
            code="too_many_pixels",
        )

    try:
        image.load()  # decode every pixel: a truncated or corrupt file fails here
        upright_rgb = pixels_only(load_rgb(image))
    except Exception as exc:
        raise ValidationError(
            "The image file is damaged or incomplete (it could not be fully decoded: "
            f"{exc}). Copy or export the photo again and re-upload it.",
            code="corrupt",
        )
    return CheckedImage(image=upright_rgb, format=pil_format, size_bytes=size)


def pixels_only(image: Image.Image) -> Image.Image:
    """A copy holding nothing but the pixels: EXIF (GPS included), ICC, XMP and
    text chunks stay behind in `image.info`, which encoders would otherwise reuse."""
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    return clean


def encode_png(image: Image.Image) -> bytes:
    """Lossless, so the stored image is exactly what the model scores; fast, because the
    clinician waits for it.

    Pillow's PNG encoder tries all five PNG filters on every row, in one thread: for a 12-megapixel
    photo about 0.8 s even at zlib level 1, and 4.9 s at its default level 6, against a budget of 1 s
    for the whole request. Here every row takes the "Up" filter (the difference from the row above,
    computed by numpy at once) and ISA-L's deflate (the `isal` package, zlib's format, 3.5 times
    zlib's level-1 speed) compresses it: about 0.2 s for 12 megapixels, and a file smaller than
    Pillow's level 1 (8.5 MB against 9.9 MB for an upscaled PH2 photo). Any PNG reader decodes it;
    RGB is all check_image produces (other modes go through Pillow)."""
    if image.mode != "RGB":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    rows = np.asarray(image).reshape(image.height, image.width * 3)
    filtered = np.empty((image.height, 1 + rows.shape[1]), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up"; the first row's "row above" is zeros
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256, as PNG's filter does
    pixels = isal_zlib.compress(filtered, 1)
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_thumbnail(image: Image.Image) -> bytes:
    thumb = image.copy()
    thumb.thumbnail(THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
