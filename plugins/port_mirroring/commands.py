"""``show forwarding-options port-mirroring`` and ``clear forwarding-options port-mirroring``."""

from __future__ import annotations

from flowplane.api import Table, configured_object, known_instance, parse_words

PLUGIN_OBJECT = "port-mirroring-state"
_DESTINATIONS = Table("    {families:<12}{state:<8}{dest:<28}{packets:>12}{bytes:>16}  {drops}", families="Family",
                      state="State", dest="Destination", packets="Packets", bytes="Bytes", drops="Drops")


def mirror(app):
    return configured_object(app, PLUGIN_OBJECT, "port mirroring is not configured (forwarding-options port-mirroring)")


def _instance(app, args) -> tuple[object, str | None]:
    opts = parse_words(args, values={"instance": str})
    pm = mirror(app)
    return pm, known_instance(opts.get("instance"), pm.engines, "port-mirroring instance")


def show(app, args):
    pm, name = _instance(app, args)
    return pm.snapshot(name)


def clear(app, args):
    pm, name = _instance(app, args)
    cleared = []
    for n, e in pm.engines.items():
        if name in (None, n):
            e.clear()
            cleared.append(n)
    if name is None:
        pm.counters.clear()
    return {"cleared": cleared}


def format_show(data) -> str:
    """Junos layout (``Instance Name`` / ``Input parameters`` / ``Output parameters``) plus counters."""
    lines = []
    for i, inst in enumerate(data["instances"], 1):
        lines.append(f"Instance Name: {inst['instance']}")
        lines.append(f"  Instance Id: {i}")
        lines.append("  Input parameters:")
        lines.append(f"    Rate                  : {inst['rate']}")
        lines.append(f"    Run-length            : {inst['run_length']}")
        lines.append(f"    Maximum-packet-length : {inst['maximum_packet_length']}")
        lines.append(f"    Candidates            : {inst['candidates']}")
        lines.append(f"    Sampled               : {inst['sampled']}")
        lines.append(f"    Truncated             : {inst['truncated']}")
        lines.append("  Output parameters:")
        lines.append(_DESTINATIONS.header)
        for d in inst["destinations"]:
            dest = d["target"] if d["kind"] == "interface" else f"{d['target']} ({d['kind']})"
            drops = ", ".join(f"{r} {n}" for r, n in d["drops"].items()) or "0"
            lines.append(_DESTINATIONS.row(d, families=",".join(d["families"]), dest=dest, drops=drops))
            if d["last_error"]:
                lines.append(f"      Last error: {d['last_error']}")
        lines.append("")
    if data.get("drops"):
        lines.append("Drops: " + ", ".join(f"{k} {v}" for k, v in data["drops"].items()))
    return "\n".join(lines).rstrip() + "\n" if lines else "No port-mirroring instances\n"


def register(register_fn) -> None:
    register_fn("show forwarding-options port-mirroring", show,
                help="port-mirroring instances: input, destinations, packets/bytes mirrored, drops [instance NAME]",
                formatter=format_show)
    register_fn("clear forwarding-options port-mirroring", clear,
                help="reset port-mirroring counters [instance NAME]")
