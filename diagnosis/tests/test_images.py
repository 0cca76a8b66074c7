"""Upload checks: each refusal, with the message the uploader reads.

The checks are exercised through the upload form (the one both the page and the
API use); test_pages.py and test_api.py show the same words reach the user.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from diagnosis.forms import UploadForm
from diagnosis.tests.helpers import RED, image_bytes, jpeg_with_exif, noise_bytes, png_bomb, upload_file


def image_errors(content: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> list[str]:
    form = UploadForm(data={}, files={"image": upload_file(content, name, content_type)})
    assert not form.is_valid()
    return form.errors["image"]


@pytest.mark.parametrize(
    "fmt, save_kwargs",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("BMP", {}), ("WEBP", {"quality": 90}), ("WEBP", {"lossless": True})],
)
def test_accepted_formats_pass(fmt, save_kwargs):
    form = UploadForm(
        data={}, files={"image": upload_file(image_bytes(fmt, **save_kwargs), "x.bin", "application/octet-stream")}
    )
    assert form.is_valid(), form.errors
    checked = form.cleaned_data["image"]
    assert checked.format == fmt
    assert checked.image.mode == "RGB" and checked.image.size == (64, 48)


def test_camera_mpo_jpeg_is_accepted_as_jpeg():
    # Many cameras write MPO: a JPEG with a second (preview) image. Pillow names it MPO.
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), RED).save(
        buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (32, 24))]
    )
    form = UploadForm(data={}, files={"image": upload_file(buffer.getvalue())})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["image"].format == "JPEG"


def test_text_file_named_jpg_is_refused():
    errors = image_errors(b"Patient notes, definitely not a photo.\n" * 20, "mole.jpg", "image/jpeg")
    assert errors == ["This file is not an image that can be read. Upload a JPEG, PNG, BMP or WebP photo."]


def test_jpeg_cut_after_2kb_is_refused_as_incomplete():
    complete = noise_bytes("JPEG", (256, 256), quality=95)
    assert len(complete) > 20_000
    errors = image_errors(complete[:2048])
    assert len(errors) == 1
    assert errors[0].startswith("The image file is damaged or incomplete")
    assert "export the photo again" in errors[0]


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(40_000, 40_000)
    assert len(bomb) < 1024 * 1024  # tiny on disk: only the pixel count gives it away
    errors = image_errors(bomb, "bomb.png", "image/png")
    assert len(errors) == 1
    # its own size, from the header, not Pillow's limit (which an earlier message quoted as "over 178.957")
    assert errors[0].startswith("The image is 1600 megapixels, too large to decode safely; the limit is 40 megapixels")
    assert "Downscale it" in errors[0]


def test_pixel_limit_is_a_setting_checked_from_the_header(settings):
    settings.SKINCARE_MAX_IMAGE_PIXELS = 1000
    errors = image_errors(image_bytes("PNG", size=(64, 48)), "small.png", "image/png")
    assert errors == [
        "The image is 64 x 48 pixels (0.003072 megapixels); the limit is 0.001 megapixels. "
        "Downscale it (a dermoscopic photo needs far fewer pixels) and upload it again."
    ]


def test_pixel_limit_below_pillows_own_guard(settings):
    # 12000 x 12000 = 144 MP: within Pillow's hard limit, above ours (40 MP).
    errors = image_errors(png_bomb(12_000, 12_000), "big.png", "image/png")
    assert errors[0].startswith("The image is 12000 x 12000 pixels (144 megapixels); the limit is 40 megapixels.")


def test_twelve_megabyte_file_is_refused():
    big = noise_bytes("PNG", (2048, 2048))  # a real, complete image of 12 MB
    assert len(big) >= 12 * 1024 * 1024
    errors = image_errors(big, "big.png", "image/png")
    assert errors == [
        "The file is 12.0 MB; the limit is 10.0 MB. "
        "Export the photo at a smaller size or higher compression and upload it again."
    ]


def test_size_limit_is_a_setting(settings):
    settings.SKINCARE_MAX_UPLOAD_SIZE = 1024
    content = noise_bytes("PNG", (64, 64))
    errors = image_errors(content, "n.png", "image/png")
    assert errors == [
        f"The file is {len(content) / 1024:.1f} KB; the limit is 1.0 KB. "
        "Export the photo at a smaller size or higher compression and upload it again."
    ]


@pytest.mark.parametrize("fmt, name", [("GIF", "GIF"), ("TIFF", "TIFF")])
def test_unsupported_formats_are_refused(fmt, name):
    errors = image_errors(image_bytes(fmt), f"photo.{fmt.lower()}", f"image/{fmt.lower()}")
    assert errors == [
        f"{name} images are not accepted. Convert the photo to JPEG, PNG, BMP or WebP and upload it again."
    ]


def test_format_list_is_a_setting(settings):
    settings.SKINCARE_ALLOWED_IMAGE_FORMATS = ["JPEG", "PNG"]
    errors = image_errors(image_bytes("BMP"), "photo.bmp", "image/bmp")
    assert errors == ["BMP images are not accepted. Convert the photo to JPEG or PNG and upload it again."]


def test_empty_file_is_refused():
    form = UploadForm(data={}, files={"image": upload_file(b"")})
    assert not form.is_valid()
    assert form.errors["image"]  # Django's own "The submitted file is empty."


def test_missing_file_is_refused():
    form = UploadForm(data={}, files={})
    assert form.errors["image"] == ["Choose a photo to upload."]


def test_patient_reference_must_be_pseudonymous():
    form = UploadForm(data={"patient_ref": "Jane Doe"}, files={"image": upload_file(image_bytes())})
    assert not form.is_valid()
    assert "never the patient's name" in form.errors["patient_ref"][0]
    form = UploadForm(data={"patient_ref": "PT-2024/0042"}, files={"image": upload_file(image_bytes())})
    assert form.is_valid(), form.errors


def test_exif_orientation_is_applied_and_metadata_dropped():
    form = UploadForm(data={}, files={"image": upload_file(jpeg_with_exif(size=(64, 48), orientation=6))})
    assert form.is_valid(), form.errors
    checked = form.cleaned_data["image"].image
    assert checked.size == (48, 64)  # rotated upright
    assert checked.info == {}


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (9, 1), (64, 48), (301, 203)])
def test_stored_png_holds_exactly_the_decoded_pixels(size):
    """encode_png writes the PNG itself (Pillow's encoder is too slow for a 12 MP photo): any PNG
    reader must get every pixel back, whatever the row-to-row differences (noise wraps around 0/255)."""
    import numpy as np

    from diagnosis.images import encode_png

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = (255, 255, 255), (0, 0, 0)
    with Image.open(io.BytesIO(encode_png(Image.fromarray(pixels, "RGB")))) as stored:
        assert stored.format == "PNG" and stored.mode == "RGB" and stored.size == size
        assert np.array_equal(np.asarray(stored), pixels)
    grey = Image.fromarray(pixels[..., 0], "L")  # not what check_image makes, but still lossless
    with Image.open(io.BytesIO(encode_png(grey))) as stored:
        assert np.array_equal(np.asarray(stored), pixels[..., 0])
