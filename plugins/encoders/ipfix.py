"""IPFIX encoder (RFC 7011).

``register("ipfix", EncoderType("ipfix", (10,), factory))``; config ``version 10``/``ipfix``.

Message header: version 10, length, export time (s), sequence number (data
records -- including options data records, RFC 7011 section 3.1 -- sent
before this message in this observation domain, mod 2**32), observation
domain id (``EncoderOptions.observation_domain_id``).

Times: flowStartMilliseconds (152) / flowEndMilliseconds (153), absolute;
flowEndReason (136) from ``end_reason``.

Options template (scope observationDomainId 149): exportingProcessId (144),
samplingInterval (34, deprecated but what Junos sends), selectorAlgorithm
(304: 1 systematic count-based, 3 random n-out-of-N), samplingPacketInterval
(305 = 1) and samplingPacketSpace (306 = N - 1), RFC 5477.  Chosen so that
nfdump 1.7.1 (Debian 12) and >= 1.7.2 both renormalise by N: no
samplingAlgorithm (35) -- 1.7.1 ignores a template with 34 and 35 -- and 306
after 34, as nfdump reads both into one slot and uses
packetInterval + packetSpace as the interval.

Note: nfdump (1.7.x) advances its expected sequence by data records of data
templates only, so it counts one "sequence failure" after each message that
carried options data; RFC 7011 counts options data records too, and so do we.
"""

from __future__ import annotations

import struct

from flowplane.api import EncoderOptions, EncoderType, hookimpl, ipfix_header

from .template import TemplateEncoder, selector_algorithm

OBSERVATION_DOMAIN_ID = 149
EXPORTING_PROCESS_ID = 144
SAMPLING_INTERVAL = 34
SELECTOR_ALGORITHM = 304
SAMPLING_PACKET_INTERVAL = 305
SAMPLING_PACKET_SPACE = 306


class IpfixEncoder(TemplateEncoder):
    version = 10
    header_length = 16
    template_set_id = 2
    options_template_set_id = 3
    ipfix = True
    name = "ipfix"

    def header(self, count: int, length: int, now_ns: int, data_records: int) -> bytes:
        return ipfix_header(length, now_ns // 1_000_000_000, self.data_records_sent, self.options.observation_domain_id)

    def options_values(self) -> list[tuple[int, int, int]]:
        o = self.options
        n = max(1, o.sampling_interval)
        return [(OBSERVATION_DOMAIN_ID, 4, o.observation_domain_id & 0xFFFF_FFFF),
                (EXPORTING_PROCESS_ID, 4, o.exporting_process_id & 0xFFFF_FFFF),
                (SAMPLING_INTERVAL, 4, n),
                (SELECTOR_ALGORITHM, 2, selector_algorithm(o.sampling_algorithm)),
                (SAMPLING_PACKET_INTERVAL, 4, 1),
                (SAMPLING_PACKET_SPACE, 4, n - 1)]

    def options_template_record(self) -> bytes:
        vals = self.options_values()
        body = b"".join(struct.pack(">HH", ie, ln) for ie, ln, _ in vals)
        return struct.pack(">HHH", self.options.options_template_id, len(vals), 1) + body


def factory(options: EncoderOptions) -> IpfixEncoder:
    return IpfixEncoder(options)


ENCODER_TYPE = EncoderType("ipfix", (10,), factory, streams=True,
                           help="IPFIX (RFC 7011): templates per family, sampling options (PSAMP), MTU-sized messages")


@hookimpl
def flowplane_register_encoders(register):
    register("ipfix", ENCODER_TYPE)
