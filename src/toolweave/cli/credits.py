"""``toolweave credits ...`` and ``toolweave limits ...``: the operator's side of money and limits —
grants and refunds, balances, the ledger, spend per account, tool and day, and each account's
policy (credits on or off, runs in flight, runs per minute, the confirmation threshold)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import JSON_HELP, CliError, console, exit_with, print_json, with_app

credits_app = typer.Typer(no_args_is_help=True, help="Credits: balances, grants, the ledger, spend.")
limits_app = typer.Typer(no_args_is_help=True, help="Per-account limits and the credit policy.")

ACCOUNT_ARG = typer.Argument(..., help="The account (as runs and keys name it).")


def _amount(text: str, what: str = "the amount") -> Decimal:
    from toolweave.model.credits import parse_amount

    try:
        return parse_amount(text, what=what)
    except ValueError as exc:
        exit_with(CliError(str(exc)))


def _account(account: str) -> str:
    account = account.strip()
    if not account or len(account) > 64:
        exit_with(CliError("give an account name of 1 to 64 characters"))
    return account


def _show_balance(shown: dict[str, Any]) -> None:
    policy = "pays from its balance" if shown["credits"] else "does not pay from a balance (runs as before)"
    typer.echo(f"account {shown['accountId']}: {policy}")
    typer.echo(f"  balance    {shown['balance']}")
    typer.echo(f"  held       {shown['held']}  (estimates of runs under way)")
    typer.echo(f"  available  {shown['available']}")
    limits = shown["limits"]
    typer.echo(f"  limits     {_limit(limits['maxRunsInFlight'])} runs in flight, "
               f"{_limit(limits['submitsPerMinute'])} runs per minute, "
               f"asks before runs over {limits['confirmAbove'] or '(never)'}")


def _limit(value: int | None) -> str:
    return "no limit on" if not value else str(value)


def show_estimate(target_id: str, estimate: dict[str, Any]) -> None:
    """An estimate as text: the total, each step and how it was found, and the account's credits."""
    total = estimate["total"] + ("" if estimate["known"] else " (part of it is only known after the run)")
    console.print(f"estimate for {target_id}: {total}", highlight=False)
    for step in estimate["steps"]:
        calls = f" × {step['calls']}" if step["calls"] != 1 else ""
        console.print(f"  {step['stepId']:<24} {step['toolId'] or '':<24} {step['each']}{calls}  ({step['basis']})",
                      highlight=False, soft_wrap=True)
    if estimate["available"] is None:
        console.print("the account does not pay from a credit balance", highlight=False)
    else:
        covered = "covered" if estimate["covered"] else "NOT covered: a submit would be refused"
        console.print(f"available credits: {estimate['available']} — {covered}", highlight=False)


def ceiling_option(text: str | None) -> Decimal | None:
    """``--cost-ceiling``, checked."""
    if text is None:
        return None
    from toolweave.model.credits import parse_amount

    try:
        return parse_amount(text, what="--cost-ceiling")
    except ValueError as exc:
        raise CliError(str(exc)) from None


@credits_app.command("grant")
def credits_grant(
    account: str = ACCOUNT_ARG,
    amount: str = typer.Argument(..., help="Credits to add, a decimal number (at most 8 decimals)."),
    note: str | None = typer.Option(None, "--note", help="Why (kept in the ledger)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Give an account credits; from then on it pays for its runs from its balance."""
    account, value = _account(account), _amount(amount)
    shown = with_app(lambda a: _then_balance(a, a.credits.grant(account, value, note), account))
    print_json(shown) if json_output else _show_balance(shown)


@credits_app.command("refund")
def credits_refund(
    account: str = ACCOUNT_ARG,
    amount: str = typer.Argument(..., help="Credits to give back, a decimal number."),
    run: str | None = typer.Option(None, "--run", help="The run it is for (kept in the ledger)."),
    note: str | None = typer.Option(None, "--note", help="Why (kept in the ledger)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Give credits back to an account (e.g. for a run that went wrong)."""
    account, value = _account(account), _amount(amount)
    shown = with_app(lambda a: _then_balance(a, a.credits.refund(account, value, note, run), account))
    print_json(shown) if json_output else _show_balance(shown)


async def _then_balance(app: Any, change: Any, account: str) -> dict[str, Any]:
    try:
        await change
    except ValueError as exc:  # the balance would pass its largest value
        raise CliError(str(exc)) from None
    result: dict[str, Any] = await app.credits.balance(account)
    return result


@credits_app.command("show")
def credits_show(account: str = ACCOUNT_ARG, json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """An account's balance, what its runs hold, what it can spend, and its limits."""
    account = _account(account)
    shown = with_app(lambda a: a.credits.balance(account))
    print_json(shown) if json_output else _show_balance(shown)


@credits_app.command("history")
def credits_history(
    account: str = ACCOUNT_ARG,
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many entries (newest first)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """An account's ledger: grants, holds, charges, releases and refunds, newest first."""
    account = _account(account)
    entries = with_app(lambda a: a.credits.history(account, limit))
    if json_output:
        print_json(entries)
        return
    table = Table(title=f"{len(entries)} ledger entries of {account}")
    for column in ("#", "when", "kind", "amount", "held", "run", "tool", "note"):
        table.add_column(column, no_wrap=column not in ("note",))
    for e in entries:
        table.add_row(str(e["entryId"]), e["createdAt"][:19].replace("T", " "), e["kind"], e["amount"], e["held"],
                      e["runId"] or "", e["toolId"] or "", Text(e["note"] or ""))
    console.print(table)


@credits_app.command("spend")
def credits_spend(
    account: str | None = typer.Option(None, "--account", help="Only this account."),
    days: int = typer.Option(30, "--days", min=1, max=3660, help="The last this many days."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """What was charged, per account, per tool and per day."""
    since = time.time() - days * 86400
    spent = with_app(lambda a: a.credits.spend(since, None, account))
    if json_output:
        print_json(spent)
        return
    typer.echo(f"spent {spent['total']} in the last {days} days")
    for title, key in (("per account", "byAccount"), ("per tool", "byTool"), ("per day", "byDay")):
        typer.echo(f"{title}:")
        for name, amount in spent[key].items():
            typer.echo(f"  {name:<32} {amount}")


@limits_app.command("set")
def limits_set(
    account: str = ACCOUNT_ARG,
    runs_in_flight: int | None = typer.Option(None, "--runs-in-flight", min=0,
                                              help="Runs it may have queued or running at once (0: no limit)."),
    per_minute: int | None = typer.Option(None, "--per-minute", min=0, help="Runs it may submit per minute (0: no limit)."),
    confirm_above: str | None = typer.Option(None, "--confirm-above",
                                             help="Estimate above which the Telegram bot asks before a run."),
    credits: str | None = typer.Option(None, "--credits", help="on: pays from its balance; off: never pays; default: the setting."),
    default: list[str] = typer.Option([], "--default", help="Put a value back to the setting's default: "
                                      "runs-in-flight, per-minute, confirm-above (may repeat)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Set an account's own limits and credit policy (what is not given stays as it is)."""
    account = _account(account)
    values: dict[str, Any] = {}
    if runs_in_flight is not None:
        values["max_runs_in_flight"] = runs_in_flight
    if per_minute is not None:
        values["submits_per_minute"] = per_minute
    if confirm_above is not None:
        values["confirm_above"] = _amount(confirm_above, "--confirm-above")
    if credits is not None:
        choices = {"on": True, "off": False, "default": None}
        if credits not in choices:
            exit_with(CliError(f"--credits must be on, off or default, not {credits!r}"))
        values["credits"] = choices[credits]
    names = {"runs-in-flight": "max_runs_in_flight", "per-minute": "submits_per_minute", "confirm-above": "confirm_above"}
    for name in default:
        if name not in names:
            exit_with(CliError(f"--default takes runs-in-flight, per-minute or confirm-above, not {name!r}"))
        values[names[name]] = None
    if not values:
        exit_with(CliError("give at least one of --runs-in-flight, --per-minute, --confirm-above, --credits, --default"))
    shown = with_app(lambda a: a.credits.set_policy(account, **values))
    print_json(shown) if json_output else _show_balance(shown)


@limits_app.command("show")
def limits_show(account: str = ACCOUNT_ARG, json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """An account's limits and credit policy (its own, else the settings')."""
    credits_show(account, json_output)
