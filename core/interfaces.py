"""Interface names <-> small integer ids carried in ``PacketBatch.iface``."""

from __future__ import annotations


class InterfaceTable:
    """Assigns stable ids to interface names (pcap files count as interfaces).

    Id 0 is reserved for "unknown".  Ids are also the SNMP-style ifIndex that
    flow records export unless a plugin maps them otherwise.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: list[str] = ["unknown"]

    def id(self, name: str) -> int:
        """The id of *name*, assigning a new one on first use."""
        i = self._ids.get(name)
        if i is None:
            i = len(self._names)
            self._ids[name] = i
            self._names.append(name)
        return i

    def lookup(self, name: str) -> int | None:
        return self._ids.get(name)

    def name(self, i: int) -> str:
        return self._names[i] if 0 <= i < len(self._names) else f"if{i}"

    def items(self) -> list[tuple[str, int]]:
        return sorted(self._ids.items(), key=lambda kv: kv[1])
