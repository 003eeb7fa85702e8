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
    for name in ("pcap_walk", "pcapng_walk_epb"):
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


# ---------------------------------------------------------------------------
# flow cache hash table
# ---------------------------------------------------------------------------
def table_with(impl, keys: np.ndarray, size: int = 64, hash_bits: int = 64):
    """A table of *size* slots holding flow ids 0..n-1 for the rows of *keys*; the hash is the first word."""
    h = keys[:, 0] & np.uint64((1 << hash_bits) - 1)
    table = np.full(size, -1, dtype=np.int32)
    reused = impl.flow_insert(table, size - 1, h, np.arange(len(keys), dtype=np.int32))
    return table, h, reused


def test_flow_table_finds_what_it_holds(impl):
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 1 << 63, size=(20, 6), dtype=np.uint64)
    keys[:, 0] &= np.uint64(7)  # 8 hash values for 20 keys: long probe chains that wrap around
    keys[:, 1] = np.arange(20, dtype=np.uint64)  # keys stay distinct
    table, h, reused = table_with(impl, keys, size=32)
    assert reused == 0 and sorted(table[table >= 0].tolist()) == list(range(20))
    assert impl.flow_lookup(table, 31, keys, h, keys).tolist() == list(range(20))
    absent = keys.copy()
    absent[:, 2] ^= np.uint64(1)
    assert impl.flow_lookup(table, 31, keys, h, absent).tolist() == [-1] * 20
    # a tombstone is probed over by lookups and reused by inserts
    slot = int(np.flatnonzero(table == 3)[0])
    table[slot] = -2
    found = impl.flow_lookup(table, 31, keys, h, keys).tolist()
    assert found == [i if i != 3 else -1 for i in range(20)]
    assert impl.flow_insert(table, 31, h[3:4], np.array([3], dtype=np.int32)) in (0, 1)
    assert impl.flow_lookup(table, 31, keys, h, keys).tolist() == list(range(20))


def test_flow_table_empty_inputs(impl):
    table = np.full(16, -1, dtype=np.int32)
    store = np.zeros((4, 6), dtype=np.uint64)
    none = np.zeros(0, dtype=np.uint64)
    assert impl.flow_lookup(table, 15, store, none, np.zeros((0, 6), dtype=np.uint64)).tolist() == []
    assert impl.flow_insert(table, 15, none, np.zeros(0, dtype=np.int32)) == 0
    assert (table == -1).all()


@needs_both
@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 40), bits=st.integers(0, 6), seed=st.integers(0, 2**32 - 1), kw=st.sampled_from([6, 8]))
def test_flow_table_implementations_agree(n, bits, seed, kw):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 1 << 63, size=(n, kw), dtype=np.uint64)
    keys[:, 1] = np.arange(n, dtype=np.uint64)
    probe = np.concatenate([keys, keys[: n // 2] ^ np.uint64(1 << 40)])
    ph = probe[:, 0] & np.uint64((1 << bits) - 1)
    found = {}
    for name, mod in IMPLS.items():
        table, _h, reused = table_with(mod, keys, size=64, hash_bits=bits)
        found[name] = (mod.flow_lookup(table, 63, keys, ph, probe).tolist(), reused)
    assert found["python"] == found["compiled"]
    assert found["python"][0] == list(range(n)) + [-1] * (n // 2)


def sample_batches(batch_size: int):
    from flowplane.decode import decode
    from flowplane.interfaces import InterfaceTable
    from flowplane.sources import SourceContext

    ctx = SourceContext(name="replay0", config={"source": "pcap", "file": str(SAMPLE)}, iface_id=1,
                        interfaces=InterfaceTable(), batch_size=batch_size, speed=0.0)
    out = []
    for b in pcapfile.PcapSource(ctx).batches():
        decode(b)
        out.append(b)
    return out


def meter(impl, batches, max_flows: int, key_fields: str):
    from flowplane.flowcache import FlowCache

    c = FlowCache(max_flows=max_flows, inactive_timeout_s=2, active_timeout_s=10, key_fields=key_fields, impl=impl)
    out = []
    for i, b in enumerate(batches):
        out += [(reason, r.data.tobytes()) for r, reason in c.update(b)]
        if i % 5 == 4:
            out += [(reason, r.data.tobytes()) for r, reason in c.expire(c.clock_ns)]
    out.append(("shutdown", c.flush().data.tobytes()))
    return out, dict(c.counters.values)


@needs_both
@pytest.mark.parametrize("max_flows,key_fields,batch", [(100_000, "ip", 256), (150, "ip", 97), (300, "mpls", 1024),
                                                        (64, "bridge", 500)])
def test_flow_cache_identical_records_with_either_kernel(max_flows, key_fields, batch):
    batches = sample_batches(batch)
    py = meter(IMPLS["python"], batches, max_flows, key_fields)
    assert py[1]["flows_created"] > 0 and py[1]["packets"] > 19_000
    assert (py[1]["expired_full"] > 0) == (max_flows < 1000)  # small caches evict, churning the table
    assert py == meter(IMPLS["compiled"], batches, max_flows, key_fields)
