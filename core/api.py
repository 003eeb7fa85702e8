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
  :mod:`flowplane.hookspecs`), :data:`hookspec` (a plugin's own hookspecs).
* **packets**: :class:`PacketBatch`, :class:`ActionSelection`, link types,
  directions, :func:`decode`, decode :class:`Reason` codes.
* **flows**: :class:`FlowRecords`, :data:`FLOW_DTYPE`, end reasons, sampling
  algorithms, :class:`FlowCache`, :class:`Sampler`.
* **registries**: the types plugins register: :class:`SourceType`,
  :class:`EncoderType`, :class:`TransportType`, :class:`TermAction`,
  :class:`HardwareProfile` / :class:`Limits` / :class:`LimitField`; :class:`Registry`.
* **export**: :class:`EncoderOptions`, :class:`TransportOptions`,
  :class:`ReexportRecords`.
* **config**: :class:`Config`, ``check_*`` helpers, :func:`suggest`,
  :class:`ConfigIssue`, :class:`ConfigError`, :class:`PluginError`.
* **commands**: :class:`CommandError`, :func:`parse_words`.
* **counters**: :class:`Counters`.
* **low level**: :class:`InterfaceTable`; ctypes ``recvmmsg``/``sendmmsg``
  layouts (:class:`IoVec`, :class:`MMsgHdr`, :func:`libc_function`,
  :func:`lp64_layout`).
"""

from __future__ import annotations

from . import __version__, hookimpl, hookspec
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
from .commands import CommandError, parse_words
from .config import Config, check_bool, check_int, check_keys, check_mapping, check_number, check_str, suggest
from .decode import REASON_TEXT, Reason, decode
from .errors import ConfigError, ConfigIssue, PluginError
from .export import EncoderOptions, EncoderType, ReexportRecords, TransportOptions, TransportType
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
from .mmsg import IoVec, MMsgHdr, libc_function, lp64_layout
from .profiles import DEFAULT_PROFILE, HardwareProfile, LimitField, Limits
from .registry import DuplicateName, Registry
from .sampling import Sampler
from .sources import SourceContext, SourceType
from .stats import Counters

__all__ = [
    "__version__", "hookimpl", "hookspec",
    # packets
    "PacketBatch", "ActionSelection", "DECODED_COLUMNS", "DIR_INPUT", "DIR_OUTPUT", "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL", "LINKTYPE_RAW", "V4_MAPPED", "decode", "Reason", "REASON_TEXT",
    # flows
    "FlowRecords", "FLOW_DTYPE", "END_ACTIVE", "END_FORCED", "END_IDLE", "END_LACK_OF_RESOURCES", "END_TCP",
    "REASON_TO_END", "SAMPLING_DETERMINISTIC", "SAMPLING_RANDOM", "FlowCache", "Sampler",
    # registries
    "Registry", "DuplicateName", "SourceType", "SourceContext", "EncoderType", "TransportType", "TermAction",
    "DISCARD_ACCOUNTING", "HardwareProfile", "Limits", "LimitField", "DEFAULT_PROFILE",
    # export
    "EncoderOptions", "TransportOptions", "ReexportRecords",
    # config and errors
    "Config", "check_bool", "check_int", "check_keys", "check_mapping", "check_number", "check_str", "suggest",
    "ConfigIssue", "ConfigError", "PluginError",
    # commands, counters, low level
    "CommandError", "parse_words", "Counters", "InterfaceTable", "IoVec", "MMsgHdr", "libc_function", "lp64_layout",
]
