"""``show services accounting ...`` for sampling instances, monitoring and discard accounting groups,
in the Junos layout."""

from __future__ import annotations

import ipaddress
import os
import resource
import time

from flowplane.api import CommandError, configured_object, parse_words

PLUGIN_OBJECT = "flow-monitor"
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "icmp6", 132: "sctp", 0: "ip"}


def monitor(app):
    return configured_object(app, PLUGIN_OBJECT, "sampling is not configured (forwarding-options sampling|accounting)")


def _engines(app, args, values=None, flags=(), passive=False):
    opts = parse_words(args, values={"name": str, **(values or {})}, flags=flags)
    fm = monitor(app)
    name = opts.get("name")
    pool = fm.groups if passive else {**fm.engines, **fm.groups, **fm.accounting}
    engines = [e for n, e in pool.items() if name in (None, n)]
    if name and not engines:
        raise CommandError(f"no {'monitoring group' if passive else 'sampling instance or group'} {name!r}; "
                           f"configured: {', '.join(pool) or 'none'}")
    return engines, opts


KIND_TITLE = {"sampling": "", "monitoring": " (monitoring group)", "accounting": " (discard accounting group)"}


def _header(name: str, kind: str = "sampling") -> list[str]:
    return ["Service Accounting interface: flowplane, Local interface index: 0", "Service name: "
                                                                                 f"{name}{KIND_TITLE[kind]}"]


def addr(hi: int, lo: int, af: int) -> str:
    if af == 4:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


# -- flow ---------------------------------------------------------------------------


def show_flow(app, args, passive=False):
    engines, _ = _engines(app, args, passive=passive)
    out = []
    for e in engines:
        active = sum(len(c) for c in e.caches.values())
        c = e.counters
        created = sum(cache.counters["flows_created"] for cache in e.caches.values())
        pk = sum(cache.counters["packets"] for cache in e.caches.values())
        by = sum(cache.counters["bytes"] for cache in e.caches.values())
        expired = sum(c[k] for k in c.values if k.startswith("flows_"))
        row = {"name": e.inst.name, "kind": e.kind, "flow_packets": pk, "flow_bytes": by, "active_flows": active,
               "total_flows": created, "flows_exported": expired,
               "flow_packets_10s_rate": None, "sampled": c["sampled"], "candidates": c["candidates"],
               "expired": {k.removeprefix("flows_"): v for k, v in c.values.items() if k.startswith("flows_")}}
        if e.kind == "accounting":
            row["discarded_packets"], row["discarded_bytes"] = c["discarded_packets"], c["discarded_bytes"]
            row["not_ip"] = c["not_ip"]
        out.append(row)
    return {"instances": out}


def format_flow(data) -> str:
    lines = []
    for i in data["instances"]:
        lines += _header(i["name"], i["kind"])
        lines.append("Flow information")
        if i["kind"] == "accounting":
            lines.append(f"  Discarded packets: {i['discarded_packets']}, Discarded bytes: {i['discarded_bytes']}, "
                         f"Not IP: {i['not_ip']}")
        lines.append(f"  Flow packets: {i['flow_packets']}, Flow bytes: {i['flow_bytes']}")
        lines.append(f"  Active flows: {i['active_flows']}, Total flows: {i['total_flows']}")
        lines.append(f"  Flows exported: {i['flows_exported']}, Flows expired: {i['flows_exported']}")
        exp = ", ".join(f"{k}: {v}" for k, v in sorted(i["expired"].items())) or "none"
        lines.append(f"  Flows expired by reason: {exp}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def show_flow_detail(app, args):
    engines, opts = _engines(app, args, values={"limit": int, "order": str})
    limit = opts.get("limit", 100)
    order = opts.get("order", "packets")
    if order not in ("packets", "bytes"):
        raise CommandError("order must be 'packets' or 'bytes'")
    out = []
    for e in engines:
        rows = []
        for family, cache in e.caches.items():
            snap = cache.snapshot(limit=limit, order=order)
            d = snap.data
            for r in d:
                rows.append({
                    "family": family, "protocol": int(r["proto"]),
                    "source": addr(int(r["src_hi"]), int(r["src_lo"]), int(r["af"])), "source_port": int(r["sport"]),
                    "destination": addr(int(r["dst_hi"]), int(r["dst_lo"]), int(r["af"])),
                    "destination_port": int(r["dport"]), "packets": int(r["packets"]), "bytes": int(r["bytes"]),
                    "tcp_flags": int(r["tcp_flags"]), "tos": int(r["tos"])})
        rows.sort(key=lambda r: r[order], reverse=True)
        out.append({"name": e.inst.name, "kind": e.kind, "flows": rows[:limit]})
    return {"instances": out}


def format_flow_detail(data) -> str:
    lines = []
    for i in data["instances"]:
        lines += _header(i["name"], i["kind"])
        lines.append(f"{'Protocol':<10}{'Source':<40}{'Source':>7}  "
                     f"{'Destination':<40}{'Dest':>6}{'Packet':>12}{'Byte':>14}")
        lines.append(f"{'':<10}{'Address':<40}{'Port':>7}  {'Address':<40}{'Port':>6}{'count':>12}{'count':>14}")
        for r in i["flows"]:
            proto = f"{PROTO_NAMES.get(r['protocol'], 'ip')}({r['protocol']})"
            lines.append(f"{proto:<10}{r['source']:<40}{r['source_port']:>7}  {r['destination']:<40}"
                         f"{r['destination_port']:>6}{r['packets']:>12}{r['bytes']:>14}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- status / usage / memory / sizes -------------------------------------------------------


def show_status(app, args, passive=False):
    engines, _ = _engines(app, args, passive=passive)
    out = []
    for e in engines:
        fams = []
        for family, fam in e.inst.families.items():
            fams.append({
                "family": family,
                "flow_servers": [{"address": s.label, "version": s.version, "transport": s.transport,
                                  "template": s.template.name if s.template else None,
                                  "counters": dict(x.counters.values),
                                  "transport_counters": dict(x.transport.counters.values)}
                                 for s, x in zip(fam.servers, e.exporters[family])],
                "exporters_shared_with": {x.server.label: x.families for x in e.exporters[family]},
                "active_timeout": fam.active_timeout, "inactive_timeout": fam.inactive_timeout,
                "engine_type": fam.engine_type, "engine_id": fam.engine_id,
            })
        out.append({"name": e.inst.name, "kind": e.kind, "rate": e.inst.rate,
                    "effective_rate": round(e.sampler.effective_rate, 3),
                    "run_length": e.inst.run_length, "max_packets_per_second": e.inst.max_pps,
                    "algorithm": "deterministic" if e.inst.algorithm == 1 else "random",
                    "clock": "wall" if e.live else "packet", "families": fams,
                    "rate_limited": e.counters["rate_limited"]})
    return {"instances": out}


def _export_format(version: int) -> str:
    """How ``show ... status`` names an export version."""
    return "cflowd v" + str(version) if version in (5, 8) else "version 9" if version == 9 else "IPFIX"


def format_status(data) -> str:
    lines = []
    for i in data["instances"]:
        lines += _header(i["name"], i["kind"])
        if i["kind"] == "accounting":
            lines.append("Interface state: Accounting")
            lines.append("Sampling rate: every discarded packet (discard accounting)")
        else:
            lines.append("Interface state: Monitoring")
            lines.append(f"Sampling rate: 1 in {i['rate']} ({i['algorithm']}), effective rate: 1 in "
                         f"{i['effective_rate']}, "
                         f"run-length: {i['run_length']}, max packets per second: "
                         f"{i['max_packets_per_second'] or 'unlimited'}")
        for f in i["families"]:
            fmt = ", ".join(f"{_export_format(s['version'])} to {s['address']}/{s['transport']}"
                            for s in f["flow_servers"])
            lines.append("Protocol: "
                         f"{'IPv4' if f['family'] == 'inet' else 'IPv6' if f['family'] == 'inet6' else 'MPLS'}, "
                         f"Engine type: {f['engine_type']}, Engine ID: {f['engine_id']}")
            lines.append(f"  Export format: {fmt}")
            lines.append(f"  Flow active timeout: {int(f['active_timeout'])} secs, inactive timeout: "
                         f"{int(f['inactive_timeout'])} secs")
            for s in f["flow_servers"]:
                c, t = s["counters"], s["transport_counters"]
                lines.append(f"  Flow server {s['address']}: records {c.get('records', 0)}, export packets "
                             f"{c.get('datagrams', 0)}, "
                             f"sent {t.get('packets', 0)}, refused {t.get('refused', 0)}, dropped "
                             f"{t.get('dropped', 0) + t.get('dropped_backlog', 0)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def show_usage(app, args, passive=False):
    engines, _ = _engines(app, args, passive=passive)
    fm = monitor(app)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"uptime_ms": int((time.time() - app.started_at) * 1000), "cpu_user_s": ru.ru_utime,
            "cpu_system_s": ru.ru_stime,
            "load_5s": fm.load.percent(5), "load_1m": fm.load.percent(60), "instances": [e.inst.name for e in engines]}


def format_usage(data) -> str:
    lines = _header(", ".join(data["instances"]))
    lines.append("CPU utilization")
    lines.append(f"  Uptime: {data['uptime_ms']} milliseconds, CPU time: "
                 f"{data['cpu_user_s'] + data['cpu_system_s']:.3f} seconds")
    lines.append(f"  Load (5 second): {data['load_5s']:.0f}%, Load (1 minute): {data['load_1m']:.0f}%")
    return "\n".join(lines) + "\n"


def show_memory(app, args, passive=False):
    engines, _ = _engines(app, args, passive=passive)
    out = []
    for e in engines:
        active = sum(len(c) for c in e.caches.values())
        mem = sum(c.memory_bytes() for c in e.caches.values())
        out.append({"name": e.inst.name, "kind": e.kind, "active_flows": active, "cache_bytes": mem,
                    "max_flows": e.inst.flow_table_size * len(e.caches),
                    "bytes_per_flow": round(mem / active, 1) if active else None})
    with open(f"/proc/{os.getpid()}/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"instances": out, "process_rss_bytes": rss}


def format_memory(data) -> str:
    lines = []
    for i in data["instances"]:
        lines += _header(i["name"], i["kind"])
        lines.append("Memory utilization")
        lines.append(f"  Active flows: {i['active_flows']}, Flow table size: {i['max_flows']}")
        lines.append(f"  Flow cache memory (in bytes): {i['cache_bytes']}, per active flow: {i['bytes_per_flow']}")
        lines.append("")
    lines.append(f"Total memory used (in bytes): {data['process_rss_bytes']}")
    return "\n".join(lines) + "\n"


def show_sizes(app, args):
    engines, _ = _engines(app, args)
    from .engine import SIZE_EDGES

    out = []
    for e in engines:
        total = int(e.size_hist.sum())
        ranges = []
        for i, n in enumerate(e.size_hist):
            if n:
                end = int(SIZE_EDGES[i + 1]) - 1 if i + 1 < len(SIZE_EDGES) else 65535
                ranges.append({"start": int(SIZE_EDGES[i]), "end": end, "packets": int(n),
                               "percent": round(100.0 * int(n) / total, 1)})
        out.append({"name": e.inst.name, "kind": e.kind, "ranges": ranges})
    return {"instances": out}


def format_sizes(data) -> str:
    lines = []
    for i in data["instances"]:
        lines += _header(i["name"], i["kind"])
        lines.append(f"{'Range start':>12}{'Range end':>12}{'Number of packets':>20}{'Percentage packets':>20}")
        for r in i["ranges"]:
            lines.append(f"{r['start']:>12}{r['end']:>12}{r['packets']:>20}{r['percent']:>20}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def clear_flow(app, args):
    engines, _ = _engines(app, args)
    for e in engines:
        e.counters.clear()
        e.size_hist[:] = 0
    return {"cleared": [e.inst.name for e in engines]}


def show_template(app, args):
    opts = parse_words(args, values={"template-name": str}, flags=("detail", "extensive", "terse"))
    name = opts.get("template-name")
    fm = monitor(app)
    out = []
    for e in fm.all_engines():
        for exp in e.all_exporters:
            t = exp.server.template
            if t is None or (name and t.name != name):
                continue
            enc = exp.encoder
            templates = []
            for kind, tmpl in getattr(enc, "data_templates", {}).items():
                templates.append({"kind": kind, "template_id": tmpl.template_id, "record_length": tmpl.record_length,
                                  "fields": [{"element": f.ie, "length": f.length,
                                              "name": f.name} for f in tmpl.fields]})
            out.append({"template": t.name, "version": t.version, "instance": e.inst.name,
                        "flow_server": exp.server.label,
                        "observation_domain_id": enc.options.observation_domain_id,
                        "options_template_id": enc.options.options_template_id,
                        "refresh": {"packets": t.refresh_packets, "seconds": t.refresh_seconds},
                        "option_refresh": {"packets": t.option_refresh_packets, "seconds": t.option_refresh_seconds},
                        "templates": templates, "counters": dict(enc.counters.values)})
    if name and not out:
        raise CommandError(f"no flow server uses template {name!r}")
    return {"templates": out}


def format_template(data) -> str:
    lines = []
    for t in data["templates"]:
        lines.append(f"Template name: {t['template']}, Version: {'9' if t['version'] == 9 else 'IPFIX'}, "
                     f"Instance: {t['instance']}, Flow server: {t['flow_server']}")
        lines.append(f"  {'Observation domain' if t['version'] == 10 else 'Source'} ID: {t['observation_domain_id']}, "
                     f"Options template ID: {t['options_template_id']}")
        lines.append(f"  Template refresh: {t['refresh']['packets']} packets / {t['refresh']['seconds']} seconds, "
                     f"Option refresh: {t['option_refresh']['packets']} packets / {t['option_refresh']['seconds']} "
                     "seconds")
        for d in t["templates"]:
            lines.append(f"  Template ID: {d['template_id']} ({d['kind']}), record length {d['record_length']} bytes")
            lines.append(f"    {'Element':>8} {'Length':>7}  Name")
            for f in d["fields"]:
                lines.append(f"    {f['element']:>8} {f['length']:>7}  {f['name']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n" if lines else "No templates\n"


def _passive(fn):
    """The same command over monitoring groups only (Junos 'show passive-monitoring ...')."""
    def wrapped(app, args):
        if not monitor(app).groups:
            raise CommandError("no passive monitoring group is configured (forwarding-options monitoring)")
        return fn(app, args, passive=True)
    return wrapped


def register(register_fn) -> None:
    register_fn("show passive-monitoring flow", _passive(show_flow), help="= show services accounting flow, groups",
                formatter=format_flow)
    register_fn("show passive-monitoring status", _passive(show_status), help="= show services accounting status, "
                                                                              "groups",
                formatter=format_status)
    register_fn("show passive-monitoring memory", _passive(show_memory), help="= show services accounting memory, "
                                                                              "groups",
                formatter=format_memory)
    register_fn("show passive-monitoring usage", _passive(show_usage), help="= show services accounting usage",
                formatter=format_usage)
    register_fn("show services accounting flow", show_flow,
                help="flow counts per sampling instance, monitoring and accounting group [name NAME]",
                formatter=format_flow, report=True)
    register_fn("show services accounting flow-detail", show_flow_detail,
                help="active flows [name NAME] [limit N] [order packets|bytes]", formatter=format_flow_detail)
    register_fn("show services accounting status", show_status, help="export format, rates, timeouts, flow servers",
                formatter=format_status, report=True)
    register_fn("show services accounting usage", show_usage, help="CPU load 5 s / 1 min", formatter=format_usage)
    register_fn("show services accounting memory", show_memory, help="flow cache memory", formatter=format_memory)
    register_fn("show services accounting packet-size-distribution", show_sizes, help="sampled packet sizes",
                formatter=format_sizes)
    register_fn("clear services accounting flow", clear_flow,
                help="reset the counters of sampling instances and groups [name NAME]")
    register_fn("show services accounting aggregation template", show_template,
                help="v9/IPFIX templates in use [template-name NAME]", formatter=format_template)
