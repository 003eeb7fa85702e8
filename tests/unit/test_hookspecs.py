"""The hook contract is documented, indexed in docs/hooks.md, and every hook has a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from flowplane import hookspecs

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("flowplane_") and inspect.isfunction(f))
BATCH_HOOKS = {"flowplane_process_batch", "flowplane_flows_expired"}


def test_there_are_hooks():
    assert len(SPECS) >= 15


@pytest.mark.parametrize("name", SPECS)
def test_spec_documented(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{name} has no docstring"
    assert "Called" in doc, f"{name}: say when it is called"
    for arg in inspect.signature(fn).parameters:
        assert f":param {arg}:" in doc, f"{name}: missing ':param {arg}:'"
    if name in BATCH_HOOKS:
        assert "must not block or await" in doc and "no wrappers" in doc


@pytest.mark.parametrize("name", SPECS)
def test_spec_in_docs(name):
    text = (ROOT / "docs" / "hooks.md").read_text()
    args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"`{name}({args})`" in text


@pytest.mark.parametrize("name", SPECS)
def test_spec_has_a_test(name):
    short = name.removeprefix("flowplane_")
    pattern = re.compile(rf"def test_hook_{short}\b")
    assert any(pattern.search(p.read_text()) for p in (ROOT / "tests").rglob("test_*.py")), f"no test_hook_{short}"
