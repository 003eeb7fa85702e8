"""A running ``flowplane run`` says which kernels it runs in ``show system statistics``, and meters the same
flows with either (the compiled extension, and the Python kernels forced by ``FLOWPLANE_NO_EXT=1``).

The shipped example config replays the committed sample; its flow figures are the same for both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flowplane import kernels

ROOT = Path(__file__).resolve().parents[2]
FLOWPLANE = [sys.executable, "-m", "flowplane"]


def _show(sock: Path, env: dict, *words: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FLOWPLANE, "show", *words, "--socket", str(sock)], env=env, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("impl", ["compiled", "python"])
def test_running_service_reports_its_kernels(tmp_path, impl):
    if impl == "compiled" and not kernels.compiled_available():
        pytest.skip(f"the compiled kernels are not built here ({kernels.REASON})")
    cfg = yaml.safe_load((ROOT / "etc" / "flowplane.yaml").read_text())
    sock = tmp_path / "control.sock"
    cfg["system"]["control-socket"] = str(sock)
    cfg["interfaces"]["replay0"]["file"] = str(ROOT / "etc" / "samples" / "sample.pcap")
    path = tmp_path / "flowplane.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "FLOWPLANE_NO_EXT": "1" if impl == "python" else "0"}
    proc = subprocess.Popen([*FLOWPLANE, "run", "-c", str(path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        data = None
        while time.monotonic() < deadline:  # until the replay is metered
            res = _show(sock, env, "system", "statistics", "--json")
            if res.returncode == 0:
                data = json.loads(res.stdout)
                if data["pipeline"]["counters"].get("packets") == 20_020:
                    break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        assert data is not None and data["pipeline"]["counters"]["packets"] == 20_020
        assert data["kernels"]["implementation"] == impl
        text = _show(sock, env, "system", "statistics").stdout
        want = "Kernels: compiled (Cython extension)" if impl == "compiled" else \
            "Kernels: python (FLOWPLANE_NO_EXT is set)"
        assert want in text.splitlines()
        flows = json.loads(_show(sock, env, "services", "accounting", "flow", "--json").stdout)
        inst = flows["instances"][0]  # the sample's truth: 19,900 IP packets, 2,171,690 IP bytes
        assert (inst["flow_packets"], inst["flow_bytes"]) == (19_900, 2_171_690)
        assert (inst["total_flows"], inst["expired"]) == (1985, {"tcp": 819, "idle": 1164, "active": 1})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
