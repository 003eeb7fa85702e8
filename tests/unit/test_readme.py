"""README.md opens with the two commands; .ci/run runs the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks():
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_readme_opens_with_run_and_test_commands():
    run, test = _blocks()[:2]
    assert "flowplane run -c etc/flowplane.yaml" in run and run.startswith("python3 -m venv")
    assert "pytest" in test and test.startswith("python3 -m venv")


def test_ci_runs_readme_test_command():
    test = _blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
