"""The task queue part of the catalog conformance suite: both engines (see
tests/test_catalog_conformance.py), the placement queue's contract in :mod:`vdir.catalog.base`."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.catalogs import poll, run_threads
from vdir.catalog import Catalog, Task, open_catalog
from vdir.catalog.base import DONE, FAILED, PENDING, RUNNING
from vdir.errors import (
    AlreadyExists,
    InvalidArgument,
)

# -- tasks -------------------------------------------------------------------------------------


def test_add_task_dedupe(catalog: Catalog) -> None:
    t1 = catalog.add_task(Task(kind="replicate", entry_id=5, dedupe_key="replicate:5", payload={"to": ["b2"]}))
    assert t1.id > 0 and t1.state == PENDING and t1.attempts == 0
    same = catalog.add_task(Task(kind="replicate", entry_id=5, dedupe_key="replicate:5", payload={"to": ["b3"]}))
    assert same.id == t1.id and same.payload == {"to": ["b2"]}
    other = catalog.add_task(Task(kind="replicate", entry_id=6, dedupe_key="replicate:6"))
    plain = [catalog.add_task(Task(kind="verify", entry_id=5)) for _ in range(2)]
    assert len({t1.id, other.id, *(p.id for p in plain)}) == 4
    assert len(catalog.list_tasks()) == 4
    # while running it still dedupes; once finished a new one may be queued
    claimed = catalog.claim_task("w", 60, kinds=["replicate"])
    assert claimed is not None and claimed.id == t1.id
    assert catalog.add_task(Task(kind="replicate", entry_id=5, dedupe_key="replicate:5")).id == t1.id
    assert catalog.finish_task(t1.id, "w", DONE)
    fresh = catalog.add_task(Task(kind="replicate", entry_id=5, dedupe_key="replicate:5"))
    assert fresh.id not in (t1.id, other.id) and fresh.state == PENDING


def test_claim_order_kinds_and_not_before(catalog: Catalog) -> None:
    assert catalog.claim_task("w", 30) is None
    first = catalog.add_task(Task(kind="replicate", entry_id=1, source="b1", destination="b2", entry_version=3))
    later = catalog.add_task(Task(kind="replicate", entry_id=2, not_before=time.time() + 3600))
    verify = catalog.add_task(Task(kind="verify", entry_id=3))
    before = time.time()
    got = catalog.claim_task("worker-1", 30)
    assert got is not None and got.id == first.id
    assert (got.state, got.lease_owner, got.attempts, got.source, got.destination, got.entry_version) == (
        RUNNING, "worker-1", 1, "b1", "b2", 3)
    assert got.lease_expires is not None and before + 29 <= got.lease_expires <= time.time() + 31
    assert catalog.claim_task("worker-2", 30, kinds=["replicate"]) is None  # `later` is not due
    got2 = catalog.claim_task("worker-2", 30, kinds=["verify", "trim"])
    assert got2 is not None and got2.id == verify.id
    assert catalog.claim_task("worker-3", 30) is None
    assert [t.id for t in catalog.list_tasks(PENDING)] == [later.id]


def test_claim_is_atomic_across_threads(catalog: Catalog, second: Catalog) -> None:
    ids = {catalog.add_task(Task(kind="replicate", entry_id=i)).id for i in range(50)}
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claimer(n: int, cat: Catalog) -> Callable[[], None]:
        def run() -> None:
            while (task := cat.claim_task(f"owner-{n}", 60)) is not None:
                assert task.lease_owner == f"owner-{n}"
                claimed[n].append(task.id)

        return run

    run_threads([claimer(0, catalog), claimer(1, catalog), claimer(2, second), claimer(3, second)])
    everything = [i for part in claimed for i in part]
    assert sorted(everything) == sorted(ids)  # each task claimed exactly once
    assert all(t.attempts == 1 and t.state == RUNNING for t in catalog.list_tasks())


def test_lease_expiry_and_renewal(catalog: Catalog) -> None:
    task = catalog.add_task(Task(kind="replicate", entry_id=1))
    a = catalog.claim_task("A", 1.0)
    assert a is not None and a.id == task.id
    assert catalog.claim_task("B", 30) is None  # still leased to A
    assert catalog.renew_lease(task.id, "A", 1.0)
    assert not catalog.renew_lease(task.id, "B", 30)
    b = poll(lambda: catalog.claim_task("B", 30))
    assert isinstance(b, Task) and b.id == task.id and b.lease_owner == "B" and b.attempts == 2
    assert not catalog.renew_lease(task.id, "A", 30)
    assert not catalog.finish_task(task.id, "A", DONE)
    assert catalog.list_tasks()[0].state == RUNNING
    assert catalog.renew_lease(task.id, "B", 30)
    assert catalog.finish_task(task.id, "B", DONE)
    done = catalog.list_tasks()[0]
    assert done.state == DONE and done.attempts == 2
    assert not catalog.finish_task(task.id, "B", DONE)  # already finished
    assert not catalog.renew_lease(task.id, "B", 30)
    assert catalog.claim_task("C", 30) is None


def test_finish_by_wrong_owner(catalog: Catalog) -> None:
    task = catalog.add_task(Task(kind="verify", entry_id=9))
    assert catalog.claim_task("A", 60) is not None
    assert not catalog.finish_task(task.id, "B", FAILED, error="not mine")
    stored = catalog.list_tasks()[0]
    assert (stored.state, stored.lease_owner, stored.last_error) == (RUNNING, "A", None)
    assert not catalog.finish_task(424242, "A", DONE)
    with pytest.raises(InvalidArgument, match="finishes as"):
        catalog.finish_task(task.id, "A", RUNNING)
    assert catalog.list_tasks()[0].state == RUNNING  # the bad call changed nothing


def test_failure_with_retry_goes_back_pending(catalog: Catalog) -> None:
    task = catalog.add_task(Task(kind="replicate", entry_id=1))
    assert catalog.claim_task("A", 60) is not None
    retry_at = time.time() + 3600
    assert catalog.finish_task(task.id, "A", FAILED, error="boom: 503", retry_at=retry_at)
    stored = catalog.list_tasks()[0]
    assert (stored.state, stored.last_error, stored.lease_owner, stored.attempts) == (PENDING, "boom: 503", None, 1)
    assert stored.not_before == pytest.approx(retry_at)
    assert catalog.claim_task("B", 60) is None  # backoff not over yet
    # a retry time in the past makes it claimable again, attempts keep counting
    other = catalog.add_task(Task(kind="replicate", entry_id=2))
    assert catalog.claim_task("A", 60) is not None
    assert catalog.finish_task(other.id, "A", FAILED, error="flaky", retry_at=time.time() - 1)
    again = catalog.claim_task("B", 60)
    assert again is not None and again.id == other.id and again.attempts == 2 and again.last_error == "flaky"
    # failing for good
    assert catalog.finish_task(other.id, "B", FAILED, error="gave up")
    final = [t for t in catalog.list_tasks() if t.id == other.id][0]
    assert (final.state, final.last_error) == (FAILED, "gave up")


def test_list_count_purge_tasks(catalog: Catalog) -> None:
    tasks = [catalog.add_task(Task(kind="verify", entry_id=i)) for i in range(6)]
    for owner in ("A", "B", "C"):
        assert catalog.claim_task(owner, 60) is not None
    assert catalog.finish_task(tasks[0].id, "A", DONE)
    assert catalog.finish_task(tasks[1].id, "B", FAILED, error="x")
    assert catalog.count_tasks() == {DONE: 1, FAILED: 1, RUNNING: 1, PENDING: 3}
    assert [t.id for t in catalog.list_tasks()] == [t.id for t in tasks]
    assert [t.id for t in catalog.list_tasks(PENDING)] == [t.id for t in tasks[3:]]
    assert [t.id for t in catalog.list_tasks(PENDING, limit=2)] == [t.id for t in tasks[3:5]]
    assert catalog.list_tasks(DONE)[0].id == tasks[0].id
    assert catalog.purge_tasks(DONE, older_than=time.time() - 3600) == 0
    assert catalog.purge_tasks(DONE, older_than=time.time() + 1) == 1
    assert catalog.count_tasks() == {FAILED: 1, RUNNING: 1, PENDING: 3}
    assert catalog.purge_tasks(PENDING, older_than=time.time() + 1) == 3
    assert len(catalog.list_tasks()) == 2


# -- schema 3: a task queue that stays fast ----------------------------------------------------


def finished_task(cat: Catalog, kind: str = "verify") -> Task:
    task = cat.add_task(Task(kind=kind, entry_id=1))
    claimed = cat.claim_task("w", 60, kinds=[kind])
    assert claimed is not None and claimed.id == task.id
    assert cat.finish_task(task.id, "w", DONE)
    return task


def test_dedupe_and_claim_queries_use_indexes(catalog: Catalog) -> None:
    """Dedupe and claim are index lookups: their cost does not grow with the queue's history."""
    for _ in range(3):
        finished_task(catalog)
    catalog.add_task(Task(kind="replicate", entry_id=1, dedupe_key="k"))
    if catalog.url.startswith("sqlite"):
        from vdir.catalog.sqlite import CLAIM_SQL, DEDUPE_SQL, SQLiteCatalog

        assert isinstance(catalog, SQLiteCatalog)

        def plan(sql: str, args: tuple[object, ...]) -> str:
            return " | ".join(str(r[-1]) for r in catalog._read(lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()))

        dedupe = plan(DEDUPE_SQL, ("k",))
        claim = plan(CLAIM_SQL.format(kinds=""), (time.time(),))
        claim_kinds = plan(CLAIM_SQL.format(kinds=" AND kind IN (?)"), (time.time(), "replicate"))
        print("sqlite dedupe:", dedupe, "\nsqlite claim:", claim, "\nsqlite claim with kinds:", claim_kinds)
        assert "USING INDEX tasks_dedupe" in dedupe
        for p in (claim, claim_kinds):
            assert "USING INDEX tasks_due" in p and "SCAN tasks" not in p.replace("USING INDEX", "") and "TEMP B-TREE" not in p
        return
    from vdir.catalog.mongo import MongoCatalog

    assert isinstance(catalog, MongoCatalog)
    tasks = catalog._tasks

    def stages(plan: dict[str, object]) -> list[str]:
        found: list[str] = []
        node: object = plan
        while isinstance(node, dict):
            found.append(str(node.get("stage")))
            if "indexName" in node:
                found.append(f"index:{node['indexName']}")
            node = node.get("inputStage")
        return found

    dedupe = stages(tasks.find({"open_key": "k"}).limit(1).explain()["queryPlanner"]["winningPlan"])
    claim = stages(tasks.find(catalog._claim_filter(None)).sort("due", 1).limit(8).explain()["queryPlanner"]["winningPlan"])
    print("mongo dedupe:", dedupe, "\nmongo claim:", claim)
    assert "IXSCAN" in dedupe and "index:open_key" in dedupe and "COLLSCAN" not in dedupe
    assert "IXSCAN" in claim and "index:due" in claim and "COLLSCAN" not in claim and "SORT" not in claim


def test_caller_given_task_id(catalog: Catalog) -> None:
    from vdir.catalog.base import new_task_id

    mine = new_task_id()
    stored = catalog.add_task(Task(kind="replicate", entry_id=1, dedupe_key="d", id=mine))
    assert stored.id == mine
    other = new_task_id()
    assert catalog.add_task(Task(kind="replicate", entry_id=1, dedupe_key="d", id=other)).id == mine  # deduped
    with pytest.raises(AlreadyExists):
        catalog.add_task(Task(kind="verify", entry_id=1, id=mine))
    assert [t.id for t in catalog.list_tasks()] == [mine]
    ids = [new_task_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000 and all(0 < i < 2**63 for i in ids)


def test_task_times_are_on_the_catalog_clock(catalog: Catalog) -> None:
    before = catalog.now()
    task = catalog.add_task(Task(kind="replicate", entry_id=1, created=0.0, updated=0.0))
    claimed = catalog.claim_task("A", 30)
    after = catalog.now()
    assert claimed is not None and claimed.id == task.id
    assert before - 1 <= task.created <= after + 1 and task.created == task.updated
    assert before + 29 <= (claimed.lease_expires or 0) <= after + 31
    assert catalog.finish_task(task.id, "A", FAILED, error="503", retry_in=3600)
    stored = catalog.list_tasks()[0]
    assert (stored.state, stored.last_error) == (PENDING, "503")
    assert before + 3599 <= stored.not_before <= catalog.now() + 3601
    assert catalog.claim_task("B", 30) is None  # backing off on the catalog's clock
    with pytest.raises(InvalidArgument):
        catalog.finish_task(task.id, "A", FAILED, retry_at=1.0, retry_in=1.0)


def test_stamped_record(catalog: Catalog) -> None:
    before = catalog.now()
    assert catalog.put_record("nodes", "n1", {"host": "h", "heartbeat": 0}, stamp="heartbeat") == 1
    assert catalog.put_record("nodes", "n1", {"host": "h"}, stamp="heartbeat") == 2
    doc, version = catalog.get_record("nodes", "n1")
    assert version == 2 and doc["host"] == "h" and before - 1 <= doc["heartbeat"] <= catalog.now() + 1
    assert catalog.put_record("nodes", "n2", {"x": "$not.a.path"}, expected_version=0, stamp="seen") == 1
    with pytest.raises(AlreadyExists):
        catalog.put_record("nodes", "n2", {}, expected_version=0, stamp="seen")
    assert catalog.get_record("nodes", "n2")[0]["x"] == "$not.a.path"


def test_task_values_are_stored_literally(catalog: Catalog) -> None:
    odd = "$kind.with.dots"
    task = catalog.add_task(Task(kind=odd, entry_id=1, source=odd, destination="$$NOW", dedupe_key=odd,
                                 payload={"path": "$x", "n": [1, "$y"]}))
    assert (task.kind, task.source, task.destination, task.payload) == (odd, odd, "$$NOW", {"path": "$x", "n": [1, "$y"]})
    assert catalog.claim_task("A", 30, kinds=[odd]) is not None
    assert catalog.finish_task(task.id, "A", FAILED, error="$oops", retry_in=0)
    again = poll(lambda: catalog.claim_task("A", 30))
    assert isinstance(again, Task) and again.last_error == "$oops" and again.destination == "$$NOW"


def test_finished_tasks_expire_after_the_retention(catalog: Catalog) -> None:
    catalog.task_retention = 3600.0
    kept = finished_task(catalog)
    catalog.task_retention = 0.0
    gone = [finished_task(catalog) for _ in range(2)]
    pending = catalog.add_task(Task(kind="replicate", entry_id=2))
    if catalog.url.startswith("mongodb"):
        from vdir.catalog.mongo import MongoCatalog

        assert isinstance(catalog, MongoCatalog)
        assert catalog._tasks.index_information()["expire_at"]["expireAfterSeconds"] == 0

        def expired() -> bool:
            try:  # SecantusDB can run its TTL pass now; a real MongoDB runs one every 60 s
                catalog._db.command({"secantusAdmin.pruneTtl": 1})
            except Exception:  # noqa: BLE001 - not that server
                pass
            return {t.id for t in catalog.list_tasks()} == {kept.id, pending.id}

        assert poll(expired, timeout=150.0)
    else:
        finished_task(catalog)  # every finish removes what has expired (itself too, with retention 0)
        assert {t.id for t in catalog.list_tasks()} == {kept.id, pending.id}
    assert gone and catalog.count_tasks() == {DONE: 1, PENDING: 1}


def test_mongo_task_round_trips(mongo_catalog_url: str) -> None:
    """Counted, not timed: the server round trips of each queue operation — what a real
    deployment multiplies by its network round-trip time.  (SQLite: one transaction each.)"""
    from pymongo import monitoring

    database = mongo_catalog_url.rstrip("/").rsplit("/", 1)[1].split("?")[0]

    class Counter(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.database_name == database:  # the listener is process-wide: only this catalog
                self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

        def failed(self, event: monitoring.CommandFailedEvent) -> None: ...

    counter = Counter()
    monitoring.register(counter)
    with open_catalog(mongo_catalog_url) as cat:
        finished_task(cat)

        def count(fn: Callable[[], object]) -> list[str]:
            counter.names.clear()
            fn()
            return list(counter.names)

        assert count(lambda: cat.add_task(Task(kind="verify", entry_id=1))) == ["findAndModify"]
        assert count(lambda: cat.add_task(Task(kind="replicate", entry_id=1, dedupe_key="k"))) == ["find", "findAndModify"]
        assert count(lambda: cat.add_task(Task(kind="replicate", entry_id=1, dedupe_key="k"))) == ["find"]
        claimed: list[Task | None] = []
        assert count(lambda: claimed.append(cat.claim_task("w", 60, kinds=["verify"]))) == ["aggregate", "update"]
        task = claimed[0]
        assert task is not None
        assert count(lambda: cat.renew_lease(task.id, "w", 60)) == ["update"]
        assert count(lambda: cat.finish_task(task.id, "w", DONE)) == ["update"]
        assert count(lambda: cat.claim_task("w", 60, kinds=["verify"])) == ["aggregate"]  # nothing due


