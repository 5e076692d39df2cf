"""Migrations: a fresh store reaches the newest revision, and processes starting together on one
PostgreSQL database migrate it one at a time."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from tests.helpers.databases import admin_url, require_postgres

from toolweave.store import tasks as tasks_q
from toolweave.store.db import Store
from toolweave.store.migrate import config, current, head_revision

HEAD = ScriptDirectory.from_config(config()).get_current_head()


def test_the_newest_revision_read_from_the_files_is_alembics_head() -> None:
    """A store at this revision is opened without Alembic (``Store.upgrade``): it must be the head."""
    assert head_revision() == HEAD


def test_a_store_behind_the_newest_revision_is_upgraded_when_opened(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    from toolweave.store.migrate import upgrade

    upgrade(store.engine, "0002")
    assert store._revision() == "0002"
    store.upgrade()  # not at the head: Alembic runs
    assert store._revision() == HEAD == current(store.engine)
    store.close()


def test_sqlite_store_is_created_at_the_newest_revision(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'new.db'}")
    store.upgrade()
    store.upgrade()  # a second time is a no-op
    assert current(store.engine) == HEAD
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_migrations_build_the_tables_of_schema_py(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every table, column, index and constraint of ``store/schema.py`` comes out of the migrations
    (but those made for another store only: ``ddl_if(dialect=…)``)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from toolweave.store.schema import metadata

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'cmp.db'}"
    else:
        db = request.getfixturevalue("postgres_db")
        db.truncate()
        url = db.url
    store = Store(url)
    try:
        store.upgrade()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_object": _for_dialect(conn.dialect.name)})
            diffs = compare_metadata(context, metadata)
        assert diffs == []
    finally:
        store.close()


def _for_dialect(dialect: str) -> object:
    """An ``include_object`` that leaves out what ``store/schema.py`` builds for another store only."""
    def include(obj: object, name: str | None, kind: str, reflected: bool, compare_to: object) -> bool:
        condition = getattr(obj, "_ddl_if", None) if not reflected else None
        return condition is None or condition.dialect in (None, dialect)

    return include


def test_events_are_keyed_by_run_on_postgres_and_by_rowid_on_sqlite(store: Store) -> None:
    """0017: on PostgreSQL one index, the primary key (run_id, event_id); on SQLite the rowid and
    ``ix_events_run``. A run's feed reads its events through it either way."""
    from toolweave.store import events as events_q

    def shape(tx: object) -> tuple[list[str], str]:
        if tx.is_postgres:  # type: ignore[attr-defined]
            rows = tx.all("SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1")  # type: ignore[attr-defined]
            key = tx.one(  # type: ignore[attr-defined]
                "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conname = 'pk_events'"
            ).d
            return [r.indexname for r in rows], key
        rows = tx.all("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY 1")  # type: ignore[attr-defined]
        return [r.name for r in rows], "rowid"

    names, key = store.read_sync(shape)
    if store.engine.dialect.name == "postgresql":
        assert (names, key) == (["pk_events"], "PRIMARY KEY (run_id, event_id)")
    else:
        assert (names, key) == (["ix_events_run"], "rowid")
    store.run_sync(lambda tx: events_q.append_many(tx, [
        {"run_id": run, "type": "run.note", "step_id": None, "data": {"i": i}, "created_at": float(i)}
        for i, run in enumerate(["run_a", "run_b", "run_a", "run_a"])
    ]))
    feed = store.read_sync(lambda tx: events_q.since(tx, "run_a", 0, 10))
    assert [e.data["i"] for e in feed] == [0, 2, 3]
    ids = [e.event_id for e in feed]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_concurrent_upgrades_of_one_postgres_database_do_not_collide() -> None:
    require_postgres()
    name = f"toolweave_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url().rsplit("/", 1)[0] + "/" + name
    errors: list[BaseException] = []
    stores: list[Store] = []

    def upgrade() -> None:
        store = Store(url)
        stores.append(store)
        try:
            store.upgrade()
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=upgrade) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert current(stores[0].engine) == HEAD
    finally:
        for store in stores:
            store.close()
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migration_0003_goes_down_and_up_again(tmp_path: Path) -> None:
    from alembic import command

    from toolweave.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'mig.db'}")
    upgrade(store.engine, "0002")
    assert "ix_tasks_due" not in _indexes(store)
    store.upgrade()
    assert {"ix_tasks_due", "ix_generations_capacity"} <= _indexes(store)
    assert "ix_generations_platform" not in _indexes(store)
    command.downgrade(config(store.engine), "0002")
    assert current(store.engine) == "0002"
    assert "ix_generations_platform" in _indexes(store)
    store.upgrade()
    assert current(store.engine) == HEAD
    store.close()


def test_a_claim_reads_the_queue_in_order_and_stops_at_its_limit(tmp_path: Path) -> None:
    """The claim walks ix_tasks_due in the order it takes tasks, so its cost does not grow with the
    backlog (no sort of every due task); the capacity count reads its partial index."""

    store = Store(f"sqlite:///{tmp_path / 'plan.db'}")
    store.upgrade()

    def plan(tx: object, sql: str, params: dict[str, object]) -> str:
        return " | ".join(str(r[3]) for r in tx.q("EXPLAIN QUERY PLAN " + sql, params).fetchall())  # type: ignore[attr-defined]

    claim = store.run_sync(plan, tasks_q._CLAIM, {"owner": "w", "token": "t", "expires": 1.0, "now": 1.0, "limit": 2})
    assert "ix_tasks_due" in claim and "TEMP B-TREE" not in claim, claim
    count = store.run_sync(
        plan, "SELECT COUNT(*) AS n FROM generations WHERE capacity_key = :key AND status IN ('pending', 'processing')",
        {"key": "comfyui:a"},
    )
    assert "ix_generations_capacity" in count, count
    store.close()


def test_the_reads_of_unfinished_runs_use_their_partial_indexes(store: Store) -> None:
    """The sweep for stranded runs, an account's runs in flight and its latest place state the
    condition of ``ix_runs_unfinished`` / ``ix_runs_account_unfinished`` as the store's index has it
    (on SQLite comparisons, migration 0019): a partial index serves only a query that states it."""
    from toolweave.store import runs as runs_q

    def plan(build: Any) -> str:
        def read(tx: Any) -> str:
            sql, params = build(tx)
            if tx.is_postgres:
                tx.q("SET LOCAL enable_seqscan = off")
                return " | ".join(str(r[0]) for r in tx.q("EXPLAIN " + sql, params).fetchall())
            return " | ".join(str(r[3]) for r in tx.q("EXPLAIN QUERY PLAN " + sql, params).fetchall())

        return str(store.run_sync(read))

    sweep = plan(lambda tx: (runs_q._STRANDED.format(unfinished=runs_q.unfinished(tx, "r."), only=""), {"limit": 5}))
    assert "ix_runs_account_unfinished" in sweep, sweep  # (ix_runs_unfinished, for the sweep alone, went in 0020)
    count = plan(lambda tx: (
        f"SELECT COUNT(*) AS n FROM runs WHERE master_account_id = :account AND {runs_q.unfinished(tx)} "
        "AND parent_run_id IS NULL", {"account": "a"},
    ))
    assert "ix_runs_account_unfinished" in count, count
    place = plan(lambda tx: (
        f"SELECT MAX(queue_at) AS place FROM runs WHERE master_account_id = :a AND {runs_q.unfinished(tx)}", {"a": "a"},
    ))
    assert "ix_runs_account_unfinished" in place, place


def _indexes(store: Store) -> set[str]:
    rows = store.read_sync(lambda tx: tx.all("SELECT name FROM sqlite_master WHERE type = 'index'"))
    return {r.name for r in rows}


def test_migration_0004_keeps_queued_tasks_and_never_reuses_an_id(tmp_path: Path) -> None:
    """SQLite reused the id of a task deleted a moment before; migration 0004 rebuilds the queue with
    AUTOINCREMENT and keeps the tasks that were queued."""
    from alembic import command

    from toolweave.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'mig4.db'}")
    upgrade(store.engine, "0003")
    store.run_sync(lambda tx: tx.q(
        "INSERT INTO tasks (kind, run_id, ref_id, available_at, attempts, created_at) "
        "VALUES ('advance', 'run_a', 'run_a', 1, 0, 1), ('advance', 'run_b', 'run_b', 1, 0, 1)"
    ))
    upgrade(store.engine, "0004")
    rows = store.read_sync(lambda tx: tx.all("SELECT task_id, ref_id, claim_token FROM tasks ORDER BY task_id"))
    assert [(r.task_id, r.ref_id, r.claim_token) for r in rows] == [(1, "run_a", None), (2, "run_b", None)]
    assert "ix_tasks_due" in _indexes(store)
    store.run_sync(lambda tx: tx.q("DELETE FROM tasks WHERE task_id = 2"))
    new_id = store.run_sync(lambda tx: tx.q(
        "INSERT INTO tasks (kind, available_at, attempts, created_at) VALUES ('advance', 1, 0, 1) RETURNING task_id"
    ).fetchone()[0])
    assert new_id == 3
    command.downgrade(config(store.engine), "0003")
    assert "claim_token" not in {r.name for r in store.read_sync(lambda tx: tx.all("SELECT name FROM pragma_table_info('tasks')"))}
    store.upgrade()
    assert current(store.engine) == HEAD
    store.close()


def test_migration_0007_turns_pending_runs_into_queued_ones_and_back(tmp_path: Path) -> None:
    from alembic import command

    from toolweave.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'mig7.db'}")
    upgrade(store.engine, "0006")
    columns = "run_id, job_definition_id, definition_version, definition_sha, tool_shas, master_account_id, status"
    store.run_sync(lambda tx: tx.q(
        "INSERT INTO snapshots (sha256, kind, definition_id, version, body, created_at) VALUES ('s', 'job', 'j', '1', '{}', 1)"
    ))
    store.run_sync(lambda tx: tx.q(
        f"INSERT INTO runs ({columns}, origin, job_inputs, created_at, updated_at) VALUES "
        "('run_a', 'j', '1', 's', '{}', 'acme', 'pending', '{}', '{}', 1, 1), "
        "('run_b', 'j', '1', 's', '{}', 'acme', 'completed', '{}', '{}', 1, 1)"
    ))
    upgrade(store.engine, "0007")

    def statuses() -> list[tuple[str, str]]:
        rows = store.read_sync(lambda tx: tx.all("SELECT run_id, status FROM runs ORDER BY run_id"))
        return [(r.run_id, r.status) for r in rows]

    assert statuses() == [("run_a", "queued"), ("run_b", "completed")]
    assert "ix_runs_unfinished" in _indexes(store)
    with pytest.raises(Exception, match="CHECK"):
        store.run_sync(lambda tx: tx.q("UPDATE runs SET status = 'pending' WHERE run_id = 'run_b'"))
    command.downgrade(config(store.engine), "0006")
    assert statuses() == [("run_a", "pending"), ("run_b", "completed")]
    store.upgrade()
    assert statuses() == [("run_a", "queued"), ("run_b", "completed")]
def test_a_map_step_decision_reads_its_items_through_their_status_index(tmp_path: Path) -> None:
    """The items in flight and the next pending ones are found by (run, step, status): a decision
    never walks the items already done, however many."""
    from toolweave.store import items as items_q

    store = Store(f"sqlite:///{tmp_path / 'items.db'}")
    store.upgrade()

    def plan(tx: object, sql: str, params: dict[str, object]) -> str:
        return " | ".join(str(r[3]) for r in tx.q("EXPLAIN QUERY PLAN " + sql, params).fetchall())  # type: ignore[attr-defined]

    params: dict[str, object] = {"run_id": "r", "step_id": "s", "limit": 8}
    for sql, index in ((items_q.ACTIVE_SQL["sqlite"], "ix_step_items_in_flight"), (items_q.WAITING, "ix_step_items_pending")):
        found = store.run_sync(plan, sql, params)
        assert f"USING INDEX {index} (run_id=? AND step_id=?)" in found, found
        assert "TEMP B-TREE" not in found, found
    update = items_q._update_sql(items_q.OPEN, ("progress",))
    found = store.run_sync(plan, update, {"run_id_": "r", "step_id_": "s", "i_": 3, "progress": 0.5})
    assert "(run_id=? AND step_id=? AND item_index=?)" in found, found
    store.close()


_RUN_COLUMNS = (
    "run_id, job_definition_id, definition_version, definition_sha, tool_shas, master_account_id, status, "
    "origin, job_inputs, created_at, updated_at, idempotency_key, parent_run_id, finished_at"
)


def _runs_0016(kind: str, tmp_path: Path) -> tuple[str, str | None]:
    """A store URL for the 0016 test (and the PostgreSQL database to drop afterwards)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'mig16.db'}", None
    require_postgres()
    name = f"toolweave_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url().rsplit("/", 1)[0] + "/" + name, name


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_0016_keeps_keys_unique_and_indexes_only_the_runs_they_find(kind: str, tmp_path: Path) -> None:
    """0016 makes the parent, finished and (on PostgreSQL) idempotency-key indexes of runs partial
    (no entry for a run without a parent, an end or a key): the runs already stored, with step rows
    that reference them, keep their keys unique, an insert with a key still yields to the run
    holding it, the queries that read those indexes still can, and the migration goes down and up
    again."""
    from alembic import command

    from toolweave.store import runs as runs_q
    from toolweave.store.migrate import upgrade

    url, database = _runs_0016(kind, tmp_path)
    store = Store(url)
    try:
        upgrade(store.engine, "0015")
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO snapshots (sha256, kind, definition_id, version, body, created_at) VALUES ('s', 'job', 'j', '1', '{}', 1)"
        ))
        store.run_sync(lambda tx: tx.q(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
            "('run_a', 'j', '1', 's', '{}', 'acme', 'completed', '{}', '{}', 1, 1, 'key-1', NULL, 5), "
            "('run_b', 'j', '1', 's', '{}', 'acme', 'running', '{}', '{}', 1, 1, NULL, 'run_a', NULL), "
            "('run_c', 'j', '1', 's', '{}', 'acme', 'queued', '{}', '{}', 1, 1, NULL, NULL, NULL)"
        ))
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO step_runs (run_id, step_id, position, status, attempt, using_fallback, generation_ids, "
            "skipped_by_error) VALUES ('run_a', 's1', 0, 'succeeded', 1, false, '[]', false)"
        ))
        upgrade(store.engine, "0016")

        def insert(run_id: str, key: str | None) -> bool:
            values = {"run_id": run_id, "job_definition_id": "j", "definition_version": "1", "definition_sha": "s",
                      "tool_shas": {}, "master_account_id": "acme", "status": "queued", "origin": {}, "job_inputs": {},
                      "created_at": 2.0, "updated_at": 2.0, "idempotency_key": key}
            return bool(store.run_sync(lambda tx: runs_q.insert_run(tx, **values)))

        assert insert("run_d", "key-1") is False  # the key names run_a: the insert yields to it
        assert insert("run_e", "key-2") is True
        assert insert("run_f", None) is True and insert("run_g", None) is True  # no key, no conflict
        assert store.read_sync(lambda tx: runs_q.by_idempotency_keys(tx, "acme", ["key-1", "key-2"])) == {
            "key-1": "run_a", "key-2": "run_e"}
        with pytest.raises(Exception, match=r"(?i)unique"):
            store.run_sync(lambda tx: tx.q(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                "('run_h', 'j', '1', 's', '{}', 'acme', 'queued', '{}', '{}', 1, 1, 'key-2', NULL, NULL)"
            ))

        reads = {
            "ix_runs_parent": ("SELECT run_id FROM runs WHERE parent_run_id IN (:p0, :p1)", {"p0": "run_a", "p1": "run_x"}),
            "ix_runs_finished": (
                "SELECT run_id, finished_at FROM runs WHERE parent_run_id IS NULL AND status IN ('completed', 'failed') "
                "AND finished_at < :cutoff ORDER BY finished_at, run_id LIMIT :limit", {"cutoff": 10.0, "limit": 5}),
            # SQLite keeps the unique constraint (its automatic index)
            "ux_runs_idempotency" if kind == "postgres" else "sqlite_autoindex_runs_2": (
                "SELECT run_id FROM runs WHERE master_account_id = :account AND idempotency_key = :key",
                {"account": "acme", "key": "key-1"}),
        }
        for index, (sql, params) in reads.items():
            assert index in _plan(store, sql, params), (index, _plan(store, sql, params))
        rows = store.read_sync(lambda tx: tx.all(reads["ix_runs_parent"][0], reads["ix_runs_parent"][1]))
        assert [r.run_id for r in rows] == ["run_b"]
        if kind == "postgres":
            assert _fillfactors(store) == {"runs": 70, "step_runs": 70, "generations": 70, "tasks": 80}

        command.downgrade(config(store.engine), "0015")
        assert insert("run_i", "key-2") is False  # the unique constraint again
        if kind == "postgres":
            assert _fillfactors(store) == {}
        store.upgrade()
        assert current(store.engine) == HEAD
        assert insert("run_j", "key-1") is False
    finally:
        store.close()
        if database is not None:
            with psycopg.connect(admin_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _fillfactors(store: Store) -> dict[str, int]:
    rows = store.read_sync(lambda tx: tx.all(
        "SELECT relname, reloptions FROM pg_class WHERE relkind = 'r' AND reloptions IS NOT NULL"
    ))
    return {r.relname: int(o.split("=")[1]) for r in rows for o in r.reloptions if o.startswith("fillfactor=")}


def _plan(store: Store, sql: str, params: dict[str, object]) -> str:
    """The query plan's text; on PostgreSQL with sequential scans off (a few rows would make one
    look cheapest): whether the index can serve the query, not whether it is worth it yet."""
    def plan(tx: object) -> str:
        if tx.is_postgres:  # type: ignore[attr-defined]
            tx.q("SET LOCAL enable_seqscan = off")  # type: ignore[attr-defined]
            return " | ".join(str(r[0]) for r in tx.q("EXPLAIN " + sql, params).fetchall())  # type: ignore[attr-defined]
        return " | ".join(str(r[3]) for r in tx.q("EXPLAIN QUERY PLAN " + sql, params).fetchall())  # type: ignore[attr-defined]

    return str(store.run_sync(plan))


# --- a store's rows and their references survive every migration (SQLite rebuilds tables) ----------

REVISIONS = [r.revision for r in reversed(list(ScriptDirectory.from_config(config()).walk_revisions()))]


def _seed_every_table(store: Store) -> dict[str, int]:
    """One row in every table of a SQLite store at whatever revision it is, parents before the rows
    that reference them (each foreign key filled from its parent's row); the row count of each table.

    Read from the store's own schema, so it fits every revision: a NOT NULL column takes the
    first value its CHECK allows, a number, or a string."""

    def seed(tx: Any) -> dict[str, int]:
        tables = [r.name for r in tx.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
        )]
        keys = {t: tx.all(f"SELECT \"table\" AS parent, \"from\" AS col, \"to\" AS ref FROM pragma_foreign_key_list('{t}')") for t in tables}
        seeded: dict[str, dict[str, object]] = {}
        while len(seeded) < len(tables):
            ready = [t for t in tables if t not in seeded and all(k.parent in seeded for k in keys[t])]
            assert ready, f"a cycle of foreign keys among {set(tables) - set(seeded)}"
            for table in ready:
                sql = tx.one("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t", {"t": table}).sql
                row: dict[str, object] = {}
                for col in tx.all(f"SELECT name, type, \"notnull\" AS nn, dflt_value AS dflt, pk FROM pragma_table_info('{table}')"):
                    ref = next((k for k in keys[table] if k.col == col.name), None)
                    if ref is not None:
                        row[col.name] = seeded[ref.parent][ref.ref]
                    elif (col.nn or col.pk) and col.dflt is None:
                        allowed = re.search(rf"\b{col.name} (?:IN \(|= )'([^']*)'", sql)
                        kind = col.type.upper()
                        row[col.name] = (allowed.group(1) if allowed else 1 if kind.startswith(("INT", "BIGINT", "BOOL"))
                                         else 1.5 if kind.startswith(("FLOAT", "REAL", "NUMERIC")) else "{}" if kind == "JSON"
                                         else f"{table}_{col.name}"[:16])
                names = ", ".join(f'"{c}"' for c in row)
                tx.q(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + c for c in row)})", row)
                seeded[table] = row
        return {t: tx.one(f"SELECT COUNT(*) AS n FROM {t}").n for t in tables}

    return store.run_sync(seed)


def _counts(store: Store, tables: Iterable[str]) -> dict[str, int]:
    return store.read_sync(lambda tx: {t: tx.one(f"SELECT COUNT(*) AS n FROM {t}").n for t in tables})


def _dangling(store: Store) -> list[tuple[object, ...]]:
    return store.read_sync(lambda tx: [tuple(r.values()) for r in tx.all("SELECT * FROM pragma_foreign_key_check")])


@pytest.mark.parametrize("revision", REVISIONS[1:])
def test_a_store_holding_rows_in_every_table_upgrades_through_each_migration(revision: str, tmp_path: Path) -> None:
    """A store at the revision before ``revision`` with a row in every table (runs with their
    steps, map items, questions, generations; tasks, events, notifications…) reaches the head with
    every row and every foreign key intact. SQLite rebuilds a table to change it (batch mode: copy,
    DROP, rename): the DROP of ``runs`` failed ("FOREIGN KEY constraint failed") while step rows
    referenced it, in 0007 and 0011, leaving such a store stuck at 0006."""
    from toolweave.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'rows.db'}")
    try:
        upgrade(store.engine, REVISIONS[REVISIONS.index(revision) - 1])
        before = _seed_every_table(store)
        assert len(before) >= 10 and set(before.values()) == {1}
        store.upgrade()
        assert store._revision() == HEAD
        assert _counts(store, before) == before
        assert _dangling(store) == []
        links = store.read_sync(lambda tx: tx.all(
            "SELECT m.name AS child, k.\"from\" AS col, k.\"table\" AS parent, k.\"to\" AS ref "
            "FROM sqlite_master m, pragma_foreign_key_list(m.name) k WHERE m.type = 'table'"
        ))
        for link in links:
            if link.child in before:  # each row still finds its parent
                joined = store.read_sync(lambda tx, k=link: tx.one(
                    f"SELECT COUNT(*) AS n FROM {k.child} c JOIN {k.parent} p ON p.{k.ref} = c.{k.col}"
                ).n)
                assert joined == before[link.child], link
    finally:
        store.close()


def _foreign_keys_enforced(store: Store) -> None:
    """The store's own connection and a new one of its engine enforce foreign keys."""
    assert store.read_sync(lambda tx: tx.one("SELECT foreign_keys AS on_ FROM pragma_foreign_keys").on_) == 1
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO generations (generation_id, run_id, step_id, attempt, master_account_id, service_name, "
            "tool_id, status, created_at) VALUES ('g_x', 'no_such_run', 's', 0, 'a', 'svc', 't', 'pending', 1)"
        ))


def test_foreign_keys_are_enforced_again_after_an_upgrade(tmp_path: Path) -> None:
    """The migrations turn enforcement off on their own connection only: after an upgrade through
    the rebuilds of ``runs`` the store's connections enforce foreign keys."""
    from toolweave.store.migrate import upgrade

    store = Store(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        upgrade(store.engine, "0006")
        _seed_every_table(store)
        store.upgrade()
        assert store._revision() == HEAD
        _foreign_keys_enforced(store)
    finally:
        store.close()


def test_an_upgrade_that_would_leave_a_row_without_its_parent_fails_and_keeps_the_store(tmp_path: Path) -> None:
    """With enforcement off during the migrations, ``PRAGMA foreign_key_check`` runs before each one
    commits: a row whose parent is missing fails the upgrade loudly, the migration is rolled back
    and the store stays at its revision with its rows."""
    import sqlite3

    from toolweave.store.migrate import DanglingReferences, upgrade

    path = tmp_path / "dangling.db"
    store = Store(f"sqlite:///{path}")
    try:
        upgrade(store.engine, "0006")
        before = _seed_every_table(store)
        raw = sqlite3.connect(path, isolation_level=None)  # enforcement off: SQLite's default
        raw.execute("UPDATE step_runs SET run_id = 'no_such_run'")
        raw.close()
        with pytest.raises(DanglingReferences, match=r"after migration 0007 \(upgrade\), 1 row.*step_runs"):
            store.upgrade()
        assert store._revision() == "0006"
        assert _counts(store, before) == before
        assert store.read_sync(lambda tx: tx.one("SELECT status FROM runs").status) == "pending"  # 0007 undone
        assert _dangling(store) == [("step_runs", 1, "runs", 0)]
        _foreign_keys_enforced(store)
    finally:
        store.close()


def test_migration_0018_adds_the_sent_mark_and_takes_it_away_again(db_url: str) -> None:
    """``generations.sent_at`` (0018) on both stores: going down to 0017 drops it, up again adds it."""
    import sqlalchemy as sa
    from alembic import command

    def columns(store: Store) -> set[str]:
        return {c["name"] for c in sa.inspect(store.engine).get_columns("generations")}

    store = Store(db_url)
    try:
        store.upgrade()
        assert "sent_at" in columns(store)
        command.downgrade(config(store.engine), "0017")
        assert current(store.engine) == "0017" and "sent_at" not in columns(store)
    finally:
        store.upgrade()
        assert current(store.engine) == HEAD and "sent_at" in columns(store)
        store.close()


def test_migration_0018_goes_down_with_rows_in_every_table(tmp_path: Path) -> None:
    """SQLite rebuilds ``generations`` to drop ``sent_at``: every row and reference survives."""
    from alembic import command

    store = Store(f"sqlite:///{tmp_path / 'rows.db'}")
    try:
        store.upgrade()
        before = _seed_every_table(store)
        command.downgrade(config(store.engine), "0017")
        assert current(store.engine) == "0017"
        assert _counts(store, before) == before and _dangling(store) == []
        store.upgrade()
        assert _counts(store, before) == before and _dangling(store) == []
    finally:
        store.close()


def _schema(store: Store) -> dict[str, str]:
    return {r.name: r.sql for r in store.read_sync(lambda tx: tx.all(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
    ))}


def test_migration_0019_writes_sqlites_checks_as_comparisons_and_back_keeping_every_row(tmp_path: Path) -> None:
    """0019 (SQLite): every ``ck_*_valid`` constraint and the condition of the unfinished runs'
    indexes become comparisons (``status = 'a' OR …``), which SQLite tests without building a table
    for a list; nothing else of the schema changes, no row
    moves, the tasks' id counter stays, the constraints still refuse what they refused; going down
    gives the lists back, the schema as it was."""
    from alembic import command

    store = Store(f"sqlite:///{tmp_path / 'checks.db'}")
    try:
        from toolweave.store.migrate import upgrade

        upgrade(store.engine, "0018")
        before = _seed_every_table(store)
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO tasks (kind, priority, available_at, attempts, created_at) VALUES ('advance', 0, 1, 0, 1)"
        ))
        store.run_sync(lambda tx: tx.q("DELETE FROM tasks WHERE task_id = (SELECT MAX(task_id) FROM tasks)"))
        sequence = store.read_sync(lambda tx: tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'").seq)
        old = _schema(store)
        assert sum(len(re.findall(r"CONSTRAINT ck_\w+_valid CHECK \(\w+ IN \(", sql)) for sql in old.values()) == 9

        upgrade(store.engine, "0019")
        assert current(store.engine) == "0019"
        new = _schema(store)
        assert set(new) == set(old)
        for name in ("ix_runs_unfinished", "ix_runs_account_unfinished"):  # their conditions too
            assert old[name].endswith("WHERE status IN ('queued', 'running', 'waiting_input')"), old[name]
            assert new[name] == old[name].replace(
                "status IN ('queued', 'running', 'waiting_input')",
                "status = 'queued' OR status = 'running' OR status = 'waiting_input'",
            ), new[name]
        for name, sql in new.items():
            if name.startswith("ix_runs_") and "unfinished" in name:
                continue
            checks = re.findall(r"CONSTRAINT ck_\w+_valid CHECK \(([^()]*)\)", sql)
            assert all(" IN " not in c for c in checks), (name, checks)
            as_lists = re.sub(r"CONSTRAINT (ck_\w+_valid) CHECK \((\w+) = [^()]*\)", "", sql)
            assert as_lists == re.sub(r"CONSTRAINT (ck_\w+_valid) CHECK \((\w+) IN [^)]*\)\)", "", old[name]), name
            for check in checks:  # the same values, in the same order
                listed = re.search(r"CHECK \(\w+ IN \(([^)]*)\)\)", old[name])
                assert listed is not None and re.findall(r"'[a-z_]+'", check) == re.findall(r"'[a-z_]+'", listed.group(1))
        assert _counts(store, before) == before and _dangling(store) == []
        assert store.read_sync(lambda tx: tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'").seq) == sequence
        with pytest.raises(Exception, match="CHECK constraint failed"):
            store.run_sync(lambda tx: tx.q("UPDATE step_runs SET status = 'done'"))
        with pytest.raises(Exception, match="CHECK constraint failed"):
            store.run_sync(lambda tx: tx.q(
                "INSERT INTO tasks (kind, priority, available_at, attempts, created_at) VALUES ('sleep', 0, 1, 0, 1)"
            ))
        store.run_sync(lambda tx: tx.q("UPDATE step_runs SET status = 'cancelled'"))
        made = store.run_sync(lambda tx: tx.one(
            "INSERT INTO tasks (kind, priority, available_at, attempts, created_at) VALUES ('poll', 0, 1, 0, 1) RETURNING task_id"
        ).task_id)
        assert made == sequence + 1  # no id used before comes back

        command.downgrade(config(store.engine), "0018")
        assert current(store.engine) == "0018"
        assert _schema(store) == old
        with pytest.raises(Exception, match="CHECK constraint failed"):
            store.run_sync(lambda tx: tx.q("UPDATE runs SET status = 'done'"))
        upgrade(store.engine, "0019")
        assert _schema(store) == new
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_0020_drops_two_indexes_and_rewrites_one_condition_keeping_every_row(kind: str, tmp_path: Path) -> None:
    """0020: ``ix_tasks_available`` and ``ix_runs_unfinished`` go (their readers use ``ix_tasks_due``
    and ``ix_runs_account_unfinished``), ``ix_step_items_in_flight``'s condition becomes comparisons
    on SQLite; no row moves; going down gives the indexes back as they were."""
    from alembic import command

    from toolweave.store.migrate import upgrade

    url, database = _runs_0016(kind, tmp_path)
    store = Store(url)

    def indexes() -> dict[str, str]:
        if kind == "sqlite":
            rows = store.read_sync(lambda tx: tx.all("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
            return {r.name: r.sql or "" for r in rows}
        rows = store.read_sync(lambda tx: tx.all(
            "SELECT indexname AS name, indexdef AS sql FROM pg_indexes WHERE schemaname = current_schema()"
        ))
        return {r.name: r.sql for r in rows}

    def tasks_and_runs() -> list[tuple[Any, ...]]:
        return store.read_sync(lambda tx: [
            *(tuple(r.values()) for r in tx.all("SELECT task_id, priority, available_at FROM tasks ORDER BY task_id")),
            *(tuple(r.values()) for r in tx.all("SELECT run_id, status FROM runs ORDER BY run_id")),
        ])

    try:
        upgrade(store.engine, "0019")
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO snapshots (sha256, kind, definition_id, version, body, created_at) VALUES ('s', 'job', 'j', '1', '{}', 1)"
        ))
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO runs (run_id, job_definition_id, definition_version, definition_sha, tool_shas, "
            "master_account_id, status, origin, job_inputs, created_at, updated_at) VALUES "
            "('run_a', 'j', '1', 's', '{}', 'acme', 'running', '{}', '{}', 1, 1), "
            "('run_b', 'j', '1', 's', '{}', 'acme', 'completed', '{}', '{}', 2, 2)"
        ))
        store.run_sync(lambda tx: tx.q(
            "INSERT INTO tasks (kind, run_id, ref_id, priority, available_at, attempts, created_at) VALUES "
            "('advance', 'run_a', 'run_a', 0, 5, 0, 1), ('advance', 'run_a', 'run_a', 3, 7, 0, 1)"
        ))
        old, rows = indexes(), tasks_and_runs()
        assert {"ix_tasks_available", "ix_runs_unfinished", "ix_step_items_in_flight"} <= set(old)

        store.upgrade()
        assert current(store.engine) == HEAD
        new = indexes()
        assert set(old) - set(new) == {"ix_tasks_available", "ix_runs_unfinished"} and set(new) <= set(old)
        in_flight = new["ix_step_items_in_flight"]
        if kind == "sqlite":
            assert in_flight.endswith("WHERE status = 'running' OR status = 'waiting_retry'"), in_flight
        else:
            assert in_flight == old["ix_step_items_in_flight"]
        for name in set(new) - {"ix_step_items_in_flight"}:
            assert new[name] == old[name], name
        assert tasks_and_runs() == rows
        assert store.read_sync(lambda tx: tasks_q.next_due(tx, 1.0)) == 5.0

        command.downgrade(config(store.engine), "0019")
        assert indexes() == old and tasks_and_runs() == rows
        store.upgrade()
        assert indexes() == new
    finally:
        store.close()
        if database is not None:
            with psycopg.connect(admin_url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
