"""Opening photos the same way everywhere: ``prepare``, ``predict``, the notebooks and the app.

One decoder (EXIF orientation, colour modes to RGB, JPEG reduce-on-decode, the pixel budget
read from the header), one resize into the model's input (:func:`model_input_image`) and one
PNG encoder, so the model sees pixel for pixel the same input in training and in use.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ItemError, PhotoTooLarge
from .geometry import Geometry
from .limits import DEFAULT_MAX_MEGAPIXELS, check_pixel_budget

DEFECT_COLOUR = (1.0, 0.1, 0.6)  # magenta: stands out on every paint colour


def to_rgb(image: Image.Image) -> Image.Image:
    """Any colour mode -> 8-bit RGB (16-bit and float greyscale are rescaled, not clipped)."""
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray((np.clip(values / top, 0, 1) * 255 + 0.5).astype(np.uint8))
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        flat = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(flat, image)
    return image.convert("RGB")


def open_photo(path, geometry: Geometry | None = None,
               declared_size: tuple[int, int] | None = None,
               exif: str = "label",
               max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS) -> tuple[Image.Image, tuple]:
    """Open, check and decode a photo; returns (RGB image, full-resolution (w, h)).

    The header's size is checked against ``max_megapixels`` before anything is decoded
    (:class:`PhotoTooLarge`); reading EXIF from a PNG decodes it, so that comes after.

    With a ``geometry``, JPEGs are decoded at the smallest 1/2, 1/4 or 1/8 scale that still
    covers the model-input box (reduce-on-decode), which is most of preparation's speed.
    EXIF rotation: ``exif="label"`` (preparation) applies it when the label's stated size
    matches the rotated photo; ``"always"`` (predict, the app) shows the photo as people see it.
    """
    try:
        image = Image.open(path)
        check_pixel_budget(image.size, max_megapixels)
        full = image.size
        transpose = False
        orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
        if exif == "always" and orientation in (2, 3, 4, 5, 6, 7, 8):
            transpose, full = True, (full[::-1] if orientation in (5, 6, 7, 8) else full)
        elif declared_size and orientation in (5, 6, 7, 8) and tuple(declared_size) == full[::-1]:
            transpose, full = True, full[::-1]
        elif declared_size and orientation in (2, 3, 4) and tuple(declared_size) == full:
            transpose = True
        if geometry is not None and image.format == "JPEG":
            layout = geometry.layout(*full)
            box_w, box_h = layout.box_w, layout.box_h
            image.draft("RGB", (box_h, box_w) if full != image.size else (box_w, box_h))
        image.load()
        if transpose:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image), full
    except FileNotFoundError:
        raise ItemError("image file disappeared during preparation") from None
    except UnidentifiedImageError:
        raise ItemError("cannot read image: not an image file PIL recognises") from None
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires in Image.open for > 2 x MAX_IMAGE_PIXELS, before our check.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise PhotoTooLarge(None, None, max_megapixels,
                            int(declared.group(1)) if declared else 0) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"cannot read image (corrupt or truncated?): {exc}") from None


def read_mask_file(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask image as 0/1 uint8, checked to be ``size`` = (width, height) before decoding."""
    try:
        with Image.open(path) as handle:
            if handle.size != size:   # from the header, before decoding
                raise ItemError(f"image is {size[0]}x{size[1]} but its mask "
                                f"{Path(path).name} is {handle.size[0]}x{handle.size[1]}")
            handle.load()
            values = np.asarray(to_rgb(handle).convert("L"))
    except ItemError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ItemError(f"cannot read mask {Path(path).name}: {exc}") from None
    # 0/1 masks and 0/255 masks both occur; JPEG masks carry noise around 0 and 255.
    return (values > (127 if values.max() > 1 else 0)).astype(np.uint8)


def model_input_image(photo: Image.Image, layout) -> Image.Image:
    """The photo resized into its layout's box on the canvas: what ``prepare`` writes and
    what ``predict`` and the app feed the model (one function, so they never disagree)."""
    box = (layout.box_w, layout.box_h)
    resized = photo if photo.size == box else photo.resize(box, Image.Resampling.LANCZOS,
                                                            reducing_gap=3.0)
    if (layout.canvas_w, layout.canvas_h) == box:
        return resized
    canvas = Image.new("RGB", (layout.canvas_w, layout.canvas_h))
    canvas.paste(resized, (layout.x0, layout.y0))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    """PNG at zlib level 1: at the default level 6, encoding a 1280x720 overlay took 234 ms
    (80% of an app request); level 1 takes 53 ms for a file 3% larger (noisy photos
    hardly compress at any level)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55,
            colour=DEFECT_COLOUR) -> np.ndarray:
    """The photo with the defect mask painted on it (float RGB in [0, 1])."""
    image = np.asarray(image, dtype=np.float32)
    image = image / 255.0 if image.max() > 1.0 else image
    weight = (np.asarray(mask, dtype=np.float32) > 0)[..., None] * alpha
    return image * (1 - weight) + weight * np.asarray(colour, dtype=np.float32)


def overlay_image(photo: Image.Image, mask: np.ndarray) -> Image.Image:
    """:func:`overlay` as an 8-bit RGB image: what ``predict`` writes and the app returns."""
    return Image.fromarray((overlay(np.asarray(photo), mask) * 255).astype(np.uint8))


def mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean mask as an 8-bit 0/255 greyscale image."""
    return Image.fromarray(np.asarray(mask, dtype=np.uint8) * np.uint8(255))
