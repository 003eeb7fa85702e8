"""What the packet exporters put on the wire, decoded by tshark: inline-monitoring IPFIX records and
port-mirroring GRE / ERSPAN headers."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import pytest

from flowplane.plugins.inline_monitoring import encoder as enc
from flowplane.plugins.port_mirroring.encap import GRE_HEADER, erspan_header
from flowplane.testing import write_pcap

from frames import UDP, eth, eth_vlan, ipv4, udp
from test_inline_monitoring import _records, frames_of


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_the_records(tmp_path):
    frames = frames_of([64, 300, 1000])
    recs = _records(frames, 256, iface=4)
    s = enc.Session(template_id=1024, option_template_id=1025, observation_domain_id=2, sampling_interval=100)
    msgs = [s.control_message(templates=True, options=True)] + s.data_messages(enc.pack_sets(recs, 1024, 1472))
    pcap = write_pcap(str(tmp_path / "ipfix.pcap"), [eth(payload=ipv4(17, udp(40000, 4739, m))) for m in msgs])
    out = subprocess.run(["tshark", "-r", pcap, "-d", "udp.port==4739,cflow", "-T", "fields", "-E", "separator=|",
                          "-e", "cflow.template_ipfix_field_type", "-e", "cflow.template_field_length",
                          "-e", "cflow.flow_exporter", "-e", "cflow.sampling_interval", "-e", "cflow.od_id",
                          "-e", "cflow.inputint", "-e", "cflow.outputint", "-e", "cflow.direction",
                          "-e", "cflow.data_link_frame_size", "-e", "cflow.data_link_frame_section"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    rows = [line.split("|") for line in out]
    types, lengths, exporter, interval, od = rows[0][:5]
    # data template, then the options template (scope exportingProcessId, then samplingInterval)
    assert types.split(",") == ["10", "14", "61", "312", "315", "144", "34"]
    assert lengths.split(",") == ["4", "4", "1", "2", "65535", "4", "4"]
    assert (exporter, interval, od) == ("2", "100", "2")
    _, _, _, _, od, ins, outs, dirs, sizes, sections = rows[1]
    assert od == "2" and ins == "4,4,4" and outs == "0,0,0" and dirs == "0,0,0"
    assert [int(x) for x in sizes.split(",")] == [64, 300, 1000]
    assert [bytes.fromhex(x) for x in sections.split(",")] == [f[:256] for f in frames]


def _outer(proto_payload: bytes) -> bytes:
    """Ethernet + IPv4 (proto 47) around a GRE payload, for a pcap tshark reads."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(proto_payload), 1, 0, 64, 47, 0,
                     socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.50"))
    return eth(0x0800, ip + proto_payload)


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_decodes_gre_and_erspan_headers(tmp_path):
    inner = eth(0x0800, ipv4(UDP, udp(41111, 42222, b"hello-mirror"), src="10.1.1.1", dst="10.2.2.2"))
    tagged = eth_vlan([42], 0x0800, ipv4(UDP, udp(41000, 41001, b"v")))
    frames = [_outer(GRE_HEADER + inner), _outer(erspan_header(9, session_id=77, vlan=42, index=5) + tagged)]
    pcap = write_pcap(str(tmp_path / "e.pcap"), frames)
    r = subprocess.run(["tshark", "-r", pcap, "-T", "fields", "-E", "separator=|", "-e", "frame.protocols",
                        "-e", "gre.proto", "-e", "erspan.spanid", "-e", "erspan.vlan", "-e", "erspan.version",
                        "-e", "udp.srcport", "-e", "_ws.malformed"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    gre, ers = r.stdout.strip().splitlines()
    assert gre.startswith("eth:ethertype:ip:gre:eth:ethertype:ip:udp")
    assert gre.split("|")[1] == "0x6558" and gre.split("|")[5] == "41111" and gre.split("|")[6] == ""
    f = ers.split("|")
    assert "erspan:eth:ethertype:vlan:ethertype:ip:udp" in f[0]
    assert f[1] == "0x88be" and f[2] == "77" and f[3] == "42" and f[4] == "1" and f[6] == ""
