"""Which URLs the server may fetch or post to on a user's behalf.

A URL a user gives (an image input, a ``media.fetch`` source, a run's callback URL) must not make
the server reach its own private network: hosts that are, or resolve to, loopback, private,
link-local or otherwise reserved addresses are refused unless a setting allows them
(``media_allow_private_urls``, ``callback_allow_private_urls``).

Two checks, one rule:

- ``check_literal`` looks at the URL alone (no DNS), so a front end can refuse a URL when the run
  is submitted: not http(s), no host, an IPv4 address in any form but the dotted quad (``0177.0.0.1``,
  ``2130706433``, ``0x7f.1``, ``127.1`` — forms that C resolvers read as addresses, and that httpx
  either refuses to parse or passes to the resolver), a literal private address (IPv6 forms that
  embed an IPv4 address are checked on that address), or a ``localhost`` name.
- ``check_url`` adds the DNS answer: every address the host resolves to must be public. It runs
  before every connection, and ``stream_public`` runs it again on every redirect hop. (The address
  is checked when the request is made; a DNS answer that changes between the check and the
  connection is not caught.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # httpx itself is imported where a URL is parsed (it imports its own command line)
    import httpx

MAX_REDIRECTS = 5
MEDIA_SETTING = "media_allow_private_urls"
"""The setting that lets media URLs (media inputs, ``media.fetch`` sources, output downloads)
reach private addresses; named in every refusal, so the operator knows what to change."""
CALLBACK_SETTING = "callback_allow_private_urls"
"""The same for run callback URLs."""

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_DOTTED_QUAD = re.compile(r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NOT_IN_HOSTS = frozenset('<>"{}|\\^`/?#@')


class ForbiddenURL(ValueError):
    """A URL the server will not fetch; the message says why."""


class UnresolvableHost(OSError):
    """The host name does not resolve (may be temporary)."""


class NotFetchable(ForbiddenURL):
    """Not an http(s) URL with a host, or not a URL at all."""


class TooManyRedirects(ForbiddenURL):
    """More than ``MAX_REDIRECTS`` hops."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """Whether an IP address (text) is one the public internet routes to."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not (embedded.is_global and not embedded.is_multicast):
            return False
    return ip.is_global and not ip.is_multicast


def looks_like_ipv4(host: str) -> bool:
    """Whether a URL host is an IPv4 address in some form: its last label is a number (decimal,
    octal with a leading 0, or hex with 0x), which is how URL parsers and C resolvers read it."""
    labels = host.rstrip(".").split(".")
    return bool(labels) and _NUMERIC_LABEL.match(labels[-1]) is not None


def _private(host: str, what: str, setting: str | None) -> ForbiddenURL:
    """The refusal of a private host, naming the setting that would allow it."""
    allow = f" (the operator may allow private addresses: TOOLWEAVE_{setting.upper()}=true)" if setting else ""
    return ForbiddenURL(f"host {host!r} is {what}; it is not allowed on this server{allow}")


def check_literal(url: str, *, allow_private: bool, setting: str | None = None) -> None:
    """Raise ``ForbiddenURL`` for a URL that is refused by its text alone (no DNS): see the module.
    ``setting`` (``MEDIA_SETTING``, ``CALLBACK_SETTING``) is named in the refusal of a private
    address."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise NotFetchable(f"{_show(url)} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise NotFetchable(f"only http and https URLs are allowed, not {_show(url)}")
    if not host:
        raise NotFetchable(f"the URL {_show(url)} has no host")
    if any(c.isspace() or not c.isprintable() or c in _NOT_IN_HOSTS for c in host):
        raise NotFetchable(f"the URL {_show(url)} has a host name with characters no host name has")
    if not is_ip(host) and looks_like_ipv4(host):
        if not _DOTTED_QUAD.match(host.rstrip(".")):
            raise ForbiddenURL(
                f"host {host!r} is an IPv4 address in an octal, hexadecimal, integer or shortened form; "
                "write the address as four decimal numbers (a.b.c.d)"
            )
        host = host.rstrip(".")
    import httpx

    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise NotFetchable(f"{_show(url)} is not a valid URL: {exc}") from None
    if allow_private:
        return
    if is_ip(host):
        if not is_public(host):
            raise _private(host, "a private or local address", setting)
    elif host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
        raise _private(host, "this machine", setting)


async def check_url(url: httpx.URL | str, *, allow_private: bool, setting: str | None = None) -> None:
    """``check_literal``, then every address the host resolves to must be public. Raises
    ``ForbiddenURL`` or ``UnresolvableHost`` (the only error that may go away by itself)."""
    text = str(url)
    check_literal(text, allow_private=allow_private, setting=setting)
    if allow_private:
        return
    import httpx

    parsed = httpx.URL(text)
    host = parsed.host.rstrip(".")
    if is_ip(host):
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parsed.port or (443 if parsed.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise UnresolvableHost(f"cannot resolve host {host!r}: {reason}") from exc
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            raise _private(host, f"a private or local address ({address})", setting)


def _show(url: str) -> str:
    return repr(url if len(url) <= 200 else url[:200] + "…")


_CLIENT_DEFAULT: Any = object()
"""``stream_public``'s timeout when none is given: the client's (``httpx.USE_CLIENT_DEFAULT``)."""


@contextlib.asynccontextmanager
async def stream_public(
    http: httpx.AsyncClient, url: str, *, allow_private: bool, setting: str | None = None,
    timeout: Any = _CLIENT_DEFAULT,
) -> AsyncIterator[httpx.Response]:
    """GET a URL a user gave, following redirects by hand so that every hop passes ``check_url``;
    yields the final response, its body not yet read. Raises ``ForbiddenURL`` (``TooManyRedirects``
    past ``MAX_REDIRECTS`` hops) or ``UnresolvableHost``. Without ``timeout``, the client's own."""
    import httpx

    if timeout is _CLIENT_DEFAULT:
        timeout = httpx.USE_CLIENT_DEFAULT
    await check_url(url, allow_private=allow_private, setting=setting)
    current = httpx.URL(url)
    for hop in range(MAX_REDIRECTS + 1):
        if hop:
            await check_url(current, allow_private=allow_private, setting=setting)
        async with http.stream("GET", current, follow_redirects=False, timeout=timeout) as response:
            if response.is_redirect and "location" in response.headers:
                try:
                    current = current.join(response.headers["location"])
                except (httpx.InvalidURL, ValueError) as exc:
                    raise NotFetchable(f"the server redirected to an invalid URL: {exc}") from None
                continue
            yield response
            return
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")
