"""The example plugin, ``contrib/flowplane-example``, installed by a real ``pip install``.

A fresh venv is created without the test environment's site-packages.
flowplane and then the plugin are pip-installed *into* it, so the only way
``flowplane`` can find ``example-tally`` is its ``flowplane.plugins`` entry
point in the installed distribution's metadata.  Two checks prove this:
before the plugin is installed, ``flowplane plugins`` does not list it, and
once it is installed, it is listed.

The installs are offline and fast:

* The new venv reaches the dependencies (numpy, trio, pluggy, setuptools...)
  through a ``.pth`` file naming a directory of symlinks to the running test
  venv's packages.  Every ``flowplane*`` entry is left out of that directory.
* Both installs run with ``pip --no-deps --no-build-isolation --no-index``
  from copies in tmp, so nothing is written into the source tree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowplane.testing import write_pcap

from frames import ETH_IPV4, ICMP, arp, eth, eth_ipv4_tcp, eth_ipv4_udp, icmp, ipv4
from venvs import Venv, make_venv

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SRC = ROOT / "contrib" / "flowplane-example"
NAME = "example-tally"

CONFIG = """\
system:
  control-socket: {tmp}/control.sock
  log: {{format: json, level: warning}}
interfaces:
  replay0:
    source: pcap
    file: {tmp}/in.pcap
    family inet:
      filter input: F
services:
  example-tally:
    top-n: 1
firewall:
  family inet:
    filter F:
      term web:
        from: {{protocol: [tcp], destination-port: [80, 443]}}
        then: {{tally: web, accept: true}}
      term dns:
        from: {{protocol: [udp], destination-port: [53]}}
        then: {{tally: true, accept: true}}
      term rest:
        then: {{tally: other, accept: true}}
"""

# What 'show services example-tally' must print for frames() below (top-n 1).
EXPECTED = """\
Bucket: default
  Packets: 4, Bytes: 248, Packets without port: 0
  Top destination ports (top 1):
    Port               Packets             Bytes
    53                       4               248

Bucket: other
  Packets: 3, Bytes: 126, Packets without port: 2
  Top destination ports (top 1):
    Port               Packets             Bytes
    123                      1                42

Bucket: web
  Packets: 7, Bytes: 378, Packets without port: 0
  Top destination ports (top 1):
    Port               Packets             Bytes
    80                       5               270
"""


def frames() -> list[bytes]:
    """web: 5x TCP :80 + 2x :443 (54 B); default: 4x UDP :53 (62 B); other: UDP :123 + 2 ICMP (42 B); 1 ARP."""
    web = [eth_ipv4_tcp(sport=40000 + i, dport=80) for i in range(5)] + [eth_ipv4_tcp(dport=443)] * 2
    dns = [eth_ipv4_udp(sport=5000 + i, dport=53, payload=b"q" * 20) for i in range(4)]
    other = [eth_ipv4_udp(dport=123), eth(ETH_IPV4, ipv4(ICMP, icmp())), eth(ETH_IPV4, ipv4(ICMP, icmp()))]
    mixed = [f for group in zip(web, dns + other) for f in group] + web[len(dns + other):]
    return mixed + [arp()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    tmp = tmp_path_factory.mktemp("contrib-plugin")
    v = make_venv(tmp)
    before = v.plugins()
    assert "core-commands" in before  # flowplane's own entry points work in the new venv
    assert NAME not in before  # ... and nothing smuggles the example plugin in

    v.pip_install(PLUGIN_SRC)
    write_pcap(str(tmp / "in.pcap"), frames())
    (tmp / "flowplane.yaml").write_text(CONFIG.format(tmp=tmp))
    return v


def test_plugins_lists_the_installed_plugin(venv):
    row = venv.plugins()[NAME]
    assert row["version"] == "0.1.0"
    assert row["module"] == "flowplane_example"
    assert row["builtin"] is False
    assert row["hooks"] == ["flowplane_config_validate", "flowplane_configure", "flowplane_register_actions",
                            "flowplane_register_config_sections", "flowplane_register_control_commands"]
    assert row["registered"] == {
        "actions": ["tally"],
        "commands": ["clear services example-tally", "show services example-tally"],
        "config sections": ["services example-tally"],
    }
    text = venv.flowplane("plugins").stdout
    assert f"{NAME} 0.1.0 (third-party, flowplane_example)" in text


def test_run_prints_the_tally(venv):
    cfg = str(venv.workdir / "flowplane.yaml")
    assert venv.flowplane("check-config", cfg).returncode == 0
    res = venv.flowplane("run", "-c", cfg, "--exit-on-eof", "--report", "show services example-tally")
    assert res.returncode == 0, res.stderr
    assert res.stdout == EXPECTED
    res = venv.flowplane("run", "-c", cfg, "--exit-on-eof", "--json",
                         "--report", "show services example-tally bucket web")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["buckets"] == [{"bucket": "web", "packets": 7, "bytes": 378,
                                                  "packets_without_port": 0,
                                                  "ports": [{"port": 80, "packets": 5, "bytes": 270}]}]


@pytest.mark.parametrize("how", ["env", "config"])
def test_disabled_plugin_fails_check_config(venv, how):
    cfg = venv.workdir / "flowplane.yaml"
    env = None
    if how == "env":
        env = {"FLOWPLANE_DISABLED_PLUGINS": f"some-other,{NAME}"}
    else:
        cfg = venv.workdir / "disabled.yaml"
        cfg.write_text(CONFIG.format(tmp=venv.workdir).replace(
            "system:\n", f"system:\n  plugins: {{disable: [{NAME}]}}\n"))
    offset = 0 if how == "env" else 1  # the disable line shifts the config down
    res = venv.flowplane("check-config", str(cfg), env=env)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"{cfg}:{11 + offset}:3: services example-tally: "
                               f"no enabled plugin handles 'services example-tally'")
    assert lines[1].startswith(f"{cfg}:{18 + offset}:16: firewall family inet filter F term web then tally: "
                               "unknown action 'tally'")
    assert len(lines) == 5 and lines[-1] == f"{cfg}: 4 error(s)"  # section + one per term using 'tally'
    shown = venv.plugins(env=env) if how == "env" else venv.plugins("-c", str(cfg))
    assert shown[NAME].get("blocked") is True
