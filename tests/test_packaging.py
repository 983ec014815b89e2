"""A fresh machine installs only what pyproject.toml declares: every third-party module that the
product (``vdir/``, ``cli/``) imports must come from a declared distribution, and every declared
distribution must be pinned in constraints.txt, which the set-up installs from."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(reqs: list[str]) -> set[str]:
    return {_norm(m.group(1)) for r in reqs if (m := re.match(r"\s*([A-Za-z0-9_.\-]+)", r))}


def _declared() -> tuple[set[str], set[str]]:
    """(distributions the product may use, test-only distributions)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    product = _requirement_names(project.get("dependencies", []))
    for name, reqs in extras.items():
        if name != "test":
            product |= _requirement_names(reqs)
    return product - {"vdir"}, _requirement_names(extras.get("test", []))


def _imports() -> dict[str, str]:
    found: dict[str, str] = {}
    for top in ("vdir", "cli"):
        for f in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    found.setdefault(n.split(".")[0], f"{f.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_product_import_is_declared_outside_the_test_extra() -> None:
    product, _ = _declared()
    owners_of = packages_distributions()
    bad = []
    for module, where in sorted(_imports().items()):
        if module in sys.stdlib_module_names or module in ("vdir", "cli", "__future__"):
            continue
        owners = {_norm(d) for d in owners_of.get(module, [])}
        if not owners & product:
            bad.append(f"{module} ({where}) comes from {sorted(owners) or 'nothing installed'}, not declared for the product")
    assert not bad, "\n".join(bad)


def test_every_declared_distribution_is_pinned() -> None:
    product, test = _declared()
    pins = {_norm(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    missing = sorted((product | test) - pins)
    assert not missing, f"declared but not pinned in constraints.txt: {missing}"
