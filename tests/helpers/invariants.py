"""Engine invariants that tests check after crash and chaos tests."""

from __future__ import annotations

from toolweave.artifacts import ArtifactStore
from toolweave.engine.sweep import stranded
from toolweave.model.records import artifact_mentions
from toolweave.store.db import Store, Tx


def assert_no_stranded_runs(store: Store) -> None:
    """Every unfinished run has an advance task, a waiting generation or an unfinished child run."""
    found = store.read_sync(stranded, 1000)
    assert found == [], f"runs nothing will move: {found[:10]}"


def _orphans(tx: Tx) -> list[str]:
    found: list[str] = []
    for table in ("events", "step_runs", "step_items", "generations", "notifications", "questions", "step_cache"):
        rows = tx.all(f"SELECT DISTINCT t.run_id FROM {table} t LEFT JOIN runs r ON r.run_id = t.run_id WHERE r.run_id IS NULL")
        found += [f"{table} of missing run {row.run_id}" for row in rows]
    rows = tx.all(
        "SELECT DISTINCT t.run_id FROM tasks t LEFT JOIN runs r ON r.run_id = t.run_id "
        "WHERE t.run_id IS NOT NULL AND r.run_id IS NULL"
    )
    found += [f"tasks of missing run {row.run_id}" for row in rows]
    rows = tx.all(
        "SELECT c.run_id FROM runs c LEFT JOIN runs p ON p.run_id = c.parent_run_id "
        "WHERE c.parent_run_id IS NOT NULL AND p.run_id IS NULL"
    )
    found += [f"nested run {row.run_id} without its parent" for row in rows]
    return found


def _references(tx: Tx) -> list[tuple[str, str, str]]:
    """(account, sha256, where) of every artifact a run's inputs, outputs, steps, items or
    generations, or a cache entry, mention."""
    found: list[tuple[str, str, str]] = []
    queries = (
        ("SELECT run_id, master_account_id AS account, job_inputs, final_outputs FROM runs", "run"),
        ("SELECT s.run_id, r.master_account_id AS account, s.outputs FROM step_runs s JOIN runs r ON r.run_id = s.run_id",
         "step"),
        ("SELECT i.run_id, r.master_account_id AS account, i.outputs, i.item FROM step_items i "
         "JOIN runs r ON r.run_id = i.run_id", "item"),
        ("SELECT run_id, master_account_id AS account, outputs FROM generations", "generation"),
        ("SELECT run_id, account_id AS account, outputs FROM step_cache", "cache entry"),
    )
    for sql, where in queries:
        for row in tx.all(sql):
            for key in ("job_inputs", "final_outputs", "outputs", "item"):
                for mention in artifact_mentions(row.get(key)):
                    if mention.sha256:
                        found.append((str(row.account), mention.sha256, f"{where} of run {row.run_id}"))
    return found


def assert_store_consistent(store: Store, artifacts: ArtifactStore) -> None:
    """What retention (and anything deleting) must keep true: no row of a missing run, no nested
    run without its parent, every artifact a run or cache entry mentions held by that account and
    on disk, every account's record of an artifact with its file (files queued for removal by an
    interrupted prune have no record left), no run stranded."""
    problems = store.read_sync(_orphans)
    records = store.read_sync(lambda tx: tx.all("SELECT sha256, account_id FROM artifacts"))
    held = {(str(r.account_id), str(r.sha256)) for r in records}
    for account, sha, where in store.read_sync(_references):
        if (account, sha) not in held:
            problems.append(f"{where} mentions artifact {sha} that account {account} does not hold")
        if not artifacts.exists(sha):
            problems.append(f"{where} mentions artifact {sha} whose file is gone")
    for account, sha in sorted(held):
        if not artifacts.exists(sha):
            problems.append(f"account {account} holds artifact {sha} whose file is gone")
    assert problems == [], problems[:20]
    assert_no_stranded_runs(store)
