"""Wake-ups between processes on one SQLite file (``store/wake.py``)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from toolweave.store.wake import Wakeups


async def test_a_notify_reaches_a_listener_of_the_same_file_only(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    woken, elsewhere = asyncio.Event(), asyncio.Event()
    listener, sender = Wakeups(str(tmp_path / "a.db")), Wakeups(str(tmp_path / "a.db"))
    other = Wakeups(str(tmp_path / "b.db"))
    try:
        assert listener.listen(loop, woken.set) and other.listen(loop, elsewhere.set)
        sender.notify()
        await asyncio.wait_for(woken.wait(), 10)
        await asyncio.sleep(0.05)
        assert not elsewhere.is_set()
    finally:
        for wakeups in (listener, sender, other):
            wakeups.close(loop)
    assert list(listener.folder.glob("*.sock")) == []  # a closed listener leaves no socket behind


async def test_the_socket_of_a_process_that_is_gone_is_removed_by_the_next_sender(tmp_path: Path) -> None:
    sender = Wakeups(str(tmp_path / "a.db"))
    sender.folder.mkdir(mode=0o700, exist_ok=True)
    dead = sender.folder / "999999-dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()  # its process died without removing it
    assert dead.exists()
    sender.notify()
    assert not dead.exists()
    sender.close()
