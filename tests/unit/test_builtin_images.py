"""The builtin image tools on real generated images: real pixels in, real pixels checked out."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat
from tests.helpers import LocalHost, data_uri, generation_context

from toolweave.model.records import ArtifactRef
from toolweave.model.status import GenerationStatus
from toolweave.services.base import ServiceError
from toolweave.services.builtin import BuiltinService

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assets" / "sample.png"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[LocalHost]:
    async with LocalHost(tmp_path) as h:
        yield h


@pytest.fixture
def service(host: LocalHost) -> BuiltinService:
    return BuiltinService(host)


def pattern(size: tuple[int, int] = (200, 100), mode: str = "RGB") -> Image.Image:
    """Four coloured quadrants: red, green / blue, white."""
    w, h = size
    img = Image.new(mode, size)
    d = ImageDraw.Draw(img)
    alpha = (255,) if mode == "RGBA" else ()
    d.rectangle((0, 0, w // 2 - 1, h // 2 - 1), fill=(255, 0, 0, *alpha))
    d.rectangle((w // 2, 0, w - 1, h // 2 - 1), fill=(0, 255, 0, *alpha))
    d.rectangle((0, h // 2, w // 2 - 1, h - 1), fill=(0, 0, 255, *alpha))
    d.rectangle((w // 2, h // 2, w - 1, h - 1), fill=(255, 255, 255, *alpha))
    return img


async def run(service: BuiltinService, tool_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    sub = await service.submit(generation_context(service.tool(tool_id).definition, inputs))
    assert sub.platform_run_id is None
    assert sub.update is not None and sub.update.status is GenerationStatus.COMPLETED
    assert sub.update.outputs is not None
    return sub.update.outputs


def mean(img: Image.Image) -> float:
    return sum(ImageStat.Stat(img.convert("RGB")).mean) / 3


# --- resize ------------------------------------------------------------------------------------


async def test_resize_width_only_keeps_aspect(service: BuiltinService, host: LocalHost) -> None:
    out = await run(service, "image.resize", {"image": host.put_image(pattern((200, 100))), "width": 50})
    img = host.open_image(out["image"])
    assert img.size == (50, 25) and (out["width"], out["height"]) == (50, 25)
    assert out["image"]["width"] == 50 and out["image"]["mimeType"] == "image/png"
    r, g, b = img.convert("RGB").getpixel((5, 5))  # top-left stays red
    assert r > 200 and g < 60 and b < 60


async def test_resize_modes(service: BuiltinService, host: LocalHost) -> None:
    src = host.put_image(pattern((200, 100)))
    fit = host.open_image((await run(service, "image.resize", {"image": src, "width": 100, "height": 100}))["image"])
    assert fit.size == (100, 50)
    stretch = await run(service, "image.resize", {"image": src, "width": 100, "height": 100, "mode": "stretch"})
    assert host.open_image(stretch["image"]).size == (100, 100)
    fill = host.open_image(
        (await run(service, "image.resize", {"image": src, "width": 100, "height": 100, "mode": "fill"}))["image"]
    )
    assert fill.size == (100, 100)
    # fill crops the sides: the centre column is the red/green boundary region
    assert fill.convert("RGB").getpixel((10, 10))[0] > 200
    pad = host.open_image((await run(service, "image.resize", {
        "image": src, "width": 100, "height": 100, "mode": "pad", "background": "#00ff00",
    }))["image"]).convert("RGB")
    assert pad.size == (100, 100)
    assert pad.getpixel((50, 5)) == (0, 255, 0)  # padding band above the fitted image
    assert pad.getpixel((10, 40))[0] > 200  # red quadrant inside


async def test_resize_keeps_jpeg_and_needs_a_side(service: BuiltinService, host: LocalHost) -> None:
    src = host.put_image(pattern(), "JPEG", quality=90)
    out = await run(service, "image.resize", {"image": src, "height": 20})
    assert out["image"]["mimeType"] == "image/jpeg"
    assert host.open_image(out["image"]).format == "JPEG"
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": src})
    assert "'width'" in err.value.message and not err.value.retryable


async def test_resize_reads_data_uris(service: BuiltinService, host: LocalHost) -> None:
    buf = io.BytesIO()
    pattern((40, 20)).save(buf, "PNG")
    out = await run(service, "image.resize", {"image": data_uri(buf.getvalue(), "image/png"), "width": 20})
    assert host.open_image(out["image"]).size == (20, 10)


async def test_resize_refuses_huge_outputs(service: BuiltinService, host: LocalHost) -> None:
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": host.put_image(pattern((10, 1000))), "width": 16000})
    assert err.value.code == "too_large" and not err.value.retryable


# --- upscale -----------------------------------------------------------------------------------


async def test_upscale_with_lanczos(service: BuiltinService, host: LocalHost) -> None:
    out = await run(service, "image.upscale", {"image": host.put_image(pattern((64, 32))), "scale": 3})
    img = host.open_image(out["image"]).convert("RGB")
    assert img.size == (192, 96) and out["width"] == 192
    assert img.getpixel((20, 20))[0] > 240  # red quadrant
    assert img.getpixel((150, 80)) == (255, 255, 255)  # white quadrant
    sharp = await run(service, "image.upscale", {"image": host.put_image(pattern((64, 32))), "scale": 1.5,
                                                 "sharpen": 1.0})
    assert host.open_image(sharp["image"]).size == (96, 48)


async def test_upscale_scale_bounds(service: BuiltinService, host: LocalHost) -> None:
    with pytest.raises(ServiceError) as err:
        await run(service, "image.upscale", {"image": host.put_image(pattern()), "scale": 9})
    assert "scale: must be at most 8" in err.value.message


# --- crop --------------------------------------------------------------------------------------


async def test_crop_exact_quadrant(service: BuiltinService, host: LocalHost) -> None:
    src = host.put_image(pattern((200, 100)))
    out = await run(service, "image.crop", {"image": src, "left": 100, "top": 50, "width": 100, "height": 50})
    img = host.open_image(out["image"]).convert("RGB")
    assert img.size == (100, 50)
    assert img.getcolors() == [(100 * 50, (255, 255, 255))]  # exactly the white quadrant


@pytest.mark.parametrize(
    "box",
    [
        {"left": 150, "top": 0, "width": 100, "height": 10},
        {"left": 0, "top": 90, "width": 10, "height": 20},
    ],
)
async def test_crop_outside_the_image_is_refused(service: BuiltinService, host: LocalHost,
                                                 box: dict[str, int]) -> None:
    with pytest.raises(ServiceError) as err:
        await run(service, "image.crop", {"image": host.put_image(pattern((200, 100))), **box})
    assert err.value.code == "out_of_bounds" and not err.value.retryable
    assert "200x100" in err.value.message and "'image'" in err.value.message


async def test_crop_names_negative_and_missing_inputs(service: BuiltinService, host: LocalHost) -> None:
    with pytest.raises(ServiceError) as err:
        await run(service, "image.crop", {"image": host.put_image(pattern()), "left": -1, "width": 10})
    msg = err.value.message
    assert "left: must be at least 0" in msg and "height: is required" in msg  # every problem at once


# --- adjust ------------------------------------------------------------------------------------


async def test_adjust_brightness_contrast_saturation(service: BuiltinService, host: LocalHost) -> None:
    src_img = Image.open(SAMPLE).convert("RGB")
    src = host.put_image(src_img)
    base = mean(src_img)
    darker = host.open_image((await run(service, "image.adjust", {"image": src, "brightness": 0.5}))["image"])
    brighter = host.open_image((await run(service, "image.adjust", {"image": src, "brightness": 1.5}))["image"])
    assert mean(darker) < base * 0.6
    assert mean(brighter) > base * 1.2
    grey = host.open_image((await run(service, "image.adjust", {"image": src, "saturation": 0}))["image"])
    r, g, b = grey.convert("RGB").getpixel((500, 120))  # the sun, yellow in the source
    assert abs(r - g) <= 2 and abs(g - b) <= 2
    flat = host.open_image((await run(service, "image.adjust", {"image": src, "contrast": 0}))["image"])
    assert max(ImageStat.Stat(flat.convert("L")).stddev) < 1.0
    unchanged = host.open_image((await run(service, "image.adjust", {"image": src}))["image"])
    assert unchanged.convert("RGB").tobytes() == src_img.tobytes()


async def test_adjust_keeps_transparency(service: BuiltinService, host: LocalHost) -> None:
    img = Image.new("RGBA", (20, 20), (200, 100, 50, 0))
    img.paste((200, 100, 50, 255), (0, 0, 10, 20))
    out = host.open_image((await run(service, "image.adjust", {"image": host.put_image(img), "brightness": 0.5}))["image"])
    assert out.mode == "RGBA"
    assert out.getpixel((15, 5))[3] == 0 and out.getpixel((5, 5))[3] == 255
    assert out.getpixel((5, 5))[0] == 100


# --- watermark ---------------------------------------------------------------------------------


def changed_fraction(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    ca, cb = a.convert("RGB").crop(box), b.convert("RGB").crop(box)
    diff = ImageChops.difference(ca, cb).convert("L")
    changed = sum(diff.histogram()[1:])
    return changed / (ca.width * ca.height)


@pytest.mark.parametrize("position,corner", [("bottom-right", (320, 240, 640, 480)), ("top-left", (0, 0, 320, 240))])
async def test_text_watermark_changes_only_the_chosen_corner(
    service: BuiltinService, host: LocalHost, position: str, corner: tuple[int, int, int, int]
) -> None:
    src_img = Image.open(SAMPLE).convert("RGB")
    out = await run(service, "image.watermark", {
        "image": host.put_image(src_img), "text": "toolweave", "position": position, "opacity": 0.9,
    })
    marked = host.open_image(out["image"])
    assert marked.size == src_img.size
    opposite = (640 - corner[2], 480 - corner[3], 640 - corner[0], 480 - corner[1])
    assert changed_fraction(src_img, marked, corner) > 0.005
    assert changed_fraction(src_img, marked, opposite) == 0


async def test_image_watermark_with_opacity(service: BuiltinService, host: LocalHost) -> None:
    base = Image.new("RGB", (200, 200), (0, 0, 0))
    logo = Image.new("RGBA", (10, 10), (255, 255, 255, 255))
    out = await run(service, "image.watermark", {
        "image": host.put_image(base), "watermark_image": host.put_image(logo), "position": "top-right",
        "opacity": 0.5, "scale": 0.25, "margin": 10,
    })
    img = host.open_image(out["image"]).convert("RGB")
    # the logo is 50x50 (25% of the width), 10px from the top and right edges, half opaque
    r, g, b = img.getpixel((165, 35))
    assert 120 <= r <= 135 and r == g == b
    assert img.getpixel((130, 35)) == (0, 0, 0)  # left of the logo
    assert img.getpixel((165, 5)) == (0, 0, 0)  # inside the margin
    assert img.getpixel((10, 190)) == (0, 0, 0)


async def test_watermark_needs_exactly_one_mark(service: BuiltinService, host: LocalHost) -> None:
    src = host.put_image(pattern())
    with pytest.raises(ServiceError) as err:
        await run(service, "image.watermark", {"image": src})
    assert "exactly one" in err.value.message
    with pytest.raises(ServiceError):
        await run(service, "image.watermark", {"image": src, "text": "x", "watermark_image": src})
    with pytest.raises(ServiceError) as err:
        await run(service, "image.watermark", {"image": src, "text": "x", "color": "not-a-colour"})
    assert "'color'" in err.value.message


# --- grid --------------------------------------------------------------------------------------


async def test_grid_dimensions_and_cells(service: BuiltinService, host: LocalHost) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [host.put_image(Image.new("RGB", (100, 50), c)) for c in colours]
    out = await run(service, "image.grid", {"images": images, "cell_width": 64, "cell_height": 64, "padding": 4})
    assert (out["columns"], out["rows"]) == (3, 2)
    sheet = host.open_image(out["image"]).convert("RGB")
    assert sheet.size == (3 * 64 + 4 * 4, 2 * 64 + 3 * 4) == (out["width"], out["height"])
    # image n sits centred in cell (row, col); each is 64x32 after fitting
    for n, colour in enumerate(colours):
        row, col = divmod(n, 3)
        cx = 4 + col * 68 + 32
        cy = 4 + row * 68 + 32
        assert sheet.getpixel((cx, cy)) == colour
        assert sheet.getpixel((cx, cy - 24)) == (255, 255, 255)  # letterbox above a wide image
    assert sheet.getpixel((4 + 2 * 68 + 32, 4 + 68 + 32)) == (255, 255, 255)  # the empty sixth cell


async def test_grid_columns_and_bad_lists(service: BuiltinService, host: LocalHost) -> None:
    one = host.put_image(Image.new("RGB", (8, 8), "red"))
    out = await run(service, "image.grid", {"images": [one, one, one, one], "columns": 4, "cell_width": 16,
                                            "cell_height": 16, "padding": 0})
    assert (out["width"], out["height"], out["rows"]) == (64, 16, 1)
    for bad, needle in [([], "1 to"), ("nope", "list"), ([one, 5], "images'[1]")]:
        with pytest.raises(ServiceError) as err:
            await run(service, "image.grid", {"images": bad})
        assert needle in err.value.message


async def test_grid_names_the_undecodable_image(service: BuiltinService, host: LocalHost) -> None:
    good = host.put_image(Image.new("RGB", (8, 8), "red"))
    junk = host.put_bytes(b"this is not an image", "image/png")
    with pytest.raises(ServiceError) as err:
        await run(service, "image.grid", {"images": [good, junk]})
    assert "images[1]" in err.value.message and not err.value.retryable


# --- convert -----------------------------------------------------------------------------------


async def test_convert_formats_and_quality(service: BuiltinService, host: LocalHost) -> None:
    src = host.put_image(Image.open(SAMPLE).convert("RGB"))
    low = await run(service, "image.convert", {"image": src, "format": "jpeg", "quality": 10})
    high = await run(service, "image.convert", {"image": src, "format": "jpeg", "quality": 95})
    assert low["mime_type"] == "image/jpeg" and host.open_image(low["image"]).format == "JPEG"
    assert low["size"] < high["size"] and low["size"] == low["image"]["size"]
    for fmt, pil in [("webp", "WEBP"), ("png", "PNG"), ("gif", "GIF"), ("bmp", "BMP"), ("tiff", "TIFF")]:
        out = await run(service, "image.convert", {"image": src, "format": fmt})
        img = host.open_image(out["image"])
        assert img.format == pil and img.size == (640, 480)
        assert out["image"]["mimeType"] == out["mime_type"]


async def test_convert_flattens_transparency_for_jpeg(service: BuiltinService, host: LocalHost) -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = await run(service, "image.convert", {"image": host.put_image(img), "format": "jpeg",
                                               "background": "#ff0000"})
    r, g, b = host.open_image(out["image"]).convert("RGB").getpixel((5, 5))
    assert r > 240 and g < 20 and b < 20
    lossless = await run(service, "image.convert", {"image": host.put_image(pattern()), "format": "webp",
                                                    "lossless": True})
    assert host.open_image(lossless["image"]).convert("RGB").tobytes() == pattern().tobytes()


async def test_convert_rejects_unknown_format(service: BuiltinService, host: LocalHost) -> None:
    with pytest.raises(ServiceError) as err:
        await run(service, "image.convert", {"image": host.put_image(pattern()), "format": "heic"})
    assert "format: must be one of png" in err.value.message


# --- bad media ---------------------------------------------------------------------------------


async def test_undecodable_and_missing_images(service: BuiltinService, host: LocalHost) -> None:
    junk = host.put_bytes(b"\x89PNG\r\n\x1a\nbroken", "image/png")
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": junk, "width": 10})
    assert "input 'image'" in err.value.message and not err.value.retryable
    missing = ArtifactRef(sha256="0" * 64, mimeType="image/png", size=1).as_value()
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": missing, "width": 10})
    assert err.value.code == "not_found" and "'image'" in err.value.message
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": "ftp://example.invalid/x.png", "width": 10})
    assert "image: the URL scheme 'ftp' is not supported" in err.value.message and not err.value.retryable


async def test_exif_orientation_is_applied(service: BuiltinService, host: LocalHost) -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    out = await run(service, "image.upscale", {"image": host.put_bytes(buf.getvalue()), "scale": 1})
    assert host.open_image(out["image"]).size == (20, 40)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds no pixels (a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


async def test_huge_inputs_are_refused_before_decoding(service: BuiltinService, host: LocalHost) -> None:
    bomb = host.put_bytes(png_header_only(9000, 9000), "image/png")
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": bomb, "width": 10})
    assert err.value.code == "too_large" and "9000x9000" in err.value.message
    giant = host.put_bytes(png_header_only(30000, 30000), "image/png")  # past Pillow's own bomb check
    with pytest.raises(ServiceError) as err:
        await run(service, "image.resize", {"image": giant, "width": 10})
    assert err.value.code == "too_large" and not err.value.retryable
