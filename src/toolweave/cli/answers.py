"""``toolweave runs answer`` and ``toolweave runs waiting``: answering steps that ask a person."""

from __future__ import annotations

import typer

from toolweave.cli.common import (
    ACCOUNT_HELP,
    JSON_HELP,
    LOCAL_ACCOUNT,
    VIEW_HELP,
    CliError,
    app_session,
    check_view,
    console,
    print_json,
    run_main,
)
from toolweave.cli.render import print_question
from toolweave.cli.submitting import parse_pairs


def _answer_body(approve: bool, reject: bool, choose: str | None, values: list[str], comment: str | None) -> dict[str, object]:
    if approve and reject:
        raise CliError("give --approve or --reject, not both")
    body: dict[str, object] = {}
    if approve or reject:
        body["decision"] = "approve" if approve else "reject"
    if choose is not None:
        try:
            body["chosen"] = [int(part) for part in choose.split(",") if part.strip()]
        except ValueError:
            raise CliError(f"--choose takes candidate indexes like 2 or 0,3, not {choose!r}") from None
    if values:
        body["values"] = dict(parse_pairs(values))
    if comment:
        body["comment"] = comment
    if not body:
        raise CliError("say what the answer is: --approve, --reject, --choose N[,M…] or --set name=value")
    return body


def runs_answer(
    run_id: str = typer.Argument(..., help="The run's id."),
    step_id: str = typer.Argument(..., help="The id of the step that asks."),
    approve: bool = typer.Option(False, "--approve", help="Approve (choosing or setting values approves too)."),
    reject: bool = typer.Option(False, "--reject", help="Reject: the run fails, or goes on with approved=false."),
    choose: str | None = typer.Option(None, "--choose", help="A choose question: the candidates' indexes, e.g. 2 or 0,3."),
    values: list[str] | None = typer.Option(None, "--set", help="An edit question: a value to change, name=value."),
    comment: str | None = typer.Option(None, "--comment", help="A note that goes with the answer."),
    wait: bool = typer.Option(False, "--wait", help="Then follow the run until it ends (or asks again)."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", help=VIEW_HELP),
) -> None:
    """Answer a step that asks (approve or reject, choose candidates, edit values); the run goes on."""
    from toolweave.app import AnswerError, Conflict, NotFound

    body = _answer_body(approve, reject, choose, list(values or []), comment)

    async def main() -> int:
        from toolweave.cli.following import finish, follow  # (asyncio: not for --help)

        shown = check_view(view, json_output)
        async with app_session() as tw:
            try:
                done = await tw.answer(run_id, step_id, account, body)
            except NotFound:
                raise CliError(f"no run {run_id!r} with a step {step_id!r} that asks you (for account, see --account)") from None
            except Conflict as exc:
                raise CliError(str(exc)) from None
            except AnswerError as exc:
                raise CliError("the answer does not fit the question",
                               details=[f"{p.field}: {p.message}" for p in exc.problems]) from None
            if not wait:
                if json_output:
                    print_json(done)
                else:
                    again = " (the same answer had been given already)" if done["repeated"] else ""
                    console.print(f"answered step {step_id} of run {run_id}{again}; the run is {done['runStatus']}",
                                  highlight=False)
                return 0
            run = await follow(tw, run_id, account, console, worker="auto", view=shown)
            return await finish(tw, run, account, json_output, None)

    run_main(main())


def runs_waiting(
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
) -> None:
    """List the questions waiting for your answer: your runs', and those naming you an approver."""

    async def main() -> int:
        async with app_session() as tw:
            questions = await tw.waiting_questions(account)
        if json_output:
            print_json({"items": questions})
        elif not questions:
            console.print("no run is waiting for you", highlight=False)
        for question in questions if not json_output else []:
            print_question(console, question)
        return 0

    run_main(main())

