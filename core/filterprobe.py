"""Try made-up packets against the config's firewall filters at config time.

A feature that must refuse a configuration by what the filters would do with
a packet it is about to send (inline monitoring refuses to monitor its own
IPFIX export) compiles the filters with :func:`probe_filters` and asks each
:class:`FilterProbe` which plugin actions a frame would reach.  It runs on the
config being validated, before anything is applied, with the real decoder and
filter compiler; filters the core will reject are left out (the core reports
them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .actions import TermAction
from .batch import DIR_INPUT, DIR_OUTPUT, PacketBatch
from .decode import decode
from .firewall import CompiledFilter
from .firewall_config import parse_firewall
from .interfaces import InterfaceTable
from .registry import Registry


@dataclass(frozen=True)
class ProbeHit:
    """A term that sends the probed frame to a plugin action."""

    term: str
    action: str
    arg: object


class FilterProbe:
    """One compiled filter, for probing frames (see :func:`probe_filters`)."""

    def __init__(self, compiled: CompiledFilter, interfaces: InterfaceTable) -> None:
        self.family = compiled.family
        self.name = compiled.name
        self._filter = compiled
        self._interfaces = interfaces

    def hits(self, frame: bytes, *, interface: str, direction: str) -> list[ProbeHit]:
        """The plugin actions *frame* (an Ethernet frame) reaches on *interface* in *direction*
        (``"input"`` or ``"output"``), in term order."""
        batch = PacketBatch.from_frames([frame], iface=self._interfaces.id(interface),
                                        direction=DIR_INPUT if direction == "input" else DIR_OUTPUT)
        decode(batch)
        res = self._filter.evaluate(batch)
        return [ProbeHit(term, action, arg) for term, action, arg, mask in res.selections if bool(mask[0])]


def probe_filters(config: dict, actions: Iterable[str]) -> dict[tuple[str, str], FilterProbe]:
    """``(family, filter name) -> FilterProbe`` for every filter of *config* (the plain dict) with a term
    that uses one of *actions*.  Other plugins' actions in the config parse as opaque words."""
    wanted = set(actions)
    registry: Registry[TermAction] = Registry("term action")
    for name in sorted(wanted | _action_names(config)):
        registry.register(name, TermAction(name, arg="optional"))
    parsed, _issues = parse_firewall(config, registry)  # the firewall's own issues are reported by the core
    interfaces = InterfaceTable()
    out: dict[tuple[str, str], FilterProbe] = {}
    for pf in parsed:
        if not any(a in wanted for t in pf.terms for a, _ in t.plugin_actions):
            continue
        try:
            out[(pf.family, pf.name)] = FilterProbe(CompiledFilter(pf, interfaces), interfaces)
        except Exception:  # a filter the core rejects anyway (and reports)
            continue
    return out


def _action_names(config: dict) -> set[str]:
    """Every action word under any ``then`` of the firewall."""
    names: set[str] = set()

    def then(v) -> None:
        if isinstance(v, str):
            names.update(v.split()[:1])
        elif isinstance(v, dict):
            names.update(str(k) for k in v)
        elif isinstance(v, list):
            for item in v:
                then(item)

    def filters(fsec) -> None:
        for f in (fsec or {}).values() if isinstance(fsec, dict) else ():
            terms = f.get("term") if isinstance(f, dict) else None
            for t in (terms or {}).values() if isinstance(terms, dict) else ():
                if isinstance(t, dict):
                    then(t.get("then"))

    fw = config.get("firewall")
    if isinstance(fw, dict):
        filters(fw.get("filter"))
        fams = fw.get("family")
        for fam in (fams or {}).values() if isinstance(fams, dict) else ():
            if isinstance(fam, dict):
                filters(fam.get("filter"))
    return names - {"accept", "discard", "reject", "count", "next"}
