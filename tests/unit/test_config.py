"""Config loading and validation: positions, several errors at once, shorthand, check-config."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowplane.cli import main
from flowplane.config import Config
from flowplane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_positions_and_shorthand():
    cfg = Config.from_text(textwrap.dedent("""\
        interfaces:
          eth1:
            family inet:
              filter input: F1
        """), path="x.yaml")
    assert cfg.data == {"interfaces": {"eth1": {"family": {"inet": {"filter": {"input": "F1"}}}}}}
    assert cfg.where(("interfaces", "eth1", "family", "inet", "filter", "input")) == (4, 7)
    assert cfg.where(("interfaces", "eth1", "nope")) == (2, 3)  # deepest existing key


def test_duplicate_keys_and_yaml_syntax_errors_have_positions():
    with pytest.raises(ConfigError) as e:
        Config.from_text("system:\n  batch-size: 1\n  batch-size: 2\n", path="d.yaml")
    assert e.value.lines == ["d.yaml:3:3: system batch-size: duplicate key (first at d.yaml:2:3)"]
    with pytest.raises(ConfigError) as e:
        Config.from_text("system:\n  batch-size: [1, 2\n", path="s.yaml")
    assert e.value.lines[0].startswith("s.yaml:3:1: YAML syntax error")


def test_several_errors_reported_at_once(make_app, tmp_path):
    text = textwrap.dedent("""\
        system:
          hardware-profile: mx-mcp
          batch-size: 100000
          bogus: 1
        interfaces:
          replay0:
            source: pcapp
            family inet:
              filter input: missing
        forwarding-options:
          samplng: {}
        servces: {}
        """)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    cfg = Config.load(str(path))
    app = make_app(cfg, configure=False)
    errors = app.validate(cfg)
    joined = "\n".join(errors)
    p = str(path)
    assert f"{p}:2:3: system hardware-profile: unknown hardware profile 'mx-mcp' (did you mean 'mx-mpc'?)" in joined
    assert f"{p}:3:3: system batch-size: 100000 exceeds the maximum 8192 (hardware profile limit max_batch)" in joined
    assert f"{p}:4:3: system bogus: unknown key 'bogus'" in joined
    assert f"{p}:7:5: interfaces replay0 source: unknown source 'pcapp' (did you mean 'pcap'?)" in joined
    assert f"{p}:9:7: interfaces replay0 family inet filter input: filter 'missing' is not defined" in joined
    assert f"{p}:11:3: forwarding-options samplng: no enabled plugin handles 'forwarding-options samplng'" in joined
    assert f"{p}:12:1: servces: unknown section 'servces' (did you mean 'services'?)" in joined
    assert len(errors) >= 7


def test_profile_limit_named(make_app):
    app = make_app({"system": {"hardware-profile": "mx-mpc"}}, configure=False)
    cfg = app.config
    cfg.data["system"]["batch-size"] = 5000
    errors = app.validate(cfg)
    assert any("5000 exceeds the maximum 4096 (hardware profile limit max_batch)" in e for e in errors)


def test_check_config_cli(tmp_path, capsys):
    good = ROOT / "etc" / "flowplane.yaml"
    assert main(["check-config", str(good)]) == 0
    assert "configuration check succeeds" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("system:\n  batch-size: -1\n  drain-timeout: soon\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:3: system batch-size: -1 is below the minimum 1" in err
    assert f"{bad}:3:3: system drain-timeout: expected a number, got 'soon'" in err
    assert "2 error(s)" in err


def test_check_config_subprocess_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("firewall: [1, 2]\n")
    r = subprocess.run([sys.executable, "-m", "flowplane", "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert str(bad) in r.stderr
    missing = subprocess.run([sys.executable, "-m", "flowplane", "check-config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read config" in missing.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "etc" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_checks(example):
    assert main(["check-config", str(example)]) == 0
