"""The pixel work the image tools share, run in worker threads: the limits on what they read and
make, the formats they write, decoding (EXIF orientation applied, decompression bombs refused),
normalising, flattening and encoding an image, colours by name.

Pillow is imported by the functions that touch pixels, not with the module: the builtin service
(and with it every run, whatever its tool) loads this module, and only image tools need Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolweave.services.base import ServiceError
from toolweave.services.builtin._common import bad_input

if TYPE_CHECKING:
    from PIL import Image

MAX_SIDE = 16384
"""The largest width or height any image tool produces."""
MAX_OUTPUT_PIXELS = 64 * 1024 * 1024
"""The largest image (width x height) any image tool produces."""
MAX_INPUT_PIXELS = 80_000_000
"""Larger inputs are refused before they are decoded (decompression bombs); below Pillow's own
warning threshold, so no warning filters (which are process-global) need changing."""
MAX_GRID_IMAGES = 64


@dataclass(frozen=True)
class Format:
    pil: str
    mime: str
    ext: str
    alpha: bool


FORMATS: dict[str, Format] = {
    "png": Format("PNG", "image/png", "png", True),
    "jpeg": Format("JPEG", "image/jpeg", "jpg", False),
    "webp": Format("WEBP", "image/webp", "webp", True),
    "gif": Format("GIF", "image/gif", "gif", True),
    "bmp": Format("BMP", "image/bmp", "bmp", False),
    "tiff": Format("TIFF", "image/tiff", "tiff", True),
}
_FROM_PIL = {"JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}
RESAMPLE = ("lanczos", "bicubic", "bilinear", "nearest")
"""The resampling filters an image tool offers, by the name of Pillow's ``Image.Resampling``."""
POSITIONS = [
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
]


def resampling(name: str) -> Image.Resampling:
    """Pillow's resampling filter called ``name`` (one of ``RESAMPLE``)."""
    from PIL import Image

    return Image.Resampling[name.upper()]


def decode(data: bytes, name: str) -> tuple[Image.Image, str]:
    """An RGB/RGBA/L/LA image and its source format key; errors name the input."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_INPUT_PIXELS:  # checked from the header, before decoding
            raise bad_input(
                f"input {name!r} is too large: {img.width}x{img.height} pixels "
                f"(at most {MAX_INPUT_PIXELS} pixels)", code="too_large"
            )
        source_format = _FROM_PIL.get(img.format or "", "png")
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except ServiceError:
        raise
    except UnidentifiedImageError as exc:
        raise bad_input(f"input {name!r} is not an image Pillow can decode", code="not_an_image") from exc
    except Image.DecompressionBombError as exc:
        raise bad_input(f"input {name!r} has too many pixels to decode safely", code="too_large") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise bad_input(f"input {name!r} is a damaged or unsupported image: {exc}", code="not_an_image") from exc
    return normalise(img), source_format


def normalise(img: Image.Image) -> Image.Image:
    """Bring any mode into RGB, RGBA, L or LA, keeping transparency."""
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    if img.mode in ("PA", "P"):
        return img.convert("RGBA" if img.mode == "PA" else "RGB")
    if img.mode.startswith("I"):
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGBA" if "A" in img.getbands() else "RGB")


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA")


def flatten(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB (or L) with any transparency composited over ``background``."""
    from PIL import Image

    if not has_alpha(img):
        return img
    base = Image.new("RGB", img.size, background)
    base.paste(img.convert("RGBA"), mask=img.getchannel("A"))
    return base


def encode(
    img: Image.Image,
    fmt: str,
    *,
    quality: int = 95,
    lossless: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
) -> bytes:
    spec = FORMATS[fmt]
    out = img
    if not spec.alpha:
        out = flatten(out, background)
    if fmt == "webp" and out.mode in ("L", "LA"):
        out = out.convert("RGBA" if out.mode == "LA" else "RGB")
    buf = io.BytesIO()
    options: dict[str, Any] = {}
    if fmt == "jpeg":
        options = {"quality": quality, "optimize": True}
    elif fmt == "webp":
        options = {"quality": quality, "lossless": lossless, "method": 4}
    elif fmt == "png":
        options = {"optimize": False, "compress_level": 6}
    elif fmt == "tiff":
        options = {"compression": "tiff_deflate"}
    out.save(buf, spec.pil, **options)
    return buf.getvalue()


def color(value: str, name: str) -> tuple[int, int, int, int]:
    from PIL import ImageColor

    try:
        rgba = ImageColor.getcolor(value, "RGBA")
    except ValueError as exc:
        raise bad_input(f"input {name!r}: {value!r} is not a colour (use a name or #rrggbb)") from exc
    assert isinstance(rgba, tuple)
    return (int(rgba[0]), int(rgba[1]), int(rgba[2]), int(rgba[3]))


def check_output_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise bad_input(f"{what} would be {width}x{height} pixels; both sides must be at least 1")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_OUTPUT_PIXELS:
        raise bad_input(
            f"{what} would be {width}x{height} pixels; the limit is {MAX_SIDE} per side and "
            f"{MAX_OUTPUT_PIXELS} pixels in all", code="too_large"
        )
