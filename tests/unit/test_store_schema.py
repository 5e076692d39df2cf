"""The status enums and the database CHECK constraints say the same thing."""

from __future__ import annotations

import re

import pytest

from toolweave.model.status import GenerationStatus, NotificationStatus, RunStatus, StepStatus, TaskKind
from toolweave.store.schema import metadata

CASES = [
    ("runs", "status", RunStatus),
    ("step_runs", "status", StepStatus),
    ("step_items", "status", StepStatus),
    ("generations", "status", GenerationStatus),
    ("notifications", "status", NotificationStatus),
    ("tasks", "kind", TaskKind),
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("table", "column", "enum"), CASES)
def test_check_constraint_lists_exactly_the_enum_values(table: str, column: str, enum: type, dialect: str) -> None:
    """One CHECK per store: an ``IN`` list on PostgreSQL, comparisons on SQLite (migration 0019)."""
    checks = [
        c for c in metadata.tables[table].constraints
        if getattr(c, "sqltext", None) is not None and column in str(c.sqltext) and c._ddl_if.dialect == dialect  # type: ignore[attr-defined]
    ]
    assert len(checks) == 1, f"{table}.{column} needs one CHECK constraint on {dialect}"
    text = str(checks[0].sqltext)
    assert (" IN (" in text) == (dialect == "postgresql")
    allowed = set(re.findall(r"'([^']*)'", text))
    assert allowed == {e.value for e in enum}


def test_migration_creates_the_same_constraints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from toolweave.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.upgrade()
    store.close()
    ddl = "\n".join(r[0] for r in sqlite3.connect(tmp_path / "x.db").execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    for _table, _column, enum in CASES:
        for value in enum:
            assert f"'{value.value}'" in ddl


def test_the_run_state_columns_are_every_column_of_runs_but_its_inputs_and_outputs() -> None:
    from toolweave.store.runs import STATE_COLUMNS

    expected = [c.name for c in metadata.tables["runs"].columns if c.name not in ("job_inputs", "final_outputs")]
    assert list(STATE_COLUMNS) == expected
