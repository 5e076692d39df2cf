"""Submitting from the command line: inputs from ``-i key=value`` options (``key=@file`` reads a
file: a media input gets the local file, any other its text), ``toolweave run``'s submission and
``runs retry``'s retry in place or fork, with their problems as ``CliError`` (exit 4)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolweave.cli import credits as credits_cli
from toolweave.cli.common import LOCAL_ACCOUNT, CliError, print_json
from toolweave.files import read_regular_file

if TYPE_CHECKING:
    from toolweave.app import App
    from toolweave.model.definitions import JobDefinition


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``-i key=value`` options → a mapping; every malformed one is reported at once."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"-i {pair!r}: write it as key=value (or key=@file)")
        elif key in out:
            problems.append(f"-i {key}: given twice")
        else:
            out[key] = value
    if problems:
        raise CliError("the inputs are malformed", details=problems)
    return out


def read_at_files(job: JobDefinition, raw: dict[str, str]) -> tuple[dict[str, Any], bool]:
    """Resolve ``key=@file`` values: a media input of ``job`` gets the local file, any other input
    its text.

    Returns the inputs and whether local paths were given (``allow_local_paths``).
    """
    out, paths, problems = at_files(job, raw)
    if problems:
        raise CliError("some inputs cannot be read", details=problems)
    return out, paths


TEXT_FILE_MAX_BYTES = 8 * 1024 * 1024
"""The largest file ``-i name=@file`` reads as the text of an input that is not media (docs/security.md)."""


def at_files(
    job: JobDefinition, raw: Mapping[str, Any], folder: Path | None = None
) -> tuple[dict[str, Any], bool, list[str]]:
    """``read_at_files`` without raising: (inputs, whether local paths were given, problems). A
    relative ``@path`` is taken from ``folder`` when given (a batch file's), else from here."""
    media = {p.name for p in job.input_schema if p.type.is_media}
    known = [p.name for p in job.input_schema]
    out: dict[str, Any] = {}
    problems: list[str] = []
    paths = False
    for key, value in raw.items():
        if not (isinstance(value, str) and value.startswith("@")):
            out[key] = value
            continue
        if key not in known:  # not read: the input check names it with the others ("is not an input")
            out[key] = value
            continue
        path = Path(value[1:]).expanduser()
        if folder is not None and not path.is_absolute():
            path = folder / path
        if not path.is_file():
            problems.append(f"{key}: no such file: {value[1:]}")
            continue
        if key in media:
            out[key] = str(path.resolve())
            paths = True
        else:
            try:
                out[key] = read_regular_file(path, TEXT_FILE_MAX_BYTES).decode("utf-8")
            except OSError as exc:
                problems.append(f"{key}: cannot read {value[1:]} as text: {exc.strerror or exc}")
            except UnicodeDecodeError as exc:
                problems.append(f"{key}: cannot read {value[1:]} as text: {exc}")
    return out, paths, problems


async def submit(
    app: App, target_id: str, pairs: list[str], account: str, version: str | None = None, *,
    cost_ceiling: Decimal | None = None, estimate_only: str | None = None,
) -> str:
    """Submit a run of a tool or job (in ``version``, default the latest) from ``-i`` options;
    input problems and refusals (credits, limits) become ``CliError`` (exit 4). With
    ``estimate_only`` (``"text"`` or ``"json"``), print the run's estimate instead and submit
    nothing (returns "")."""
    from toolweave.accounting import Refused
    from toolweave.app import InvalidDefinition, MediaError, UnknownDefinition
    from toolweave.inputs import InputError

    raw = parse_pairs(pairs)
    try:
        inputs, paths = read_at_files(app.job_for(target_id, version), raw)
        await app.ensure_account(account)
        if estimate_only:
            found = await app.estimate(target_id, inputs, account_id=account, version=version)
            print_json(found) if estimate_only == "json" else credits_cli.show_estimate(target_id, found)
            return ""
        return await app.submit(
            target_id, inputs, account_id=account, origin={"platform": "cli"}, coerce_text=True,
            allow_local_paths=paths, version=version, cost_ceiling=cost_ceiling,
        )
    except Refused as exc:
        raise CliError(f"refused: {exc.message}") from None
    except InvalidDefinition as exc:
        raise CliError(str(exc.args[0]), details=[str(p) for p in exc.problems]) from None
    except UnknownDefinition as exc:
        raise CliError(f"{exc.args[0]} (see `toolweave tools list` and `toolweave jobs list`)") from None
    except InputError as exc:
        raise CliError(
            f"the inputs of {target_id} are not valid", details=[with_hint(p, raw) for p in exc.problems]
        ) from None
    except MediaError as exc:
        raise CliError(f"a media input cannot be read: {exc}") from None


async def retry_or_fork(
    app: App, run_id: str, account: str, from_step: str | None, pairs: list[str]
) -> tuple[str, int]:
    """``runs retry``: in place without ``from_step`` and inputs, else a fork. Returns the run to
    follow and the event id to follow it from."""
    from toolweave.app import BadRequest, Conflict, MediaError, NotFound
    from toolweave.inputs import InputError

    try:
        if from_step is None and not pairs:
            seen = await app.events(run_id, account)
            await app.retry(run_id, account)
            return run_id, seen[-1]["id"] if seen else 0
        raw = parse_pairs(pairs)
        inputs, paths = read_at_files(await app.run_definition(run_id, account), raw) if raw else ({}, False)
        new_id = await app.fork(
            run_id, account, from_step=from_step, inputs=inputs, origin={"platform": "cli", "command": "retry"},
            coerce_text=True, allow_local_paths=paths,
        )
        return new_id, 0
    except NotFound:
        raise not_found(run_id, account) from None
    except (Conflict, BadRequest) as exc:
        raise CliError(str(exc)) from None
    except InputError as exc:
        raise CliError("the inputs are not valid", details=[f"{p.field}: {p.message}" for p in exc.problems]) from None
    except MediaError as exc:
        raise CliError(f"a media input cannot be read: {exc}") from None


def not_found(run_id: str, account: str = LOCAL_ACCOUNT) -> CliError:
    return CliError(f"account {account!r} has no run {run_id!r} (`toolweave runs list` shows its runs; "
                    "another account's: --account ID)")


def with_hint(problem: Any, raw: dict[str, str]) -> str:
    """An input problem as a line; a local path given without ``@`` says how to send the file."""
    line = f"{problem.field}: {problem.message}"
    if problem.message.startswith("local paths are not accepted") and problem.field in raw:
        line += f" — to send the file, write -i {problem.field}=@{raw[problem.field]}"
    return line
