from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from toolweave.comfy import ObjectInfo, WorkflowImportError

SMALL = {
    "EmptyImage": {
        "input": {
            "required": {"width": ["INT", {"default": 512, "min": 1}], "height": ["INT", {"default": 512}]}
        },
        "input_order": {"required": ["width", "height"]},
        "output": ["IMAGE"],
        "output_node": False,
        "display_name": "EmptyImage",
    },
}


def test_bundled_object_info() -> None:
    info = ObjectInfo.default()
    assert len(info) == 478
    assert info.has("KSampler") and not info.has("Note")
    assert [s.name for s in info.widget_inputs("KSampler")] == [
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
    ]
    seed = info.input_spec("KSampler", "seed")
    assert seed is not None and seed.has_control
    image = info.input_spec("LoadImage", "image")
    assert image is not None and image.upload == "image" and image.legacy_combo
    video_format = info.input_spec("SaveVideo", "format")
    assert video_format is not None and video_format.type == "COMBO" and video_format.default == "auto"
    assert info.is_output_node("SaveImage") and info.is_api_node("OpenAIGPTImage1")
    assert info.outputs("CheckpointLoaderSimple") == ["MODEL", "CLIP", "VAE"]


def test_comfydeploy_nodes_are_a_fallback() -> None:
    deploy = ObjectInfo.comfydeploy_nodes()
    assert deploy.has("ComfyUIDeployExternalText") and deploy.has("ComfyUIDeployExternalEnum")
    merged = ObjectInfo(SMALL).with_fallback(deploy)
    assert merged.has("EmptyImage") and merged.has("ComfyDeployOutputImage")
    assert [s.name for s in merged.widget_inputs("ComfyUIDeployExternalNumberSlider")] == [
        "input_id",
        "default_value",
        "min_value",
        "max_value",
        "display_name",
        "description",
    ]


def test_from_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "oi.json"
    good.write_text(json.dumps(SMALL))
    assert ObjectInfo.from_file(good).has("EmptyImage")
    with pytest.raises(WorkflowImportError, match="cannot read object_info file"):
        ObjectInfo.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(WorkflowImportError, match="not valid JSON"):
        ObjectInfo.from_file(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"X": 1}))
    with pytest.raises(WorkflowImportError, match="malformed entries"):
        ObjectInfo.from_file(wrong)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/object_info":
            body = json.dumps(SMALL).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_from_url(server: str) -> None:
    info = await ObjectInfo.from_url(server)
    assert info.has("EmptyImage")
    assert (await ObjectInfo.from_url(server + "/object_info")).has("EmptyImage")
    with pytest.raises(WorkflowImportError, match="HTTP 404"):
        await ObjectInfo.from_url(server + "/elsewhere/object_info")


async def test_from_url_unreachable() -> None:
    with pytest.raises(WorkflowImportError, match="cannot fetch"):
        await ObjectInfo.from_url("http://127.0.0.1:1", request_timeout=2)
