"""Who is calling: an API key (``Authorization: Bearer <key>``) or a web session cookie.

Keys are checked by the facade (stored hashed). A web session is created by logging in with a key:
a random token in an HttpOnly cookie; the server keeps only its hash (in the facade's key-value
state, so any server process can read it). Requests that change something with a session cookie
must carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from toolweave.api.problems import ApiProblem
from toolweave.app import App

SESSION_COOKIE = "tw_session"
SESSION_NAMESPACE = "web-session"
SESSION_TTL = 7 * 24 * 3600.0
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tw_...`")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="The web page's session (after /login)")


@dataclass(frozen=True)
class Caller:
    account_id: str
    admin: bool = False
    csrf: str | None = None
    """The session's CSRF token (web sessions only)."""

    @property
    def scope(self) -> str | None:
        """The account to scope reads to; None (everything) for the admin key."""
        return None if self.admin else self.account_id


def tw(request: Request) -> App:
    app: App = request.app.state.toolweave
    return app


def _session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_session(app: App, account_id: str) -> tuple[str, str]:
    """A new session for an account: returns (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    await app.kv_set(SESSION_NAMESPACE, _session_key(token), {"account": account_id, "csrf": csrf}, ttl=SESSION_TTL)
    return token, csrf


async def end_session(app: App, token: str) -> None:
    await app.kv_set(SESSION_NAMESPACE, _session_key(token), None)


async def session_caller(app: App, token: str | None) -> Caller | None:
    if not token or len(token) > 200:
        return None
    value: Any = await app.kv_get(SESSION_NAMESPACE, _session_key(token))
    if not isinstance(value, dict) or "account" not in value:
        return None
    account = str(value["account"])
    return Caller(account_id=account, admin=account == "admin", csrf=str(value.get("csrf", "")))


def csrf_ok(caller: Caller, presented: str | None) -> bool:
    return bool(caller.csrf and presented and hmac.compare_digest(caller.csrf.encode(), presented.encode()))


async def key_caller(app: App, secret: str) -> Caller | None:
    if not secret or len(secret) > 500 or not secret.isascii():
        return None
    account = await app.authenticate(secret)
    if account is None:
        return None
    return Caller(account_id=account, admin=account == "admin")


_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="toolweave"'}


async def require_caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    session: str | None = Depends(cookie_scheme),
) -> Caller:
    """The dependency of every /api/v1 route: 401 unless a valid key or session is presented."""
    app = tw(request)
    if credentials is not None:
        caller = await key_caller(app, credentials.credentials)
        if caller is None:
            raise ApiProblem(401, "the API key is unknown or revoked", kind="unauthenticated", headers=_UNAUTHENTICATED)
        return caller
    if request.headers.get("authorization"):
        raise ApiProblem(401, "use `Authorization: Bearer <API key>`", kind="unauthenticated", headers=_UNAUTHENTICATED)
    if session:
        caller = await session_caller(app, session)
        if caller is not None:
            if request.method not in SAFE_METHODS and not csrf_ok(caller, request.headers.get(CSRF_HEADER)):
                raise ApiProblem(403, f"a request with a session cookie needs the {CSRF_HEADER} header", kind="csrf")
            return caller
    raise ApiProblem(401, "an API key is required (Authorization: Bearer <key>)", kind="unauthenticated", headers=_UNAUTHENTICATED)


async def require_admin(caller: Caller = Depends(require_caller)) -> Caller:
    if not caller.admin:
        raise ApiProblem(403, "only the admin key may do this", kind="forbidden")
    return caller
