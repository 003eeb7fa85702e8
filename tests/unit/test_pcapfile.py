"""pcap / pcapng replay source: every byte, length and timestamp, damage, pacing.

Files are written here with :mod:`struct`, so the expected values are known
exactly.  The corpus files are cross-checked against ``capinfos`` / ``tshark`` in
tests/interop/test_pcapfile_corpus.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct

import numpy as np
import pytest
import trio

from flowplane.batch import LINKTYPE_ETHERNET, LINKTYPE_RAW
from flowplane.interfaces import InterfaceTable
from flowplane.sources import SourceContext, SourceType


def _load_source_module(name: str):
    """Import ``flowplane.plugins.sources.<name>``.

    Fallback: while ``core/plugins.py`` (the plugin manager) shadows the
    ``flowplane.plugins`` package, load the module from its file instead.
    """
    try:
        return importlib.import_module(f"flowplane.plugins.sources.{name}")
    except ModuleNotFoundError:
        path = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "sources", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"_flowplane_source_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


pcapfile = _load_source_module("pcapfile")
PcapSource, validate = pcapfile.PcapSource, pcapfile.validate


# ---------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------
def make_frames(n: int, seed: int = 7) -> list[tuple[bytes, int, int]]:
    """n frames: (bytes, wirelen, ts_ns) with varied sizes, some truncated on capture."""
    rng = np.random.default_rng(seed)
    out = []
    ts = 1_700_000_000_123_456_789
    for i in range(n):
        size = int(rng.integers(14, 300))
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        wirelen = size + (int(rng.integers(1, 1000)) if i % 5 == 0 else 0)
        out.append((body, wirelen, ts))
        ts += int(rng.integers(0, 5_000_000))
    return out


def write_pcap(path, frames, *, bo="<", nanos=False, linktype=1, snaplen=65535, tail=b""):
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    parts = [struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for body, wirelen, ts in frames:
        frac = ts % 1_000_000_000 if nanos else (ts % 1_000_000_000) // 1000
        parts.append(struct.pack(bo + "IIII", ts // 1_000_000_000, frac, len(body), wirelen) + body)
    with open(path, "wb") as f:
        f.write(b"".join(parts) + tail)
    return path


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(bo, btype, body):
    body = _pad(body)
    ln = 12 + len(body)
    return struct.pack(bo + "II", btype, ln) + body + struct.pack(bo + "I", ln)


def ng_option(bo, code, value: bytes):
    return struct.pack(bo + "HH", code, len(value)) + _pad(value)


def ng_shb(bo):
    body = (struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_option(bo, 4, b"flowplane-test")
            + struct.pack(bo + "HH", 0, 0))
    return ng_block(bo, 0x0A0D0D0A, body)


def ng_idb(bo, linktype, snaplen=0, tsresol=None, name=None):
    opts = b""
    if name:
        opts += ng_option(bo, 2, name.encode())
    if tsresol is not None:
        opts += ng_option(bo, 9, bytes([tsresol]))
    if opts:
        opts += struct.pack(bo + "HH", 0, 0)
    return ng_block(bo, 1, struct.pack(bo + "HHI", linktype, 0, snaplen) + opts)


def ts_units(ts_ns: int, tsresol: int | None) -> int:
    if tsresol is None:
        tsresol = 6
    if tsresol & 0x80:
        return (ts_ns << (tsresol & 0x7F)) // 1_000_000_000
    return ts_ns // 10 ** (9 - tsresol)


def units_ns(units: int, tsresol: int | None) -> int:
    if tsresol is None:
        tsresol = 6
    if tsresol & 0x80:
        return (units * 1_000_000_000) >> (tsresol & 0x7F)
    return units * 10 ** (9 - tsresol)


def ng_epb(bo, iface, units, body, wirelen, opts=b""):
    hdr = struct.pack(bo + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(body), wirelen)
    return ng_block(bo, 6, hdr + _pad(body) + opts)


def ng_opb(bo, iface, units, body, wirelen):
    hdr = struct.pack(bo + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(body), wirelen)
    return ng_block(bo, 2, hdr + _pad(body))


def ng_spb(bo, body):
    return ng_block(bo, 3, struct.pack(bo + "I", len(body)) + _pad(body))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def ctx(path, name="replay0", **cfg):
    speed = cfg.pop("ctx_speed", 0.0)
    bs = cfg.pop("ctx_batch", 64)
    return SourceContext(name=name, config={"source": "pcap", "file": str(path), **cfg}, iface_id=3,
                         interfaces=InterfaceTable(), batch_size=bs, speed=speed)


def collect(src: PcapSource):
    """(frames bytes, caplen, wirelen, ts, linktype per packet, iface) over all batches."""
    frames, caps, wls, tss, lts, ifs = [], [], [], [], [], []
    for b in src.batches():
        assert 0 < len(b) <= src.batch_size
        for i in range(len(b)):
            frames.append(bytes(b.frame(i)))
            lts.append(b.linktype)
        caps += b.caplen.tolist()
        wls += b.wirelen.tolist()
        tss += b.ts.tolist()
        ifs += b.iface.tolist()
    return frames, caps, wls, tss, lts, ifs


# ---------------------------------------------------------------------------
# classic pcap
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("bo", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_classic_pcap_exact(tmp_path, bo, nanos):
    frames = make_frames(300)
    p = write_pcap(tmp_path / "t.pcap", frames, bo=bo, nanos=nanos)
    src = PcapSource(ctx(p))
    got, caps, wls, tss, lts, ifs = collect(src)
    assert got == [f[0] for f in frames]
    assert caps == [len(f[0]) for f in frames]
    assert wls == [f[1] for f in frames]
    exp_ts = [f[2] if nanos else f[2] // 1000 * 1000 for f in frames]
    assert tss == exp_ts
    assert set(lts) == {LINKTYPE_ETHERNET} and set(ifs) == {3}
    assert src.counters.drops == {}


def test_zero_copy_view_of_the_file(tmp_path):
    frames = make_frames(10)
    p = write_pcap(tmp_path / "t.pcap", frames, linktype=101)
    src = PcapSource(ctx(p))
    b = next(src.batches())
    assert b.linktype == LINKTYPE_RAW
    assert b.data.base is not None and len(b.data) == os.path.getsize(p)
    assert int(b.offset[0]) == 24 + 16  # absolute offset in the file
    assert b.ts.dtype == np.int64 and b.offset.dtype == np.int64


async def test_run_sends_all_and_counts(tmp_path):
    frames = make_frames(1000)
    p = write_pcap(tmp_path / "t.pcap", frames)
    src = PcapSource(ctx(p, **{"batch-size": 100}))
    send, recv = trio.open_memory_channel(2)
    got = []
    async with trio.open_nursery() as nursery:

        async def drain():
            async for b in recv:
                got.append(b)

        nursery.start_soon(drain)
        async with send:
            await nursery.start(src.run, send)
            while src.counters["batches"] < 10:
                await trio.sleep(0.001)
    assert [len(b) for b in got] == [100] * 10
    assert src.counters["packets"] == 1000
    assert src.counters["bytes"] == sum(f[1] for f in frames)
    assert src.finite is True


def test_header_only_file_gives_no_batches(tmp_path):
    p = write_pcap(tmp_path / "empty.pcap", [])
    src = PcapSource(ctx(p, loop=3))
    assert list(src.batches()) == []
    assert src.counters.drops == {}


def test_truncated_tail_is_counted(tmp_path):
    frames = make_frames(50)
    p = write_pcap(tmp_path / "t.pcap", frames)
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-5])  # last record loses 5 bytes
    src = PcapSource(ctx(p))
    got, *_ = collect(src)
    assert got == [f[0] for f in frames[:-1]]
    assert src.counters.drops[("ingest", "truncated_record")] == 1
    # a partial record header at the end
    write_pcap(p, frames, tail=b"\x01\x02\x03\x04\x05\x06")
    src = PcapSource(ctx(p))
    got, *_ = collect(src)
    assert len(got) == 50 and src.counters.drops[("ingest", "truncated_record")] == 1


def test_bad_caplen_mid_file_is_counted_not_raised(tmp_path):
    frames = make_frames(40)
    p = write_pcap(tmp_path / "t.pcap", frames, snaplen=300)
    raw = bytearray(open(p, "rb").read())
    off = 24
    for body, _, _ in frames[:20]:
        off += 16 + len(body)
    struct.pack_into("<I", raw, off + 8, 5000)  # record 21 claims caplen 5000 > snaplen 300
    open(p, "wb").write(raw)
    src = PcapSource(ctx(p))
    got, *_ = collect(src)
    assert got == [f[0] for f in frames[:20]]
    assert src.counters.drops[("ingest", "bad_record")] == 1


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"\x00\x01\x02\x03" + b"\0" * 40, "bad magic"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)[:20], "truncated pcap header"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), "version"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 100, 1) + struct.pack("<IIII", 1, 0, 200, 200) + b"x" * 200,
         "caplen 200 > snaplen 100"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0, 1) + struct.pack("<IIII", 1, 0, 300000, 300000) + b"x" * 10,
         "caplen 300000"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 1, 0, 100, 100) + b"x" * 10,
         "first record truncated"),
        (ng_shb("<")[:-4] + struct.pack("<I", 999), "block length"),
        (ng_shb("<")[:8] + b"\x11\x22\x33\x44" + ng_shb("<")[12:], "byte-order magic"),
        (ng_shb("<") + ng_idb("<", 1) + ng_epb("<", 5, 0, b"abcd", 4), "interface 5"),
        (ng_shb(">") + ng_idb(">", 1) + ng_epb(">", 0, 0, b"abcd", 4)[:-8], "truncated"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_header_is_a_clear_error(tmp_path, content, words):
    p = tmp_path / "bad.pcap"
    p.write_bytes(content)
    with pytest.raises(ValueError) as ei:
        PcapSource(ctx(p))
    assert str(p) in str(ei.value)
    assert words in str(ei.value)


# ---------------------------------------------------------------------------
# pcapng
# ---------------------------------------------------------------------------
IFACES = [  # (linktype, tsresol option)
    (LINKTYPE_ETHERNET, None),  # default 10^-6
    (LINKTYPE_ETHERNET, 9),  # ns
    (LINKTYPE_RAW, 0x80 | 20),  # 2^-20 s
]


def write_pcapng(path, bo, frames, plan):
    """plan[i] = interface of frame i; returns the expected (bytes, cap, wire, ts_ns, linktype, idb)."""
    parts = [ng_shb(bo), ng_idb(bo, IFACES[0][0], 0, IFACES[0][1], "eth0"),
             ng_block(bo, 0x0BAD0BAD, b"unknown block, skipped"),
             ng_idb(bo, IFACES[1][0], 65535, IFACES[1][1])]
    exp = []
    for i, ((body, wirelen, ts), k) in enumerate(zip(frames, plan)):
        if i == 5:
            parts.append(ng_idb(bo, IFACES[2][0], 0, IFACES[2][1], "tun0"))  # interface defined mid-file
        if i == 7:
            parts.append(ng_block(bo, 5, struct.pack(bo + "III", 0, 0, 0)))  # ISB (statistics): skipped
        units = ts_units(ts, IFACES[k][1])
        opts = ng_option(bo, 2, struct.pack(bo + "I", 1)) + struct.pack(bo + "HH", 0, 0) if i % 3 == 0 else b""
        parts.append(ng_epb(bo, k, units, body, wirelen, opts))
        exp.append((body, len(body), wirelen, units_ns(units, IFACES[k][1]), IFACES[k][0], k))
    path.write_bytes(b"".join(parts))
    return exp


@pytest.mark.parametrize("bo", ["<", ">"])
def test_pcapng_exact_multi_interface(tmp_path, bo):
    frames = make_frames(200, seed=3)
    plan = [0] * 5 + [(i // 7) % 3 if i % 11 else 2 for i in range(5, 200)]
    exp = write_pcapng(tmp_path / "t.pcapng", bo, frames, plan)
    src = PcapSource(ctx(tmp_path / "t.pcapng", ctx_batch=16))
    got, caps, wls, tss, lts, ifs = collect(src)
    assert got == [e[0] for e in exp]
    assert caps == [e[1] for e in exp]
    assert wls == [e[2] for e in exp]
    assert tss == [e[3] for e in exp]
    assert lts == [e[4] for e in exp]  # batches are cut where the link type changes
    names = {0: 3, 1: src.interfaces.id("replay0#1"), 2: src.interfaces.id("replay0#2")}
    assert ifs == [names[e[5]] for e in exp]
    assert src.counters.drops == {}


def test_pcapng_two_sections_simple_and_obsolete_blocks(tmp_path):
    frames = make_frames(6, seed=5)
    le = [ng_shb("<"), ng_idb("<", 1, 0, 9)]
    le += [ng_epb("<", 0, frames[0][2], frames[0][0], frames[0][1])]
    le += [ng_opb("<", 0, frames[1][2], frames[1][0], frames[1][1])]
    le += [ng_spb("<", frames[2][0])]
    # a second section in the other byte order, new interface table
    be = [ng_shb(">"), ng_idb(">", 101, 0, None)]
    be += [ng_epb(">", 0, ts_units(f[2], None), f[0], f[1]) for f in frames[3:]]
    p = tmp_path / "s.pcapng"
    p.write_bytes(b"".join(le + be))
    src = PcapSource(ctx(p))
    got, caps, wls, tss, lts, _ = collect(src)
    assert got == [f[0] for f in frames]
    assert wls == [frames[0][1], frames[1][1], len(frames[2][0])] + [f[1] for f in frames[3:]]
    # SPB has no timestamp: it takes the previous packet's
    assert tss[:3] == [frames[0][2], frames[1][2], frames[1][2]]
    assert tss[3:] == [f[2] // 1000 * 1000 for f in frames[3:]]
    assert lts == [1, 1, 1, 101, 101, 101]


def test_pcapng_truncated_tail_and_lying_block(tmp_path):
    frames = make_frames(30, seed=9)
    p = tmp_path / "t.pcapng"
    write_pcapng(p, "<", frames, [0] * 30)
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])
    src = PcapSource(ctx(p))
    got, *_ = collect(src)
    assert got == [f[0] for f in frames[:-1]]
    assert src.counters.drops == {("ingest", "truncated_record"): 1}
    # block 12's trailer disagrees with its header: stop there, count, no exception
    write_pcapng(p, "<", frames, [0] * 30)
    raw = bytearray(p.read_bytes())
    src0 = PcapSource(ctx(p))
    offsets = np.concatenate([b.offset for b in src0.batches()])
    epb = int(offsets[12]) - 28
    ln = struct.unpack_from("<I", raw, epb + 4)[0]
    struct.pack_into("<I", raw, epb + ln - 4, ln + 4)
    p.write_bytes(raw)
    src = PcapSource(ctx(p))
    got, *_ = collect(src)
    assert got == [f[0] for f in frames[:12]]
    assert src.counters.drops == {("ingest", "bad_record"): 1}


# ---------------------------------------------------------------------------
# pacing (virtual time) and looping
# ---------------------------------------------------------------------------
def spread_frames(n, span_s):
    step = int(span_s * 1e9) // (n - 1)
    t0 = 1_600_000_000_000_000_000
    return [(b"\xaa" * 60, 60, t0 + i * step) for i in range(n)]


async def replay(src):
    """Run *src* to the end while draining its channel; (batches, virtual seconds)."""
    send, recv = trio.open_memory_channel(4)
    got = []
    t0 = trio.current_time()

    async def drain():
        async for b in recv:
            got.append(b)

    async with trio.open_nursery() as outer:
        outer.start_soon(drain)
        async with send:
            async with trio.open_nursery() as nursery:
                await nursery.start(src.run, send)
            elapsed = trio.current_time() - t0
    return got, elapsed


@pytest.mark.parametrize("speed, expected", [(1.0, 10.0), (2.0, 5.0), (0.5, 20.0)])
async def test_speed_paces_on_packet_time(tmp_path, autojump_clock, speed, expected):
    p = write_pcap(tmp_path / "s.pcap", spread_frames(1001, 10.0), nanos=True)
    src = PcapSource(ctx(p, speed=speed, ctx_batch=256))
    got, elapsed = await replay(src)
    assert elapsed == pytest.approx(expected, abs=1e-6)
    assert sum(len(b) for b in got) == 1001
    hold = pcapfile.HOLD_NS * speed  # no packet waits longer than ~10 ms of real time
    assert all(int(b.ts[-1] - b.ts[0]) <= hold for b in got)


async def test_ctx_speed_overrides_config(tmp_path, autojump_clock):
    p = write_pcap(tmp_path / "s.pcap", spread_frames(101, 10.0), nanos=True)
    _, elapsed = await replay(PcapSource(ctx(p, speed=1.0, ctx_speed=4.0)))
    assert elapsed == pytest.approx(2.5, abs=1e-6)
    _, elapsed = await replay(PcapSource(ctx(p, speed=0)))
    assert elapsed == 0


async def test_pacing_cuts_batches_at_gaps(tmp_path, autojump_clock):
    t0 = 1_600_000_000_000_000_000
    frames = [(b"x" * 60, 60, t0 + i * 1000) for i in range(50)]
    frames += [(b"y" * 60, 60, t0 + 3_000_000_000 + i * 1000) for i in range(50)]
    p = write_pcap(tmp_path / "g.pcap", frames, nanos=True)
    send, recv = trio.open_memory_channel(100)
    src = PcapSource(ctx(p, speed=1.0, ctx_batch=256))
    start = trio.current_time()
    times = []
    async with trio.open_nursery() as nursery:
        await nursery.start(src.run, send)

        async def watch():
            async for b in recv:
                times.append((trio.current_time() - start, len(b)))
                if sum(n for _, n in times) == 100:
                    return

        nursery.start_soon(watch)
    assert times[0][1] == 50 and times[0][0] == pytest.approx(49e-6, abs=1e-6)
    assert times[1][1] == 50 and times[1][0] == pytest.approx(3.0 + 49e-6, abs=1e-6)


def test_loop_replays_with_increasing_time(tmp_path):
    frames = make_frames(100, seed=11)
    p = write_pcap(tmp_path / "l.pcap", frames, nanos=True)
    src = PcapSource(ctx(p, loop=3))
    got, _, _, tss, _, _ = collect(src)
    assert got == [f[0] for f in frames] * 3
    assert all(b > a for a, b in zip(tss, tss[1:]) if b != a) and tss == sorted(tss)
    span = frames[-1][2] - frames[0][2]
    assert tss[100] - tss[0] == span + span // 99


# ---------------------------------------------------------------------------
# config validation and registration
# ---------------------------------------------------------------------------
def test_validate(tmp_path):
    good = write_pcap(tmp_path / "ok.pcap", make_frames(3))
    path = ("interfaces", "replay0")
    assert validate("replay0", {"source": "pcap", "file": str(good), "speed": 1.5, "loop": 2}, path) == []
    issues = validate("replay0", {"source": "pcap"}, path)
    assert [i.path for i in issues] == [path + ("file",)] and "missing" in issues[0].message
    issues = validate("replay0", {"file": str(tmp_path / "nope.pcap")}, path)
    assert issues[0].path == path + ("file",) and "does not exist" in issues[0].message
    (tmp_path / "text.pcap").write_text("hello world")
    assert "not a pcap" in validate("r", {"file": str(tmp_path / "text.pcap")}, path)[0].message
    issues = validate("replay0", {"file": str(good), "speed": "fast", "loop": 1.5, "batch-size": 0}, path)
    assert [i.path[-1] for i in issues] == ["speed", "loop", "batch-size"]
    assert validate("r", {"file": str(good), "speed": -1}, path)[0].path == path + ("speed",)
    assert validate("r", {"file": str(good), "loop": True}, path)[0].path == path + ("loop",)
    if os.geteuid() != 0:  # root reads anything
        unreadable = write_pcap(tmp_path / "u.pcap", [])
        os.chmod(unreadable, 0)
        assert "not readable" in validate("r", {"file": str(unreadable)}, path)[0].message


def test_factory_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="file"):
        PcapSource(SourceContext(name="r", config={"source": "pcap"}, iface_id=1, interfaces=InterfaceTable()))


def test_registered_through_hookimpl():
    got = {}
    pcapfile.flowplane_register_sources(lambda name, item: got.__setitem__(name, item))
    st = got["pcap"]
    assert isinstance(st, SourceType) and st.name == "pcap"
    assert st.factory is PcapSource and st.validate is validate
    assert set(st.keys) == {"file", "speed", "loop", "batch-size"}
    assert not st.capabilities
