"""Flow collector (plugins/collector) fed the corpus's real NetFlow/IPFIX captures: record counts, fields,
sampling and interface names from options data, ``show`` commands and binary flow files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import flowplane.plugins.collector as collector_plugin
from flowplane.plugins.collector.collector import Collector
from flowplane.plugins.collector.pcap import udp_payloads

from corpus import EXPECTED, FLOWS, corpus_groups, flow_files, needs_corpus, replay_order
from test_collector import make_collector, replay

# ---------------------------------------------------------------------------
# real captures


@needs_corpus
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_record_counts(name):
    files = corpus_groups().get(name)
    if not files:
        pytest.skip(f"{name} not in corpus")
    c = make_collector()
    assert replay(c, files) == EXPECTED[name]
    assert ("decode", "internal-error") not in c.counters.drops


@needs_corpus
def test_every_corpus_file_in_one_collector_never_raises():
    c = make_collector()
    total = replay(c, replay_order(flow_files()))
    assert total == sum(EXPECTED.values()) + 3 + 11 + 9 + 10  # pmacct_106, _111, _112; the akvorado sFlow captures
    drops = c.counters.drops
    assert ("decode", "internal-error") not in drops
    assert ("decode", "bad-version") not in drops  # the sFlow v5 captures decode (test_collector_sflow.py)
    # ndpi_netflowv9: 23 data sets held, never resolved: undecodable once the pending timeout passes
    exp = c.decoder.exporters["192.168.2.134"]
    assert exp.counters["records"] == 0 and exp.counters["pending"] == 23
    c.tick(now_ns=2**62)
    assert drops[("decode", "no-template")] >= 23
    assert exp.counters["pending"] == 0


@needs_corpus
def test_templates_and_data_in_one_datagram_and_sampling_from_options():
    c = make_collector()
    files = corpus_groups()["akvorado_data+templates"]
    flows = []
    for f in files:
        for d in udp_payloads(str(f)):
            flows += c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    assert sum(map(len, flows)) == 21
    assert c.counters["pending-resolved"] == 1  # the data set came before its template in the datagram
    assert all(set(f.sampling_interval.tolist()) == {set(f.sampling_interval.tolist()).pop()} for f in flows)
    assert int(flows[0].sampling_interval[0]) > 1


@needs_corpus
def test_multiple_sampling_rates_by_sampler_id():
    c = make_collector()
    flows = []
    for f in corpus_groups()["akvorado_multiplesamplingrates"]:
        for d in udp_payloads(str(f)):
            flows += c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    rates = np.concatenate([f.sampling_interval for f in flows])
    assert sorted(set(rates.tolist())) == [2000, 4000]


@needs_corpus
def test_nat_fields_kept_aside_by_name():
    c = make_collector()
    flows = []
    for f in corpus_groups()["akvorado_nat"]:
        for d in udp_payloads(str(f)):
            flows += c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    rows = [r for f in flows for r in f.rows()]
    assert len(rows) == 9
    assert all(r["natEvent"] in (1, 2) for r in rows)
    assert rows[0]["postNATSourceIPv4Address"] == "10.143.52.29"
    assert rows[0]["src"] == "172.16.100.198" and rows[0]["dport"] == 53


@needs_corpus
def test_nfv5_fields_and_absolute_times():
    c = make_collector()
    (d,) = list(udp_payloads(str(FLOWS / "akvorado_nfv5.pcap")))
    (flows,) = c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    r = flows.rows()[0]
    assert (r["src"], r["dst"], r["sport"], r["dport"], r["proto"]) == ("161.202.212.212", "202.152.70.24", 30104,
                                                                        11963, 6)
    assert (r["packets"], r["bytes"], r["in_if"], r["out_if"]) == (1, 133, 117, 86)
    # sysUptime-relative times land just before the header's unix time
    hdr_secs = struct.unpack_from(">I", d.payload, 8)[0]
    assert np.all(flows.data["last_ns"] <= (hdr_secs + 1) * 10**9)
    assert np.all(flows.data["first_ns"] > (hdr_secs - 3600) * 10**9)


# ---------------------------------------------------------------------------
# commands (app with the plugin, datagrams fed straight to the handler)


@needs_corpus
def test_show_commands(make_app):
    app = make_app({"services": {"flow-collector": {"listen": [{"address": "127.0.0.1", "port": 0}]}}},
                   plugins=[(collector_plugin, "collector")])
    c = app.pm.get_plugin("flow-collector")
    assert isinstance(c, Collector)
    replay(c, corpus_groups()["pmacct_100-IPFIXv10-CISCO"] + corpus_groups()["akvorado_nfv5"])
    c.handle([(b"\x00\x63garbage", "203.0.113.1")])
    cmds = app.registries.commands
    cmd, rest = cmds.resolve(["show", "services", "flow-collector"])
    data = cmd.fn(app, rest)
    assert data["records"] == 41 and data["decode_errors"] == {"bad-version": 1}
    assert {e["address"] for e in data["exporters"]} == {"138.187.0.13", "10.19.144.41", "203.0.113.1"}
    text = cmd.formatter(data)
    assert "Flow records decoded: 41" in text and "bad-version" in text and "138.187.0.13" in text
    cmd, rest = cmds.resolve(["show", "services", "flow-collector", "templates"])
    t = cmd.fn(app, rest)
    assert {x["exporter"] for x in t["templates"]} == {"138.187.0.13"}
    assert "sourceIPv4Address" in cmd.formatter(t)
    cmd, rest = cmds.resolve(["show", "services", "flow-collector", "flows", "limit", "5"])
    fl = cmd.fn(app, rest)
    assert len(fl["flows"]) == 5 and fl["flows"][-1]["exporter"] == "10.19.144.41"
    assert "5 flows shown" in cmd.formatter(fl)
    cmd, rest = cmds.resolve(["clear", "services", "flow-collector"])
    cmd.fn(app, rest)
    assert cmds.resolve(["show", "services", "flow-collector"])[0].fn(app, [])["records"] == 0


# ---------------------------------------------------------------------------
# options data applied: sampling per record, scaled counts, interface names


def _decode_all(c, name):
    flows = []
    for f in corpus_groups()[name]:
        for d in udp_payloads(str(f)):
            flows += c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    return flows


@needs_corpus
def test_sampling_rate_per_record_and_scaled_counts_multiple_samplers():
    plain = _decode_all(make_collector(), "akvorado_multiplesamplingrates")
    scaled = _decode_all(make_collector(scale=True), "akvorado_multiplesamplingrates")
    a = np.concatenate([f.data for f in plain])
    b = np.concatenate([f.data for f in scaled])
    rate = np.concatenate([f.sampling_interval for f in plain])
    # each record carries the rate of its own sampler (samplerId 1 -> 2000, 2 -> 4000: options data)
    sid = np.concatenate([f.extra["samplerId"] for f in plain]).astype(int)
    assert set(zip(sid.tolist(), rate.tolist())) == {(1, 2000), (2, 4000)}
    assert np.array_equal(b["packets"], a["packets"] * rate) and np.array_equal(b["bytes"], a["bytes"] * rate)
    assert all(f.scaled for f in scaled) and not any(f.scaled for f in plain)
    rows = [r for f in scaled for r in f.rows()]
    assert all(r["scaled"] is True for r in rows)


@needs_corpus
def test_sampling_rate_inline_in_data_records():
    """akvorado_samplingrate: samplingInterval (34) in every data record, no options data."""
    flows = _decode_all(make_collector(), "akvorado_samplingrate")
    rate = np.concatenate([f.sampling_interval for f in flows])
    inline = np.concatenate([f.extra.get("samplingInterval", np.zeros(0)) for f in flows])
    assert len(rate) == 6 and rate.min() > 1
    if len(inline):  # mapped to the rate column, maybe also kept aside
        assert np.array_equal(inline.astype(np.uint32), rate)
    scaled = _decode_all(make_collector(scale=True), "akvorado_samplingrate")
    got = np.concatenate([f.data["packets"] for f in scaled])
    assert np.array_equal(got, np.concatenate([f.data["packets"] for f in flows]) * rate)


@needs_corpus
def test_unsampled_records_are_not_marked_scaled():
    flows = _decode_all(make_collector(scale=True), "akvorado_nfv5")
    assert not any(f.scaled for f in flows)


@needs_corpus
def test_interface_names_from_options_data():
    """pmacct_112: a Cisco interface table (scope ingressInterface, interfaceName/Description, 80 bytes each),
    re-assigned during the capture: each record is named by the table as it was when the record came."""
    c = make_collector()
    named = 0
    for f in corpus_groups()["pmacct_112-IPFIXv10-CISCO-options-map-reassignment"]:
        for d in udp_payloads(str(f)):
            flows = c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
            table = dict(c.decoder.exporters[d.src].interfaces)
            for r in (r for fl in flows for r in fl.rows()):
                for col in ("in_if", "out_if"):
                    want = (table.get(r[col]) or (None,))[0]
                    assert r.get(col + "_name") == want, (col, r[col], table.get(r[col]))
                    named += want is not None
    (exp,) = [e for e in c.decoder.exporters.values() if e.interfaces]
    assert exp.interfaces[55][0] == "HundredGigE0_0_0_11"
    assert all(isinstance(k, int) and (v[0] is None or "\0" not in v[0]) for k, v in exp.interfaces.items())
    assert named > 0, "records whose interface is in the table carry its name"


# ---------------------------------------------------------------------------
# binary flow files (output: {flows: PATH})


def test_flow_file_round_trip_with_extras_rotation_and_torn_tail(tmp_path):
    import numpy as np

    from flowplane.plugins.collector.flowfile import encode_block, read_flows
    from flowplane.plugins.collector.output import FileWriter, Rotate
    from flowplane.plugins.collector.pcap import udp_payloads

    c = make_collector(scale=True)
    blocks = []
    for name in ("akvorado_nat", "akvorado_mpls", "akvorado_nfv5", "pmacct_106-IPFIXv10-HUAWEI-vrf_name"):
        for f in corpus_groups()[name]:
            for d in udp_payloads(str(f)):
                blocks += c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
    assert len(blocks) >= 4
    path = tmp_path / "f.fpf"
    w = FileWriter(str(path), "flows", Rotate(bytes=4000))
    for b in blocks:
        w.write([b])
    w.close()
    files = sorted(tmp_path.glob("f.fpf.*"))
    assert w.rotations == len(files) >= 2 and not (tmp_path / "f.fpf.current").exists()
    got = [g for f in files for g in read_flows(str(f))]
    assert w.lines == sum(len(b) for b in blocks) == sum(len(g) for g in got)
    assert [r for g in got for r in g.rows()] == [r for b in blocks for r in b.rows()]  # extras, names, scaled
    assert any("natEvent" in r for g in got for r in g.rows())
    # a torn last frame (a crash mid-write) ends the file, the frames before it are read
    whole = encode_block(blocks[0]) + encode_block(blocks[1])
    (tmp_path / "torn").write_bytes(whole[:-5])
    assert [len(g) for g in read_flows(str(tmp_path / "torn"))] == [len(blocks[0])]
    with pytest.raises(ValueError):
        list(read_flows(str(tmp_path / "torn"), strict=True))
    assert np.array_equal(next(read_flows(str(files[0]))).sampling_interval, blocks[0].sampling_interval)


def test_flow_file_reader_cli_prints_json_lines(tmp_path, capsys):
    import json

    from flowplane.plugins.collector.flowfile import main
    from flowplane.plugins.collector.output import FileWriter
    from flowplane.plugins.collector.pcap import udp_payloads

    c = make_collector()
    w = FileWriter(str(tmp_path / "n.fpf"), "flows")
    want = []
    for f in corpus_groups()["akvorado_nat"]:
        for d in udp_payloads(str(f)):
            flows = c.handle([(d.payload, d.src)], now_ns=d.ts_ns)
            want += [r for fl in flows for r in fl.rows()]
            w.write(flows)
    w.close()
    assert main([str(tmp_path / "n.fpf")]) == 0
    got = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert got == want and len(got) == 9
