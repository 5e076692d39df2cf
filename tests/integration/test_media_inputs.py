"""Media inputs are checked for their type when a run is submitted, before any backend sees them."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from toolweave.app import App
from toolweave.artifacts import media_problem
from toolweave.inputs import InputError
from toolweave.settings import Settings


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(
        yaml.safe_dump(
            {
                "toolId": "look",
                "service": "builtin",  # never dispatched here: submit is what is checked
                "inputSchema": {"photo": {"type": "image", "required": True}, "clip": {"type": "video"}},
                "outputSchema": {"image": {"type": "image"}},
            }
        )
    )
    tw = App(Settings(home=tmp_path / "home", definitions=[defs]))
    yield tw
    await tw.aclose()


def test_media_problem_names_what_the_bytes_are() -> None:
    assert media_problem("image", png()) is None
    assert media_problem("image", b"hello\n") == "is text, not an image"
    assert media_problem("image", b"\x00\x01\x02garbage") == "is data in no image format toolweave reads, not an image"
    assert media_problem("video", png()) == "is an image (image/png), not a video"
    assert media_problem("audio", b"la la la") == "is text, not audio"
    assert media_problem("video", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32) is None
    assert media_problem("image", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32) is None
    assert media_problem("file", b"anything") is None


async def test_a_text_file_for_an_image_input_is_refused_at_submit(app: App, tmp_path: Path) -> None:
    fake = tmp_path / "photo.png"
    fake.write_text("not a picture")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(png())
    with pytest.raises(InputError) as caught:
        await app.submit("look", {"photo": str(fake), "clip": str(clip)}, account_id="a", allow_local_paths=True)
    assert sorted(str(p) for p in caught.value.problems) == [
        "clip: clip.mp4 is an image (image/png), not a video",
        "photo: photo.png is text, not an image",
    ]
    text_uri = "data:image/png;base64," + base64.b64encode(b"plain words").decode()
    with pytest.raises(InputError, match="photo: the data: URI is text, not an image"):
        await app.submit("look", {"photo": text_uri}, account_id="a")
    # An uploaded file (API, Telegram) referenced by its artifact id is checked too.
    uploaded = await app.put_media(b"words again", "a", filename="x.png")
    with pytest.raises(InputError, match="photo: the artifact is text, not an image"):
        await app.submit("look", {"photo": uploaded}, account_id="a")
    good = tmp_path / "good.png"
    good.write_bytes(png())
    run_id = await app.submit("look", {"photo": str(good)}, account_id="a", allow_local_paths=True)
    run = await app.get_run(run_id)
    assert run["jobInputs"]["photo"]["mimeType"] == "image/png"


async def test_local_paths_that_never_end_or_are_too_large_are_refused_unread(tmp_path: Path) -> None:
    """A pipe (a blocking read), /dev/zero (a read without end) and a file past media_max_bytes
    (read whole into memory before) are refused naming the input; no artifact is written."""
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "tool.yaml").write_text(
        yaml.safe_dump(
            {
                "toolId": "look",
                "service": "builtin",
                "inputSchema": {"photo": {"type": "image", "required": True}},
                "outputSchema": {"image": {"type": "image"}},
            }
        )
    )
    tw = App(Settings(home=tmp_path / "home", definitions=[defs], media_max_bytes=1000))
    try:
        big = tmp_path / "big.png"
        big.write_bytes(png() + b"\x00" * 1000)
        with pytest.raises(InputError) as caught:
            await tw.submit("look", {"photo": str(big)}, account_id="a", allow_local_paths=True)
        assert [str(p) for p in caught.value.problems] == ["photo: big.png is larger than the limit of 1000 bytes"]
        zero = tmp_path / "zero.png"
        zero.symlink_to("/dev/zero")
        fifo = tmp_path / "pipe.png"
        os.mkfifo(fifo)
        for path in (zero, fifo):
            with pytest.raises(InputError, match=f"photo: is not a regular file: {path}"):
                await tw.submit("look", {"photo": str(path)}, account_id="a", allow_local_paths=True)
        assert not any(p.is_file() for p in (tmp_path / "home").rglob("*") if len(p.name) == 64)
    finally:
        await tw.aclose()


def test_a_local_file_replaced_by_a_pipe_after_the_check_is_not_read(tmp_path: Path) -> None:
    from toolweave.submitting import _read_local

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        _read_local(str(fifo), 1000)
    grows = tmp_path / "grows.bin"
    grows.write_bytes(b"x" * 2000)
    with pytest.raises(ValueError, match="larger than the limit of 1000 bytes"):
        _read_local(str(grows), 1000)
