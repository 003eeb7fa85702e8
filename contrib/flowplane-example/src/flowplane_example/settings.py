"""Config validation for ``services example-tally`` and the ``tally`` action argument."""

from __future__ import annotations

import re

from flowplane.api import ConfigIssue, check_int, check_keys, check_mapping

SECTION = "services example-tally"
SECTION_KEY = "example-tally"
KEYS = ("top-n",)
DEFAULTS = {"top-n": 10}
TOP_N_MAX = 100
DEFAULT_BUCKET = "default"
BUCKET_RE = re.compile(r"^[a-z0-9-]+$")


def validate_bucket(arg: object, config: dict) -> str | None:
    """``TermAction.validate``: the bucket name, and the section the action needs."""
    if arg is not None and (not isinstance(arg, str) or not BUCKET_RE.match(arg)):
        return (f"expected a tally bucket name of lowercase letters, digits and '-' "
                f"(or true for {DEFAULT_BUCKET!r}); got {arg!r}")
    services = config.get("services")
    if not isinstance(services, dict) or SECTION_KEY not in services:
        return f"action 'tally' needs the '{SECTION}' section (add 'services: {{{SECTION_KEY}: {{}}}}')"
    return None


def validate_section(config) -> list[ConfigIssue]:
    """Every problem in ``services example-tally``, each with its exact key path."""
    path = ("services", SECTION_KEY)
    section = config.get(*path)
    if section is None:
        return []
    issues = check_mapping(section, path, "example-tally settings")
    if not isinstance(section, dict):
        return issues
    issues += check_keys(section, KEYS, path)
    if "top-n" in section:
        issues += check_int(section["top-n"], path + ("top-n",), 1, TOP_N_MAX)
    return issues
