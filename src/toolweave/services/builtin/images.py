"""Image tools on Pillow: resize, upscale, crop, adjust, watermark, grid, convert.

Every tool reads its image inputs through the host (artifact refs, http(s) URLs, data: URIs),
does the pixel work in a worker thread (``asyncio.to_thread``) and stores the result as a new
artifact. EXIF orientation is applied on load, so phone photos come out the right way up.
Outputs keep the source's format family (JPEG stays JPEG, WebP stays WebP, everything else
becomes PNG) except for ``image.convert``, which chooses it.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition
from toolweave.model.records import ArtifactRef
from toolweave.services.builtin._common import (
    SERVICE_NAME,
    BuiltinTool,
    ToolContext,
    bad_input,
    free,
    load_media,
    store,
)
from toolweave.services.builtin.pixels import (
    FORMATS,
    MAX_GRID_IMAGES,
    MAX_SIDE,
    POSITIONS,
    RESAMPLE,
    check_output_size,
    color,
    decode,
    encode,
    has_alpha,
    resampling,
)

if TYPE_CHECKING:  # Pillow itself is imported where pixels are touched (see pixels.py)
    from PIL import Image

# --- the tool plumbing -------------------------------------------------------------------------


async def _image_in(ctx: ToolContext, name: str = "image", value: Any | None = None) -> bytes:
    data, _mime = await load_media(ctx, name, value)
    return data


async def _image_out(ctx: ToolContext, data: bytes, fmt: str, stem: str) -> dict[str, Any]:
    spec = FORMATS[fmt]
    return await store(ctx, data, spec.mime, f"{stem}.{spec.ext}")


def _out_format(source_format: str) -> str:
    return source_format if source_format in ("jpeg", "webp") else "png"


def _image_outputs(ref: dict[str, Any]) -> dict[str, Any]:
    parsed = ArtifactRef.from_value(ref)
    assert parsed is not None
    return {"image": ref, "width": parsed.width, "height": parsed.height}


def _definition(
    tool_id: str,
    display_name: str,
    description: str,
    inputs: list[InputParam],
    outputs: list[OutputParam],
    category: str = "image-to-image",
    primary_input: str = "image",
) -> ToolDefinition:
    return ToolDefinition(
        tool_id=tool_id,
        service=SERVICE_NAME,
        display_name=display_name,
        description=description,
        input_schema=inputs,
        output_schema=outputs,
        costing_model=free(),
        platform_hints=PlatformHints(primary_input=primary_input, category=category),
        metadata={"provider": "builtin"},
    )


def _image_param(description: str = "The image to work on.") -> InputParam:
    return InputParam(name="image", type=ParamType.IMAGE, required=True, description=description, order=0)


_GEOMETRY_OUTPUTS = [
    OutputParam(name="image", type=ParamType.IMAGE, description="The resulting image."),
    OutputParam(name="width", type=ParamType.INTEGER, description="Its width in pixels."),
    OutputParam(name="height", type=ParamType.INTEGER, description="Its height in pixels."),
]


# --- image.resize ------------------------------------------------------------------------------

RESIZE = _definition(
    "image.resize",
    "Resize image",
    "Resize an image to a width, a height or both. `fit` keeps the aspect ratio inside the box, "
    "`fill` covers the box and crops the overflow from the centre, `stretch` ignores the aspect "
    "ratio, `pad` fits and fills the rest of the box with `background`.",
    [
        _image_param(),
        InputParam(name="width", type=ParamType.INTEGER, minimum=1, maximum=MAX_SIDE, order=1,
                   description="Target width in pixels (omit to follow the height, keeping the aspect ratio)."),
        InputParam(name="height", type=ParamType.INTEGER, minimum=1, maximum=MAX_SIDE, order=2,
                   description="Target height in pixels (omit to follow the width, keeping the aspect ratio)."),
        InputParam(name="mode", type=ParamType.ENUM, enum=["fit", "fill", "stretch", "pad"], default="fit",
                   order=3, description="How to treat the aspect ratio when both sides are given."),
        InputParam(name="resample", type=ParamType.ENUM, enum=list(RESAMPLE), default="lanczos", order=4,
                   advanced=True, description="The resampling filter."),
        InputParam(name="background", type=ParamType.STRING, default="#000000", order=5, advanced=True,
                   description="Padding colour for mode `pad` (a colour name or #rrggbb[aa])."),
    ],
    _GEOMETRY_OUTPUTS,
)


def resize_image(
    img: Image.Image,
    width: int | None,
    height: int | None,
    mode: str,
    resample: Image.Resampling,
    background: tuple[int, int, int, int],
) -> Image.Image:
    from PIL import Image, ImageOps

    w0, h0 = img.size
    if width is None and height is None:
        raise bad_input("image.resize needs input 'width', input 'height' or both")
    if width is None:
        assert height is not None
        width = max(1, round(w0 * height / h0))
        check_output_size(width, height, "the resized image")
        return img.resize((width, height), resample)
    if height is None:
        height = max(1, round(h0 * width / w0))
        check_output_size(width, height, "the resized image")
        return img.resize((width, height), resample)
    check_output_size(width, height, "the resized image")
    if mode == "stretch":
        return img.resize((width, height), resample)
    if mode == "fill":
        return ImageOps.fit(img, (width, height), method=resample, centering=(0.5, 0.5))
    ratio = min(width / w0, height / h0)
    inner = (max(1, round(w0 * ratio)), max(1, round(h0 * ratio)))
    fitted = img.resize(inner, resample)
    if mode == "fit":
        return fitted
    # pad
    canvas_mode = "RGBA" if has_alpha(img) or background[3] < 255 else "RGB"
    fill: Any = background if canvas_mode == "RGBA" else background[:3]
    canvas = Image.new(canvas_mode, (width, height), fill)
    src = fitted.convert(canvas_mode)
    canvas.paste(src, ((width - inner[0]) // 2, (height - inner[1]) // 2), src if canvas_mode == "RGBA" else None)
    return canvas


async def run_resize(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    data = await _image_in(ctx)
    background = color(i["background"], "background")

    def work() -> tuple[bytes, str]:
        img, src = decode(data, "image")
        out = resize_image(img, i["width"], i["height"], i["mode"], resampling(i["resample"]), background)
        fmt = _out_format(src)
        return encode(out, fmt), fmt

    encoded, fmt = await asyncio.to_thread(work)
    return _image_outputs(await _image_out(ctx, encoded, fmt, "resized"))


# --- image.upscale -----------------------------------------------------------------------------

UPSCALE = _definition(
    "image.upscale",
    "Upscale image",
    "Enlarge an image by a factor with Lanczos resampling, optionally followed by an unsharp mask.",
    [
        _image_param("The image to enlarge."),
        InputParam(name="scale", type=ParamType.NUMBER, default=2.0, minimum=1.0, maximum=8.0, order=1,
                   description="The enlargement factor (1 to 8)."),
        InputParam(name="sharpen", type=ParamType.NUMBER, default=0.0, minimum=0.0, maximum=5.0, order=2,
                   advanced=True, description="Unsharp-mask strength applied after scaling (0: none)."),
    ],
    _GEOMETRY_OUTPUTS,
)


async def run_upscale(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    data = await _image_in(ctx)

    def work() -> tuple[bytes, str]:
        from PIL import Image, ImageFilter

        img, src = decode(data, "image")
        size = (max(1, round(img.width * i["scale"])), max(1, round(img.height * i["scale"])))
        check_output_size(*size, "the upscaled image (see input 'scale')")
        out = img.resize(size, Image.Resampling.LANCZOS)
        if i["sharpen"] > 0:
            out = out.filter(ImageFilter.UnsharpMask(radius=2, percent=round(100 * i["sharpen"]), threshold=2))
        fmt = _out_format(src)
        return encode(out, fmt), fmt

    encoded, fmt = await asyncio.to_thread(work)
    return _image_outputs(await _image_out(ctx, encoded, fmt, "upscaled"))


# --- image.crop --------------------------------------------------------------------------------

CROP = _definition(
    "image.crop",
    "Crop image",
    "Cut a rectangle out of an image. The box is `left`, `top`, `width`, `height` in pixels and must "
    "lie inside the image.",
    [
        _image_param(),
        InputParam(name="left", type=ParamType.INTEGER, default=0, minimum=0, maximum=MAX_SIDE, order=1,
                   description="Left edge of the box, in pixels from the left of the image."),
        InputParam(name="top", type=ParamType.INTEGER, default=0, minimum=0, maximum=MAX_SIDE, order=2,
                   description="Top edge of the box, in pixels from the top of the image."),
        InputParam(name="width", type=ParamType.INTEGER, required=True, minimum=1, maximum=MAX_SIDE, order=3,
                   description="Width of the box in pixels."),
        InputParam(name="height", type=ParamType.INTEGER, required=True, minimum=1, maximum=MAX_SIDE, order=4,
                   description="Height of the box in pixels."),
    ],
    _GEOMETRY_OUTPUTS,
)


async def run_crop(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    data = await _image_in(ctx)

    def work() -> tuple[bytes, str]:
        img, src = decode(data, "image")
        left, top, width, height = i["left"], i["top"], i["width"], i["height"]
        right, bottom = left + width, top + height
        if right > img.width or bottom > img.height:
            raise bad_input(
                f"crop box left={left} top={top} width={width} height={height} reaches "
                f"({right}, {bottom}), outside the {img.width}x{img.height} input 'image'",
                code="out_of_bounds",
            )
        out = img.crop((left, top, right, bottom))
        fmt = _out_format(src)
        return encode(out, fmt), fmt

    encoded, fmt = await asyncio.to_thread(work)
    return _image_outputs(await _image_out(ctx, encoded, fmt, "cropped"))


# --- image.adjust ------------------------------------------------------------------------------

ADJUST = _definition(
    "image.adjust",
    "Adjust image",
    "Change brightness, contrast, saturation and sharpness. Each factor is 1 for unchanged; 0 gives "
    "black, flat grey, greyscale or blur respectively; 2 doubles the effect. Transparency is kept.",
    [
        _image_param(),
        InputParam(name="brightness", type=ParamType.NUMBER, default=1.0, minimum=0.0, maximum=4.0, order=1,
                   description="Brightness factor (1: unchanged, 0: black)."),
        InputParam(name="contrast", type=ParamType.NUMBER, default=1.0, minimum=0.0, maximum=4.0, order=2,
                   description="Contrast factor (1: unchanged, 0: flat grey)."),
        InputParam(name="saturation", type=ParamType.NUMBER, default=1.0, minimum=0.0, maximum=4.0, order=3,
                   description="Colour saturation factor (1: unchanged, 0: greyscale)."),
        InputParam(name="sharpness", type=ParamType.NUMBER, default=1.0, minimum=0.0, maximum=4.0, order=4,
                   advanced=True, description="Sharpness factor (1: unchanged, 0: blurred)."),
    ],
    [OutputParam(name="image", type=ParamType.IMAGE, description="The adjusted image.")],
)


def adjust_image(img: Image.Image, brightness: float, contrast: float, saturation: float,
                 sharpness: float) -> Image.Image:
    from PIL import ImageEnhance

    alpha = img.getchannel("A") if has_alpha(img) else None
    rgb = img.convert("RGB") if img.mode in ("RGBA", "LA") else img
    grey = rgb.mode == "L"
    if brightness != 1.0:
        rgb = ImageEnhance.Brightness(rgb).enhance(brightness)
    if contrast != 1.0:
        rgb = ImageEnhance.Contrast(rgb).enhance(contrast)
    if saturation != 1.0 and not grey:
        rgb = ImageEnhance.Color(rgb).enhance(saturation)
    if sharpness != 1.0:
        rgb = ImageEnhance.Sharpness(rgb).enhance(sharpness)
    if alpha is not None:
        rgb = rgb.convert("RGBA")
        rgb.putalpha(alpha)
    return rgb


async def run_adjust(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    data = await _image_in(ctx)

    def work() -> tuple[bytes, str]:
        img, src = decode(data, "image")
        out = adjust_image(img, i["brightness"], i["contrast"], i["saturation"], i["sharpness"])
        fmt = _out_format(src)
        return encode(out, fmt), fmt

    encoded, fmt = await asyncio.to_thread(work)
    return {"image": await _image_out(ctx, encoded, fmt, "adjusted")}


# --- image.watermark ---------------------------------------------------------------------------

WATERMARK = _definition(
    "image.watermark",
    "Watermark image",
    "Stamp a text or a logo image onto an image at one of nine positions, with an opacity. "
    "Give exactly one of `text` and `watermark_image`.",
    [
        _image_param("The image to stamp."),
        InputParam(name="text", type=ParamType.STRING, order=1,
                   description="The watermark text (give this or `watermark_image`)."),
        InputParam(name="watermark_image", type=ParamType.IMAGE, order=2,
                   description="A logo image used as the watermark (give this or `text`); its transparency is kept."),
        InputParam(name="position", type=ParamType.ENUM, enum=POSITIONS, default="bottom-right", order=3,
                   description="Where the watermark goes."),
        InputParam(name="opacity", type=ParamType.NUMBER, default=0.5, minimum=0.0, maximum=1.0, order=4,
                   description="0: invisible, 1: fully opaque."),
        InputParam(name="margin", type=ParamType.INTEGER, default=16, minimum=0, maximum=MAX_SIDE, order=5,
                   advanced=True, description="Distance from the chosen edges, in pixels."),
        InputParam(name="font_size", type=ParamType.INTEGER, default=0, minimum=0, maximum=2048, order=6,
                   advanced=True, description="Text height in pixels (0: 6% of the shorter side)."),
        InputParam(name="color", type=ParamType.STRING, default="#ffffff", order=7, advanced=True,
                   description="Text colour (a colour name or #rrggbb)."),
        InputParam(name="scale", type=ParamType.NUMBER, default=0.25, minimum=0.01, maximum=1.0, order=8,
                   advanced=True, description="Logo width as a fraction of the image width."),
    ],
    [OutputParam(name="image", type=ParamType.IMAGE, description="The watermarked image.")],
)


def place(position: str, size: tuple[int, int], mark: tuple[int, int], margin: int) -> tuple[int, int]:
    """Top-left corner of a ``mark``-sized box at ``position`` inside ``size``."""
    w, h = size
    mw, mh = mark
    vertical, _, horizontal = position.partition("-") if "-" in position else (position, "", position)
    if position in ("left", "right"):
        vertical = "center"
    if position in ("top", "bottom"):
        horizontal = "center"
    x = margin if horizontal == "left" else w - mw - margin if horizontal == "right" else (w - mw) // 2
    y = margin if vertical == "top" else h - mh - margin if vertical == "bottom" else (h - mh) // 2
    return x, y


def watermark_image(
    img: Image.Image,
    *,
    text: str | None,
    logo: Image.Image | None,
    position: str,
    opacity: float,
    margin: int,
    font_size: int,
    text_color: tuple[int, int, int, int],
    scale: float,
) -> Image.Image:
    from PIL import Image, ImageDraw, ImageFont

    base = img.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    if logo is not None:
        mark = logo.convert("RGBA")
        target_w = max(1, round(base.width * scale))
        target_h = max(1, round(mark.height * target_w / mark.width))
        mark = mark.resize((target_w, target_h), Image.Resampling.LANCZOS)
        alpha = mark.getchannel("A").point(lambda a: round(a * opacity))
        mark.putalpha(alpha)
        overlay.paste(mark, place(position, base.size, mark.size, margin))
    else:
        assert text is not None
        size = font_size or max(8, round(min(base.size) * 0.06))
        font = ImageFont.load_default(size=size)
        draw = ImageDraw.Draw(overlay)
        left, top, right, bottom = (round(v) for v in draw.textbbox((0, 0), text, font=font))
        x, y = place(position, base.size, (right - left, bottom - top), margin)
        fill = (*text_color[:3], round(text_color[3] * opacity))
        shadow = (0, 0, 0, round(160 * opacity))
        offset = max(1, size // 24)
        draw.text((x - left + offset, y - top + offset), text, font=font, fill=shadow)
        draw.text((x - left, y - top), text, font=font, fill=fill)
    out = Image.alpha_composite(base, overlay)
    return out if has_alpha(img) else out.convert("RGB")


async def run_watermark(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    text = i["text"] if i["text"] else None
    if (text is None) == (i["watermark_image"] is None):
        raise bad_input("image.watermark needs exactly one of input 'text' and input 'watermark_image'")
    data = await _image_in(ctx)
    logo_data = await _image_in(ctx, "watermark_image") if i["watermark_image"] is not None else None
    text_color = color(i["color"], "color")

    def work() -> tuple[bytes, str]:
        img, src = decode(data, "image")
        logo = decode(logo_data, "watermark_image")[0] if logo_data is not None else None
        out = watermark_image(
            img, text=text, logo=logo, position=i["position"], opacity=i["opacity"], margin=i["margin"],
            font_size=i["font_size"], text_color=text_color, scale=i["scale"],
        )
        fmt = _out_format(src)
        return encode(out, fmt), fmt

    encoded, fmt = await asyncio.to_thread(work)
    return {"image": await _image_out(ctx, encoded, fmt, "watermarked")}


# --- image.grid --------------------------------------------------------------------------------

GRID = _definition(
    "image.grid",
    "Contact sheet",
    "Lay a list of images out as a contact sheet: each image is fitted (aspect kept) and centred in "
    f"a cell; cells are separated by `padding`. `images` is a JSON list of 1 to {MAX_GRID_IMAGES} media "
    "values (artifacts, http(s) URLs or data: URIs). Sheet width = columns x cell_width + "
    "(columns + 1) x padding; height likewise with rows.",
    [
        InputParam(name="images", type=ParamType.JSON, required=True, order=0,
                   description=f"A list of 1 to {MAX_GRID_IMAGES} images (artifacts, URLs or data: URIs)."),
        InputParam(name="columns", type=ParamType.INTEGER, default=0, minimum=0, maximum=MAX_GRID_IMAGES,
                   order=1, description="Number of columns (0: ceil(sqrt(count)))."),
        InputParam(name="cell_width", type=ParamType.INTEGER, default=256, minimum=16, maximum=4096, order=2,
                   description="Width of one cell in pixels."),
        InputParam(name="cell_height", type=ParamType.INTEGER, default=256, minimum=16, maximum=4096, order=3,
                   description="Height of one cell in pixels."),
        InputParam(name="padding", type=ParamType.INTEGER, default=8, minimum=0, maximum=512, order=4,
                   description="Space around and between cells, in pixels."),
        InputParam(name="background", type=ParamType.STRING, default="#ffffff", order=5,
                   description="Sheet background colour (a colour name or #rrggbb)."),
    ],
    [
        OutputParam(name="image", type=ParamType.IMAGE, description="The contact sheet (PNG)."),
        OutputParam(name="columns", type=ParamType.INTEGER, description="Columns used."),
        OutputParam(name="rows", type=ParamType.INTEGER, description="Rows used."),
        OutputParam(name="width", type=ParamType.INTEGER, description="Sheet width in pixels."),
        OutputParam(name="height", type=ParamType.INTEGER, description="Sheet height in pixels."),
    ],
    category="images-to-image",
    primary_input="images",
)


def grid_layout(count: int, columns: int) -> tuple[int, int]:
    cols = columns or math.ceil(math.sqrt(count))
    cols = min(cols, count)
    return cols, math.ceil(count / cols)


async def run_grid(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    values = i["images"]
    if not isinstance(values, list):
        raise bad_input(f"input 'images' must be a list of images, got {type(values).__name__}")
    if not 1 <= len(values) <= MAX_GRID_IMAGES:
        raise bad_input(f"input 'images' must hold 1 to {MAX_GRID_IMAGES} images, got {len(values)}")
    for n, v in enumerate(values):
        if not (ArtifactRef.is_ref(v) or isinstance(v, str)):
            raise bad_input(f"input 'images'[{n}] must be an artifact or a URL, got {type(v).__name__}")
    cols, rows = grid_layout(len(values), i["columns"])
    cw, ch, pad = i["cell_width"], i["cell_height"], i["padding"]
    width, height = cols * cw + (cols + 1) * pad, rows * ch + (rows + 1) * pad
    check_output_size(width, height, "the contact sheet")
    background = color(i["background"], "background")
    blobs = await asyncio.gather(*(_image_in(ctx, f"images[{n}]", v) for n, v in enumerate(values)))

    def work() -> bytes:
        from PIL import Image, ImageOps

        mode = "RGBA" if background[3] < 255 else "RGB"
        sheet = Image.new(mode, (width, height), background if mode == "RGBA" else background[:3])
        for n, blob in enumerate(blobs):
            img, _ = decode(blob, f"images[{n}]")
            img = ImageOps.contain(img, (cw, ch), Image.Resampling.LANCZOS).convert("RGBA")
            r, c = divmod(n, cols)
            x = pad + c * (cw + pad) + (cw - img.width) // 2
            y = pad + r * (ch + pad) + (ch - img.height) // 2
            sheet.paste(img, (x, y), img)
        return encode(sheet, "png")

    encoded = await asyncio.to_thread(work)
    ref = await _image_out(ctx, encoded, "png", "contact-sheet")
    return {"image": ref, "columns": cols, "rows": rows, "width": width, "height": height}


# --- image.convert -----------------------------------------------------------------------------

CONVERT = _definition(
    "image.convert",
    "Convert image",
    "Re-encode an image as PNG, JPEG, WebP, GIF, BMP or TIFF. Formats without transparency (JPEG, BMP) "
    "get transparent areas filled with `background`.",
    [
        _image_param("The image to convert."),
        InputParam(name="format", type=ParamType.ENUM, enum=list(FORMATS), default="png", order=1,
                   description="The target format."),
        InputParam(name="quality", type=ParamType.INTEGER, default=90, minimum=1, maximum=100, order=2,
                   description="Quality for JPEG and WebP (1 worst, 100 best); ignored by lossless formats."),
        InputParam(name="lossless", type=ParamType.BOOLEAN, default=False, order=3, advanced=True,
                   description="Lossless WebP (ignored by other formats)."),
        InputParam(name="background", type=ParamType.STRING, default="#ffffff", order=4, advanced=True,
                   description="Fill for transparent areas when the format has no transparency."),
    ],
    [
        OutputParam(name="image", type=ParamType.IMAGE, description="The converted image."),
        OutputParam(name="mime_type", type=ParamType.STRING, description="Its mime type."),
        OutputParam(name="size", type=ParamType.INTEGER, description="Its size in bytes."),
    ],
)


async def run_convert(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    data = await _image_in(ctx)
    background = color(i["background"], "background")
    fmt = i["format"]

    def work() -> bytes:
        img, _ = decode(data, "image")
        return encode(img, fmt, quality=i["quality"], lossless=i["lossless"], background=background[:3])

    encoded = await asyncio.to_thread(work)
    ref = await _image_out(ctx, encoded, fmt, "converted")
    return {"image": ref, "mime_type": FORMATS[fmt].mime, "size": len(encoded)}


def image_tools() -> list[BuiltinTool]:
    """Fresh copies of the image tools (callers may change their definitions freely)."""
    pairs = [
        (RESIZE, run_resize),
        (UPSCALE, run_upscale),
        (CROP, run_crop),
        (ADJUST, run_adjust),
        (WATERMARK, run_watermark),
        (GRID, run_grid),
        (CONVERT, run_convert),
    ]
    return [BuiltinTool(d.model_copy(deep=True), run) for d, run in pairs]
