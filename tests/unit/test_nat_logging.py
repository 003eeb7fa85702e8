"""NAT event logging: ctnetlink parsing (and malformed input), classification, the RFC 8158
IPFIX / v9 encoder and its numberings, syslog lines, ``services jflow-log`` validation, the
engine's counters and ``show services nat-logging statistics``."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowplane.api import ConfigError
from flowplane.plugins.nat_logging import netlink as nl
from flowplane.plugins.nat_logging.encoder import LAYOUTS, TEMPLATE_IDS, NatEncoder, NatEncoderOptions, encoder_type
from flowplane.plugins.nat_logging.engine import PLUGIN_OBJECT
from flowplane.plugins.nat_logging.events import (
    DNAT,
    NAT44_CREATE,
    NAT44_DELETE,
    NONE,
    NUMBERINGS,
    SNAT,
    NatEvent,
    classify,
    translation,
)
from flowplane.plugins.nat_logging.syslog import SyslogEncoder, format_message
from flowplane.testing import show

ROOT = Path(__file__).resolve().parents[2]
V4 = socket.AF_INET
V6 = socket.AF_INET6


def snat_msg(kind="new", sport=40000, post_port=50001, ct_id=7, **kw) -> nl.CtMessage:
    return nl.CtMessage(kind, nl.Tuple(V4, "192.0.2.2", "198.51.100.2", 17, sport, 9000),
                        nl.Tuple(V4, "198.51.100.2", "198.51.100.1", 17, 9000, post_port), ct_id=ct_id,
                        status=nl.IPS_SRC_NAT, **kw)


# -- netlink -----------------------------------------------------------------------------------------
def test_a_kernel_message_parses_back_to_what_was_built():
    msg = snat_msg(zone=3, mark=9, start_ns=1_700_000_000_123_456_789)
    [got], done, err = nl.messages(nl.build_ct(msg))
    assert (got.kind, got.orig, got.reply, got.ct_id, got.zone, got.mark, got.start_ns) == \
        ("new", msg.orig, msg.reply, 7, 3, 9, msg.start_ns)
    assert not done and not err
    v6 = nl.CtMessage("destroy", nl.Tuple(V6, "2001:db8::2", "2001:db8:1::2", 6, 1234, 80),
                      nl.Tuple(V6, "2001:db8:1::2", "2001:db8:1::1", 6, 80, 5555), ct_id=1)
    update = snat_msg(kind="update")
    got = nl.messages(nl.build_ct(v6) + nl.build_ct(update))[0]
    assert [(m.kind, m.orig, m.reply) for m in got] == [("destroy", v6.orig, v6.reply), ("update", update.orig,
                                                                                        update.reply)]


def test_dump_done_and_error_messages():
    done = nl.NLMSGHDR.pack(20, nl.NLMSG_DONE, nl.NLM_F_MULTI, 1, 0) + b"\0" * 4
    err = nl.NLMSGHDR.pack(20, nl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1)
    assert nl.messages(done)[1:] == (True, 0)
    assert nl.messages(err)[1:] == (False, 1)
    req = nl.dump_request(5)
    ln, typ, flags, seq, _ = nl.NLMSGHDR.unpack_from(req)
    assert (ln, typ, flags & nl.NLM_F_DUMP, seq) == (len(req), nl.CT_GET, nl.NLM_F_DUMP, 5)


@pytest.mark.parametrize("cut", [4, 16, 20, 30, 44, 60, 90])
def test_truncated_and_corrupt_messages_are_counted_not_raised(cut):
    raw = bytearray(nl.build_ct(snat_msg()))
    stats: dict = {}
    msgs, _, _ = nl.messages(bytes(raw[:cut]), stats=stats)
    assert msgs == []
    # a header that claims the full length over a body cut short
    body = raw[:cut] if cut > 16 else raw
    struct.pack_into("=I", body, 0, len(body))
    msgs, _, _ = nl.messages(bytes(body), stats=stats)
    assert len(msgs) <= 1


def test_an_attribute_overrunning_its_message_is_malformed():
    raw = bytearray(nl.build_ct(snat_msg()))
    struct.pack_into("=H", raw, nl.NLMSGHDR.size + nl.NFGENMSG.size, 0xFFF0)  # first attribute length
    stats: dict = {}
    assert nl.messages(bytes(raw), stats=stats)[0] == [] and stats["malformed"] == 1
    good = nl.build_ct(snat_msg(ct_id=8))
    msgs, _, _ = nl.messages(bytes(raw) + good, stats=stats)  # the next message still parses
    assert [m.ct_id for m in msgs] == [8]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 300), st.integers(0, 255))
def test_random_bytes_never_raise(junk, pos, byte):
    nl.messages(junk, stats={})
    raw = bytearray(nl.build_ct(snat_msg(start_ns=5, stop_ns=9)))
    raw[pos % len(raw)] = byte
    nl.messages(bytes(raw), stats={})


# -- classification ----------------------------------------------------------------------------------------
def test_snat_dnat_none_and_the_post_nat_fields():
    ev = classify(snat_msg(start_ns=1_000_000_123_000_000), 0)
    assert ev.kind == NAT44_CREATE and ev.translation == SNAT and ev.time_ms == 1_000_000_123
    assert (ev.src, ev.sport, ev.post_src, ev.post_sport, ev.post_dst, ev.post_dport) == \
        ("192.0.2.2", 40000, "198.51.100.1", 50001, "198.51.100.2", 9000)
    assert ev.realm == 1 and ev.layout == "nat44"
    dnat = nl.CtMessage("destroy", nl.Tuple(V4, "198.51.100.9", "198.51.100.1", 6, 3333, 80),
                        nl.Tuple(V4, "192.0.2.10", "198.51.100.9", 6, 8080, 3333), stop_ns=2_000_000)
    ev = classify(dnat, 0)
    assert ev.kind == NAT44_DELETE and translation(dnat) == DNAT and ev.realm == 2 and ev.time_ms == 2
    assert (ev.post_dst, ev.post_dport) == ("192.0.2.10", 8080)
    plain = nl.CtMessage("new", nl.Tuple(V4, "192.0.2.2", "192.0.2.3", 17, 1, 2),
                         nl.Tuple(V4, "192.0.2.3", "192.0.2.2", 17, 2, 1))
    assert translation(plain) == NONE and classify(plain, 0) is None
    assert classify(plain, 5_000_000, log_no_nat=True).time_ms == 5
    assert classify(snat_msg(kind="update"), 0) is None


def test_icmp_and_ipv6_and_nat64_layouts():
    icmp = nl.CtMessage("new", nl.Tuple(V4, "192.0.2.2", "198.51.100.2", 1, 77, 0),
                        nl.Tuple(V4, "198.51.100.2", "198.51.100.1", 1, 78, 0))
    ev = classify(icmp, 0)
    assert ev.translation == SNAT and (ev.sport, ev.post_sport, ev.post_dport) == (77, 78, 0)
    v6 = nl.CtMessage("new", nl.Tuple(V6, "2001:db8::2", "2001:db8:1::2", 17, 1, 2),
                      nl.Tuple(V6, "2001:db8:1::2", "2001:db8:1::1", 17, 2, 1))
    assert classify(v6, 0).layout == "nat66"
    n64 = nl.CtMessage("new", nl.Tuple(V6, "2001:db8::2", "64:ff9b::c633:6402", 17, 1, 2),
                       nl.Tuple(V4, "198.51.100.2", "198.51.100.1", 17, 2, 1))
    ev = classify(n64, 0)
    assert ev.kind == "nat64-session-create" and ev.layout == "nat64"


# -- encoder ---------------------------------------------------------------------------------------------
def _events(n: int, kind=NAT44_CREATE) -> list[NatEvent]:
    return [NatEvent(kind, SNAT, 1_700_000_000_000 + i, 17, "192.0.2.2", 40000 + i, "198.51.100.2", 9000,
                     "198.51.100.1", 50000 + i, "198.51.100.2", 9000, zone=2) for i in range(n)]


def _sets(msg: bytes, head: int) -> list[tuple[int, bytes]]:
    out, off = [], head
    while off < len(msg):
        sid, ln = struct.unpack_from(">HH", msg, off)
        out.append((sid, msg[off + 4:off + ln]))
        off += ln
    return out


def test_ipfix_templates_then_records_with_rfc8158_numbering():
    enc = NatEncoder(NatEncoderOptions(version=10, observation_domain_id=42))
    msgs = enc.encode(_events(3) + _events(1, NAT44_DELETE), 1_700_000_000_000_000_000)
    assert len(msgs) == 2
    ver, ln, t, seq, od = struct.unpack_from(">HHIII", msgs[0])
    assert (ver, ln, od, seq) == (10, len(msgs[0]), 42, 0)
    [(sid, body)] = _sets(msgs[0], 16)
    assert sid == 2
    tid, count = struct.unpack_from(">HH", body)
    fields = [struct.unpack_from(">HH", body, 4 + 4 * i) for i in range(count)]
    assert tid == TEMPLATE_IDS["nat44"] and tuple(fields) == LAYOUTS["nat44"]
    assert [ie for ie, _ in fields][:5] == [323, 230, 234, 8, 225]
    ver, ln, t, seq, od = struct.unpack_from(">HHIII", msgs[1])
    [(sid, body)] = _sets(msgs[1], 16)
    rec = sum(n for _, n in LAYOUTS["nat44"])
    assert sid == 256 and len(body) == 4 * rec and seq == 0
    assert [body[i * rec + 8] for i in range(4)] == [4, 4, 4, 5]  # natEvent after the 8-byte time
    assert socket.inet_ntoa(body[17:21]) == "198.51.100.1"
    assert enc.sequence == 4
    assert enc.encode(_events(1), 1_700_000_001_000_000_000)[0][4:8] != b""  # no template due: data only
    assert len(enc.encode(_events(1), 1_700_000_002_000_000_000)) == 1


@pytest.mark.parametrize("numbering,values", [("junos", (1, 2, 4, 5)), ("cisco-nel", (1, 2, 1, 2)),
                                              ("rfc8158", (4, 5, 6, 7))])
def test_numberings(numbering, values):
    assert tuple(NUMBERINGS[numbering][k] for k in ("nat44-session-create", "nat44-session-delete",
                                                    "nat64-session-create", "nat64-session-delete")) == values
    enc = NatEncoder(NatEncoderOptions(numbering=numbering))
    data = enc.encode(_events(1, NAT44_DELETE), 0)[1]
    assert data[16 + 4 + 8] == values[1]


def test_v9_header_padding_mtu_split_and_refresh_by_packets():
    enc = NatEncoder(NatEncoderOptions(version=9, observation_domain_id=5, mtu=576, refresh_packets=3))
    msgs = enc.encode(_events(40), 10**18)
    ver, count, _up, _secs, seq, src = struct.unpack_from(">HHIIII", msgs[0])
    assert (ver, count, seq, src) == (9, 3, 0, 5) and _sets(msgs[0], 20)[0][0] == 0
    data = msgs[1:]
    assert all(len(m) <= 576 - 28 for m in data)
    total = 0
    for i, m in enumerate(data):
        ver, count, _up, _secs, seq, _ = struct.unpack_from(">HHIIII", m)
        assert seq == i + 1 and all(len(b) % 4 == 0 for _, b in _sets(m, 20))
        total += count
    assert total == 40
    later = enc.encode(_events(1), 10**18)
    assert len(later) == 2 and struct.unpack_from(">H", later[0], 20)[0] == 0  # templates again after 3 messages


def test_templates_refresh_by_seconds_and_tick_with_no_events():
    enc = NatEncoder(NatEncoderOptions(refresh_seconds=10, refresh_packets=0))
    assert len(enc.encode([], 0)) == 1
    assert enc.encode([], 5 * 10**9) == []
    assert len(enc.encode([], 10 * 10**9)) == 1
    assert encoder_type(10).streams and not encoder_type(9).streams and encoder_type(9).versions == (9,)


# -- syslog ----------------------------------------------------------------------------------------------
def test_syslog_line_is_rfc5424_with_structured_data():
    ev = _events(1)[0]
    line = format_message(ev, facility=17, hostname="nat1", procid="9", prefix="lab", event_value=4)
    assert line.startswith("<142>1 2023-11-14T22:13:20.000Z nat1 flowplane 9 NAT44_SESSION_CREATE [nat@32473 ")
    assert 'nat-source-address="198.51.100.1" nat-source-port="50000"' in line
    assert line.endswith("lab session created 192.0.2.2/40000->198.51.100.2/9000 udp translated "
                         "198.51.100.1/50000->198.51.100.2/9000 source-nat zone 2")
    framed = SyslogEncoder(stream=True, hostname="h").encode([ev], 0)[0]
    n, _, rest = framed.partition(b" ")
    assert int(n) == len(rest)


# -- config ------------------------------------------------------------------------------------------------
CONFIG = """\
services:
  jflow-log:
    collector c1:
      destination-address: 127.0.0.1
      destination-port: 4739
    collector-group cg1:
      collector: [c1]
    template-profile t1:
      collector-group: cg1
      template-type: nat
      version: {version}
      refresh-rate: {{packets: 100, seconds: 60}}
{extra}"""


def _cfg(version="ipfix", extra="") -> str:
    return CONFIG.format(version=version, extra=extra)


@pytest.mark.parametrize("text,where,what", [
    (_cfg(version="v10"), "template-profile t1 version", "unknown value 'v10'"),
    (_cfg(extra="      nat-event-numbering: junos-draft\n"), "nat-event-numbering", "expected one of: rfc8158"),
    (_cfg().replace("collector-group: cg1", "collector-group: cg2"), "t1 collector-group", "did you mean 'cg1'"),
    (_cfg().replace("collector: [c1]", "collector: [c9]"), "collector-group cg1 collector", "'c9' is not defined"),
    (_cfg().replace("4739", "70000"), "destination-port", "exceeds the maximum 65535"),
    (_cfg().replace("destination-port: 4739", "destination-prt: 4739"), "collector c1", "missing: destination-port"),
    (_cfg().replace("      destination-address: 127.0.0.1\n", "      destination-address: 127.0.0.1\n"
                    "      transport: sctp\n"), "collector c1 transport", "unknown transport 'sctp'"),
    (_cfg().replace("packets: 100", "packets: 0"), "refresh-rate packets", "below the minimum 1"),
    (_cfg(extra="    message-rate-limit: -1\n"), "message-rate-limit", "below the minimum 0"),
    (_cfg(extra="    conntrack: {receive-buffer: 10, log-no-nat: maybe}\n"), "conntrack receive-buffer", "minimum"),
    (_cfg(extra="    syslog: {host 192.0.2.300: {port: 514}}\n"), "syslog host 192.0.2.300", "IPv4 or IPv6"),
    (_cfg(extra="    syslog: {host 127.0.0.1: {facility-override: local9}}\n"), "facility-override", "local7"),
])
def test_bad_config_names_file_line_col_and_key_path(make_app, make_config, text, where, what):
    with pytest.raises(ConfigError) as err:
        make_app(make_config(text))
    hits = [line for line in err.value.lines if where in line and what in line]
    assert hits, err.value.lines
    assert hits[0].startswith("<test>:") and hits[0].split(":")[1].isdigit()


def test_v9_over_a_byte_stream_is_refused(make_app, make_config):
    text = _cfg(version="v9").replace("      destination-address: 127.0.0.1\n",
                                      "      destination-address: 127.0.0.1\n      transport: tcp\n")
    with pytest.raises(ConfigError) as err:
        make_app(make_config(text))
    assert any("byte-stream" in line and "collector c1" in line for line in err.value.lines), err.value.lines


def test_the_example_passes_check_config():
    r = subprocess.run([sys.executable, "-m", "flowplane", "check-config", str(ROOT / "etc/examples/nat-logging.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# -- engine and show ---------------------------------------------------------------------------------------
def test_engine_counts_and_show(make_app, make_config):
    app = make_app(make_config(_cfg(extra="    message-rate-limit: 3\n")))
    nat = app.pm.get_plugin(PLUGIN_OBJECT)
    plain = nl.CtMessage("new", nl.Tuple(V4, "192.0.2.2", "192.0.2.3", 17, 1, 2),
                         nl.Tuple(V4, "192.0.2.3", "192.0.2.2", 17, 2, 1))
    msgs = [snat_msg(ct_id=i, sport=40000 + i) for i in range(5)] + [plain, snat_msg(kind="update")]
    assert nat.handle(msgs) == 3
    nat.handle([snat_msg(kind="destroy", ct_id=99, sport=1)])
    data = show(app, "services", "nat-logging", "statistics", fmt="json")["data"]
    assert data["events"]["nat44-session-create"] == 5 and data["events"]["nat44-session-delete"] == 1
    assert data["exported"] == 3 and data["rate_limited"] == 3
    assert data["ignored_no_nat"] == 1 and data["updates"] == 1 and data["delete_without_create"] == 1
    assert data["active_sessions"] == 5
    [out] = data["outputs"]
    assert out["kind"] == "ipfix" and out["destination"] == "127.0.0.1:4739"
    assert out["dropped"] >= 1  # the transport is not running in this test: counted as not_ready
    text = show(app, "services", "nat-logging", "statistics")["text"]
    assert re.search(r"nat44-session-create +5\n", text) and "rate_limit 3" in text
    assert "not_ready" in text
    assert "t1/c1" in show(app, "services", "nat-logging", "collectors")["text"]


def test_show_without_the_section_says_so(make_app):
    app = make_app({})
    reply = show(app, "services", "nat-logging", "statistics")
    assert "not configured" in str(reply)


def test_a_reload_keeps_counters_and_open_sessions(make_app, make_config):
    app = make_app(make_config(_cfg()))
    old = app.pm.get_plugin(PLUGIN_OBJECT)
    old.handle([snat_msg(ct_id=1), snat_msg(ct_id=2, sport=40001)])
    app.apply(app.build_graph(make_config(_cfg(version="v9"))))
    new = app.pm.get_plugin(PLUGIN_OBJECT)
    assert new is not old and new.outputs[0].kind == "v9"
    assert new.snapshot()["events"]["nat44-session-create"] == 2 and len(new.active) == 2
    new.handle([snat_msg(kind="destroy", ct_id=1)])
    assert len(new.active) == 1 and new.counters["delete_without_create"] == 0


def test_a_failing_batch_is_counted_and_the_listener_goes_on():
    from flowplane.api import Counters
    from flowplane.plugins.nat_logging.conntrack import ConntrackListener

    got = []

    def on_batch(batch):
        got.append(len(batch))
        if len(got) == 1:
            raise RuntimeError("boom")

    counters = Counters("t")
    lst = ConntrackListener(on_batch, lambda: None, counters=counters)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    lst.sock = a
    b.send(nl.build_ct(snat_msg()))
    lst.drain()
    b.send(nl.build_ct(snat_msg()) + b"\x01\x02")
    lst.drain()
    assert got == [1, 1] and counters["handler_errors"] == 1 and counters.drops[("conntrack", "handler_error")] == 1
    assert counters["messages"] == 2


def test_structured_log_has_one_line_per_event(make_app, make_config):
    from structlog.testing import capture_logs

    app = make_app(make_config(_cfg(extra="    syslog: {structured-log: true}\n")))
    with capture_logs() as logs:
        app.pm.get_plugin(PLUGIN_OBJECT).handle([snat_msg(), snat_msg(kind="destroy")])
    events = [e for e in logs if e["event"].startswith("nat44_session")]
    assert [e["event"] for e in events] == ["nat44_session_create", "nat44_session_delete"]
    assert events[0]["nat_source"] == "198.51.100.1:50001" and events[0]["source"] == "192.0.2.2:40000"
