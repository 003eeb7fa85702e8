"""Video monitoring (MDI, RFC 4445): DF / MLR / MRV against hand-computed examples and an independent
per-packet implementation, continuity counter and RTP loss counting, the engine on synthetic MPEG-TS
flows through a real App (intervals, history, ageing, the flow limit, alarms, bad input), and the show
commands."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from structlog.testing import capture_logs

from flowplane.batch import DIR_OUTPUT, PacketBatch
from flowplane.plugins.video_monitoring import commands
from flowplane.plugins.video_monitoring.engine import PLUGIN_OBJECT
from flowplane.plugins.video_monitoring.mdi import cc_losses, delay_factor, rtp_losses
from flowplane.testing import build_app, write_pcap

from frames import ETH_IPV4, ETH_IPV6, UDP, eth, ipv4, ipv6, udp

NS = 1_000_000_000
TS = 188
PCAP = ""  # an empty capture file: the interface 'cap' the tests feed batches for


@pytest.fixture(autouse=True, scope="module")
def _pcap(tmp_path_factory):
    global PCAP
    PCAP = write_pcap(str(tmp_path_factory.mktemp("vm") / "empty.pcap"), [])


# -- an independent reading of RFC 4445 -----------------------------------------------------------
def df_reference(arrivals: list[tuple[float, int]], mr: float) -> float:
    """DF in ms, one packet at a time as RFC 4445 section 4.1 defines it (times in s, sizes in bytes,
    MR in bytes/s, times taken from the interval's first packet)."""
    received = 0.0
    vb_min = vb_max = None
    t0 = arrivals[0][0]
    for t, s in arrivals:
        drained = mr * (t - t0)
        pre = received - drained
        post = pre + s
        vb_min = pre if vb_min is None else min(vb_min, pre)
        vb_max = post if vb_max is None else max(vb_max, post)
        received += s
    return (vb_max - vb_min) / mr * 1000.0


@pytest.mark.parametrize("arrivals, mr, expected_ms", [
    ([(0.0, 100), (0.1, 100), (0.2, 100), (0.3, 100)], 1000.0, 100.0),  # perfectly paced: one packet's worth
    ([(0.0, 100), (0.0, 100), (0.0, 100)], 1000.0, 300.0),  # a burst of three
    ([(0.0, 100), (0.3, 100)], 1000.0, 300.0),  # a gap: pre(1) = 100 - 300 = -200, max post = 100
    ([(0.0, 1316), (0.5, 1316)], 1316.0, 1500.0),  # pre(1) = 1316 - 658 = 658, post(1) = 1974, min pre = 0
])
def test_delay_factor_hand_computed(arrivals, mr, expected_ms):
    t = np.array([int(a * NS) for a, _ in arrivals], dtype=np.int64)
    s = np.array([b for _, b in arrivals], dtype=np.int64)
    assert delay_factor(t, s, mr) == pytest.approx(expected_ms)
    assert df_reference(arrivals, mr) == pytest.approx(expected_ms)


def test_delay_factor_matches_the_per_packet_reference_on_jittered_streams():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 400))
        gaps = rng.exponential(0.0035, n)
        gaps[0] = 0
        t = np.cumsum(gaps)
        s = rng.choice([188, 1316, 1328], n)
        mr = float(rng.uniform(1e5, 1e6))
        ours = delay_factor((t * NS).astype(np.int64), s, mr)
        ref = df_reference([(float(round(a * NS)) / NS, int(b)) for a, b in zip(t, s)], mr)
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-5)


# -- continuity counters ------------------------------------------------------------------------
def _cc(seq: list[int], disc: list[int] | None = None, state: dict | None = None, key: int = 1):
    n = len(seq)
    d = np.zeros(n, dtype=bool) if disc is None else np.isin(np.arange(n), disc)
    return cc_losses(np.full(n, key, dtype=np.int64), np.array(seq), d, {} if state is None else state)


def test_cc_gap_duplicate_wrap_and_discontinuity():
    lost, dup = _cc([0, 1, 2, 5, 6])
    assert lost.tolist() == [0, 0, 0, 2, 0] and not dup.any()
    lost, dup = _cc([3, 3, 4])
    assert lost.sum() == 0 and dup.tolist() == [False, True, False]
    lost, _ = _cc([14, 15, 0, 1])
    assert lost.sum() == 0
    lost, _ = _cc([14, 15, 1])  # 0 missing across the wrap
    assert lost.tolist() == [0, 0, 1]
    lost, _ = _cc([4, 9, 10], disc=[1])  # discontinuity_indicator: no loss counted
    assert lost.sum() == 0


def test_cc_state_carries_across_batches_per_pid():
    state: dict = {}
    keys = np.array([1, 2, 1, 2], dtype=np.int64)
    lost, _ = cc_losses(keys, np.array([0, 7, 1, 8]), np.zeros(4, dtype=bool), state)
    assert lost.sum() == 0 and state == {1: 1, 2: 8}
    lost, _ = cc_losses(keys, np.array([3, 9, 4, 10]), np.zeros(4, dtype=bool), state)
    assert lost.tolist() == [1, 0, 0, 0]  # PID key 1 lost cc 2; key 2 continues


def test_cc_undercounts_bursts_of_sixteen_as_the_counter_allows():
    lost, _ = _cc([0, 1])  # 16 lost between them would look the same
    assert lost.sum() == 0
    lost, _ = _cc([0, 2])
    assert lost.sum() == 1


# -- RTP -----------------------------------------------------------------------------------------
def test_rtp_losses_gap_wrap_and_reordering():
    assert rtp_losses(np.array([1, 2, 5]), None)[:2] == (2, 0)
    assert rtp_losses(np.array([65534, 65535, 0, 1]), None)[:2] == (0, 0)
    lost, late, last = rtp_losses(np.array([5, 7, 6]), 4)  # out of order counts as lost
    assert (lost, late) == (1, 1)
    assert rtp_losses(np.array([0, 1]), 65535)[:2] == (0, 0)
    assert rtp_losses(np.array([3]), 65535)[:2] == (3, 0)  # 0, 1, 2 lost across the wrap


# -- synthetic streams through the App ------------------------------------------------------------
def ts_packet(pid: int, cc: int, *, afc: int = 1, tei: bool = False, scrambled: int = 0, disc: bool = False) -> bytes:
    b1 = (0x80 if tei else 0) | (pid >> 8)
    head = bytes([0x47, b1, pid & 0xFF, scrambled << 6 | afc << 4 | cc])
    if afc & 2:
        af = bytes([1, 0x80 if disc else 0])
        return head + af + b"\xff" * (TS - 4 - len(af))
    return head + bytes(TS - 4)


class Stream:
    """A CBR MPEG-TS-over-UDP sender: 7 TS packets per datagram on PIDs 256 (video) and 8191 (null)."""

    def __init__(self, *, sport=40000, dport=5000, src="10.0.0.1", dst="232.1.1.1", rtp=False, v6=False) -> None:
        self.cc = {256: 0, 257: 0}
        self.sport, self.dport, self.src, self.dst, self.rtp, self.v6 = sport, dport, src, dst, rtp, v6
        self.seq = 1000
        self.sent_ts = 0

    def payload(self, drop_cc: int = 0) -> bytes:
        out = b""
        for i in range(7):
            pid = 8191 if i == 6 else (256 if i % 2 == 0 else 257)
            if pid == 8191:
                out += ts_packet(pid, 0)
                continue
            out += ts_packet(pid, self.cc[pid])
            self.cc[pid] = (self.cc[pid] + 1) & 15
        self.sent_ts += 7
        if self.rtp:
            out = struct.pack(">BBHII", 0x80, 33, self.seq & 0xFFFF, 0, 0x1234) + out
            self.seq += 1
        return out

    def frame(self, payload: bytes) -> bytes:
        u = udp(self.sport, self.dport, payload)
        if self.v6:
            return eth(ETH_IPV6, ipv6(UDP, u, src=self.src, dst=self.dst))
        return eth(ETH_IPV4, ipv4(UDP, u, src=self.src, dst=self.dst))


def config(rate: str = "rate media: 2972400", extra: str = "", flows: str = "", top: str = "") -> str:
    flows = flows or """\
      input-flows video:
        destination-port: 5000
        template: t1
"""
    return f"""\
interfaces:
  cap:
    source: pcap
    file: {PCAP}
    family inet:
{flows}services:
  video-monitoring:
{top}    templates t1:
      {rate}
{extra}"""


def make(cfg: str):
    app = build_app(cfg)
    return app, app.pm.get_plugin(PLUGIN_OBJECT)


def feed(app, frames: list[bytes], ts: list[int], *, batch: int = 64, direction: int = 0) -> None:
    iid = app.interfaces.id("cap")
    for i in range(0, len(frames), batch):
        app.process(PacketBatch.from_frames(frames[i:i + batch], ts=ts[i:i + batch], iface=iid, direction=direction))


def paced(stream: Stream, seconds: float, rate_bps: float, *, t0: int = 10 * NS, jitter=None, drop=()):
    """Frames and timestamps of a paced stream; *drop*: datagram numbers lost on the way."""
    size = 7 * TS
    gap = size * 8 / rate_bps
    n = int(seconds / gap)
    frames, ts = [], []
    for i in range(n):
        p = stream.payload()
        if i in drop:
            continue
        t = t0 + int(round((i * gap + (jitter(i) if jitter else 0.0)) * NS))
        frames.append(stream.frame(p))
        ts.append(t)
    return frames, ts


def test_paced_stream_df_mlr_mrv_against_the_reference():
    app, mon = make(config())
    s = Stream()
    rate = 2972400.0
    frames, ts = paced(s, 3.0, rate)
    feed(app, frames, ts)
    mon.tick(ts[-1] + 5 * NS)
    [flow] = mon.flow_list(detail=True)
    hist = flow["history"]
    assert len(hist) >= 2
    for rec in hist:
        sel = [(t, 1316) for t in ts if rec["start_ns"] <= t < rec["end_ns"]]
        ref = df_reference([((t - sel[0][0]) / NS, b) for t, b in sel], rate / 8)
        assert rec["df_ms"] == pytest.approx(ref, rel=1e-6)
        assert rec["df_ms"] == pytest.approx(1316 / (rate / 8) * 1000, rel=0.02)  # one datagram's worth
        assert rec["mlr"] == 0 and rec["lost_packets"] == 0
        assert abs(rec["mrv_percent"]) < 1.0
    assert flow["errors"]["null_packets"] == len(frames)
    assert flow["media_packets"] == 7 * len(frames)


def test_loss_from_cc_counts_ts_packets_and_raises_and_clears_an_alarm():
    extra = """\
      media-loss-rate:
        threshold warning packet-count: 1
"""
    app, mon = make(config(extra=extra))
    s = Stream()
    drops = {50, 51, 52, 100}
    frames, ts = paced(s, 3.0, 2972400.0, drop=drops)
    with capture_logs() as logs:
        feed(app, frames, ts)
        mon.tick(ts[-1] + 5 * NS)
    [flow] = mon.flow_list(detail=True)
    # each lost datagram carried 3 + 3 payload TS packets on the two PIDs (null packets are invisible to CC)
    assert flow["errors"]["cc_lost"] == 6 * len(drops)
    first = flow["history"][0]
    assert first["lost_packets"] == 6 * len(drops) and first["mlr"] == 6 * len(drops)
    assert first["expected_packets"] == pytest.approx(2972400 / 1504)
    events = [e for e in logs if e["event"] == "video_monitoring_alarm"]
    assert [(e["metric"], e["action"], e["severity"]) for e in events] == [("mlr", "raised", "warning"),
                                                                          ("mlr", "cleared", "warning")]
    assert events[0]["log_level"] == "warning"
    assert "MDI MLR alarm raised (warning)" in events[0]["message"]
    assert mon.stats()["alarms"]["mlr"]["warning"] == 1


def test_rtp_sequence_gaps_times_ts_per_datagram():
    app, mon = make(config())
    s = Stream(rtp=True)
    frames, ts = paced(s, 2.5, 2972400.0, drop={10, 11, 200})
    feed(app, frames, ts)
    mon.tick(ts[-1] + 5 * NS)
    [flow] = mon.flow_list(detail=True)
    assert flow["rtp"] and flow["errors"]["rtp_lost"] == 3
    assert sum(h["lost_packets"] for h in flow["history"]) == 3 * 7
    assert flow["errors"]["cc_lost"] == 3 * 6


def test_jitter_raises_df_and_the_alarm_follows_levels():
    extra = """\
      delay-factor threshold:
        info: 10
        warning: 30
        critical: 60
"""
    app, mon = make(config(extra=extra))
    s = Stream()
    # second 0: paced; second 1: a delay line holds what arrives in the first 40 ms of every 100 ms and
    # releases it at once (bursts: DF ~ 40 ms + one datagram); second 2: paced again
    gap = 1316 * 8 / 2972400.0

    def hold(i: int) -> float:
        t = i * gap
        if 1.0 <= t < 2.0 and (t % 0.1) < 0.04:
            return (t // 0.1) * 0.1 + 0.04 - t
        return 0.0

    frames, ts = paced(s, 3.0, 2972400.0, jitter=hold)
    order = np.argsort(ts, kind="stable")
    frames, ts = [frames[i] for i in order], [ts[i] for i in order]
    with capture_logs() as logs:
        feed(app, frames, ts)
        mon.tick(ts[-1] + 5 * NS)
    hist = mon.flow_list(detail=True)[0]["history"]
    assert hist[0]["df_ms"] < 10 and 40 < hist[1]["df_ms"] < 50 and hist[2]["df_ms"] < 10
    ev = [(e["action"], e["severity"]) for e in logs if e["event"] == "video_monitoring_alarm"]
    assert ev[0] == ("raised", "warning") and ev[-1][0] == "cleared"


def test_computed_rate_without_configured_rate():
    app, mon = make(config(rate=""))
    s = Stream()
    frames, ts = paced(s, 2.2, 1_000_000.0)
    feed(app, frames, ts)
    mon.tick(ts[-1] + 5 * NS)
    rec = mon.flow_list(detail=True)[0]["history"][0]
    assert rec["mrv_percent"] is None and rec["expected_packets"] is None
    assert rec["media_rate_used_bps"] == pytest.approx(rec["rate_bps"])
    assert rec["df_ms"] == pytest.approx(1316 * 8 / 1e6 * 1000, rel=0.05)


def test_layer3_rate_gives_the_expected_counts():
    app, mon = make(config(rate="rate layer3: 282", extra="      media-packets-count-in-layer3: 7\n"))
    t = mon.cfg.templates["t1"]
    assert t.expected_media_pps == 282 * 7 and t.media_rate_bps == 282 * 7 * 1504


def test_history_is_sixty_intervals_and_summary_tracks_all():
    app, mon = make(config())
    s = Stream()
    frames, ts = [], []
    for sec in range(70):  # 3 datagrams a second is enough for a record
        for k in range(3):
            frames.append(s.frame(s.payload()))
            ts.append(10 * NS + sec * NS + k * 10_000_000)
    feed(app, frames, ts, batch=256)
    mon.tick(ts[-1] + 2 * NS)
    f = mon.flow_list(detail=True)[0]
    assert f["intervals"] == 70 and len(f["history"]) == 60
    assert f["history"][0]["interval"] == 10


def test_inactive_timeout_and_flow_limit_evicts_the_least_recently_seen():
    app, mon = make(config(top="    maximum-flows: 10\n"))
    frames, ts = [], []
    for i in range(1000):  # a thousand short flows
        s = Stream(sport=20000 + i)
        frames.append(s.frame(s.payload()))
        ts.append(10 * NS + i * 1000)
    feed(app, frames, ts, batch=128)
    st = mon.stats()
    assert st["active_flows"] == 10 and st["inserted_flows"] == 1000 and st["evicted_flows"] == 990
    assert sorted(f["source_port"] for f in mon.flow_list()) == list(range(20990, 21000))
    mon.tick(ts[-1] + 31 * NS)
    assert mon.stats()["active_flows"] == 0 and mon.stats()["deleted_flows"] == 10
    assert len(mon.cc_state) <= 16 * 0 + 1024


def test_garbage_truncated_and_odd_ts_are_counted_never_a_crash():
    app, mon = make(config())
    rng = np.random.default_rng(3)
    s = Stream()
    frames = [s.frame(bytes(rng.integers(0, 256, int(rng.integers(0, 1400)), dtype=np.uint8))) for _ in range(300)]
    frames = [f for f in frames if f[42:43] != b"\x47"]
    good = s.payload()
    frames += [s.frame(good[:500])]  # two whole TS packets and a truncated one
    bad_sync = bytearray(s.payload())
    bad_sync[188] = 0x00
    frames += [s.frame(bytes(bad_sync))]
    odd = ts_packet(300, 0, tei=True) + ts_packet(301, 0, scrambled=2) + ts_packet(256, 5, afc=2) + \
        ts_packet(256, 9, afc=3, disc=True)
    frames += [s.frame(odd)]
    frames += [eth(ETH_IPV4, ipv4(UDP, udp(1, 5000, b"\x47")[:5]))]  # a cut UDP header
    feed(app, frames, [10 * NS + i for i in range(len(frames))])
    st = mon.stats()
    drops = {d["reason"]: d["count"] for d in st["drops"]}
    assert drops["not-mpeg-ts"] == len(frames) - 4 and drops["ts-sync-lost"] == 1
    e = mon.flow_list(detail=True)[0]["errors"]
    assert e["truncated_ts"] == 1 and e["sync_errors"] == 1 and e["tei"] == 1 and e["scrambled"] == 1


def test_selectors_interface_direction_prefix_and_family():
    flows = """\
      output-flows out:
        source-address: 10.9.0.0/16
        template: t1
      input-flows any:
        template: t1
"""
    app, mon = make(config(flows=flows))
    a, b = Stream(src="10.9.1.1", dport=6000), Stream(src="10.8.1.1", dport=6001)
    frames = [a.frame(a.payload()), b.frame(b.payload())]
    feed(app, frames, [10 * NS, 10 * NS + 1], direction=DIR_OUTPUT)
    feed(app, frames, [10 * NS + 2, 10 * NS + 3])
    names = sorted((f["name"], f["direction"], f["source_address"]) for f in mon.flow_list())
    assert names == [("any", "input", "10.8.1.1"), ("any", "input", "10.9.1.1"), ("out", "output", "10.9.1.1")]


def test_ipv6_flows():
    cfg = config(flows="      input-flows v: {template: t1}\n").replace("family inet:", "family inet6:")
    app, mon = make(cfg)
    s = Stream(src="2001:db8::1", dst="ff3e::1234", v6=True)
    frames, ts = paced(s, 1.5, 2972400.0)
    feed(app, frames, ts)
    mon.tick(ts[-1] + 5 * NS)
    [f] = mon.flow_list(detail=True)
    assert f["flow"] == "[2001:db8::1]:40000 -> [ff3e::1234]:5000" and f["history"][0]["mlr"] == 0


def test_show_commands_text_and_json():
    app, mon = make(config())
    s = Stream()
    frames, ts = paced(s, 2.5, 2972400.0)
    feed(app, frames, ts)
    stats = commands.show_stats(app, ["fpc-slot", "0"])
    text = commands.format_stats(stats)
    assert "Active flows: 1" in text and "DF alarms: info 0, warning 0, critical 0" in text
    flows = commands.show_flows(app, [])
    assert "10.0.0.1:40000 -> 232.1.1.1:5000" in commands.format_flows(flows)
    detail = commands.show_flows(app, ["detail"])
    out = commands.format_flows(detail)
    assert "Template: t1" in out and "Last interval: MDI" in out and "Errors: CC lost 0" in out
    assert app.registries.commands  # registered through the hook
    commands.clear_stats(app, [])
    assert mon.stats()["packets"] == 0


# -- configuration ---------------------------------------------------------------------------------
def _errors(text: str) -> list[str]:
    from flowplane.testing import config_from

    app = build_app(text, configure=False)
    return app.validate(config_from(text, path="v.yaml"))


def test_the_example_config_checks(tmp_path):
    from pathlib import Path

    from flowplane.config import Config

    root = Path(__file__).resolve().parents[2]
    cfg = Config.load(str(root / "etc/examples/video-monitoring.yaml"))
    app = build_app(cfg, configure=False)
    assert app.validate(cfg) == []
    t = {"rate": cfg.get("services", "video-monitoring", "templates", "t1", "rate", "media"),
         "interval": cfg.get("services", "video-monitoring", "templates", "t1", "interval-duration")}
    assert t == {"rate": 2972400, "interval": 1}
    assert cfg.get("interfaces", "eth1", "family", "inet", "input-flows", "video", "destination-port") == 5000


@pytest.mark.parametrize("extra, expect", [
    ("      media-packet-size: 1500\n", "media-packet-size: 1500 bits is not a whole number of bytes"),
    ("      interval-duration: 0\n", "interval-duration: 0 is below the minimum 1"),
    ("      inactive-timeout: 5\n", "inactive-timeout: 5 is below the minimum 30"),
    ("      delay-factor threshold: {warning: 50, critical: 20}\n", "critical threshold 20 is below the warning"),
    ("      media-loss-rate: {threshold: {info: {percent: 1}}}\n",
     "unknown key 'percent' (did you mean 'percentage'?)"),
    ("      media-loss-rate: {threshold: {info: {percentage: 1, packet-count: 2}}}\n", "not both"),
    ("      media-rate-variation: {threshold: {fatal: 1}}\n", "unknown level 'fatal'"),
    ("      media-rate-variation: {disable: maybe}\n", "expected true or false"),
    ("      delay-factr: {}\n", "unknown key 'delay-factr' (did you mean 'delay-factor'?)"),
])
def test_template_errors_name_file_line_and_key_path(extra, expect):
    errors = _errors(config(extra=extra))
    assert any(expect in e for e in errors), errors
    assert all(e.startswith("v.yaml:") for e in errors)


def test_rate_media_and_layer3_are_exclusive():
    errors = _errors(config(rate="rate: {media: 1000, layer3: 10}"))
    assert any("rate: give either 'rate media' or 'rate layer3', not both" in e for e in errors)


def test_flow_errors():
    flows = """\
      input-flows a:
        destination-address: 2001:db8::1
        source-port: 70000
        template: t2
      input-flowz b: {template: t1}
"""
    errors = _errors(config(flows=flows))
    text = "\n".join(errors)
    assert "input-flows a destination-address: '2001:db8::1' is not an IPv4 address (family inet)" in text
    assert "source-port: 70000 exceeds the maximum 65535" in text
    assert "template 't2' is not defined under 'services video-monitoring templates'; defined: t1" in text
    assert "unknown key 'input-flowz' (did you mean 'input-flows'?)" in text
    assert all(":" in e.split(" ")[0] for e in errors)


def test_flow_without_template_and_family_any():
    errors = _errors(config(flows="      input-flows a: {destination-port: 5000}\n"))
    assert any("a flow needs 'template NAME'" in e for e in errors)
    errors = _errors(config(flows="      input-flows a: {template: t1}\n").replace("family inet:", "family any:"))
    assert any("video flows are selected under family inet or inet6" in e for e in errors)


def test_reload_keeps_flows_when_nothing_changed_and_counters_always():
    from flowplane.testing import config_from

    app, mon = make(config())
    s = Stream()
    frames, ts = paced(s, 1.5, 2972400.0)
    feed(app, frames[:200], ts[:200])
    app.apply(app.build_graph(config_from(config())))
    same = app.pm.get_plugin(PLUGIN_OBJECT)
    assert same is not mon and len(same.flows) == 1 and same.stats()["packets"] == 200
    feed(app, frames[200:], ts[200:])
    same.tick(ts[-1] + 5 * NS)
    [f] = same.flow_list(detail=True)
    assert f["packets"] == len(frames) and f["errors"]["cc_lost"] == 0  # CC state carried over too
    app.apply(app.build_graph(config_from(config(rate="rate media: 3000000"))))
    changed = app.pm.get_plugin(PLUGIN_OBJECT)
    assert changed.flows == {} and changed.stats()["packets"] == len(frames)


def test_flows_table():
    from flowplane.plugins.video_monitoring.commands import format_flows

    flow = {"id": 1, "flow": "10.0.0.1:40000 -> 232.1.1.1:5000", "interface": "eth0", "direction": "input",
            "df": {"last": 1.25}, "mlr": {"last": 0.0}, "mrv": {"last": None}, "packets": 1234}
    text = format_flows({"fpc_slot": 0, "detail": False, "flows": [flow]})
    assert text.endswith("\n") and text.splitlines() == [
        "FPC Slot: 0",
        "   Id Flow                                          Interface    Dir      DF(ms)      MLR   MRV(%)"
        "    Packets",
        "    1 10.0.0.1:40000 -> 232.1.1.1:5000              eth0         input      1.25     0.00        -"
        "       1234"]
