"""``show services flow-collector [templates | flows [limit N]]`` and ``clear services flow-collector``."""

from __future__ import annotations

import datetime as dt
import time

from flowplane.api import CommandError, configured_object, parse_words

from .collector import PLUGIN_OBJECT
from .fields import VARLEN, ie_name
from .rates import WINDOWS

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "icmp6", 132: "sctp"}


def collector(app):
    return configured_object(app, PLUGIN_OBJECT, "the flow collector is not configured (services flow-collector)")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def show(app, args):
    parse_words(args)
    c = collector(app)
    dec = c.decoder
    elapsed = max(1e-9, (time.time_ns() - c.cleared_ns) / 1e9)
    cnt = dict(c.counters.values)
    exporters = []
    for exp in sorted(dec.exporters.values(), key=lambda e: e.address):
        exporters.append({
            "address": exp.address, "session": getattr(exp, "session", None),
            "versions": sorted(exp.versions), "domains": len(exp.domains),
            "templates": exp.template_count, **exp.counters, "last_seen": _iso(exp.last_seen_ns),
            "interfaces": len(exp.interfaces), "sampling": sampling_of(exp)})
    errors = {r: n for (s, r), n in sorted(c.counters.drops.items()) if s == "decode"}
    drops = [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(c.counters.drops.items()) if s != "decode"]
    listeners = []
    for lst in c.listeners:
        kd = lst.kernel_drops()
        listeners.append({"listen": lst.listen.label, "bound": list(lst.bound) if lst.bound else None,
                          "datagrams": lst.datagrams, "receive_buffer": lst.rcvbuf, "kernel_drops": kd})
        if hasattr(lst, "rxq_ovfl"):
            listeners[-1]["rxq_ovfl"] = lst.rxq_ovfl()
            listeners[-1]["read"] = lst.read_mode  # recvmmsg, or recvfrom where it is not available
        if hasattr(lst, "status"):  # TCP: connections open, accepted, refused over the limit, framing errors
            listeners[-1]["tcp"] = lst.status()
        if kd:
            drops.append({"stage": "kernel", "reason": f"rcvbuf {lst.listen.label}", "count": kd})
    now = time.monotonic()
    values = c.rate_values()
    recent = {f"{w}s": c.rates.rates(now, values, w) for w in WINDOWS}
    by_stage: dict[str, int] = {}
    for (s, _r), n in c.counters.drops.items():
        by_stage[s] = by_stage.get(s, 0) + n
    if values["kernel_drops"]:
        by_stage["kernel"] = values["kernel_drops"]
    return {"listeners": listeners, "datagrams": cnt.get("datagrams", 0), "bytes": cnt.get("bytes", 0),
            "recent": recent, "drops_by_stage": dict(sorted(by_stage.items())),
            "records": cnt.get("records", 0), "options_records": cnt.get("options-records", 0),
            "templates": cnt.get("templates", 0), "options_templates": cnt.get("options-templates", 0),
            "pending_sets": cnt.get("pending-sets", 0), "pending_resolved": cnt.get("pending-resolved", 0),
            "datagrams_per_second": round(cnt.get("datagrams", 0) / elapsed, 1),
            "records_per_second": round(cnt.get("records", 0) / elapsed, 1),
            "seconds": round(elapsed, 1), "exporters": exporters, "decode_errors": errors, "drops": drops,
            "jsonl": ({"path": c.jsonl.path, "lines": c.jsonl.lines, "errors": c.jsonl.errors} if c.jsonl else None),
            "outputs": c.outputs.stats() if getattr(c, "outputs", None) is not None else None}


def format_show(d) -> str:
    lines = ["Flow collector:"]
    for lst in d["listeners"]:
        kd = "n/a" if lst["kernel_drops"] is None else lst["kernel_drops"]
        b = lst["bound"]
        lines.append(f"  Listening: {lst['listen']} (bound {b[0]}:{b[1]})" if b else f"  Listening: {lst['listen']} "
                                                                                     "(not bound)")
        if lst.get("tcp"):
            t = lst["tcp"]
            lines.append(f"    Messages: {lst['datagrams']}, Connections: "
                         f"{len(t['connections'])}/{t['max_connections']},"
                         f" accepted {t['accepted']}, refused {t['refused']}, closed {t['closed']}"
                         f" (idle {t.get('idle_closed', 0)}), errors {t['errors']}")
        else:
            rx = "" if lst.get("rxq_ovfl") is None else f" (SO_RXQ_OVFL: {lst['rxq_ovfl']})"
            rd = f", Read: {lst['read']}" if lst.get("read") else ""
            lines.append(f"    Datagrams: {lst['datagrams']}, Receive buffer: {lst['receive_buffer']},"
                         f" Kernel drops: {kd}{rx}{rd}")
    lines.append(f"  Datagrams received: {d['datagrams']}, Bytes: {d['bytes']}")
    lines.append(f"  Flow records decoded: {d['records']}, Options records: {d['options_records']}")
    lines.append(f"  Rates over {d['seconds']} s: {d['datagrams_per_second']} datagrams/s, "
                 f"{d['records_per_second']} records/s")
    for w, r in (d.get("recent") or {}).items():
        if r is not None:
            lines.append(f"  Last {w} ({r['seconds']} s): {r['datagrams']} datagrams/s, {r['records']} records/s, "
                         f"decode errors {r['decode_errors']}/s, drops {r['drops']}/s, "
                         f"kernel drops {r['kernel_drops']}/s")
    lines.append(f"  Templates learnt: {d['templates']}, Options templates: {d['options_templates']}")
    lines.append(f"  Data sets held for a template: {d['pending_sets']}, resolved: {d['pending_resolved']}")
    outs = d.get("outputs") or {}
    for f in outs.get("files", []):
        kind = {"jsonl": "JSON lines", "msgpack": "msgpack", "flows": "Flow file"}.get(f["format"], f["format"])
        lines.append(f"  {kind} output: {f['path']}, "
                     f"records: {f['records']}, rotations: {f['rotations']}, errors: {f['errors']}, "
                     f"dropped: {f['dropped']}")
    for f in outs.get("forward", []):
        conn = "" if f["connected"] is None else (", connected" if f["connected"] else ", not connected")
        lines.append(f"  Forwarding to {f['server']}{conn}: records: {f['records']}, messages sent: {f['sent']}, "
                     f"dropped: {f['dropped']}, encode errors: {f['encode_errors']}")
    n = outs.get("nats")
    if n:
        sp = n["spool"]
        lines.append(f"  NATS JetStream {n['url']} stream {n['stream']}"
                     f"{', connected' if n['connected'] else ', not connected'}: published flows: "
                     f"{n['published_flows']} in {n['published_batches']} batches, duplicates: {n['duplicates']}, "
                     f"queued batches: {n['queued']}, dropped at the queue: {n['queue_dropped_flows']}")
        lines.append(f"    Spool {sp['path']}: {sp['flows']} flows in {sp['files']} files ({sp['bytes']} bytes), "
                     f"spooled: {sp['written_flows']}, replayed: {sp['replayed_flows']}, "
                     f"dropped (full): {sp['dropped_flows']}, fsyncs: {sp['fsyncs']}")
    if d.get("jsonl") and not outs:
        j = d["jsonl"]
        lines.append(f"  JSON lines output: {j['path']}, lines: {j['lines']}, errors: {j['errors']}")
    lines.append("  Decode errors:" + ("" if d["decode_errors"] else " none"))
    for r, n in d["decode_errors"].items():
        lines.append(f"    {r:<28}{n:>12}")
    if d.get("drops_by_stage"):
        lines.append("  Drops by stage: " + ", ".join(f"{k} {v}" for k, v in d["drops_by_stage"].items()))
    lines.append("  Drops:" + ("" if d["drops"] else " none"))
    for x in d["drops"]:
        lines.append(f"    {x['stage'] + ' ' + x['reason']:<28}{x['count']:>12}")
    lines.append("")
    lines.append(f"{'Exporter':<40}{'Version':>8}{'Domains':>8}{'Templ':>6}{'Datagrams':>11}{'Records':>11}"
                 f"{'Errors':>8}{'Lost':>8}{'Held':>6}")
    for e in d["exporters"]:
        v = ",".join(str(x) for x in e["versions"]) or "-"
        addr = e["session"] or e["address"]
        lines.append(f"{addr:<40}{v:>8}{e['domains']:>8}{e['templates']:>6}{e['datagrams']:>11}"
                     f"{e['records']:>11}{e['errors']:>8}{e['lost']:>8}{e['pending']:>6}")
    return "\n".join(lines) + "\n"


def show_templates(app, args):
    opts = parse_words(args, values={"exporter": str})
    c = collector(app)
    out = []
    for exp in sorted(c.decoder.exporters.values(), key=lambda e: e.address):
        if opts.get("exporter") not in (None, exp.address):
            continue
        for (_fam, dom_id), dom in sorted(exp.domains.items()):
            for tid, t in sorted(dom.templates.items()):
                fields = []
                for k, (ie, length, pen) in enumerate(t.fields):
                    name = (f"scope {ie & 0xFFFF}" if ie & 0x10000 else ie_name(ie, pen))
                    if t.options and k < t.scope_count and not ie & 0x10000:
                        name = "scope " + name
                    fields.append({"ie": ie & 0xFFFF, "pen": pen, "name": name,
                                   "length": "variable" if length == VARLEN else length})
                out.append({"exporter": exp.address, "session": getattr(exp, "session", None), "version": dom.version,
                            "domain": dom_id, "template_id": tid,
                            "options": t.options, "record_length": t.record_length, "fields": fields})
    return {"templates": out}


def format_templates(d) -> str:
    lines = []
    for t in d["templates"]:
        rl = t["record_length"] if t["record_length"] is not None else "variable"
        kind = "Options template" if t["options"] else "Template"
        lines.append(f"Exporter: {t.get('session') or t['exporter']}, Version: {t['version']}, Domain: {t['domain']}")
        lines.append(f"  {kind} {t['template_id']}: {len(t['fields'])} fields, record length {rl}")
        for f in t["fields"]:
            pen = f" (enterprise {f['pen']})" if f["pen"] else ""
            lines.append(f"    {f['name']:<36} IE {f['ie']:>5}{pen}  length {f['length']}")
    return ("\n".join(lines) if lines else "No templates") + "\n"


def show_interfaces(app, args):
    """Interface tables learnt from options data (interfaceName / interfaceDescription by ifindex)."""
    opts = parse_words(args, values={"exporter": str})
    c = collector(app)
    out = []
    for exp in sorted(c.decoder.exporters.values(), key=lambda e: e.address):
        if opts.get("exporter") not in (None, exp.address) or not exp.interfaces:
            continue
        out.append({"exporter": exp.address, "session": exp.session,
                    "interfaces": [{"ifindex": k, "name": v[0], "description": v[1]}
                                   for k, v in sorted(exp.interfaces.items())],
                    "sampling": sampling_of(exp)})
    return {"exporters": out}


def sampling_of(exp) -> list[dict]:
    """Sampling intervals learnt per domain: the default and per sampler id."""
    out = []
    for (_fam, dom_id), dom in sorted(exp.domains.items()):
        if dom.default_rate not in (None, 1) or dom.sampler_rates:
            out.append({"domain": dom_id, "default": dom.default_rate,
                        "samplers": {str(k): v for k, v in sorted(dom.sampler_rates.items())}})
    return out


def format_interfaces(d) -> str:
    lines = []
    for e in d["exporters"]:
        lines.append(f"Exporter: {e.get('session') or e['exporter']}, {len(e['interfaces'])} interfaces")
        lines.append(f"  {'Index':>8}  {'Name':<32}Description")
        for i in e["interfaces"]:
            lines.append(f"  {i['ifindex']:>8}  {str(i['name'] or '-'):<32}{i['description'] or ''}")
    return ("\n".join(lines) if lines else "No interface tables") + "\n"


def show_flows(app, args):
    opts = parse_words(args, values={"limit": int})
    limit = opts.get("limit", 20)
    if limit < 0:
        raise CommandError("limit must be >= 0")
    c = collector(app)
    return {"flows": c.ring.last(limit), "kept": c.ring.count}


def format_flows(d) -> str:
    lines = [f"{'Exporter':<18}{'Proto':<8}{'Source address':<26}{'Port':>6}  {'Destination address':<26}{'Port':>6}"
             f"{'Packets':>10}{'Bytes':>12}{'Rate':>6}  {'Start':<24}"]
    for r in d["flows"]:
        proto = PROTO_NAMES.get(r["proto"], str(r["proto"]))
        lines.append(f"{r['exporter']:<18}{proto:<8}{str(r['src']):<26}{r['sport']:>6}  {str(r['dst']):<26}"
                     f"{r['dport']:>6}{r['packets']:>10}{r['bytes']:>12}{r['sampling_interval']:>6}  "
                     f"{str(r['first']):<24}")
    lines.append(f"{len(d['flows'])} flows shown, {d['kept']} kept")
    return "\n".join(lines) + "\n"


def clear(app, args):
    parse_words(args)
    collector(app).clear()
    return {"cleared": True}


def register(register):
    register("show services flow-collector", show, help="exporters, templates, records, decode errors and drops",
             formatter=format_show, report=True)
    register("show services flow-collector templates", show_templates,
             help="templates and options templates per exporter and domain", formatter=format_templates)
    register("show services flow-collector interfaces", show_interfaces,
             help="interface names per exporter, learnt from options data [exporter ADDRESS]",
             formatter=format_interfaces)
    register("show services flow-collector flows", show_flows, help="the last decoded flows [limit N]",
             formatter=format_flows, report="limit 10")
    register("clear services flow-collector", clear, help="reset the flow collector's counters and flow ring",
             formatter=lambda d: "Flow collector counters cleared\n")
