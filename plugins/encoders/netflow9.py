"""NetFlow v9 encoder (RFC 3954): ``register("v9", EncoderType("v9", (9,), factory))``; config ``version 9``.

Packet header: version 9, count (template + options template + data +
options data records in the packet), sysUptime, unix secs, sequence (export
packets sent so far by this source id, starting at 0), source id
(``EncoderOptions.observation_domain_id``).

Times: FIRST_SWITCHED (22) / LAST_SWITCHED (21) are milliseconds since the
flow cache's clock origin (``FlowRecords.boot_ns``).  sysUptime is
``unix_secs * 1000 - boot_ms``: the uptime at the whole second the header
states, so a collector's ``unix_secs * 1000 - sysUptime + FIRST_SWITCHED``
gives exactly ``first_ns // 1e6`` (it differs from ``now - boot`` by the
sub-second part of *now*, which v9 cannot carry).

Options template: scope System (1, 4 bytes = source id); SAMPLING_INTERVAL
(34, 4 bytes), FLOW_SAMPLER_MODE (49, 1 byte: 1 deterministic, 2 random).
Not SAMPLING_ALGORITHM (35): nfdump 1.7.1 (Debian 12) ignores a sampling
options template that has both 34 and 35 (it wants 34 alone, 49 is fine), so
collectors would not renormalise; nfdump >= 1.7.2, tshark, goflow2 read 34
either way.
Data templates: see :mod:`flowplane.plugins.encoders.template`.
"""

from __future__ import annotations

import struct

from flowplane.api import EncoderOptions, EncoderType, hookimpl, netflow_v9_header

from .template import TemplateEncoder

SCOPE_SYSTEM = 1
SAMPLING_INTERVAL = 34
FLOW_SAMPLER_MODE = 49


class NetFlowV9Encoder(TemplateEncoder):
    version = 9
    header_length = 20
    template_set_id = 0
    options_template_set_id = 1
    ipfix = False
    name = "v9"

    def header(self, count: int, length: int, now_ns: int, data_records: int) -> bytes:
        secs = now_ns // 1_000_000_000
        uptime = max(0, secs * 1000 - self.boot_ns // 1_000_000) & 0xFFFF_FFFF
        return netflow_v9_header(count, uptime, secs, self.packets_sent, self.options.observation_domain_id)

    def options_values(self) -> list[tuple[int, int, int]]:
        o = self.options
        return [(SCOPE_SYSTEM, 4, o.observation_domain_id & 0xFFFF_FFFF),
                (SAMPLING_INTERVAL, 4, max(1, o.sampling_interval)),
                (FLOW_SAMPLER_MODE, 1, o.sampling_algorithm)]

    def options_template_record(self) -> bytes:
        vals = self.options_values()
        scope, opts = vals[:1], vals[1:]
        body = b"".join(struct.pack(">HH", ie, ln) for ie, ln, _ in scope + opts)
        return struct.pack(">HHH", self.options.options_template_id, 4 * len(scope), 4 * len(opts)) + body


def factory(options: EncoderOptions) -> NetFlowV9Encoder:
    return NetFlowV9Encoder(options)


ENCODER_TYPE = EncoderType("v9", (9,), factory,
                           help="NetFlow v9 (RFC 3954): templates per family, sampling options, MTU-sized datagrams")


@hookimpl
def flowplane_register_encoders(register):
    register("v9", ENCODER_TYPE)
