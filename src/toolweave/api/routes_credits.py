"""Credits, estimates and limits: an account's own balance, ledger and spend; estimates before a
run; and, for the admin key, grants, refunds, every account's spend and each account's policy."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from toolweave.api import submit as submit_mod
from toolweave.api.auth import Caller, require_admin, require_caller, tw
from toolweave.api.problems import ApiProblem, FieldError
from toolweave.api.schemas import (
    CreditBalance,
    EstimateRequest,
    EstimateResult,
    GrantRequest,
    LedgerPage,
    PolicyRequest,
    SpendReport,
)

router = APIRouter(prefix="/api/v1")

AccountId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$", description="The account")]


def _too_much(exc: ValueError) -> ApiProblem:
    return ApiProblem(422, str(exc), kind="invalid-request", errors=[FieldError(field="amount", message=str(exc))])


def _account(caller: Caller, account: str | None) -> str:
    """The account a read is about: the caller's own; the admin key may name any."""
    if account is None or account == caller.account_id:
        return caller.account_id
    if not caller.admin:
        raise ApiProblem(403, "only the admin key may read another account's credits", kind="forbidden")
    return account


@router.post("/estimates", response_model=EstimateResult, summary="Estimate a run before submitting it",
             tags=["credits"], responses={404: {"description": "No such tool or job"}})
async def estimate(request: Request, body: EstimateRequest, caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """What a run of this tool or job with these inputs would cost: per step, how each estimate was
    made, and whether the account's available credits cover it. Nothing is stored."""
    app = tw(request)
    target = submit_mod.parse_submit(body.model_dump(exclude_none=True, exclude={"inputs"}))
    definition = submit_mod.target_of(app, target)
    result: dict[str, Any] = await app.estimate(
        target.toolId or target.jobId or "", body.inputs, account_id=caller.account_id, version=definition.version
    )
    return result


@router.get("/credits", response_model=CreditBalance, summary="A credit balance", tags=["credits"])
async def balance(
    request: Request, caller: Caller = Depends(require_caller),
    account: Annotated[str | None, Query(min_length=1, max_length=64, description="Another account (admin key)")] = None,
) -> dict[str, Any]:
    """Your balance, what your runs hold, what you can spend, and your limits."""
    result: dict[str, Any] = await tw(request).credits.balance(_account(caller, account))
    return result


@router.get("/credits/history", response_model=LedgerPage, summary="The credit ledger", tags=["credits"])
async def history(
    request: Request, caller: Caller = Depends(require_caller),
    account: Annotated[str | None, Query(min_length=1, max_length=64, description="Another account (admin key)")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="`nextBefore` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Ledger entries, newest first: grants, holds, charges, releases, refunds."""
    items = await tw(request).credits.history(_account(caller, account), limit + 1, before)
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "nextBefore": items[-1]["entryId"] if more else None}


@router.get("/credits/spend", response_model=SpendReport, summary="Spend per account, tool and day", tags=["credits"])
async def spend(
    request: Request, caller: Caller = Depends(require_caller),
    account: Annotated[str | None, Query(min_length=1, max_length=64,
                                         description="One account (the admin key sees all without it)")] = None,
    days: Annotated[int, Query(ge=1, le=3660, description="The last this many days")] = 30,
) -> dict[str, Any]:
    """What was charged: in total, per account, per tool, per UTC day, and per (account, tool, day)."""
    scope = account if caller.admin else _account(caller, account)
    result: dict[str, Any] = await tw(request).credits.spend(time.time() - days * 86400, None, scope)
    return result


@router.post("/accounts/{account}/credits", response_model=CreditBalance, status_code=201,
             summary="Grant credits to an account", tags=["credits"])
async def grant(request: Request, account: AccountId, body: GrantRequest,
                caller: Caller = Depends(require_admin)) -> dict[str, Any]:
    """Add credits (a ``grant`` entry); the account pays from its balance from then on, unless its
    policy says it never does."""
    app = tw(request)
    try:
        await app.credits.grant(account, body.amount, body.note)
    except ValueError as exc:
        raise _too_much(exc) from None
    result: dict[str, Any] = await app.credits.balance(account)
    return result


@router.post("/accounts/{account}/refunds", response_model=CreditBalance, status_code=201,
             summary="Give credits back to an account", tags=["credits"])
async def refund(request: Request, account: AccountId, body: GrantRequest,
                 caller: Caller = Depends(require_admin)) -> dict[str, Any]:
    """A ``refund`` entry: credits given back, e.g. for a run that went wrong (``runId``)."""
    app = tw(request)
    try:
        await app.credits.refund(account, body.amount, body.note, body.runId)
    except ValueError as exc:
        raise _too_much(exc) from None
    result: dict[str, Any] = await app.credits.balance(account)
    return result


@router.patch("/accounts/{account}/policy", response_model=CreditBalance, summary="Set an account's limits",
              tags=["credits"])
async def set_policy(request: Request, account: AccountId, body: PolicyRequest,
                     caller: Caller = Depends(require_admin)) -> dict[str, Any]:
    """The account's own limits and credit policy: fields left out stay; null puts the setting's
    default back."""
    names = {"credits": "credits", "maxRunsInFlight": "max_runs_in_flight", "submitsPerMinute": "submits_per_minute",
             "confirmAbove": "confirm_above"}
    values = {names[k]: v for k, v in body.model_dump(exclude_unset=True).items()}
    if not values:
        raise ApiProblem(422, "give at least one field", kind="invalid-request",
                         errors=[FieldError(field="body", message="give at least one of " + ", ".join(names))])
    result: dict[str, Any] = await tw(request).credits.set_policy(account, **values)
    return result
