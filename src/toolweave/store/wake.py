"""Wake-ups between processes sharing one SQLite file: a datagram to each listening process.

PostgreSQL carries wake-ups itself (``NOTIFY``). SQLite has nothing of the kind, so a process
that waits for work (``Store.wait_for_work``) binds a Unix datagram socket in a folder named
after the database file (under the system's temporary folder: socket paths are short), and a
process that commits new work sends one byte to every socket there. A send never blocks: a full
buffer already holds a wake-up, and the socket of a process that is gone is removed by the first
sender that finds it dead. Where Unix sockets are missing (or the folder cannot be made), waiting
falls back to polling, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LIST_SECONDS = 0.5
"""How long a sender trusts its list of listeners before reading the folder again."""


def folder_for(database: str) -> Path:
    digest = hashlib.sha256(os.path.abspath(database).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"toolweave-wake-{os.getuid() if hasattr(os, 'getuid') else 0}-{digest}"


class Wakeups:
    """The sending and the receiving side for one SQLite database file."""

    def __init__(self, database: str) -> None:
        self.folder = folder_for(database)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._path: Path | None = None
        self._peers: list[str] = []
        self._loop: Any = None
        self._listed_at = float("-inf")
        self._lock = threading.Lock()
        self.usable = hasattr(socket, "AF_UNIX")

    def _prepare(self) -> bool:
        if not self.usable:
            return False
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            if self.folder.stat().st_uid != os.getuid():
                self.usable = False  # someone else's folder: never send to (or listen in) it
        except OSError:
            self.usable = False
        return self.usable

    def listen(self, loop: Any, on_wake: Callable[[], None]) -> bool:
        """Start receiving wake-ups on ``loop`` (once per loop); False when not possible."""
        if self._listener is not None:
            if self._loop is loop:
                return True
            self.close(self._loop, sender=False)
        if not self._prepare():
            return False
        path = self.folder / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False

        def drain() -> None:
            try:
                while sock.recv(64):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return
            on_wake()

        loop.add_reader(sock.fileno(), drain)
        self._listener, self._path, self._loop = sock, path, loop
        self._listed_at = float("-inf")
        return True

    def notify(self) -> None:
        """Wake every other process listening on this database (never blocks)."""
        if not self.usable:
            return
        with self._lock:
            self._notify()

    def _notify(self) -> None:
        now = time.monotonic()
        if now - self._listed_at > LIST_SECONDS:
            try:
                own = self._path.name if self._path is not None else None
                self._peers = [str(p) for p in self.folder.glob("*.sock") if p.name != own]
            except OSError:
                self._peers = []
            self._listed_at = now
        if not self._peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        gone = []
        for peer in self._peers:
            try:
                self._sender.sendto(b"w", peer)
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full of wake-ups already
            except (ConnectionRefusedError, FileNotFoundError):
                gone.append(peer)
            except OSError:
                pass
        for peer in gone:
            self._peers.remove(peer)
            with contextlib.suppress(OSError):
                os.unlink(peer)

    def close(self, loop: Any = None, *, sender: bool = True) -> None:
        if self._listener is not None:
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(Exception):
                    loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None
        self._loop = None
        if sender and self._sender is not None:
            self._sender.close()
            self._sender = None
