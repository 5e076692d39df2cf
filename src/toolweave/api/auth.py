"""Who is calling: an API key (``Authorization: Bearer <key>``) or a web session cookie.

Keys are checked by the facade (stored hashed). A web session is created by logging in with a key:
a random token in an HttpOnly cookie; the server keeps only its hash (in the facade's key-value
state, so any server process can read it) with the id of the key that made it. Every request on a
session asks whether that key still works, so revoking a key ends its sessions at once. Requests
that change something with a session cookie must carry the session's CSRF token (form field
``csrf`` or header ``X-CSRF-Token``); the login form itself carries a token that must match a
cookie set with the form (``LOGIN_CSRF_COOKIE``), so another site cannot sign a browser in.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from toolweave.api.problems import ApiProblem
from toolweave.app import App, NotFound

SESSION_COOKIE = "tw_session"
LOGIN_CSRF_COOKIE = "tw_login_csrf"
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
    key_id: str | None = None
    """The API key that authenticated the call (or made the session)."""

    @property
    def scope(self) -> str | None:
        """The account to scope reads to; None (everything) for the admin key. Changes to a run
        are scoped with ``changing``."""
        return None if self.admin else self.account_id


@contextlib.asynccontextmanager
async def changing(app: App, caller: Caller, run_id: str) -> AsyncIterator[str]:
    """The account to scope a change to a run to (cancel, retry, fork, answer): the caller's own,
    for the admin key too, which reads every account's runs but changes only its own (and answers
    the questions that name it an approver). A change the admin may not make is a 403 (it may
    read the run: a 404 would say it is not there); for any other caller NotFound stays a 404."""
    try:
        yield caller.account_id
    except NotFound:
        if caller.admin and await app.run_statuses([run_id]) and not await app.run_statuses([run_id], caller.account_id):
            raise ApiProblem(403, "the admin key reads every account's runs; only the run's account changes it",
                             kind="forbidden") from None
        raise


def tw(request: Request) -> App:
    app: App = request.app.state.toolweave
    return app


def _session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_session(app: App, caller: Caller) -> tuple[str, str]:
    """A new session for a caller authenticated by a key: returns (cookie token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    value = {"account": caller.account_id, "csrf": csrf, "key": caller.key_id}
    await app.kv_set(SESSION_NAMESPACE, _session_key(token), value, ttl=SESSION_TTL)
    return token, csrf


async def end_session(app: App, token: str) -> None:
    await app.kv_set(SESSION_NAMESPACE, _session_key(token), None)


async def session_caller(app: App, token: str | None) -> Caller | None:
    if not token or len(token) > 200:
        return None
    value: Any = await app.kv_get(SESSION_NAMESPACE, _session_key(token))
    if not isinstance(value, dict) or "account" not in value or not isinstance(value.get("key"), str):
        return None
    if not await app.key_active(value["key"]):  # the key was revoked (or the admin key replaced)
        await end_session(app, token)
        return None
    account = str(value["account"])
    return Caller(account_id=account, admin=account == "admin", csrf=str(value.get("csrf", "")), key_id=value["key"])


def csrf_ok(caller: Caller, presented: str | None) -> bool:
    return tokens_match(caller.csrf, presented)


def tokens_match(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison of two tokens; False when either is missing."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"), presented.encode("utf-8", "surrogateescape"))


async def key_caller(app: App, secret: str) -> Caller | None:
    if not secret or len(secret) > 500 or not secret.isascii():
        return None
    found = await app.authenticate(secret)
    if found is None:
        return None
    account, key_id = found
    return Caller(account_id=account, admin=account == "admin", key_id=key_id)


async def remembered_caller(app: App, secret: str) -> tuple[Caller, bool] | None:
    """``key_caller`` by ``App.remembered_key``: (caller, whether the key came from the process's
    memory, to be checked where the request acts)."""
    if not secret or len(secret) > 500 or not secret.isascii():
        return None
    found = await app.remembered_key(secret)
    if found is None:
        return None
    account, key_id, remembered = found
    return Caller(account_id=account, admin=account == "admin", key_id=key_id), remembered


UNAUTHENTICATED_HEADERS = {"WWW-Authenticate": 'Bearer realm="toolweave"'}


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
            raise ApiProblem(401, "the API key is unknown or revoked", kind="unauthenticated", headers=UNAUTHENTICATED_HEADERS)
        return caller
    if request.headers.get("authorization"):
        raise ApiProblem(401, "use `Authorization: Bearer <API key>`", kind="unauthenticated", headers=UNAUTHENTICATED_HEADERS)
    if session:
        caller = await session_caller(app, session)
        if caller is not None:
            if request.method not in SAFE_METHODS and not csrf_ok(caller, request.headers.get(CSRF_HEADER)):
                raise ApiProblem(403, f"a request with a session cookie needs the {CSRF_HEADER} header", kind="csrf")
            return caller
    raise ApiProblem(401, "an API key is required (Authorization: Bearer <key>)", kind="unauthenticated", headers=UNAUTHENTICATED_HEADERS)


async def require_admin(caller: Caller = Depends(require_caller)) -> Caller:
    if not caller.admin:
        raise ApiProblem(403, "only the admin key may do this", kind="forbidden")
    return caller
