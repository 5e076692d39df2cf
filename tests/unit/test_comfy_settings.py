"""TOOLWEAVE_COMFYUI_SERVERS / comfyui_servers: the format, and a clear error for each mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolweave.settings import ComfyServer, Settings


def test_servers_from_the_environment() -> None:
    settings = Settings.load(
        {"TOOLWEAVE_HOME": "/nonexistent-home", "TOOLWEAVE_COMFYUI_SERVERS": "local=http://127.0.0.1:8188@2, gpu=https://gpu-box:8188"}
    )
    assert settings.comfyui_servers == [
        ComfyServer("local", "http://127.0.0.1:8188", 2),
        ComfyServer("gpu", "https://gpu-box:8188", 1),
    ]


def test_user_info_in_a_url_is_not_a_concurrency() -> None:
    settings = Settings.load({"TOOLWEAVE_HOME": "/x", "TOOLWEAVE_COMFYUI_SERVERS": "a=http://user@host:8188"})
    assert settings.comfyui_servers == [ComfyServer("a", "http://user@host:8188", 1)]


def test_servers_from_toml_tables() -> None:
    settings = Settings.load({"TOOLWEAVE_HOME": "/x"}, comfyui_servers=[{"name": "a", "base_url": "http://x:1", "concurrency": 3}])
    assert settings.comfyui_servers == [ComfyServer("a", "http://x:1", 3)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://127.0.0.1:8188", "write it as name=http://host:port[@concurrency]"),
        ("a=", "must start with http:// or https://"),
        ("a=ftp://host", "must start with http:// or https://"),
        ("a=http://host@0", "at least 1"),
        ("a=http://x,a=http://y", "server 'a' is named twice"),
    ],
)
def test_each_mistake_is_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="comfyui_servers") as caught:
        Settings.load({"TOOLWEAVE_HOME": "/x", "TOOLWEAVE_COMFYUI_SERVERS": value})
    assert message in str(caught.value)


def test_toml_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="unknown keys conc"):
        Settings.load({"TOOLWEAVE_HOME": "/x"}, comfyui_servers=[{"name": "a", "base_url": "http://x", "conc": 2}])


def test_the_cli_reports_a_bad_server_list_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "toolweave.cli", "runs", "list"],
        env={"TOOLWEAVE_HOME": str(tmp_path), "TOOLWEAVE_COMFYUI_SERVERS": "http://127.0.0.1:8188", "PATH": ""},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "comfyui_servers entry 'http://127.0.0.1:8188'" in proc.stderr
