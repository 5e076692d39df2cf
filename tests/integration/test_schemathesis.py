"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis), on SQLite
and on PostgreSQL.

The server runs for real on loopback (uvicorn, embedded worker) in a thread of its own;
schemathesis generates requests from the spec, sends them with an API key, and checks every
response: no 5xx, statuses, content types, headers and bodies as documented. The stateful test
chains calls along the document's links (submit a run → show, cancel, retry, follow it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from tests.helpers.live import Live, live_server

from toolweave.api import create_app
from toolweave.app import App

MAX_EXAMPLES = 25
STATEFUL_SCENARIOS = 100
# positive_data_acceptance is left out: whether a run's `inputs` are valid depends on the chosen
# tool's own input schema (served by GET /tools/{id}), which the static document cannot express;
# such requests get a 422 problem naming each field, as they should.
EXCLUDED = [checks.positive_data_acceptance]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    options: dict[str, Any] = {}
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_db")
        db.truncate()
        options["database_url"] = db.url
    with live_server(tmp_path_factory.mktemp("schemathesis") / "home", **options) as live:
        yield live


# The document does not depend on any data: build it from the routes, without a store.
schema = schemathesis.openapi.from_dict(create_app(cast(App, None), run_worker=False).openapi())


def _headers(live: Live, path: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {live.alice}"}
    if path.endswith("/events"):
        headers["Accept"] = "text/event-stream"
    return headers


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_spec(case: Any, live_api: Live) -> None:
    case.call_and_validate(base_url=live_api.url, headers=_headers(live_api, case.path), timeout=20,
                           excluded_checks=EXCLUDED)


KNOWN_INPUTS = {"value", "note"}


def test_api_statefully(live_api: Live) -> None:
    """Sequences of calls on runs along the document's links: a run submitted is shown, followed,
    cancelled, retried. Submits name ``test.instant`` (with the generated inputs it knows, the rest
    dropped), so that runs are really created and the calls after them reach real runs (the
    stateless test above sends every other kind of body)."""

    class Workflow(schema.include(path_regex=r"^/api/v1/runs").as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            if case.method == "POST" and case.path == "/api/v1/runs" and isinstance(case.body, dict):
                body = dict(case.body)
                body.pop("jobId", None)
                body.pop("version", None)
                body["toolId"] = "test.instant"
                inputs = body.get("inputs")
                body["inputs"] = {k: v for k, v in inputs.items() if k in KNOWN_INPUTS} if isinstance(inputs, dict) else {}
                case.body = body
                # a key seen in an earlier scenario would make this one's answer depend on the order
                # scenarios run in (200 instead of 201), which hypothesis cannot replay
                case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "idempotency-key"}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live_api.url, "headers": _headers(live_api, case.path), "timeout": 20}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, excluded_checks=EXCLUDED, transport_kwargs=kwargs or None)

    Workflow.run(settings=settings(
        max_examples=STATEFUL_SCENARIOS, stateful_step_count=6, deadline=None,
        suppress_health_check=list(HealthCheck), derandomize=True,
    ))
