"""The pcap source (plugins/sources/pcapfile.py) on the corpus, cross-checked with Wireshark's capinfos and tshark."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from decimal import Decimal

import pytest

from corpus import FLOWS
from test_pcapfile import PcapSource, collect, ctx

CORPUS = str(FLOWS)


CORPUS_FILES = sorted(glob.glob(f"{CORPUS}/*.pcap") + glob.glob(f"{CORPUS}/*.pcapng"))


@pytest.mark.peer
@pytest.mark.skipif(not shutil.which("capinfos"), reason="capinfos (wireshark-common) not installed")
@pytest.mark.skipif(not CORPUS_FILES, reason="no corpus files")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=os.path.basename)
def test_corpus_packet_counts_match_capinfos(path):
    out = subprocess.run(["capinfos", "-M", "-c", path], capture_output=True, text=True, timeout=60).stdout
    line = next(ln for ln in out.splitlines() if "Number of packets" in ln)
    expected = int(line.split(":", 1)[1].strip())
    src = PcapSource(ctx(path, ctx_batch=256))
    assert sum(len(b) for b in src.batches()) == expected
    assert src.counters.drops == {}


SMALL_CORPUS = [p for p in CORPUS_FILES if os.path.getsize(p) < 100_000]


@pytest.mark.peer
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("path", SMALL_CORPUS, ids=os.path.basename)
def test_corpus_lengths_and_times_match_tshark(path):
    out = subprocess.run(
        ["tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len", "-e",
         "frame.time_epoch"],
        capture_output=True, text=True, timeout=60,
    ).stdout
    rows = [ln.split("\t") for ln in out.splitlines() if ln.strip()]
    src = PcapSource(ctx(path, ctx_batch=256))
    _, caps, wls, tss, _, _ = collect(src)
    assert wls == [int(r[0]) for r in rows]
    assert caps == [int(r[1]) for r in rows]
    assert tss == [int(Decimal(r[2]) * 1_000_000_000) for r in rows]
