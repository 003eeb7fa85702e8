"""The per-record kernels: compiled and Python implementations give identical results.

Every test runs over each implementation that can run here (``python`` always, ``compiled`` when the
extension is built; a missing one is a skip naming why, or a failure when ``FLOWPLANE_REQUIRE_EXT=1``).
The pcap reader tests then replay whole files through each implementation and compare every column.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowplane import kernels
from flowplane.plugins.sources import pcapfile

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "samples" / "sample.pcap"
IMPLS = kernels.implementations()


@pytest.fixture(params=["python", "compiled"])
def impl(request):
    if request.param not in IMPLS:
        pytest.skip(f"the compiled kernels are not built here ({kernels.REASON})")
    return IMPLS[request.param]


def test_compiled_extension_is_built_where_required():
    if os.environ.get("FLOWPLANE_REQUIRE_EXT", "") in ("", "0"):
        pytest.skip("FLOWPLANE_REQUIRE_EXT is not set")
    assert kernels.compiled_available(), kernels.REASON


def test_no_ext_forces_the_python_kernels():
    code = "from flowplane import kernels; print(kernels.IMPLEMENTATION, '|', kernels.REASON)"
    env = {**os.environ, "FLOWPLANE_NO_EXT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "python | FLOWPLANE_NO_EXT is set"
    env["FLOWPLANE_NO_EXT"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split(" | ")[0] == ("compiled" if kernels.compiled_available() else "python")


def test_status_names_the_implementation():
    st_ = kernels.status()
    assert st_["implementation"] == kernels.IMPLEMENTATION
    assert st_["reason"] == kernels.REASON
    assert kernels.active() is IMPLS[kernels.IMPLEMENTATION]
    assert set(st_["kernels"]) == set(kernels.KERNELS)
    for mod in IMPLS.values():
        assert all(callable(getattr(mod, name)) for name in kernels.KERNELS)


def test_show_system_statistics_says_which_kernels_run():
    from flowplane.core_commands import format_system_statistics

    data = {"uptime_s": 1.0, "pipeline": {"counters": {}, "drops": []}, "plugins": {"counters": {}},
            "batch_hooks": {}, "queue": None, "kernels": kernels.status()}
    text = format_system_statistics(data)
    assert f"Kernels: {kernels.IMPLEMENTATION} ({kernels.REASON})" in text.splitlines()


# ---------------------------------------------------------------------------
# pcap_walk
# ---------------------------------------------------------------------------
def pcap_records(caps: list[int], bo: str = "<") -> bytes:
    """24 bytes of file header, then one 16-byte record header per capture length (bodies of 0xAB)."""
    out = [b"\0" * 24]
    for cap in caps:
        out.append(struct.pack(bo + "IIII", 1, 2, cap, cap + 5) + b"\xab" * cap)
    return b"".join(out)


def expected_walk(caps: list[int], max_n: int) -> list[int]:
    offs, off = [], 24
    for cap in caps[:max_n]:
        offs.append(off)
        off += 16 + cap
    return offs + [off]


@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("max_n", [0, 1, 3, 7, 100])
def test_pcap_walk_follows_the_record_lengths(impl, bo, max_n):
    caps = [0, 60, 1, 1514, 33, 7, 64]
    buf = np.frombuffer(pcap_records(caps, bo), dtype=np.uint8)
    got = impl.pcap_walk(buf, 24, len(buf), max_n, bo == "<")
    assert got.dtype == np.int64
    assert got.tolist() == expected_walk(caps, max_n)


def test_pcap_walk_stops_where_no_header_fits(impl):
    buf = pcap_records([10, 20]) + b"\0" * 15  # 15 bytes: not a record header
    assert impl.pcap_walk(buf, 24, len(buf), 10, True).tolist() == [24, 50, 86]
    # a lying length jumps past the end: the walk returns that offset (the reader counts the damage)
    lying = bytearray(pcap_records([10, 20, 30]))
    struct.pack_into("<I", lying, 50 + 8, 0xFFFFFFF0)
    assert impl.pcap_walk(bytes(lying), 24, len(lying), 10, True).tolist() == [24, 50, 50 + 16 + 0xFFFFFFF0]
    # end before the buffer's end bounds the walk; an empty range gives just the start
    assert impl.pcap_walk(buf, 24, 50 + 15, 10, True).tolist() == [24, 50]
    assert impl.pcap_walk(buf, 24, 24, 10, True).tolist() == [24]


def test_pcap_walk_rejects_bad_arguments(impl):
    buf = pcap_records([10])
    with pytest.raises(ValueError, match="past the buffer"):
        impl.pcap_walk(buf, 24, len(buf) + 1, 10, True)
    with pytest.raises(ValueError, match="negative"):
        impl.pcap_walk(buf, -1, len(buf), 10, True)


# ---------------------------------------------------------------------------
# pcapng_walk_epb
# ---------------------------------------------------------------------------
def block(bo: str, bt: int, body_len: int) -> bytes:
    bl = 12 + body_len
    return struct.pack(bo + "II", bt, bl) + b"\0" * body_len + struct.pack(bo + "I", bl)


@pytest.mark.parametrize("bo", ["<", ">"])
def test_pcapng_walk_epb_stops_at_the_first_other_block(impl, bo):
    blocks = [block(bo, 6, 20 + 64), block(bo, 6, 20 + 4), block(bo, 6, 20 + 1500), block(bo, 5, 12),
              block(bo, 6, 20)]
    buf = b"".join(blocks)
    lens = [len(b) for b in blocks]
    assert impl.pcapng_walk_epb(buf, 0, len(buf), 100, bo == "<").tolist() == [0, lens[0], lens[0] + lens[1],
                                                                                sum(lens[:3])]
    assert impl.pcapng_walk_epb(buf, 0, len(buf), 2, bo == "<").tolist() == [0, lens[0], lens[0] + lens[1]]
    assert impl.pcapng_walk_epb(buf, sum(lens[:3]), len(buf), 100, bo == "<").tolist() == [sum(lens[:3])]
    last = sum(lens[:4])
    assert impl.pcapng_walk_epb(buf, last, len(buf), 100, bo == "<").tolist() == [last, len(buf)]


def test_pcapng_walk_epb_short_block_and_tail(impl):
    short = struct.pack("<II", 6, 28) + b"\0" * 20  # an EPB shorter than its own header
    buf = block("<", 6, 40) + short
    assert impl.pcapng_walk_epb(buf, 0, len(buf), 10, True).tolist() == [0, 52]
    buf = block("<", 6, 40) + b"\0" * 11  # no room for the next block header
    assert impl.pcapng_walk_epb(buf, 0, len(buf), 10, True).tolist() == [0, 52]


# ---------------------------------------------------------------------------
# both implementations agree on any bytes
# ---------------------------------------------------------------------------
needs_both = pytest.mark.skipif(len(IMPLS) < 2, reason=f"the compiled kernels are not built here ({kernels.REASON})")


@needs_both
@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=400), off=st.integers(0, 420), cut=st.integers(0, 400),
       max_n=st.integers(0, 40), little=st.booleans(), small=st.booleans())
def test_implementations_agree_on_random_bytes(data, off, cut, max_n, little, small):
    if small:  # small lengths, so that walks go on for a while
        data = bytes(b if i % 4 in (0, 1) else 0 for i, b in enumerate(data))
    end = min(cut, len(data))
    for name in kernels.KERNELS:
        py = getattr(IMPLS["python"], name)(data, off, end, max_n, little)
        c = getattr(IMPLS["compiled"], name)(data, off, end, max_n, little)
        assert py.dtype == c.dtype == np.int64
        assert py.tolist() == c.tolist(), name


# ---------------------------------------------------------------------------
# the pcap source's readers, whole files, through each implementation
# ---------------------------------------------------------------------------
def read_all(path, impl, batch: int, hold_ns: int = 0):
    drops = []
    reader = pcapfile.open_capture(str(path), lambda reason, n: drops.append((reason, n)), impl)
    chunks = []
    for lt, idb, off, cap, wl, ts in reader.chunks(batch, hold_ns):
        chunks.append((lt, None if idb is None else idb.tolist(), off.tolist(), cap.tolist(), wl.tolist(),
                       ts.tolist()))
    return chunks, drops


def write_pcapng(path, n: int, bo: str = "<") -> None:
    rng = np.random.default_rng(11)
    shb = struct.pack(bo + "IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack(bo + "I", 28)
    idb = struct.pack(bo + "IIHHI", 1, 20, 1, 0, 0) + struct.pack(bo + "I", 20)
    parts = [shb, idb]
    for i in range(n):
        body = bytes(int(rng.integers(14, 200)))
        pad = (-len(body)) % 4
        bl = 32 + len(body) + pad
        parts.append(struct.pack(bo + "IIIIIII", 6, bl, 0, 0, 1000 * i, len(body), len(body)) + body + b"\0" * pad
                     + struct.pack(bo + "I", bl))
        if i % 50 == 49:  # a statistics block now and then: the EPB run ends there
            parts.append(struct.pack(bo + "II", 5, 24) + b"\0" * 12 + struct.pack(bo + "I", 24))
    path.write_bytes(b"".join(parts))


@needs_both
@pytest.mark.parametrize("batch", [1, 97, 4096])
def test_readers_identical_on_the_sample_pcap(batch):
    assert read_all(SAMPLE, IMPLS["python"], batch) == read_all(SAMPLE, IMPLS["compiled"], batch)


@needs_both
@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("batch", [7, 256])
def test_readers_identical_on_pcapng(tmp_path, bo, batch):
    p = tmp_path / "t.pcapng"
    write_pcapng(p, 400, bo)
    py = read_all(p, IMPLS["python"], batch, hold_ns=50_000)
    assert sum(len(c[2]) for c in py[0]) == 400 and py[1] == []
    assert py == read_all(p, IMPLS["compiled"], batch, hold_ns=50_000)


@needs_both
@pytest.mark.parametrize("damage", ["truncated", "lying_caplen", "partial_header"])
def test_readers_identical_on_damaged_files(tmp_path, damage):
    whole = SAMPLE.read_bytes()
    if damage == "truncated":  # the file ends inside a record
        raw = whole[:200_000]
    elif damage == "lying_caplen":  # the second record claims 1 MiB
        raw = bytearray(whole)
        second = 24 + 16 + struct.unpack_from("<I", raw, 24 + 8)[0]
        struct.pack_into("<I", raw, second + 8, 1 << 20)
    else:  # 5,000 whole records, then 9 bytes of a record header
        end = int(IMPLS["python"].pcap_walk(whole, 24, len(whole), 5000, True)[-1])
        raw = whole[:end] + b"\0" * 9
    p = tmp_path / "d.pcap"
    p.write_bytes(bytes(raw))
    py = read_all(p, IMPLS["python"], 256)
    assert py[1], "the damage is counted"
    assert py == read_all(p, IMPLS["compiled"], 256)


@pytest.mark.parametrize("batch", [1, 300, 65536])
def test_reader_counts_match_the_truth(impl, batch):
    import json

    truth = json.loads(SAMPLE.with_suffix(".pcap.truth.json").read_text())
    chunks, drops = read_all(SAMPLE, impl, batch)
    assert sum(len(c[2]) for c in chunks) == truth["frames"]
    assert drops == []
