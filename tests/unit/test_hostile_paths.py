"""Paths that come from outside, read without trusting what is there: a workflow file that is a pipe
or too large, a local media file swapped for a symlink (or its folder for one) between the check and
the open, ``-i text=@file`` past its limit, and what a crash leaves in the artifact folder."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from toolweave.artifacts import ArtifactStore
from toolweave.model.definitions import JobDefinition, ToolDefinition
from toolweave.services.base import ServiceError

WORKFLOW = {"1": {"class_type": "SaveImage", "inputs": {}}}


def _comfy_tool(path: Path) -> ToolDefinition:
    return ToolDefinition.model_validate(
        {"toolId": "t", "service": "comfyui", "metadata": {"workflow": str(path)}}
    )


# --- 1. metadata.workflow as a file path ----------------------------------------------------------


def test_a_workflow_file_that_is_a_pipe_is_refused_not_read(tmp_path: Path) -> None:
    """A writer waits at the pipe (so the old ``read_text`` returned its JSON instead of blocking
    the test for ever): a workflow path must name a regular file, never a pipe."""
    from toolweave.services.comfy_workflows import load_workflow

    fifo = tmp_path / "workflow.json"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w") as fh:
            fh.write(json.dumps(WORKFLOW))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        with pytest.raises(ServiceError, match="is not a regular file"):
            load_workflow(_comfy_tool(fifo))
    finally:  # let the writer go, whatever happened
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(timeout=30)
        os.close(fd)


def test_a_workflow_file_past_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolweave.services import comfy_workflows

    monkeypatch.setattr(comfy_workflows, "MAX_WORKFLOW_BYTES", 1000, raising=False)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps({str(i): {"class_type": "Note", "inputs": {}} for i in range(100)}))
    with pytest.raises(ServiceError, match="larger than the limit of 1000 bytes"):
        comfy_workflows.load_workflow(_comfy_tool(path))
    path.write_text(json.dumps(WORKFLOW))
    assert comfy_workflows.load_workflow(_comfy_tool(path)) == WORKFLOW


# --- 2. media.fetch of a local path: swapped between the check and the open -------------------------


def _swap_at_size_check(monkeypatch: pytest.MonkeyPatch, target: Path, swap: Any) -> None:
    """Run ``swap`` once, when ``media._read_local`` asks the checked path's size (after it checked
    that the path is a file inside the allowed folders, before it opens it)."""
    real_stat = Path.stat
    done: list[bool] = []

    def stat(self: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        found = real_stat(self, *args, **kwargs)
        if self == target and not done:
            done.append(True)
            swap()
        return found

    monkeypatch.setattr(Path, "stat", stat)


def test_a_local_file_swapped_for_a_symlink_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolweave.services.builtin.media import _read_local

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    pic = allowed / "pic.png"
    pic.write_bytes(b"picture")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    assert _read_local(str(pic), [allowed], 1000) == (b"picture", "pic.png")

    def swap() -> None:
        pic.unlink()
        pic.symlink_to(secret)

    _swap_at_size_check(monkeypatch, pic.resolve(), swap)
    with pytest.raises(ServiceError) as err:
        _read_local(str(pic), [allowed], 1000)
    assert "secret" not in str(err.value)


def test_a_local_files_folder_swapped_for_a_symlink_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolweave.services.builtin.media import _read_local

    allowed = tmp_path / "allowed"
    (allowed / "in").mkdir(parents=True)
    pic = allowed / "in" / "pic.png"
    pic.write_bytes(b"picture")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pic.png").write_bytes(b"secret")

    def swap() -> None:
        (allowed / "in").rename(tmp_path / "moved")
        (allowed / "in").symlink_to(outside)

    _swap_at_size_check(monkeypatch, pic.resolve(), swap)
    with pytest.raises(ServiceError):
        _read_local(str(pic), [allowed], 1000)


def test_a_local_path_to_a_pipe_or_device_is_refused(tmp_path: Path) -> None:
    from toolweave.services.builtin.media import _read_local

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(ServiceError) as err:
            _read_local(str(path), [tmp_path, Path("/dev")], 1000)
        assert err.value.code == "not_found"


# --- 3. -i text=@file ------------------------------------------------------------------------------


def test_a_text_input_from_a_file_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolweave.cli import submitting

    monkeypatch.setattr(submitting, "TEXT_FILE_MAX_BYTES", 100, raising=False)
    job = JobDefinition.model_validate({
        "jobId": "j", "inputSchema": {"prompt": {"type": "string"}},
        "steps": [{"stepId": "s", "toolId": "t"}],
    })
    small = tmp_path / "small.txt"
    small.write_text("a prompt")
    big = tmp_path / "big.txt"
    big.write_text("x" * 101)
    out, _paths, problems = submitting.at_files(job, {"prompt": f"@{small}"})
    assert out == {"prompt": "a prompt"} and problems == []
    out, _paths, problems = submitting.at_files(job, {"prompt": f"@{big}"})
    assert problems == [f"prompt: cannot read {big} as text: is larger than the limit of 100 bytes"]


# --- 4. the artifact store after a crash ------------------------------------------------------------


def test_the_bytes_reach_the_disk_before_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file is fsynced before its rename (so a power loss never leaves a short file under a
    content hash), and its folder after."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ArtifactStore(tmp_path).put_bytes(b"some bytes")
    assert events[:3] == ["fsync", "rename", "fsync-dir"]
    assert events.count("rename") == 2 and events.count("fsync") == 2


def test_temporary_files_a_crash_left_are_removed_and_new_ones_kept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(b"kept")
    folder = store.path(ref).parent
    stale = folder / ".tmp-crashed"
    stale.write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    writing = folder / ".tmp-writing"
    writing.write_bytes(b"now")
    assert store.remove_stale_temporary() == (1, 4)
    assert not stale.exists() and writing.exists()
    assert store.read(ref) == b"kept"
