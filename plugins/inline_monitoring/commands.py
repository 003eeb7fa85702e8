"""``show services inline-monitoring statistics`` and ``clear services inline-monitoring statistics``."""

from __future__ import annotations

from flowplane.api import configured_object, known_instance, parse_words

from .engine import PLUGIN_OBJECT


def monitor(app):
    return configured_object(app, PLUGIN_OBJECT,
                             "inline monitoring is not configured (services inline-monitoring instance ...)")


def _instance(app, args) -> tuple[object, str | None]:
    # 'fpc-slot N' is accepted for Junos muscle memory: flowplane is one "FPC"
    opts = parse_words(args, values={"instance": str, "fpc-slot": int})
    obj = monitor(app)
    return obj, known_instance(opts.get("instance"), obj.engines, "inline-monitoring instance")


def show_statistics(app, args):
    obj, name = _instance(app, args)
    return obj.snapshot(name)


def _drops(drops: list[dict]) -> str:
    return ", ".join(f"{d['reason']} {d['count']}" for d in drops) or "none"


def format_statistics(data) -> str:
    lines = ["Inline Monitoring Statistics:"]
    for i in data["instances"]:
        rate = f", sampling rate: 1 in {i['sampling_rate']}" if i["sampling_scope"] == "per-instance" else ""
        lines.append(f"  Instance name: {i['name']}")
        lines.append(f"    Template name: {i['template']}, Template ID: {i['template_id']}, "
                     f"Option template ID: {i['option_template_id']}, Observation domain ID: "
                     f"{i['observation_domain_id']}")
        lines.append(f"    Template refresh rate: {i['template_refresh_rate']} seconds, "
                     f"Option template refresh rate: {i['option_template_refresh_rate']} seconds")
        lines.append(f"    Clip length: {i['clip_length']} bytes{rate}")
        lines.append(f"    Packets seen: {i['packets_seen']}, Drops: {_drops(i['drops'])}")
        for c in i["collectors"]:
            lines.append(f"    Collector name: {c['name']}")
            lines.append(f"      Destination: {c['destination']}, Source: {c['source'] or '-'}, "
                         f"Sampling rate: 1 in {c['sampling_rate']}, DSCP: {c['dscp']}"
                         + (f", Forwarding class: {c['forwarding_class']}" if c["forwarding_class"] else ""))
            lines.append(f"      Packets sampled: {c['packets_sampled']}, Records exported: {c['records_exported']}")
            lines.append(f"      Messages: {c['messages']} (templates {c['template_messages']}, "
                         f"option data {c['option_messages']}), Bytes: {c['bytes']}, Sequence: {c['sequence']}")
            lines.append(f"      Sent: {c['sent_datagrams']} datagrams, {c['sent_bytes']} bytes; "
                         f"Dropped: {c['dropped']} ({_drops(c['drops'])})")
    if data.get("drops"):
        lines.append(f"  Other drops: {_drops(data['drops'])}")
    return "\n".join(lines) + "\n"


def clear_statistics(app, args):
    obj, name = _instance(app, args)
    return {"cleared": obj.clear(name)}


def register(register_fn) -> None:
    register_fn("show services inline-monitoring statistics", show_statistics,
                help="inline-monitoring packets, samples, records, messages and drops per instance and collector "
                     "[instance NAME]", formatter=format_statistics)
    register_fn("clear services inline-monitoring statistics", clear_statistics,
                help="reset inline-monitoring counters [instance NAME]")
