"""Plugins and contrib/ import only the public API: ``flowplane.api`` and ``flowplane.testing``."""

from __future__ import annotations

import ast
import pathlib

import flowplane.api as api

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALLOWED = ("flowplane.api", "flowplane.testing")

#: Imports still to be moved behind the public API (must shrink to empty).
PENDING: set[tuple[str, str]] = {
}


def _flowplane_imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "flowplane"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "flowplane":
                found.append(node.module)
    return found


def test_plugins_and_contrib_import_only_the_public_api():
    bad = []
    for top in ("plugins", "contrib"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for module in _flowplane_imports(path):
                if module not in ALLOWED and (rel, module) not in PENDING:
                    bad.append(f"{rel}: imports {module}")
    assert not bad, "plugins and contrib/ may import only flowplane.api and flowplane.testing:\n" + "\n".join(bad)


def test_pending_list_has_no_stale_entries():
    stale = [(f, m) for f, m in PENDING if m not in _flowplane_imports(ROOT / f)]
    assert not stale, f"remove from PENDING (no longer imported): {stale}"


def test_api_names_all_resolve():
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing
    assert len(set(api.__all__)) == len(api.__all__)


def test_every_public_name_is_listed_in_the_hooks_page():
    page = (ROOT / "docs" / "hooks.md").read_text()
    missing = [n for n in api.__all__ if f"`{n}`" not in page]
    assert not missing, f"docs/hooks.md 'The public API' lacks: {missing}"
