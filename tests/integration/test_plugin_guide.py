"""docs/plugin-guide.md section 1, walked through as a new plugin author would.

From an empty folder: every ``<!-- file: PATH -->`` block of the guide is
written to PATH, then every line of the ``<!-- walkthrough: commands -->``
block runs in a fresh venv where flowplane is really pip-installed
(``pip install .`` installs the new plugin the same way, offline).  The run's
output must be exactly the guide's ``<!-- walkthrough: output of flowplane
run -->`` block, and the plugin's own tests, as the guide writes them, pass.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from venvs import make_venv

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugin-guide.md"
BLOCK = re.compile(r"<!-- (file|walkthrough): ([^>]+?) -->\n```[a-z]*\n(.*?)\n```", re.S)


def guide_blocks() -> tuple[dict[str, str], list[str], str]:
    """(files by path, the commands, the expected run output) as the guide gives them."""
    files, commands, output = {}, [], None
    for kind, name, body in BLOCK.findall(GUIDE.read_text()):
        if kind == "file":
            files[name] = body + "\n"
        elif name == "commands":
            commands = [line for line in body.splitlines() if line.strip()]
        elif name == "output of flowplane run":
            output = body + "\n"
    assert files and commands and output, "the guide lost its walkthrough markers"
    return files, commands, output


def test_the_guide_parses_into_a_plugin_commands_and_output():
    files, commands, output = guide_blocks()
    assert set(files) == {"pyproject.toml", "src/flowplane_hello/__init__.py", "tests/frames.py",
                          "tests/test_hello.py", "hello.yaml"}
    assert commands[0] == "pip install ." and any(c.startswith("flowplane run") for c in commands)
    assert output.startswith("hello from flowplane\n")


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin-guide")
    venv = make_venv(tmp)
    folder = tmp / "flowplane-hello"
    folder.mkdir()  # the empty folder
    files, commands, output = guide_blocks()
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    results: dict[str, subprocess.CompletedProcess] = {}
    for line in commands:
        argv = shlex.split(line)
        if argv == ["pip", "install", "."]:
            venv.pip_install(folder)
            continue
        if argv[0] == "python":
            argv[0] = venv.python
        elif argv[0] == "flowplane":
            argv[0] = str(venv.bin / "flowplane")
        results[line] = subprocess.run(argv, cwd=folder, env=venv.env, capture_output=True, text=True, timeout=120)
    return results, output


def _result(results, prefix: str) -> subprocess.CompletedProcess:
    [(line, res)] = [(k, v) for k, v in results.items() if k.startswith(prefix)]
    assert res.returncode == 0, f"{line!r} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def test_flowplane_plugins_lists_the_new_plugin(walkthrough):
    results, _ = walkthrough
    out = _result(results, "flowplane plugins").stdout
    assert "hello 0.1.0 (third-party, flowplane_hello)" in out
    block = out.split("hello 0.1.0", 1)[1].split("\n\n")[0]
    assert "actions: hello" in block and "commands: show services hello" in block
    assert "config sections: services hello" in block


def test_check_config_succeeds(walkthrough):
    results, _ = walkthrough
    assert "configuration check succeeds" in _result(results, "flowplane check-config").stdout


def test_the_run_prints_what_the_guide_shows(walkthrough):
    results, expected = walkthrough
    _result(results, "python tests/frames.py")
    assert _result(results, "flowplane run").stdout == expected


def test_the_plugins_own_tests_pass(walkthrough):
    results, _ = walkthrough
    assert re.search(r"\b2 passed\b", _result(results, "python -m pytest").stdout)
