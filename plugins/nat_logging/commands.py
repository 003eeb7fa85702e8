"""``show services nat-logging statistics | collectors`` and ``clear services nat-logging statistics``."""

from __future__ import annotations

from flowplane.api import configured_object, parse_words

from .engine import PLUGIN_OBJECT
from .events import KINDS


def logger(app):
    return configured_object(app, PLUGIN_OBJECT, "NAT event logging is not configured (services jflow-log)")


def show_statistics(app, args):
    parse_words(args)
    return logger(app).snapshot()


def show_collectors(app, args):
    parse_words(args)
    return {"outputs": logger(app).snapshot()["outputs"]}


def clear_statistics(app, args):
    parse_words(args)
    logger(app).clear()
    return {"cleared": True}


def _drops(drops: list[dict]) -> str:
    return ", ".join(f"{d['reason']} {d['count']}" for d in drops) or "none"


def format_statistics(d) -> str:
    ct = d["conntrack"]
    lines = ["NAT event logging statistics:",
             f"  {'Events':<34}{d['events_total']:>12}"]
    lines += [f"    {k:<32}{d['events'][k]:>12}" for k in KINDS]
    lines += [
        f"  {'Events exported':<34}{d['exported']:>12}",
        f"  {'Events rate limited':<34}{d['rate_limited']:>12}"
        + (f"   (limit {d['rate_limit']}/s)" if d["rate_limit"] else ""),
        f"  {'Sessions without NAT ignored':<34}{d['ignored_no_nat']:>12}",
        f"  {'Active translated sessions':<34}{d['active_sessions']:>12}",
        f"  {'Deletes without a create':<34}{d['delete_without_create']:>12}",
        "  Conntrack listener:",
        f"    {'Messages':<32}{ct['messages']:>12}",
        f"    {'Datagrams':<32}{ct['datagrams']:>12}",
        f"    {'Batches':<32}{ct['batches']:>12}",
        f"    {'Overruns (ENOBUFS)':<32}{ct['overruns']:>12}",
        f"    {'Malformed messages':<32}{ct['malformed']:>12}",
        f"    {'Receive errors':<32}{ct['recv_errors']:>12}",
        f"    {'Batches failed':<32}{ct['handler_errors']:>12}",
        f"    {'Receive buffer (bytes)':<32}{ct['receive_buffer']:>12}",
        f"  {'Resyncs':<34}{d['resyncs']:>12}",
        f"    {'Sessions found created':<32}{d['resync_created']:>12}",
        f"    {'Sessions found deleted':<32}{d['resync_deleted']:>12}",
        f"    {'Queued events already resynced':<32}{d['duplicates_after_resync']:>12}",
        f"    {'Dump failures':<32}{d['resync_failures']:>12}",
        f"  {'Dropped':<34}{d['dropped']:>12}   ({_drops(d['drops'])})",
    ]
    return "\n".join(lines) + "\n" + format_collectors(d)


def format_collectors(d) -> str:
    lines = []
    for o in d["outputs"]:
        head = (f"  {o['kind'].upper()} {o['name']} -> {o['destination']} ({o.get('transport', 'udp')}"
                + (f", numbering {o['numbering']}, observation domain {o['observation_domain_id']}"
                   if o["kind"] != "syslog" else f", facility {o.get('facility')}") + ")")
        lines.append(head)
        seq = f", sequence {o['sequence']}" if o.get("sequence") is not None else ""
        lines.append(f"    Events: {o['events']}, Messages: {o['messages']}, Sent: {o['sent']} ({o['bytes']} bytes)"
                     f"{seq}")
        lines.append(f"    Dropped: {o['dropped']} ({_drops(o['drops'])}), Encode errors: {o['encode_errors']}")
    return "\n".join(lines) + ("\n" if lines else "")


def register(register_fn) -> None:
    register_fn("show services nat-logging statistics", show_statistics, formatter=format_statistics,
                help="NAT events by type, exported, dropped, conntrack overruns and resyncs, per output")
    register_fn("show services nat-logging collectors", show_collectors,
                formatter=lambda d: format_collectors(d) or "no outputs\n",
                help="NAT log collectors and syslog hosts: events, messages, drops")
    register_fn("clear services nat-logging statistics", clear_statistics, help="reset the NAT logging counters")
