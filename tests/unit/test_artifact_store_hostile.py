"""The artifact store under a broken world: a file cut short by a crash, the same bytes written by
many threads at once, a disk that fills during a write."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from toolweave import artifacts
from toolweave.artifacts import ArtifactStore

DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".tmp-")]


def test_a_file_cut_short_by_a_crash_is_written_again(tmp_path: Path) -> None:
    """A crash (power loss) after the rename but before the bytes reached the disk leaves a short
    file under the content's name; storing the bytes again must not keep it."""
    store = ArtifactStore(tmp_path)
    ref = store.put_bytes(DATA)
    path = store.path(ref)
    path.write_bytes(DATA[:100])  # what the crash left
    again = store.put_bytes(DATA)
    assert again.sha256 == ref.sha256
    assert hashlib.sha256(store.read(ref)).hexdigest() == ref.sha256


def test_the_same_bytes_from_many_threads_make_one_whole_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    start = threading.Barrier(8)
    refs: list[Any] = []

    def put() -> None:
        start.wait()
        refs.append(store.put_bytes(DATA))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.sha256 for r in refs} == {hashlib.sha256(DATA).hexdigest()}
    assert store.read(refs[0]) == DATA
    assert store.ref(refs[0].sha256).size == len(DATA)
    assert _leftovers(tmp_path) == []


def test_a_full_disk_leaves_no_artifact_and_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path)
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd: int) -> None:
            self.handle = real_fdopen(fd, "wb")

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "fdopen", lambda fd, mode: Full(fd))
    with pytest.raises(OSError, match="No space left"):
        store.put_bytes(DATA)
    monkeypatch.undo()
    sha = hashlib.sha256(DATA).hexdigest()
    assert not store.exists(sha)
    assert _leftovers(tmp_path) == []
    assert store.read(store.put_bytes(DATA)) == DATA  # once there is room again
