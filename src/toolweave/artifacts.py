"""Content-addressed artifact store: a local directory keyed by SHA-256.

Files live at ``<root>/<aa>/<bb>/<sha256>``; a JSON sidecar keeps what the content says about
itself (mime type, size, width and height of images). Writing the same bytes twice stores them
once. What an account calls a file (its name, the type it declared) is the account's own, kept in
the store's ``artifacts`` table (one row per account holding it), never in the sidecar: two
accounts uploading the same bytes do not see each other's file names.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import mimetypes
import os
import stat
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote

from toolweave.model.records import ArtifactRef

_SNIFF = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
]


def sniff_mime(data: bytes, filename: str | None = None) -> str:
    """The mime type of some bytes: magic numbers first, then the file name."""
    for magic, mime in _SNIFF:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "video/webm"
    if data[:4] in (b"RIFF",) and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:3] == b"ID3" or data[:2] == b"\xff\xfb":
        return "audio/mpeg"
    if filename:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed:
            return guessed
    return "application/octet-stream"


_IMAGE_BRANDS = (b"heic", b"heix", b"heif", b"mif1", b"msf1", b"avif", b"avis")
"""ISO-BMFF brands of still images (HEIF, AVIF): ``ftyp`` boxes that are not video."""


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a character cut at the end of the sample is fine
            return False
    return True


def media_problem(kind: str, data: bytes, *, width: int | None = None) -> str | None:
    """Why ``data`` cannot be a media value of ``kind`` (``image``, ``video``, ``audio``), or None.

    A phrase to follow the input's name (``"is text, not an image"``). Images must be recognised by
    their magic number or readable by Pillow (``width`` known from an earlier read counts); videos
    and audio are refused only when they are plainly something else (an image, text), because
    their containers are too many to list. Other kinds (``file``) take anything.
    """
    if kind not in ("image", "video", "audio"):
        return None
    magic = sniff_mime(data)
    brand = data[8:12] if data[4:8] == b"ftyp" else b""
    if kind == "image":
        if magic.startswith("image/") or width is not None or brand in _IMAGE_BRANDS:
            return None
        if image_size(data) is not None:
            return None
        if _looks_like_text(data):
            return "is text, not an image"
        found = magic if magic != "application/octet-stream" else "data in no image format toolweave reads"
        return f"is {found}, not an image"
    if magic.startswith("image/") or brand in _IMAGE_BRANDS:
        return f"is an image ({magic}), not {'a video' if kind == 'video' else 'audio'}"
    if _looks_like_text(data):
        return f"is text, not {'a video' if kind == 'video' else 'audio'}"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return int(img.width), int(img.height)
    except Exception:
        return None


class DataURITooLarge(ValueError):
    """A ``data:`` URI holding more bytes than allowed."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        super().__init__(f"is larger than the limit of {limit} bytes" + (f" ({size} bytes)" if size is not None else ""))
        self.limit = limit
        self.size = size


def decode_data_uri(uri: str, limit: int | None = None) -> tuple[bytes, str]:
    """Bytes and mime type of a ``data:`` URI (base64 or percent-encoded). Raises ``ValueError``
    with a phrase to follow the input's name (``DataURITooLarge`` past ``limit`` bytes)."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("is a data: URI without a comma")
    parts = header.split(";")
    mime = (parts[0] or "text/plain").lower()
    if limit is not None and len(payload) * 3 // 4 > limit + 3:
        raise DataURITooLarge(limit)
    try:
        data = base64.b64decode(payload, validate=True) if "base64" in parts[1:] else unquote(payload).encode()
    except ValueError:
        raise ValueError("is a data: URI with invalid base64") from None
    if limit is not None and len(data) > limit:
        raise DataURITooLarge(limit, len(data))
    return data, mime


def _write_atomically(path: Path, data: bytes) -> None:
    """Write a file under a temporary name of its own, then rename it into place: two processes
    storing the same bytes at once each rename a whole file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the bytes on the disk before the name: never a short file after a crash
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """The folder's entries (a rename into it) on the disk, where the platform can open a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder; its renames are ordered by NTFS's journal
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


TEMPORARY_PREFIX = ".tmp-"
TEMPORARY_GRACE_SECONDS = 3600.0
"""A temporary file (``.tmp-*``) untouched this long was left by a crash (a write takes far less):
``remove_stale_temporary`` removes it."""


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise KeyError(f"not an artifact id: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put_bytes(self, data: bytes, mime_type: str | None = None, filename: str | None = None) -> ArtifactRef:
        sha = hashlib.sha256(data).hexdigest()
        mime = mime_type or sniff_mime(data, filename)
        width = height = None
        if mime.startswith("image/"):
            size = image_size(data)
            if size:
                width, height = size
        ref = ArtifactRef(
            sha256=sha, mimeType=mime, size=len(data), width=width, height=height, filename=filename
        )
        path = self._path(sha)
        if not self._still_there(path, len(data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = ref.model_dump(by_alias=True, exclude_none=True, exclude={"filename"})
            _write_atomically(path, data)
            _write_atomically(path.with_suffix(".json"), json.dumps(meta).encode())
        return ref

    def remove_stale_temporary(self, now: float | None = None) -> tuple[int, int]:
        """Remove the temporary files (``.tmp-*``) a crash left in the store's folders, those not
        modified for ``TEMPORARY_GRACE_SECONDS`` (one being written now is newer); (files, bytes)."""
        cutoff = (time.time() if now is None else now) - TEMPORARY_GRACE_SECONDS
        files = size = 0
        for path in self.root.glob(f"??/??/{TEMPORARY_PREFIX}*"):
            try:
                found = path.lstat()
                if found.st_mtime > cutoff or not stat.S_ISREG(found.st_mode):
                    continue
                path.unlink()
            except FileNotFoundError:  # removed meanwhile (another prune)
                continue
            files += 1
            size += found.st_size
        return files, size

    def mtime(self, sha256: str) -> float | None:
        """When the file was last written or found again by ``put_bytes``; None if there is none."""
        try:
            return self._path(sha256).stat().st_mtime
        except (FileNotFoundError, KeyError):
            return None

    @staticmethod
    def _still_there(path: Path, size: int) -> bool:
        """Whether the file, whole, and its sidecar exist; the file's time is set to now, so that a
        prune removing it meanwhile sees it was just wanted again (``set_aside``). A file of
        another size (cut short by a crash or a full disk before its bytes reached the disk) is
        not the content its name promises: it is written again."""
        try:
            os.utime(path)
            found = os.stat(path).st_size
        except FileNotFoundError:
            return False
        return found == size and path.with_suffix(".json").exists()

    def put_file(self, source: Path, mime_type: str | None = None) -> ArtifactRef:
        source = Path(source)
        return self.put_bytes(source.read_bytes(), mime_type, source.name)

    def exists(self, sha256: str) -> bool:
        try:
            return self._path(sha256).exists()
        except KeyError:
            return False

    def path(self, ref: ArtifactRef | str) -> Path:
        sha = ref if isinstance(ref, str) else ref.sha256
        path = self._path(sha)
        if not path.exists():
            raise KeyError(f"no artifact {sha}")
        return path

    def read(self, ref: ArtifactRef | str) -> bytes:
        return self.path(ref).read_bytes()

    def head(self, ref: ArtifactRef | str, size: int) -> bytes:
        """The first ``size`` bytes of an artifact (enough to recognise its format)."""
        with self.path(ref).open("rb") as fh:
            return fh.read(size)

    def ref(self, sha256: str) -> ArtifactRef:
        """What the content says about itself (no file name: names belong to accounts)."""
        meta_path = self._path(sha256).with_suffix(".json")
        if not meta_path.exists():
            raise KeyError(f"no artifact {sha256}")
        meta = json.loads(meta_path.read_text())
        meta.pop("filename", None)  # sidecars written before names moved to the accounts' records
        return ArtifactRef.model_validate(meta)

    def export(self, ref: ArtifactRef, directory: Path, stem: str) -> Path:
        """Copy an artifact out under a readable name; returns the new path."""
        ext = mimetypes.guess_extension(ref.mime_type) or ""
        if ref.filename and "." in ref.filename:
            ext = "." + ref.filename.rsplit(".", 1)[1]
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{stem}{ext}"
        target.write_bytes(self.read(ref))
        return target

    # --- removal (retention) -------------------------------------------------------------------
    # A file is removed in three moves, so that bytes stored again meanwhile are never lost: it is
    # renamed aside (``<sha>.prune``); the caller checks the store again; then it is either
    # dropped or put back. ``put_bytes`` writes a new file when it finds none and touches one it
    # finds, so a file set aside after it was found is put back by ``restore`` (it was just used).

    def _aside(self, sha256: str) -> Path:
        path = self._path(sha256)
        return path.with_name(path.name + ".prune")

    def set_aside(self, sha256: str) -> float | None:
        """Rename the file aside; its modification time, or None when there is none. A file set
        aside earlier (an interrupted removal) is put back first."""
        path, aside = self._path(sha256), self._aside(sha256)
        if aside.exists():
            self.restore(sha256)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        return aside.stat().st_mtime

    def restore(self, sha256: str) -> None:
        """Put a file set aside back (unless the same bytes were stored again meanwhile)."""
        path, aside = self._path(sha256), self._aside(sha256)
        if path.exists():
            aside.unlink(missing_ok=True)
            return
        try:
            os.replace(aside, path)
        except FileNotFoundError:
            pass

    def drop(self, sha256: str) -> int:
        """Delete a file set aside and the sidecar (unless the bytes were stored again meanwhile);
        the bytes freed."""
        path, aside = self._path(sha256), self._aside(sha256)
        try:
            size = aside.stat().st_size
            aside.unlink()
        except FileNotFoundError:
            size = 0
        if not path.exists():
            path.with_suffix(".json").unlink(missing_ok=True)
        return size
