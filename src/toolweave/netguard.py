"""Which URLs the server may fetch on a user's behalf.

A URL a user gives (an image input, a ``media.fetch`` source) must not make the server reach its
own private network: hosts that resolve to loopback, private, link-local or otherwise reserved
addresses are refused unless the settings allow them (``media_allow_private_urls``). Every hop of a
redirect is checked again (``stream_public``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_REDIRECTS = 5


class ForbiddenURL(ValueError):
    """A URL the server will not fetch; the message says why."""


class UnresolvableHost(OSError):
    """The host name does not resolve (may be temporary)."""


class NotFetchable(ForbiddenURL):
    """Not an http(s) URL with a host."""


class TooManyRedirects(ForbiddenURL):
    """More than ``MAX_REDIRECTS`` hops."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url(url: httpx.URL, *, allow_private: bool) -> None:
    """Raise ``ForbiddenURL`` for a URL that is not http(s) or whose host is not public."""
    if url.scheme not in ("http", "https"):
        raise NotFetchable(f"only http and https URLs can be fetched, not {url.scheme!r}")
    host = url.host
    if not host:
        raise NotFetchable(f"the URL {url!s} has no host")
    if allow_private:
        return
    try:
        addresses = [host] if is_ip(host) else [
            str(info[4][0])
            for info in await asyncio.get_running_loop().getaddrinfo(
                host, url.port or (443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        ]
    except socket.gaierror as exc:
        raise UnresolvableHost(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    for address in addresses:
        if not is_public(address):
            raise ForbiddenURL(
                f"host {host!r} is a private or local address ({address}); fetching it is not allowed on this server"
            )


@contextlib.asynccontextmanager
async def stream_public(
    http: httpx.AsyncClient, url: str, *, allow_private: bool, timeout: Any = httpx.USE_CLIENT_DEFAULT
) -> AsyncIterator[httpx.Response]:
    """GET a URL a user gave, following redirects by hand so that every hop passes ``check_url``;
    yields the final response, its body not yet read. Raises ``ForbiddenURL`` (``TooManyRedirects``
    past ``MAX_REDIRECTS`` hops) or ``UnresolvableHost``."""
    current = httpx.URL(url)
    for _hop in range(MAX_REDIRECTS + 1):
        await check_url(current, allow_private=allow_private)
        async with http.stream("GET", current, follow_redirects=False, timeout=timeout) as response:
            if response.is_redirect and "location" in response.headers:
                current = current.join(response.headers["location"])
                continue
            yield response
            return
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")
