"""Retention: the queries that find old finished runs and unreferenced artifacts, and delete them.

Runs go by *trees*: a top-level run with every nested run under it (``parent_run_id``), and only
when every run of the tree has ended, none has a task left (a callback still being delivered, a
cancel still going to a backend) and none has a generation still waiting. A tree goes in one
transaction with all its rows (events, step runs, items, generations, tasks, notifications,
webhook receipts, the cache entries its generations made), its runs locked and checked again.

An account's record of an artifact (a row of ``artifacts``) goes when it is older than the cutoff,
no longer names a remaining run (an upload, a grant, or the output of a pruned run) and nothing of
the account still mentions it: its remaining runs' inputs and outputs, steps, items, generations,
its cache entries, or a front end's small state (``kv``). When no account holds an artifact any
more, its file is queued for removal (``kv`` namespace ``prune.files``) in the same transaction;
the file goes after the commit (``toolweave.retention``), so an interrupted prune leaves queued
files, never a record without its file.

The mentions are found by searching the JSON text of those columns for the hashes (one scan of an
account's rows per batch of its hashes): pruning is maintenance, run now and then, and the engine's
hot path keeps no reference counts for it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from toolweave.model.status import RUN_TERMINAL
from toolweave.store.db import Row, Tx, in_list

FILES_NAMESPACE = "prune.files"
"""``kv`` rows of artifact files to remove: key the hash, value ``{"queuedAt": epoch seconds}``."""
LEASE_NAMESPACE = "prune.lease"

_TERMINAL = tuple(sorted(s.value for s in RUN_TERMINAL))
_WAITING_GENERATIONS = ("pending", "processing")

NOTIFICATION_STATE = ("telegram.sent",)
"""``kv`` namespaces keyed by a notification id: a channel's record of what it sent of that
delivery (so that sending it again, at any time, sends nothing twice). It lives as long as the
notification row, and goes with it."""

QUESTION_STATE = ("telegram.asked",)
"""``kv`` namespaces keyed ``<chat>:<question id>``: where a front end asked a run's question (the
Telegram delivery that asked it in that chat). They go with the question. (``telegram.rights`` is
kept per chat, of no run: it stays.)"""

RUN_TABLES = (
    "runs", "events", "step_runs", "step_items", "generations", "tasks", "notifications", "questions", "step_cache",
)
"""What a pruned tree of runs takes with it, in the order reports name them."""


def _terminal_list() -> tuple[str, dict[str, Any]]:
    return in_list("term", _TERMINAL)


def old_roots(tx: Tx, cutoff: float, after: tuple[float, str] | None, limit: int) -> list[Row]:
    """Top-level runs that ended before ``cutoff``, oldest first, after the key ``after``
    (``finished_at``, ``run_id``): the candidates of the next batch."""
    marks, params = _terminal_list()
    keyset = "AND (finished_at > :af OR (finished_at = :af AND run_id > :ar)) " if after else ""
    return tx.all(
        f"SELECT run_id, finished_at FROM runs WHERE parent_run_id IS NULL AND status IN {marks} "
        f"AND finished_at < :cutoff {keyset}ORDER BY finished_at, run_id LIMIT :limit",
        {**params, "cutoff": cutoff, "limit": limit, "af": after[0] if after else None, "ar": after[1] if after else None},
    )


def trees(tx: Tx, roots: Sequence[str], *, lock: bool = False) -> dict[str, list[Row]]:
    """Every run of each root's tree (the root first), with ``run_id``, ``status``,
    ``parent_run_id``; locked with ``lock`` (in one ordered statement per level)."""
    suffix = " ORDER BY run_id FOR UPDATE" if lock else ""
    found: dict[str, list[Row]] = {}
    root_of: dict[str, str] = {}
    if not roots:
        return found
    marks, params = in_list("r", list(roots))
    for row in tx.all(f"SELECT run_id, status, parent_run_id, finished_at FROM runs WHERE run_id IN {marks}{suffix}", params):
        found[row.run_id] = [row]
        root_of[row.run_id] = row.run_id
    level = list(found)
    while level:
        marks, params = in_list("p", level)
        rows = tx.all(
            f"SELECT run_id, status, parent_run_id, finished_at FROM runs WHERE parent_run_id IN {marks}{suffix}", params
        )
        level = []
        for row in rows:
            if row.run_id in root_of:  # a cycle cannot happen; never loop on one anyway
                continue
            root = root_of[row.parent_run_id]
            root_of[row.run_id] = root
            found[root].append(row)
            level.append(row.run_id)
    return found


def busy(tx: Tx, run_ids: Sequence[str]) -> set[str]:
    """Those of ``run_ids`` that something still works on: a task (a callback being delivered, a
    cancel going to a backend) or a generation not yet ended."""
    if not run_ids:
        return set()
    marks, params = in_list("r", list(run_ids))
    waiting, wparams = in_list("w", list(_WAITING_GENERATIONS))
    # an ``advance`` of a run that has ended does nothing (an ask step's timeout left behind after
    # its answer): it goes with the run; any other task is work still to do
    rows = tx.all(f"SELECT DISTINCT run_id FROM tasks WHERE run_id IN {marks} AND kind <> 'advance'", params)
    rows += tx.all(
        f"SELECT DISTINCT run_id FROM generations WHERE run_id IN {marks} AND status IN {waiting}", {**params, **wparams}
    )
    return {str(r.run_id) for r in rows}


def prunable(tree: list[Row], cutoff: float, busy_runs: Collection[str]) -> bool:
    """Whether a tree may go: its root ended before ``cutoff``, every run in it has ended and
    nothing works on any of them."""
    root = tree[0]
    if root.parent_run_id is not None or root.finished_at is None or root.finished_at >= cutoff:
        return False
    return all(r.status in _TERMINAL and r.run_id not in busy_runs for r in tree)


_COUNTS = {
    "runs": "SELECT COUNT(*) AS n FROM runs WHERE run_id IN {m}",
    "events": "SELECT COUNT(*) AS n FROM events WHERE run_id IN {m}",
    "step_runs": "SELECT COUNT(*) AS n FROM step_runs WHERE run_id IN {m}",
    "step_items": "SELECT COUNT(*) AS n FROM step_items WHERE run_id IN {m}",
    "generations": "SELECT COUNT(*) AS n FROM generations WHERE run_id IN {m}",
    "tasks": "SELECT COUNT(*) AS n FROM tasks WHERE run_id IN {m}",
    "notifications": "SELECT COUNT(*) AS n FROM notifications WHERE run_id IN {m}",
    "questions": "SELECT COUNT(*) AS n FROM questions WHERE run_id IN {m}",
    "step_cache": "SELECT COUNT(*) AS n FROM step_cache WHERE run_id IN {m}",
}


def count_rows(tx: Tx, run_ids: Sequence[str]) -> dict[str, int]:
    """How many rows of each table (``RUN_TABLES``) belong to ``run_ids``."""
    if not run_ids:
        return dict.fromkeys(RUN_TABLES, 0)
    marks, params = in_list("r", list(run_ids))
    counts: dict[str, int] = {}
    for table, sql in _COUNTS.items():
        row = tx.one(sql.format(m=marks), params)
        counts[table] = int(row.n) if row else 0
    return counts


def delete_runs(tx: Tx, run_ids: Sequence[str]) -> dict[str, int]:
    """Delete ``run_ids`` and every row of theirs; how many rows of each table went."""
    if not run_ids:
        return dict.fromkeys(RUN_TABLES, 0)
    marks, params = in_list("r", list(run_ids))
    tx.q(
        f"DELETE FROM webhook_receipts WHERE generation_id IN (SELECT generation_id FROM generations WHERE run_id IN {marks})",
        params,
    )
    spaces, space_params = in_list("ns", list(NOTIFICATION_STATE))
    tx.q(
        f"DELETE FROM kv WHERE namespace IN {spaces} "
        f"AND key IN (SELECT notification_id FROM notifications WHERE run_id IN {marks})",
        {**params, **space_params},
    )
    asked = [str(r.question_id) for r in tx.all(f"SELECT question_id FROM questions WHERE run_id IN {marks}", params)]
    # the key ends with ":<question id>" (ids are lower-case letters, digits and "_", escaped here)
    tx.many("DELETE FROM kv WHERE namespace = :ns AND key LIKE :key ESCAPE '!'",
            [{"ns": space, "key": "%:" + _like_literal(question)} for space in QUESTION_STATE for question in asked])
    counts: dict[str, int] = {}
    for table in (
        "events", "notifications", "tasks", "questions", "step_cache", "step_items", "generations", "step_runs", "runs",
    ):
        counts[table] = tx.rowcount(f"DELETE FROM {table} WHERE run_id IN {marks}", params)
    return {table: counts[table] for table in RUN_TABLES}


def _like_literal(text: str) -> str:
    """``text`` matched as it is by ``LIKE … ESCAPE '!'``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


# --- artifacts -------------------------------------------------------------------------------


def old_artifacts(tx: Tx, cutoff: float, after: tuple[float, str, str] | None, limit: int) -> list[Row]:
    """Accounts' artifact records made before ``cutoff`` (oldest first, after the key ``after``:
    ``created_at``, ``sha256``, ``account_id``), each with ``run_alive``: whether the run it
    names (if any) still exists."""
    keyset = (
        "AND (a.created_at > :ac OR (a.created_at = :ac AND (a.sha256 > :as_ OR (a.sha256 = :as_ AND a.account_id > :aa)))) "
        if after else ""
    )
    return tx.all(
        "SELECT a.sha256, a.account_id, a.size, a.created_at, a.run_id, "
        "CASE WHEN a.run_id IS NOT NULL AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = a.run_id) THEN 1 ELSE 0 END "
        f"AS run_alive FROM artifacts a WHERE a.created_at < :cutoff {keyset}"
        "ORDER BY a.created_at, a.sha256, a.account_id LIMIT :limit",
        {
            "cutoff": cutoff, "limit": limit, "ac": after[0] if after else None, "as_": after[1] if after else None,
            "aa": after[2] if after else None,
        },
    )


_HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
"""An artifact's hash inside JSON text (an artifact value's ``sha256``, an ``artifact:`` URI)."""

_ACTIVE = (
    "(r.status NOT IN (" + ", ".join(f"'{v}'" for v in _TERMINAL) + ") OR r.finished_at >= :since OR r.created_at >= :since)"
)
"""Runs that may have changed since ``:since``: a run that had ended before it (and was not run
again in place, which makes it queued) never changes again; a fork is a new run."""

_RUN_SOURCES = (
    ("runs r", "r.job_inputs"),
    ("runs r", "r.final_outputs"),
    ("step_runs x JOIN runs r ON r.run_id = x.run_id", "x.outputs"),
    ("step_items x JOIN runs r ON r.run_id = x.run_id", "x.outputs"),
    ("step_items x JOIN runs r ON r.run_id = x.run_id", "x.item"),
    ("generations x JOIN runs r ON r.run_id = x.run_id", "x.outputs"),
    ("questions x JOIN runs r ON r.run_id = x.run_id", "x.body"),
    ("questions x JOIN runs r ON r.run_id = x.run_id", "x.answer"),
)
"""Where a run of an account mentions artifacts (``r`` is the run; a question shows candidates and
may be answered with them). A generation's request is not
searched: what it sent came from these (the run's inputs, earlier outputs, the item)."""

_PG_HASHES = "CROSS JOIN LATERAL regexp_matches(CAST({col} AS TEXT), '([0-9a-f]{{64}})', 'g') AS m(parts)"


def mentioned(
    tx: Tx, account_id: str, shas: Sequence[str], now: float, gone: Collection[str] = (), since: float | None = None
) -> set[str]:
    """Those of ``shas`` that something of ``account_id`` still mentions (its runs' inputs and
    outputs, steps, items, generations, cache entries; any front end's unexpired small state),
    leaving out the rows of the runs in ``gone`` (runs a dry run counts as pruned).

    Without ``since`` every row of the account is searched once for all ``shas``: on PostgreSQL
    the server extracts the hashes from the JSON text and returns those asked about; on SQLite
    the text is read and searched here. With ``since``, only what may have changed since then —
    the runs not ended before it, the cache entries made after it — is read and searched here:
    the check again, under locks, of what a read found unmentioned at ``since``."""
    if not shas:
        return set()
    wanted = set(shas)
    found: set[str] = set()
    sources = [(f, col, "r.master_account_id", "r.run_id") for f, col in _RUN_SOURCES]
    sources.append(("step_cache c", "c.outputs", "c.account_id", "c.run_id"))
    if since is None and tx.dialect == "postgresql":
        marks, params = in_list("s", sorted(wanted))
        for from_, col, account, run in sources:
            sql = (
                f"SELECT DISTINCT {run} AS run_id, m.parts[1] AS sha FROM {from_} {_PG_HASHES.format(col=col)} "
                f"WHERE {account} = :acc AND m.parts[1] IN {marks}"
            )
            found.update(r.sha for r in tx.all(sql, {"acc": account_id, **params}) if r.run_id not in gone)
    else:
        for from_, col, account, run in sources:
            if since is None:
                changed = ""
            elif from_.startswith("step_cache"):
                changed = " AND c.created_at >= :since"
            else:
                changed = f" AND {_ACTIVE}"
            sql = f"SELECT {run} AS run_id, CAST({col} AS TEXT) AS t FROM {from_} WHERE {account} = :acc{changed}"
            for row in tx.all(sql, {"acc": account_id, "since": since}):
                if row.t and row.run_id not in gone:
                    found.update(wanted.intersection(_HEX64.findall(row.t)))
    rows = tx.all(
        "SELECT CAST(value AS TEXT) AS t FROM kv WHERE namespace NOT LIKE 'prune.%' "
        "AND (expires_at IS NULL OR expires_at > :now)",
        {"now": now},
    )
    for row in rows:
        found.update(wanted.intersection(_HEX64.findall(row.t or "")))
    return found


def unreferenced(
    tx: Tx, rows: Sequence[Row], now: float, gone: Collection[str] = (), since: float | None = None
) -> list[Row]:
    """Those of the artifact records ``rows`` (from ``old_artifacts``) that may go: their run
    gone (or none), and nothing of their account mentions them (with ``since``: nothing that
    may have changed since then, see ``mentioned``)."""
    candidates = [r for r in rows if not r.run_alive or r.run_id in gone]
    by_account: dict[str, list[Row]] = {}
    for row in candidates:
        by_account.setdefault(row.account_id, []).append(row)
    going: list[Row] = []
    for account_id, records in by_account.items():
        kept = mentioned(tx, account_id, sorted({r.sha256 for r in records}), now, gone, since)
        going += [r for r in records if r.sha256 not in kept]
    return going


def lock_artifacts(tx: Tx, keys: Sequence[tuple[str, str]], cutoff: float) -> list[Row]:
    """The records ``(sha256, account_id)`` that are still old, locked, with ``run_alive``."""
    found: list[Row] = []
    for account_id in sorted({a for _, a in keys}):
        marks, params = in_list("s", sorted({s for s, a in keys if a == account_id}))
        found += tx.all(
            "SELECT a.sha256, a.account_id, a.size, a.created_at, a.run_id, "
            "CASE WHEN a.run_id IS NOT NULL AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = a.run_id) THEN 1 ELSE 0 END "
            f"AS run_alive FROM artifacts a WHERE a.account_id = :acc AND a.sha256 IN {marks} AND a.created_at < :cutoff "
            "ORDER BY a.sha256 FOR UPDATE",
            {"acc": account_id, "cutoff": cutoff, **params},
        )
    return found


def delete_artifacts(tx: Tx, rows: Sequence[Row]) -> None:
    tx.many(
        "DELETE FROM artifacts WHERE sha256 = :s AND account_id = :a",
        [{"s": row.sha256, "a": row.account_id} for row in rows],
    )


def held(tx: Tx, shas: Sequence[str]) -> set[str]:
    """Those of ``shas`` some account still holds."""
    if not shas:
        return set()
    marks, params = in_list("s", sorted(set(shas)))
    return {str(r.sha256) for r in tx.all(f"SELECT DISTINCT sha256 FROM artifacts WHERE sha256 IN {marks}", params)}


def holders(tx: Tx, shas: Sequence[str]) -> list[Row]:
    """Every record (``sha256``, ``account_id``) of ``shas``."""
    if not shas:
        return []
    marks, params = in_list("s", sorted(set(shas)))
    return tx.all(f"SELECT sha256, account_id FROM artifacts WHERE sha256 IN {marks}", params)


def queue_files(tx: Tx, shas: Iterable[str], now: float) -> None:
    tx.many(
        "INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES (:ns, :k, :v, NULL, :now) "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [{"ns": FILES_NAMESPACE, "k": sha, "v": {"queuedAt": now}, "now": now} for sha in shas],
    )


def queued_files(tx: Tx, after: str, limit: int) -> list[tuple[str, float]]:
    """Artifact files queued for removal, by hash after ``after``: ``(sha256, queued at)``."""
    rows = tx.all(
        "SELECT key, value FROM kv WHERE namespace = :ns AND key > :after ORDER BY key LIMIT :limit",
        {"ns": FILES_NAMESPACE, "after": after, "limit": limit},
    )
    return [(str(r.key), float((r.value or {}).get("queuedAt", 0.0))) for r in rows]


def unqueue_files(tx: Tx, shas: Sequence[str]) -> None:
    tx.many("DELETE FROM kv WHERE namespace = :ns AND key = :k", [{"ns": FILES_NAMESPACE, "k": sha} for sha in shas])


# --- one pruner at a time --------------------------------------------------------------------


def take_lease(tx: Tx, owner: str, now: float, until: float, *, renew: bool = False) -> bool:
    """Take the pruning lease until ``until`` if it has expired (whoever held it); with ``renew``,
    extend it instead, if ``owner`` holds it. Periodic pruning takes it for an interval and renews
    it between batches and at the end, so workers prune at most once per interval between them."""
    if renew:
        row = tx.one(
            "SELECT value FROM kv WHERE namespace = :ns AND key = 'lease' FOR UPDATE", {"ns": LEASE_NAMESPACE}
        )
        if row is None or (row.value or {}).get("owner") != owner:
            return False
        tx.q(
            "UPDATE kv SET expires_at = :until, updated_at = :now WHERE namespace = :ns AND key = 'lease'",
            {"ns": LEASE_NAMESPACE, "until": until, "now": now},
        )
        return True
    taken = tx.rowcount(
        "INSERT INTO kv (namespace, key, value, expires_at, updated_at) VALUES (:ns, 'lease', :v, :until, :now) "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
        "updated_at = excluded.updated_at WHERE kv.expires_at IS NULL OR kv.expires_at <= :now",
        {"ns": LEASE_NAMESPACE, "v": {"owner": owner, "since": now}, "until": until, "now": now},
    )
    return taken == 1
