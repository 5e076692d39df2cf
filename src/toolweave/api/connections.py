"""Connection limits ``toolweave serve`` adds to uvicorn's HTTP/1.1 protocol.

uvicorn closes a keep-alive connection that stays idle after an answer (``timeout_keep_alive``),
but not one that never completes its request's headers: a client that connects and sends half a
header line (or a header a byte at a time) held its connection, its buffers and a slot of the
server's file descriptors for as long as it liked, and with httptools (which uvicorn prefers)
the headers of one request could grow without a bound. This protocol gives each request's
headers ``header_timeout`` seconds, counted from the connection's start or the end of the
previous answer, and at most ``max_header_bytes`` bytes (an answer 431 then); past the time, the
connection is closed. A request whose headers are complete is not timed: its body and its answer
(an event stream) take what they take.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: 32\r\nconnection: close\r\n\r\nthe request headers are too large")


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools where installed, else h11) with a time and a size
    limit on each request's headers; for ``uvicorn.Config(http=...)``."""
    base: type[Any]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:  # no httptools on this platform
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol

    class GuardedProtocol(base):  # type: ignore[misc]
        """A request's headers in ``header_timeout`` seconds and ``max_header_bytes`` bytes."""

        _header_timer: asyncio.TimerHandle | None = None
        _waiting_after: object = None
        """The request cycle that was current when the wait for new headers began (a new cycle
        is made once a request's headers are complete, by either parser)."""
        _header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            waiting = self._header_timer is not None and self.cycle is self._waiting_after
            super().data_received(data)
            if not waiting or self.cycle is not self._waiting_after:  # (its headers completed in this chunk)
                return
            self._header_bytes += len(data)  # all of it: the headers are not complete yet
            if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                self._stop_waiting()
                self.transport.write(HEADERS_TOO_LARGE)
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the next request on this connection, unless one had already come (pipelined)
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._stop_waiting()
            self._waiting_after = self.cycle
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout, self._headers_overdue)

        def _stop_waiting(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            if self.cycle is self._waiting_after and not self.transport.is_closing():
                self.transport.close()  # no request began in time: nothing to answer

    return GuardedProtocol
