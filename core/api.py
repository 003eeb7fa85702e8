"""The public plugin API: the one module plugin authors import.

Everything a plugin needs from flowplane is here; the names below are the
contract (``docs/hooks.md`` documents them, ``docs/plugin-guide.md`` walks
through a plugin built on them).  The rest of ``flowplane.*`` is the
engine's inside and may change without notice.  The test harness for plugin
authors is :mod:`flowplane.testing`.

Built-in plugins follow the same rule: ``tests/unit/test_public_api.py``
fails on any other ``flowplane.*`` import from ``plugins/`` or ``contrib/``.

Groups:

* **hooks**: :data:`hookimpl` (decorate implementations of the hooks in
  :mod:`flowplane.hookspecs`).
* **packets**: :class:`PacketBatch`, :class:`ActionSelection`, link types,
  directions, :func:`decode`, decode :class:`Reason` codes.
* **flows**: :class:`FlowRecords`, :data:`FLOW_DTYPE`, end reasons, sampling
  algorithms, :class:`FlowCache`, :class:`Sampler`.
* **registries**: the types plugins register: :class:`SourceType`, :class:`EncoderType`
  (:class:`TemplatelessEncoder` for a format without templates), :class:`TransportType`, :class:`TermAction`,
  :class:`HardwareProfile` / :class:`Limits` / :class:`LimitField`; :class:`Registry`.
* **export**: :class:`Exporter` (an encoder joined to a transport),
  :func:`flush_exporters`, :class:`EncoderOptions`, :class:`TransportOptions`,
  :class:`ReexportRecords`, :class:`EncoderRegistry` (``for_version``),
  :func:`check_transport` / :func:`transport_options` (a configured transport
  and its own keys).
* **config**: :class:`Config`, ``check_*`` helpers (:func:`check_int_fields` checks and stores several;
  ``take_int`` / ``take_number`` / ``take_bool`` / ``take_address`` read one key or give a default),
  :func:`suggest`, :func:`config_validator` / :func:`parsed_config` (the config hooks of a section with one
  ``parse`` function), :class:`ConfigIssue`, :class:`ConfigError`, :class:`PluginError`.
* **firewall probes**: :func:`probe_filters` tries a made-up frame against the
  config's filters at validation time (:class:`FilterProbe`, :class:`ProbeHit`).
* **commands**: :class:`CommandError`, :func:`parse_words`, :func:`configured_object` (the feature's
  object or "not configured"), :func:`known_instance`, :class:`Table` (fixed-width text tables),
  :func:`host_port` (``[v6]:port``) and its inverse :func:`split_host_port`.
* **counters**: :class:`Counters`; :class:`Moments` (running min / max / mean / stddev of measurements).
* **wire layouts**: NetFlow v5 header and record (:data:`NETFLOW_V5_HEADER`,
  :data:`NETFLOW_V5_RECORD`), the NetFlow v9 and IPFIX message headers (:func:`netflow_v9_header`,
  :func:`ipfix_header`), shared by encoders and the collector; the Internet checksum
  (:func:`inet_checksum`, :func:`ones_complement_sum`) of the headers probes and test frames build.
* **metrics** (``flowplane_metrics``): :class:`MetricFamilies` builds Prometheus metric families sample by
  sample; prometheus-client's :class:`CounterMetricFamily` and :class:`GaugeMetricFamily` for hand-made ones.
* **kernels**: :mod:`flowplane.kernels`, the per-record loops (compiled when built,
  else Python; ``kernels.active()``, ``kernels.implementations()``).
* **low level**: :class:`InterfaceTable`; socket options (:func:`set_ip_options` for TTL and TOS,
  :func:`dscp_tos`, :func:`parse_dscp`, :func:`grow_sndbuf`, :func:`grow_rcvbuf`); ctypes ``recvmmsg``/``sendmmsg``
  layouts (:class:`IoVec`, :class:`MMsgHdr`, :func:`libc_function`,
  :func:`lp64_layout`).
* **command-line tools** (``flowplane_register_cli_subcommands``):
  :func:`run_oneshot` runs the engine on a config the tool builds (stop it
  early with ``app.request_stop()``); :func:`control_request` sends one
  command to a running service at the path :func:`resolve_socket` finds.
"""

from __future__ import annotations

from . import __version__, hookimpl, kernels
from .actions import DISCARD_ACCOUNTING, TermAction
from .batch import (
    DECODED_COLUMNS,
    DIR_INPUT,
    DIR_OUTPUT,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    V4_MAPPED,
    ActionSelection,
    PacketBatch,
)
from .checksum import inet_checksum, ones_complement_sum
from .commands import CommandError, configured_object, known_instance, parse_words
from .config import (
    Config,
    check_address,
    check_bool,
    check_int,
    check_int_fields,
    check_keys,
    check_mapping,
    check_number,
    check_str,
    suggest,
    take_address,
    take_bool,
    take_int,
    take_number,
)
from .confighooks import config_validator, parsed_config
from .control import request as control_request
from .control import resolve_socket
from .decode import REASON_TEXT, Reason, decode
from .errors import ConfigError, ConfigIssue, PluginError
from .export import (
    SHUTDOWN_GRACE_S,
    EncoderOptions,
    EncoderRegistry,
    EncoderType,
    Exporter,
    ReexportRecords,
    TemplatelessEncoder,
    TransportOptions,
    TransportType,
    check_transport,
    flush_exporters,
    transport_options,
)
from .filterprobe import FilterProbe, ProbeHit, probe_filters
from .flowcache import FlowCache
from .flows import (
    END_ACTIVE,
    END_FORCED,
    END_IDLE,
    END_LACK_OF_RESOURCES,
    END_TCP,
    FLOW_DTYPE,
    REASON_TO_END,
    SAMPLING_DETERMINISTIC,
    SAMPLING_RANDOM,
    FlowRecords,
)
from .interfaces import InterfaceTable
from .metricfamilies import CounterMetricFamily, GaugeMetricFamily, MetricFamilies
from .mmsg import IoVec, MMsgHdr, libc_function, lp64_layout
from .moments import Moments
from .oneshot import run_oneshot
from .profiles import DEFAULT_PROFILE, HardwareProfile, LimitField, Limits
from .registry import DuplicateName, Registry
from .sampling import Sampler
from .sendqueue import SendQueue
from .sockopts import dscp_tos, grow_rcvbuf, grow_sndbuf, parse_dscp, set_ip_options
from .sources import DEFAULT_SOURCE, SourceContext, SourceType, interface_source, live_interfaces
from .stats import Counters
from .tables import Table, host_port, split_host_port
from .wire import (
    IPFIX_HEADER,
    IPFIX_VERSION,
    NETFLOW_V5_HEADER,
    NETFLOW_V5_MAX_RECORDS,
    NETFLOW_V5_RECORD,
    NETFLOW_V9_HEADER,
    ipfix_header,
    netflow_v9_header,
)

__all__ = [
    "__version__", "hookimpl", "kernels",
    # packets
    "PacketBatch", "ActionSelection", "DECODED_COLUMNS", "DIR_INPUT", "DIR_OUTPUT", "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL", "LINKTYPE_RAW", "V4_MAPPED", "decode", "Reason", "REASON_TEXT",
    # flows
    "FlowRecords", "FLOW_DTYPE", "END_ACTIVE", "END_FORCED", "END_IDLE", "END_LACK_OF_RESOURCES", "END_TCP",
    "REASON_TO_END", "SAMPLING_DETERMINISTIC", "SAMPLING_RANDOM", "FlowCache", "Sampler",
    # registries
    "Registry", "DuplicateName", "SourceType", "SourceContext", "DEFAULT_SOURCE", "interface_source",
    "live_interfaces", "EncoderType", "TemplatelessEncoder", "TransportType", "TermAction",
    "DISCARD_ACCOUNTING", "HardwareProfile", "Limits", "LimitField", "DEFAULT_PROFILE",
    # export
    "EncoderOptions", "TransportOptions", "ReexportRecords", "Exporter", "EncoderRegistry", "check_transport",
    "transport_options", "flush_exporters", "SHUTDOWN_GRACE_S", "SendQueue",
    # config-time firewall probes
    "probe_filters", "FilterProbe", "ProbeHit",
    # config and errors
    "Config", "check_address", "check_bool", "check_int", "check_int_fields", "check_keys", "check_mapping",
    "check_number", "check_str",
    "take_int", "take_number", "take_bool", "take_address", "suggest",
    "ConfigIssue", "ConfigError", "PluginError", "config_validator", "parsed_config",
    # commands, counters, low level
    "CommandError", "parse_words", "configured_object", "known_instance", "Table", "host_port", "split_host_port",
    "Counters", "Moments", "InterfaceTable", "IoVec", "MMsgHdr", "libc_function", "lp64_layout",
    "set_ip_options", "dscp_tos", "parse_dscp", "grow_sndbuf", "grow_rcvbuf",
    # metrics
    "MetricFamilies", "CounterMetricFamily", "GaugeMetricFamily",
    # command-line tools
    "run_oneshot", "control_request", "resolve_socket",
    # flow export wire layouts
    "NETFLOW_V5_HEADER", "NETFLOW_V5_RECORD", "NETFLOW_V5_MAX_RECORDS", "NETFLOW_V9_HEADER", "IPFIX_HEADER",
    "IPFIX_VERSION", "ipfix_header", "netflow_v9_header",
    # packet checksums
    "inet_checksum", "ones_complement_sum",
]
