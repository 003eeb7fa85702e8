"""Hostile config files: alias bombs, odd bytes, deep nesting, oversize files, duplicate keys, validators that
meet a value of the wrong type; and a fuzz of ``check-config`` over mutated example configs."""

from __future__ import annotations

import glob
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.cli import main
from flowplane.config import Config
from flowplane.errors import ConfigError
from flowplane.yaml_bounded import MAX_ALIAS_NODES, MAX_CONFIG_BYTES, MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(glob.glob(str(ROOT / "etc" / "examples" / "*.yaml"))) + [str(ROOT / "etc" / "flowplane.yaml")]

BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    + [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdef", "bcdefg")]
) + "\n"


def _check(path: Path, capsys) -> tuple[int, str]:
    rc = main(["check-config", str(path)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_alias_bomb_is_refused_quickly(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    t0 = time.monotonic()
    rc, out = _check(path, capsys)
    assert time.monotonic() - t0 < 5.0
    assert rc == 1
    assert f"bomb.yaml:5:8: config limit: aliases expand to more than {MAX_ALIAS_NODES} nodes" in out


def test_small_aliases_still_work():
    cfg = Config.from_text("system: &s {batch-size: 128}\nx: [*s, *s]\n", path="a.yaml")
    assert cfg.data["x"] == [{"batch-size": 128}, {"batch-size": 128}]


def test_non_utf8_bytes_name_line_and_column(tmp_path, capsys):
    path = tmp_path / "bytes.yaml"
    path.write_bytes(b"system:\n  batch-size: \xff\xfe\n")
    rc, out = _check(path, capsys)
    assert rc == 1
    assert f"{path}:2:15: not UTF-8 text: byte 0xff" in out
    assert "Traceback" not in out


def test_control_characters_name_line_and_column():
    with pytest.raises(ConfigError) as e:
        Config.from_text('system: "\x01"\n', path="c.yaml")
    assert e.value.lines[0].startswith("c.yaml:1:10: YAML error: character #x0001")


@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_refused_with_a_position(tmp_path, capsys, opener, closer):
    path = tmp_path / "deep.yaml"
    path.write_text("system: " + opener * 5000 + closer * 5000 + "\n")
    rc, out = _check(path, capsys)
    assert rc == 1
    assert "deep.yaml:1:" in out and f"config limit: nesting deeper than {MAX_DEPTH} levels" in out
    assert "Traceback" not in out


def test_oversize_file_is_refused(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    rc, out = _check(path, capsys)
    assert rc == 1
    assert f"the limit is {MAX_CONFIG_BYTES}" in out


def test_duplicate_sections_are_rejected_naming_both_places():
    text = "system:\n  batch-size: 128\ninterfaces: {}\nsystem:\n  ingest-queue: 10\n"
    with pytest.raises(ConfigError) as e:
        Config.from_text(text, path="d.yaml")
    assert e.value.lines == ["d.yaml:4:1: system: duplicate key (first at d.yaml:1:1)"]


def test_duplicate_shorthand_key_is_rejected():
    text = "interfaces:\n  eth0:\n    family inet: {}\n    family inet: {filter: {input: F}}\n"
    with pytest.raises(ConfigError) as e:
        Config.from_text(text, path="d.yaml")
    assert e.value.lines == ["d.yaml:4:5: interfaces eth0 family inet: duplicate key (first at d.yaml:3:5)"]


def test_shorthand_paths_still_merge():
    cfg = Config.from_text("interfaces:\n  eth0:\n    family inet: {}\n    family inet6: {}\n", path="m.yaml")
    assert cfg.data["interfaces"]["eth0"]["family"] == {"inet": {}, "inet6": {}}


def test_validator_meeting_a_string_names_plugin_and_section(tmp_path, capsys):
    path = tmp_path / "str.yaml"
    path.write_text("services: hello\n")
    rc, out = _check(path, capsys)
    assert rc == 1
    assert "Traceback" not in out
    assert f"{path}:1:1: services: plugin 'flow-monitoring' could not check this section " \
           "(AttributeError: 'str' object has no attribute 'get')" in out


def test_interface_filter_reference_into_a_scalar_filter_section(tmp_path, capsys):
    path = tmp_path / "fw.yaml"
    path.write_text("interfaces:\n  r0:\n    source: pcap\n    file: x.pcap\n    family inet: {filter: {input: F}}\n"
                    "firewall:\n  family:\n    inet:\n      filter: hello\n")
    rc, out = _check(path, capsys)
    assert rc == 1
    assert "Traceback" not in out
    assert "filter 'F' is not defined" in out


# -- fuzz -------------------------------------------------------------------------------------------------

_TEXTS = {p: Path(p).read_bytes() for p in EXAMPLES}
_REPLACEMENTS = [b"", b"hello", b"- x", b"{a: 1}", b"[]", b"0", b"-1", b"99999999999999999999", b"null", b"~",
                 b"&a x", b"*a", b"!!binary AA==", b"\xff", b"\t", b":", b"{", b"'", b"1.5e400", b"0x10", b"yes"]


@st.composite
def mutated_configs(draw) -> bytes:
    data = bytearray(_TEXTS[draw(st.sampled_from(sorted(_TEXTS)))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace-value", "splice", "delete-line", "duplicate-line", "flip"]))
        lines = bytes(data).split(b"\n")
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "replace-value" and b":" in lines[i]:
            head = lines[i].split(b":", 1)[0]
            lines[i] = head + b": " + draw(st.sampled_from(_REPLACEMENTS))
        elif kind == "splice":
            lines[i] = lines[i] + draw(st.sampled_from(_REPLACEMENTS))
        elif kind == "delete-line":
            del lines[i]
        elif kind == "duplicate-line":
            lines.insert(i, lines[i])
        elif kind == "flip" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            b = bytearray(lines[i])
            b[j] = draw(st.integers(0, 255))
            lines[i] = bytes(b)
        data = bytearray(b"\n".join(lines))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=mutated_configs())
def test_check_config_fuzz_never_tracebacks(tmp_path, capsys, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text)
    rc, out = _check(path, capsys)
    assert rc in (0, 1), out
    assert "Traceback" not in out
