"""``show services video-monitoring mdi stats`` / ``mdi flows [detail]`` and ``clear ... mdi stats``."""

from __future__ import annotations

from flowplane.api import Table, configured_object, parse_words

from .config import LEVELS
from .engine import PLUGIN_OBJECT

# 'fpc-slot N' is accepted for Junos muscle memory: flowplane is one "FPC" (slot 0)
VALUES = {"fpc-slot": int}


def monitor(app):
    return configured_object(app, PLUGIN_OBJECT, "video monitoring is not configured (interfaces IF family inet "
                                                 "input-flows|output-flows NAME template T, with services "
                                                 "video-monitoring templates T)")


def show_stats(app, args):
    parse_words(args, values=VALUES)
    return {"fpc_slot": 0, **monitor(app).stats()}


def show_flows(app, args):
    opts = parse_words(args, values=VALUES, flags=("detail",))
    detail = bool(opts.get("detail"))
    return {"fpc_slot": 0, "detail": detail, "flows": monitor(app).flow_list(detail)}


def clear_stats(app, args):
    parse_words(args, values=VALUES)
    monitor(app).clear()
    return {"cleared": True}


def _f(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def format_stats(d: dict) -> str:
    lines = ["MDI Stats Information", f"FPC Slot: {d['fpc_slot']}",
             f"  Active flows: {d['active_flows']}",
             f"  Inserted flows: {d['inserted_flows']}",
             f"  Deleted flows (inactive timeout): {d['deleted_flows']}",
             f"  Evicted flows (flow limit {d['maximum_flows']}): {d['evicted_flows']}",
             f"  Packets: {d['packets']}",
             f"  Media packets: {d['media_packets']}",
             f"  Intervals: {d['intervals']}"]
    for metric, name in (("df", "DF"), ("mlr", "MLR"), ("mrv", "MRV")):
        a = d["alarms"][metric]
        lines.append(f"  {name} alarms: " + ", ".join(f"{lvl} {a[lvl]}" for lvl in LEVELS))
    drops = ", ".join(f"{x['reason']} {x['count']}" for x in d["drops"]) or "none"
    lines.append(f"  Errors: {drops}")
    return "\n".join(lines) + "\n"


_FLOWS = Table("{id:>5} {flow:<45} {interface:<12} {dir:<6} {df:>8} {mlr:>8} {mrv:>8} {packets:>10}", id="Id",
               flow="Flow", interface="Interface", dir="Dir", df="DF(ms)", mlr="MLR", mrv="MRV(%)", packets="Packets")


def format_flows(d: dict) -> str:
    lines = [f"FPC Slot: {d['fpc_slot']}"]
    if not d["flows"]:
        return "\n".join(lines + ["  No flows"]) + "\n"
    if not d["detail"]:
        lines += _FLOWS.lines({"id": f["id"], "flow": f["flow"], "interface": f["interface"], "dir": f["direction"],
                               "df": _f(f["df"]["last"]), "mlr": _f(f["mlr"]["last"]), "mrv": _f(f["mrv"]["last"]),
                               "packets": f["packets"]} for f in d["flows"])
        return "\n".join(lines) + "\n"
    for f in d["flows"]:
        lines.append(f"Flow {f['id']}: {f['flow']}")
        lines.append(f"  Interface: {f['interface']}, Direction: {f['direction']}, Flow name: {f['name']}, "
                     f"Template: {f['template']}, {'RTP' if f['rtp'] else 'UDP'}")
        lines.append(f"  Packets: {f['packets']}, Media packets: {f['media_packets']}, Bytes: {f['bytes']}, "
                     f"Intervals: {f['intervals']}")
        for key, name, unit in (("df", "DF", " ms"), ("mlr", "MLR", " pkts/s"), ("mrv", "MRV", " %")):
            s = f[key]
            lines.append(f"  {name:<4} last {_f(s['last'])}, min {_f(s['min'])}, max {_f(s['max'])}, "
                         f"avg {_f(s['avg'])}{unit}")
        e = f["errors"]
        lines.append(f"  Errors: CC lost {e['cc_lost']}, duplicates {e['duplicates']}, RTP lost {e['rtp_lost']}, "
                     f"RTP late {e['rtp_late']}, sync {e['sync_errors']}, TEI {e['tei']}, scrambled {e['scrambled']}, "
                     f"truncated TS {e['truncated_ts']}, null packets {e['null_packets']}")
        alarms = ", ".join(f"{m.upper()} {lvl}" for m, lvl in f["alarms"].items() if lvl) or "none"
        lines.append(f"  Active alarms: {alarms}")
        last = f["last_interval"]
        if last:
            lines.append(f"  Last interval: MDI {last['df_ms']:.2f}:{last['mlr']:.2f}, "
                         f"rate {last['rate_bps']:.0f} bps, "
                         f"lost {last['lost_packets']}, expected {_f(last['expected_packets'], '.0f')}, "
                         f"received {last['media_packets']}")
    return "\n".join(lines) + "\n"


def register(register_fn) -> None:
    register_fn("show services video-monitoring mdi stats", show_stats,
                help="MDI flow and alarm totals [fpc-slot N]", formatter=format_stats)
    register_fn("show services video-monitoring mdi flows", show_flows,
                help="per-flow DF, MLR, MRV [detail] [fpc-slot N]", formatter=format_flows)
    register_fn("clear services video-monitoring mdi stats", clear_stats, help="reset the MDI counters [fpc-slot N]")
