"""Export under faults: SIGTERM mid-replay exports every metered flow; a collector that is
down is counted, never stalls or crashes the appliance."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from flowplane.testing import free_port

from test_replay_nfdump import SAMPLE, Nfcapd, needs_nfdump

pytestmark = pytest.mark.peer


@needs_nfdump
def test_sigterm_mid_replay_exports_every_metered_flow(tmp_path):
    nf = Nfcapd(tmp_path, "nf")
    cfg = tmp_path / "f.yaml"
    cfg.write_text(f"""\
system:
  control-socket: {tmp_path}/control.sock
  log: {{format: json}}
interfaces:
  replay0:
    source: pcap
    file: {SAMPLE}
    speed: 1                      # capture speed: the 119 s capture is still running when we stop it
    family any:
      filter input: all
firewall:
  family any:
    filter all:
      term t:
        then: {{sample: true, accept: true}}
forwarding-options:
  sampling:
    input: {{rate: 1, algorithm: deterministic}}
    family inet:
      output:
        flow-server 127.0.0.1:
          port: {nf.port}
          version-ipfix: {{template: t}}
    family inet6:
      output:
        flow-server 127.0.0.1:
          port: {nf.port}
          version-ipfix: {{template: t}}
services:
  flow-monitoring:
    version-ipfix:
      template t: {{ipv4-template: true, ipv6-template: true}}
""")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "flowplane", "run", "-c", str(cfg), "--report",
                                 "show services accounting flow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        nf.stop()
    metered = int(re.search(r"Flow packets: (\d+), Flow bytes: (\d+)", out).group(1))
    metered_bytes = int(re.search(r"Flow packets: (\d+), Flow bytes: (\d+)", out).group(2))
    total = nf.totals()
    assert 0 < metered < 19900  # stopped mid-capture
    assert total["Packets"] == metered and total["Bytes"] == metered_bytes  # nothing in flight was lost
    assert '"event": "flows_flushed"' in out  # logs are JSON lines on stdout


def test_collector_down_is_counted_and_never_stalls(tmp_path):
    port = free_port()  # nothing listens there: ICMP port unreachable
    r = subprocess.run([sys.executable, "-m", "flowplane", "replay", str(SAMPLE), "--export", f"127.0.0.1:{port}",
                        "--version", "9"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) flows in (\d+) datagrams/messages, (\d+) refused", r.stderr)
    assert m, r.stderr
    assert int(m.group(1)) > 1900 and int(m.group(3)) > 0


def test_tcp_collector_away_at_shutdown_is_counted_not_waited_for(tmp_path):
    port = free_port("tcp")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "flowplane", "replay", str(SAMPLE), "--export", f"127.0.0.1:{port}",
                        "--version", "10", "--transport", "tcp"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "export_backlog_lost" in r.stderr and "dropped" in r.stderr
    assert time.monotonic() - t0 < 30  # the 30 s drain deadline is not spent on a collector that is away
