"""The planner: compares each file's replicas with what its rule wants, and says what to do.

It only reads the catalog and writes tasks; running it twice queues nothing new (tasks carry
dedupe keys).  Decisions, per file matched by a rule:

* **replicate** while fewer than ``copies`` good (state ``ok``) replicas sit on backends the
  rule's expression selects (with ``spread``, counting distinct clouds or regions), choosing
  destinations by cost, then name; the source is the cheapest good replica.
* **trim** a replica that is not needed — on a backend the rule does not select (or a missing
  or corrupt one) — only once the rule is met by good replicas that have been verified.
  Replicas on selected backends beyond ``copies`` are kept: ``copies`` is a minimum.
* files with no good replica left are reported as **lost** (nothing can be copied).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from vdir.catalog.base import FILE, OK, BackendRecord, Entry, Replica, Task, new_task_id
from vdir.placement.policy import Policy, Rule
from vdir.trash import TRASH_DIR

REPLICATE = "replicate"
TRIM = "trim"
VERIFY = "verify"
LOST = "lost"


@dataclass
class Action:
    kind: str
    path: str
    entry_id: int
    entry_version: int
    backend: str | None  # destination (replicate), the replica's backend (trim, verify)
    source: str | None
    reason: str
    key: str | None = None  # the replica's key (trim, verify)

    def task(self) -> Task:
        dedupe = f"{self.kind}:{self.entry_id}:{self.backend}:{self.key or ''}"
        return Task(
            kind=self.kind, entry_id=self.entry_id, entry_version=self.entry_version, source=self.source,
            destination=self.backend, dedupe_key=dedupe, payload={"path": self.path, "reason": self.reason, "key": self.key},
        )

    def describe(self) -> str:
        if self.kind == REPLICATE:
            return f"replicate {self.path}: {self.source} -> {self.backend}  ({self.reason})"
        if self.kind == TRIM:
            return f"trim      {self.path}: drop the copy on {self.backend}  ({self.reason})"
        if self.kind == VERIFY:
            return f"verify    {self.path}: copy on {self.backend}  ({self.reason})"
        return f"lost      {self.path}: no good copy left to replicate from  ({self.reason})"


def _spread_key(rule: Rule, rec: BackendRecord) -> str:
    return rec.name if rule.spread == "none" else str(getattr(rec, rule.spread))


def file_actions(
    path: str, entry: Entry, policy: Policy, backends: dict[str, BackendRecord], now: float | None = None,
) -> list[Action]:
    """What ``policy`` wants done to one file (empty when it is in place)."""
    if entry.type != FILE:
        return []
    rule = policy.rule_for(path, entry, now)
    if rule is None or rule.copies == 0:
        return []
    expr, why = rule.target(entry, now)
    selected = {name: rec for name, rec in backends.items() if expr.matches(rec)}
    good = [r for r in entry.replicas if r.state == OK and r.backend in backends]
    on_target = [r for r in good if r.backend in selected]
    held = {_spread_key(rule, selected[r.backend]) for r in on_target}
    have = len(held) if rule.spread != "none" else len({r.backend for r in on_target})
    actions: list[Action] = []
    if have < rule.copies:
        if not good:
            return [Action(LOST, path, entry.id, entry.version, None, None, why)]
        source = min(good, key=lambda r: (backends[r.backend].cost, backends[r.backend].cloud != "local", r.backend)).backend
        taken = {r.backend for r in good}
        keys = set(held)
        for rec in sorted(selected.values(), key=lambda b: (b.cost, b.name)):
            if have >= rule.copies:
                break
            if rec.name in taken or (rule.spread != "none" and _spread_key(rule, rec) in keys):
                continue
            actions.append(Action(REPLICATE, path, entry.id, entry.version, rec.name, source,
                                  f"{why}: {have} of {rule.copies} copies on '{expr}'"))
            taken.add(rec.name)
            keys.add(_spread_key(rule, rec))
            have += 1
        return actions
    verified = all(r.verified_at is not None for r in on_target)
    for r in entry.replicas:
        if r.backend in selected and r.state == OK:
            continue
        if r.state == OK and not verified:
            continue  # replacements not verified yet: keep everything
        reason = f"{why}: copy is {r.state}" if r.state != OK else f"{why}: '{r.backend}' is not selected by '{expr}'"
        actions.append(Action(TRIM, path, entry.id, entry.version, r.backend, None, reason, key=r.key))
    return actions


def plan(vd: object, policy: Policy, top: str = "/", now: float | None = None) -> Iterator[Action]:
    """Every action the policy wants, file by file (streams over the catalog)."""
    from vdir.core import VDir

    assert isinstance(vd, VDir)
    backends = {b.name: b for b in vd.catalog.list_backends()}
    now = now or time.time()
    top_entry = vd.entry(top)
    base = "" if top == "/" else top
    if top_entry.type == FILE:
        yield from file_actions(top, top_entry, policy, backends, now)
        return
    linked: set[int] = set()
    for rel, entry in vd.catalog.walk(top_entry.id):
        if top == "/" and (rel == TRASH_DIR or rel.startswith(TRASH_DIR + "/")):
            continue  # trashed files keep every replica as it is until they are purged (vdir.trash)
        if entry.type == FILE:
            if entry.nlink > 1:  # a file with several names is planned once, by the first name met
                if entry.id in linked:
                    continue
                linked.add(entry.id)
            yield from file_actions(f"{base}/{rel}", entry, policy, backends, now)


def queue(vd: object, actions: Iterator[Action]) -> tuple[int, int]:
    """Write the actions as tasks; (queued, already queued).  Lost files are not tasks."""
    from vdir.core import VDir

    assert isinstance(vd, VDir)
    new = existing = 0
    for action in actions:
        if action.kind == LOST:
            continue
        wanted = action.task()
        wanted.id = new_task_id()
        stored = vd.catalog.add_task(wanted)
        if stored.id != wanted.id:  # add_task handed back a task queued earlier
            existing += 1
        else:
            new += 1
    return new, existing


def replica_of(entry: Entry, backend: str, key: str | None = None) -> Replica | None:
    for r in entry.replicas:
        if r.backend == backend and (key is None or r.key == key):
            return r
    return None
