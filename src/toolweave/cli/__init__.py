"""The command line: ``toolweave ...``. Talks to the ``App`` facade, never to the store.

One module per noun: ``definitions`` (validate, tools, jobs), ``runs`` (run, runs), ``submitting``
(their inputs, submission, retry and fork), ``following`` (following a run), ``answers`` (runs answer, runs waiting), ``render`` (tables and run views), ``worker``, ``status`` (queue and workers), ``demo``, ``db``,
``importing`` (import, sync), ``services``, ``prune`` (retention), ``serve``, ``keys``, ``credits`` (credits, limits), ``telegram``; ``common`` holds what they share (consoles, settings,
exit codes, the app session). This module builds the command tree; the app itself (store,
services) and the servers are imported only by the commands that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import gc

import typer

from toolweave.cli import (
    answers,
    cluster,
    credits,
    db,
    definitions,
    demo,
    importing,
    keys,
    prune,
    runs,
    serve,
    services,
    status,
    telegram,
    worker,
)
from toolweave.cli.helptext import HelpGroup
from toolweave.cli.notifications import notifications_app

app = typer.Typer(
    cls=HelpGroup, no_args_is_help=True, add_completion=False, help="Run generative-AI tools and durable jobs.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from toolweave.api.version import __version__

        typer.echo(f"toolweave {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_version,
                                 help="Print the version and exit."),
) -> None:
    """Run generative-AI tools and durable jobs."""

app.command("validate")(definitions.validate_definitions)
app.command("run")(runs.run_command)
app.command("worker")(worker.worker_command)
app.command("status")(status.status_command)
app.command("demo")(demo.demo_command)
app.command("serve")(serve.serve)
app.command("cluster")(cluster.cluster_command)
app.command("telegram")(telegram.telegram_command)
app.command("prune")(prune.prune_command)

app.add_typer(definitions.tools_app, name="tools")
app.add_typer(definitions.jobs_app, name="jobs")
runs.runs_app.command("answer")(answers.runs_answer)
runs.runs_app.command("waiting")(answers.runs_waiting)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(db.db_app, name="db")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(credits.credits_app, name="credits")
app.add_typer(credits.limits_app, name="limits")
app.add_typer(notifications_app, name="notifications")
app.add_typer(importing.import_app, name="import")
app.add_typer(importing.sync_app, name="sync")
app.add_typer(services.services_app, name="services")


def main() -> None:
    # The cyclic garbage collector need not walk what the imports made (modules, classes, functions,
    # which live until exit) again and again: frozen before the command runs (gc.freeze), so a
    # long-running command's full collections skip them. What is left when the command returns is
    # frozen too, so the interpreter's collection at exit walks nothing (the process ends anyway; the
    # app has closed its store). Together a sixth of a CLI run's CPU time: docs/benchmarks.md, *Start-up*.
    gc.freeze()
    try:
        app()
    finally:
        gc.freeze()
