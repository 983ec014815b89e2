"""Placement policies: an ordered list of rules, matched by path glob (and size, age, tags).

    rules:
      - name: datasets
        match: /datasets/**          # glob; ** crosses directories, * does not
        copies: 2                    # minimum verified copies
        where: cloud=aws | cloud=azure
        spread: cloud                # copies on distinct clouds (or: region)
      - name: archive
        match: /archive/**
        copies: 1
        where: tier=standard
        lifecycle: {after: 30d, where: tier=cold}   # after 30 days, only on cold storage
      - name: scratch
        match: /scratch/**
        copies: 1
        where: cloud=local

The first rule that matches a file decides; files no rule matches are left alone.

Backend expressions (in the spirit of Rucio's replication-rule expressions) select backends by
name and by the attributes recorded for them: ``cloud``, ``region``, ``tier``, ``cost``.
``key=value``, ``key!=value``, ``cost<N`` / ``cost>N``, ``!`` (not), ``&`` (and), ``|`` (or),
parentheses, and ``*`` (every backend).  ``&`` binds tighter than ``|``.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from vdir.catalog.base import BackendRecord, Entry
from vdir.errors import InvalidArgument
from vdir.units import parse_size

ATTRIBUTES = ("name", "cloud", "region", "tier", "cost")
SPREADS = ("none", "cloud", "region")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
class PolicyError(InvalidArgument):
    """A policy that cannot be used; the message names the file and line."""


def _size(value: Any) -> int:
    return parse_size(value if isinstance(value, int) else str(value), error=PolicyError)


# -- backend expressions ------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(?P<op>[()&|!*])|(?P<cmp>[A-Za-z_]+\s*(?:!=|<=|>=|=|<|>)\s*[^\s()&|!]+))")


@dataclass(frozen=True)
class Expr:
    """A parsed backend expression; ``matches(record)`` decides one backend."""

    kind: str  # all | cmp | not | and | or
    args: tuple[Any, ...] = ()
    text: str = ""

    def matches(self, rec: BackendRecord) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "not":
            return not self.args[0].matches(rec)
        if self.kind == "and":
            return all(a.matches(rec) for a in self.args)
        if self.kind == "or":
            return any(a.matches(rec) for a in self.args)
        key, op, value = self.args
        actual = getattr(rec, key)
        if key == "cost":
            a, v = float(actual), float(value)
            return {"=": a == v, "!=": a != v, "<": a < v, "<=": a <= v, ">": a > v, ">=": a >= v}[op]
        if op in ("=", "!="):
            hit = fnmatch.fnmatchcase(str(actual), value)
            return hit if op == "=" else not hit
        raise PolicyError(f"{self.text}: '{op}' only compares cost")

    def __str__(self) -> str:
        return self.text


def parse_expr(text: str) -> Expr:
    """Parse a backend expression; ``PolicyError`` says what is wrong and where."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = str(text)
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise PolicyError(f"cannot read the backend expression {text!r} at column {pos + 1}")
        tokens.append(("op", m.group("op")) if m.group("op") else ("cmp", m.group("cmp")))
        pos = m.end()
    if not tokens:
        raise PolicyError("empty backend expression (use * for every backend)")
    i = 0

    def peek() -> str | None:
        return tokens[i][1] if i < len(tokens) and tokens[i][0] == "op" else None

    def parse_or() -> Expr:
        nonlocal i
        parts = [parse_and()]
        while peek() == "|":
            i += 1
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else Expr("or", tuple(parts))

    def parse_and() -> Expr:
        nonlocal i
        parts = [parse_unary()]
        while peek() == "&":
            i += 1
            parts.append(parse_unary())
        return parts[0] if len(parts) == 1 else Expr("and", tuple(parts))

    def parse_unary() -> Expr:
        nonlocal i
        if i >= len(tokens):
            raise PolicyError(f"backend expression {text!r} ends too early")
        kind, value = tokens[i]
        i += 1
        if kind == "cmp":
            m = re.fullmatch(r"([A-Za-z_]+)\s*(!=|<=|>=|=|<|>)\s*(.+)", value)
            assert m is not None
            key, op, val = m.groups()
            if key not in ATTRIBUTES:
                raise PolicyError(f"unknown backend attribute {key!r} in {text!r} (known: {', '.join(ATTRIBUTES)})")
            if op not in ("=", "!=") and key != "cost":
                raise PolicyError(f"'{op}' only compares cost, not {key!r}, in {text!r}")
            if key == "cost":
                try:
                    float(val)
                except ValueError:
                    raise PolicyError(f"cost must be a number in {text!r}") from None
            return Expr("cmp", (key, op, val), value)
        if value == "!":
            return Expr("not", (parse_unary(),))
        if value == "*":
            return Expr("all")
        if value == "(":
            inner = parse_or()
            if peek() != ")":
                raise PolicyError(f"missing ')' in backend expression {text!r}")
            i += 1
            return inner
        raise PolicyError(f"unexpected {value!r} in backend expression {text!r}")

    expr = parse_or()
    if i != len(tokens):
        raise PolicyError(f"unexpected {tokens[i][1]!r} in backend expression {text!r}")
    return Expr(expr.kind, expr.args, text.strip())


# -- rules --------------------------------------------------------------------------------------
@dataclass
class Lifecycle:
    after: float
    where: Expr


@dataclass
class Rule:
    name: str
    match: str
    copies: int = 1
    where: Expr = field(default_factory=lambda: Expr("all", text="*"))
    spread: str = "none"
    min_size: int | None = None
    max_size: int | None = None
    older_than: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    lifecycle: Lifecycle | None = None
    line: int = 0

    def matches(self, path: str, entry: Entry, now: float | None = None) -> bool:
        if not glob_match(self.match, path):
            return False
        if self.min_size is not None and entry.size < self.min_size:
            return False
        if self.max_size is not None and entry.size > self.max_size:
            return False
        age = (now or time.time()) - entry.mtime
        if self.older_than is not None and age < self.older_than:
            return False
        for key, value in self.tags.items():
            if entry.xattrs.get(f"user.{key}", entry.xattrs.get(key, b"")).decode(errors="replace") != value:
                return False
        return True

    def target(self, entry: Entry, now: float | None = None) -> tuple[Expr, str]:
        """The backend expression that applies to ``entry`` now, and why."""
        if self.lifecycle is not None and (now or time.time()) - entry.mtime >= self.lifecycle.after:
            return self.lifecycle.where, f"rule {self.name!r} (line {self.line}), lifecycle after {_fmt_age(self.lifecycle.after)}"
        return self.where, f"rule {self.name!r} (line {self.line})"


@dataclass
class Policy:
    rules: list[Rule]
    text: str = ""
    version: int = 0

    def rule_for(self, path: str, entry: Entry, now: float | None = None) -> Rule | None:
        for rule in self.rules:
            if rule.matches(path, entry, now):
                return rule
        return None


def glob_match(pattern: str, path: str) -> bool:
    """``**`` matches across ``/``, ``*`` and ``?`` within one name; a pattern ending in ``/**``
    matches everything below that directory."""
    return _glob_regex(pattern).fullmatch(path) is not None


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _glob_regex(pattern: str) -> re.Pattern[str]:
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        out, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("/**", i) and i + 3 == len(pattern):
                out.append("(?:/.*)?")
                i += 3
                continue
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
            i += 1
        rx = _GLOB_CACHE[pattern] = re.compile("".join(out))
    return rx


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*", str(value))
    if not m:
        raise PolicyError(f"{value!r} is not a duration (e.g. 90s, 12h, 30d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _fmt_age(seconds: float) -> str:
    for unit in ("y", "w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


_RULE_KEYS = {"name", "match", "copies", "where", "spread", "min_size", "max_size", "older_than", "tags", "lifecycle"}


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a YAML policy.  Every error names ``source`` and the line."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise PolicyError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if root is None:
        raise PolicyError(f"{source}: the policy is empty (it needs a 'rules:' list)")

    def err(node: yaml.Node, message: str) -> PolicyError:
        return PolicyError(f"{source}:{node.start_mark.line + 1}: {message}")

    if not isinstance(root, yaml.MappingNode):
        raise err(root, "a policy is a mapping with a 'rules:' list")
    top = {k.value: v for k, v in root.value}
    for key_node, _ in root.value:
        if key_node.value != "rules":
            raise err(key_node, f"unknown key {key_node.value!r} (a policy has only 'rules')")
    rules_node = top.get("rules")
    if not isinstance(rules_node, yaml.SequenceNode) or not rules_node.value:
        raise err(rules_node or root, "'rules' must be a non-empty list of rules")
    rules: list[Rule] = []
    names: set[str] = set()
    for n, node in enumerate(rules_node.value, 1):
        if not isinstance(node, yaml.MappingNode):
            raise err(node, "each rule is a mapping (name, match, copies, where, ...)")
        fields = {k.value: v for k, v in node.value}
        for key_node, _ in node.value:
            if key_node.value not in _RULE_KEYS:
                raise err(key_node, f"unknown rule key {key_node.value!r} (known: {', '.join(sorted(_RULE_KEYS))})")
        data = yaml.safe_load(yaml.serialize(node)) or {}
        line = node.start_mark.line + 1
        name = str(data.get("name") or f"rule{n}")
        if name in names:
            raise err(fields.get("name", node), f"duplicate rule name {name!r}")
        names.add(name)
        if "match" not in data:
            raise err(node, f"rule {name!r} needs 'match' (a path glob such as /datasets/**)")
        match = str(data["match"])
        if not match.startswith("/"):
            raise err(fields["match"], f"'match' must be an absolute glob starting with '/', got {match!r}")

        def field_value(key: str, parse: Any, data: dict[str, Any] = data, fields: dict[str, Any] = fields) -> Any:
            if key not in data or data[key] is None:
                return None
            try:
                return parse(data[key])
            except PolicyError as exc:
                raise err(fields[key], str(exc)) from None

        copies = data.get("copies", 1)
        if not isinstance(copies, int) or isinstance(copies, bool) or not 0 <= copies <= 16:
            raise err(fields.get("copies", node), f"'copies' must be a whole number from 0 to 16, got {copies!r}")
        spread = str(data.get("spread", "none"))
        if spread not in SPREADS:
            raise err(fields["spread"], f"'spread' must be one of {', '.join(SPREADS)}, got {spread!r}")
        tags = data.get("tags") or {}
        if not isinstance(tags, dict):
            raise err(fields["tags"], "'tags' must be a mapping of tag to value")
        lifecycle = None
        if data.get("lifecycle") is not None:
            lc = data["lifecycle"]
            if not isinstance(lc, dict) or set(lc) != {"after", "where"}:
                raise err(fields["lifecycle"], "'lifecycle' needs exactly 'after' (a duration) and 'where' (a backend expression)")
            try:
                lifecycle = Lifecycle(parse_duration(lc["after"]), parse_expr(str(lc["where"])))
            except PolicyError as exc:
                raise err(fields["lifecycle"], str(exc)) from None
        rules.append(Rule(
            name=name, match=match, copies=copies,
            where=field_value("where", lambda v: parse_expr(str(v))) or Expr("all", text="*"),
            spread=spread, min_size=field_value("min_size", _size), max_size=field_value("max_size", _size),
            older_than=field_value("older_than", parse_duration), tags={str(k): str(v) for k, v in tags.items()},
            lifecycle=lifecycle, line=line,
        ))
    return Policy(rules=rules, text=text)


def check_backends(policy: Policy, backends: list[BackendRecord]) -> list[str]:
    """Warnings about rules that the registered backends cannot satisfy."""
    warnings = []
    for rule in policy.rules:
        for expr, label in [(rule.where, "where")] + ([(rule.lifecycle.where, "lifecycle.where")] if rule.lifecycle else []):
            chosen = [b for b in backends if expr.matches(b)]
            distinct = len({getattr(b, rule.spread) for b in chosen}) if rule.spread != "none" else len(chosen)
            if distinct < rule.copies:
                warnings.append(
                    f"line {rule.line}: rule {rule.name!r} wants {rule.copies} copies but {label} '{expr}' "
                    f"selects {len(chosen)} backend(s){f' on {distinct} distinct {rule.spread}(s)' if rule.spread != 'none' else ''}"
                )
    return warnings


# -- storage in the catalog ---------------------------------------------------------------------
POLICY_COLLECTION = "policies"
HISTORY_COLLECTION = "policy-history"


def apply_policy(catalog: Any, text: str, source: str = "<policy>") -> int:
    """Validate and store ``text`` as the current policy; return its version.  Older versions
    stay in the history collection."""
    from vdir.errors import NotFound

    parse_policy(text, source)
    try:
        _, current = catalog.get_record(POLICY_COLLECTION, "current")
    except NotFound:
        current = 0
    doc = {"text": text, "source": source, "applied": time.time()}
    version = int(catalog.put_record(POLICY_COLLECTION, "current", doc, expected_version=current))
    catalog.put_record(HISTORY_COLLECTION, f"{version:08d}", doc)
    return version


def load_policy(catalog: Any) -> Policy | None:
    """The stored policy, or ``None`` when none was applied."""
    from vdir.errors import NotFound

    try:
        doc, version = catalog.get_record(POLICY_COLLECTION, "current")
    except NotFound:
        return None
    policy = parse_policy(doc["text"], f"policy v{version}")
    policy.version = version
    return policy
