"""The contract between the core and packet source plugins.

A source plugin registers a :class:`SourceType` in
``flowplane_register_sources``.  For every configured interface whose
``source`` names it, the core calls ``factory(ctx)`` and starts the returned
object in its nursery with ``await nursery.start(source.run, send_channel)``.

``run`` must:

* call ``task_status.started()`` once it is capturing (socket bound, file
  open) -- READY=1 is sent to systemd only after every source started;
* send :class:`~flowplane.batch.PacketBatch` objects of at most
  ``ctx.batch_size`` frames on the channel; a *live* source uses
  ``send_nowait`` and counts ``trio.WouldBlock`` as
  ``counters.drop("ingest", "backpressure", n)``; a *file* source awaits
  ``send`` (backpressure is fine when replaying);
* hand out batches whose buffer it will not overwrite (copy or compact if
  the buffer is a reusable ring);
* return when a finite source is exhausted (the core notices), and keep
  counters in ``self.counters`` (a :class:`~flowplane.stats.Counters`):
  ``packets``, ``bytes``, ``batches`` and, for live capture,
  ``kernel_packets`` / ``kernel_drops``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .errors import ConfigIssue
from .interfaces import InterfaceTable
from .stats import Counters


@dataclass
class SourceContext:
    """What a source factory gets from the core."""

    name: str  # the interface name from the config (e.g. "eth1", "replay0")
    config: dict  # that interface's config section
    iface_id: int  # id to put in PacketBatch.iface
    interfaces: InterfaceTable
    batch_size: int = 256
    speed: float = 0.0  # pcap only: 0 = as fast as possible, 1.0 = capture speed, 2.0 = twice
    log: Any = None  # a structlog logger bound with source=<name>
    base_dir: str = "."  # directory of the config file: relative file paths resolve against it


class Source(Protocol):
    name: str
    finite: bool
    counters: Counters

    async def run(self, send: trio.MemorySendChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None: ...


@dataclass(frozen=True)
class SourceType:
    """A named source driver.

    :param name: what ``interfaces NAME source:`` says (``pcap``, ``af-packet``).
    :param factory: ``factory(ctx: SourceContext) -> Source``.
    :param validate: ``validate(name, section, path, base_dir) -> list[ConfigIssue]``
        for the driver's own keys under ``interfaces NAME``; *base_dir* is the
        config file's directory (relative paths resolve against it).
    :param capabilities: Linux capabilities the driver needs (``CAP_NET_RAW``).
    :param keys: the config keys the driver accepts (for error messages).
    :param batch_size: the driver's default batch size when neither the
        interface nor ``system batch-size`` sets one (capped at the hardware
        profile's ``max_batch``).
    """

    name: str
    factory: Callable[[SourceContext], Source]
    validate: Callable[[str, dict, tuple, str], list[ConfigIssue]] | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    keys: tuple[str, ...] = ()
    help: str = ""
    batch_size: int | None = None  # preferred default (a file replay wants big batches); capped by the profile
    #: ``wall``: packets arrive now (flow timeouts on the monotonic/wall clock); ``packet``: a replay whose
    #: timestamps are the clock (timeouts behave as they did on the wire)
    clock: str = "wall"
    #: captures the host's live traffic, so what flowplane itself sends (exports, mirror copies) may be captured
    live: bool = True


#: the source an interface uses when its section names none
DEFAULT_SOURCE = "af-packet"


def interface_source(section: Any) -> str:
    """The source driver name an ``interfaces NAME`` section selects."""
    return str(section.get("source", DEFAULT_SOURCE)) if isinstance(section, dict) else DEFAULT_SOURCE


def live_interfaces(config: dict, sources: Any = None) -> dict[str, dict]:
    """``name -> section`` of the configured interfaces whose source type is ``live``.

    *sources* is the source registry (or a read-only view); without it, or for a name nobody
    registered, an interface counts as live (a loop check then errs on the safe side).
    """
    ifaces = config.get("interfaces") if isinstance(config, dict) else None
    out = {}
    for name, sec in (ifaces.items() if isinstance(ifaces, dict) else ()):
        st = sources.get(interface_source(sec)) if sources is not None else None
        if st is None or st.live:
            out[str(name)] = sec if isinstance(sec, dict) else {}
    return out
