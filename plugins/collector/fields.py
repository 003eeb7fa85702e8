"""Information elements the collector knows by name (IANA IPFIX registry; v9 shares ids 1-127).

Each known IE has a name and an abstract type used to render it when it is
kept aside (not mapped to a :data:`~flowplane.flows.FLOW_DTYPE` column):
``u`` unsigned integer, ``4`` IPv4 address, ``6`` IPv6 address, ``m`` MAC
address, ``s`` string, ``b`` octet array.  Unknown IEs are carried as
``ie<N>`` and enterprise elements as ``e<PEN>.<N>``, rendered by length
(1-8 bytes: integer, else hex).
"""

from __future__ import annotations

IES: dict[int, tuple[str, str]] = {
    1: ("octetDeltaCount", "u"), 2: ("packetDeltaCount", "u"), 3: ("deltaFlowCount", "u"),
    4: ("protocolIdentifier", "u"), 5: ("ipClassOfService", "u"), 6: ("tcpControlBits", "u"),
    7: ("sourceTransportPort", "u"), 8: ("sourceIPv4Address", "4"), 9: ("sourceIPv4PrefixLength", "u"),
    10: ("ingressInterface", "u"), 11: ("destinationTransportPort", "u"), 12: ("destinationIPv4Address", "4"),
    13: ("destinationIPv4PrefixLength", "u"), 14: ("egressInterface", "u"), 15: ("ipNextHopIPv4Address", "4"),
    16: ("bgpSourceAsNumber", "u"), 17: ("bgpDestinationAsNumber", "u"), 18: ("bgpNextHopIPv4Address", "4"),
    19: ("postMCastPacketDeltaCount", "u"), 20: ("postMCastOctetDeltaCount", "u"),
    21: ("flowEndSysUpTime", "u"), 22: ("flowStartSysUpTime", "u"),
    23: ("postOctetDeltaCount", "u"), 24: ("postPacketDeltaCount", "u"), 25: ("minimumIpTotalLength", "u"),
    26: ("maximumIpTotalLength", "u"), 27: ("sourceIPv6Address", "6"), 28: ("destinationIPv6Address", "6"),
    29: ("sourceIPv6PrefixLength", "u"), 30: ("destinationIPv6PrefixLength", "u"), 31: ("flowLabelIPv6", "u"),
    32: ("icmpTypeCodeIPv4", "u"), 33: ("igmpType", "u"), 34: ("samplingInterval", "u"),
    35: ("samplingAlgorithm", "u"), 36: ("flowActiveTimeout", "u"), 37: ("flowIdleTimeout", "u"),
    38: ("engineType", "u"), 39: ("engineId", "u"), 40: ("exportedOctetTotalCount", "u"),
    41: ("exportedMessageTotalCount", "u"), 42: ("exportedFlowRecordTotalCount", "u"),
    44: ("sourceIPv4Prefix", "4"), 45: ("destinationIPv4Prefix", "4"), 46: ("mplsTopLabelType", "u"),
    47: ("mplsTopLabelIPv4Address", "4"), 48: ("samplerId", "u"), 49: ("samplerMode", "u"),
    50: ("samplerRandomInterval", "u"), 51: ("classId", "u"), 52: ("minimumTTL", "u"), 53: ("maximumTTL", "u"),
    54: ("fragmentIdentification", "u"), 55: ("postIpClassOfService", "u"), 56: ("sourceMacAddress", "m"),
    57: ("postDestinationMacAddress", "m"), 58: ("vlanId", "u"), 59: ("postVlanId", "u"), 60: ("ipVersion", "u"),
    61: ("flowDirection", "u"), 62: ("ipNextHopIPv6Address", "6"), 63: ("bgpNextHopIPv6Address", "6"),
    64: ("ipv6ExtensionHeaders", "u"), 70: ("mplsTopLabelStackSection", "u"), 71: ("mplsLabelStackSection2", "u"),
    72: ("mplsLabelStackSection3", "u"), 73: ("mplsLabelStackSection4", "u"), 74: ("mplsLabelStackSection5", "u"),
    75: ("mplsLabelStackSection6", "u"), 76: ("mplsLabelStackSection7", "u"), 77: ("mplsLabelStackSection8", "u"),
    78: ("mplsLabelStackSection9", "u"), 79: ("mplsLabelStackSection10", "u"), 80: ("destinationMacAddress", "m"),
    81: ("postSourceMacAddress", "m"), 82: ("interfaceName", "s"), 83: ("interfaceDescription", "s"),
    84: ("samplerName", "s"), 85: ("octetTotalCount", "u"), 86: ("packetTotalCount", "u"),
    88: ("fragmentOffset", "u"), 89: ("forwardingStatus", "u"), 90: ("mplsVpnRouteDistinguisher", "b"),
    94: ("applicationDescription", "s"), 95: ("applicationId", "b"), 96: ("applicationName", "s"),
    98: ("postIpDiffServCodePoint", "u"), 128: ("bgpNextAdjacentAsNumber", "u"),
    129: ("bgpPrevAdjacentAsNumber", "u"), 130: ("exporterIPv4Address", "4"), 131: ("exporterIPv6Address", "6"),
    132: ("droppedOctetDeltaCount", "u"), 133: ("droppedPacketDeltaCount", "u"), 136: ("flowEndReason", "u"),
    137: ("commonPropertiesId", "u"), 138: ("observationPointId", "u"), 139: ("icmpTypeCodeIPv6", "u"),
    141: ("lineCardId", "u"), 142: ("portId", "u"), 143: ("meteringProcessId", "u"),
    144: ("exportingProcessId", "u"), 145: ("templateId", "u"), 148: ("flowId", "u"),
    149: ("observationDomainId", "u"), 150: ("flowStartSeconds", "u"), 151: ("flowEndSeconds", "u"),
    152: ("flowStartMilliseconds", "u"), 153: ("flowEndMilliseconds", "u"), 154: ("flowStartMicroseconds", "u"),
    155: ("flowEndMicroseconds", "u"), 156: ("flowStartNanoseconds", "u"), 157: ("flowEndNanoseconds", "u"),
    158: ("flowStartDeltaMicroseconds", "u"), 159: ("flowEndDeltaMicroseconds", "u"),
    160: ("systemInitTimeMilliseconds", "u"), 161: ("flowDurationMilliseconds", "u"),
    162: ("flowDurationMicroseconds", "u"), 176: ("icmpTypeIPv4", "u"), 177: ("icmpCodeIPv4", "u"),
    178: ("icmpTypeIPv6", "u"), 179: ("icmpCodeIPv6", "u"), 192: ("ipTTL", "u"), 197: ("fragmentFlags", "u"),
    225: ("postNATSourceIPv4Address", "4"), 226: ("postNATDestinationIPv4Address", "4"),
    227: ("postNAPTSourceTransportPort", "u"), 228: ("postNAPTDestinationTransportPort", "u"),
    230: ("natEvent", "u"), 231: ("initiatorOctets", "u"), 232: ("responderOctets", "u"),
    233: ("firewallEvent", "u"), 234: ("ingressVRFID", "u"), 235: ("egressVRFID", "u"), 236: ("VRFname", "s"),
    243: ("dot1qVlanId", "u"), 252: ("ingressPhysicalInterface", "u"), 253: ("egressPhysicalInterface", "u"),
    256: ("ethernetType", "u"), 281: ("postNATSourceIPv6Address", "6"), 282: ("postNATDestinationIPv6Address", "6"),
    283: ("natPoolId", "u"), 284: ("natPoolName", "s"), 298: ("initiatorPackets", "u"),
    299: ("responderPackets", "u"), 302: ("selectorId", "u"), 304: ("selectorAlgorithm", "u"),
    305: ("samplingPacketInterval", "u"), 306: ("samplingPacketSpace", "u"), 323: ("observationTimeMilliseconds", "u"),
    335: ("selectorName", "s"), 361: ("portRangeStart", "u"), 362: ("portRangeEnd", "u"),
    363: ("portRangeStepSize", "u"), 364: ("portRangeNumPorts", "u"), 410: ("sectionExportedOctets", "u"),
    488: ("srhActiveSegmentIPv6", "6"), 492: ("srhSegmentIPv6ListSection", "b"),
}

#: IPFIX / v9 set ids
V9_TEMPLATE, V9_OPTIONS_TEMPLATE = 0, 1
IPFIX_TEMPLATE, IPFIX_OPTIONS_TEMPLATE = 2, 3

VARLEN = 65535


def ie_name(ie: int, pen: int = 0) -> str:
    if pen:
        return f"e{pen}.{ie}"
    known = IES.get(ie)
    return known[0] if known else f"ie{ie}"


def ie_kind(ie: int, pen: int = 0) -> str:
    if pen:
        return "b"
    known = IES.get(ie)
    return known[1] if known else "b"
