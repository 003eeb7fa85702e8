"""``show services dynamic-flow-capture content-destination | control-source | statistics``.

Each command takes ``capture-group NAME``; ``content-destination`` also takes
``identifier NAME``, ``control-source`` takes ``source-identifier NAME`` and
``detail`` (lists the source's criteria).  Text follows the Junos layout;
``--json`` returns the same data.
"""

from __future__ import annotations

from flowplane.api import CommandError, configured_object, parse_words

from .engine import PLUGIN_OBJECT


def _engine(app):
    return configured_object(app, PLUGIN_OBJECT,
                             "dynamic flow capture is not configured (services dynamic-flow-capture)")


def _filter(rows, key, value, what, e):
    if value is None:
        return rows
    out = [r for r in rows if r[key] == value]
    if not out:
        raise CommandError(f"no {what} {value!r}")
    return out


def show_destinations(app, args):
    opts = parse_words(args, values={"capture-group": str, "identifier": str})
    e = _engine(app)
    rows = _filter(e.destination_rows(), "capture_group", opts.get("capture-group"), "capture group", e)
    rows = _filter(rows, "content_destination", opts.get("identifier"), "content destination", e)
    return {"content_destinations": rows}


def show_sources(app, args):
    opts = parse_words(args, values={"capture-group": str, "source-identifier": str}, flags=("detail", "terse"))
    e = _engine(app)
    rows = _filter(e.source_rows(detail=bool(opts.get("detail"))), "capture_group", opts.get("capture-group"),
                   "capture group", e)
    rows = _filter(rows, "control_source", opts.get("source-identifier"), "control source", e)
    return {"control_sources": rows}


def show_statistics(app, args):
    opts = parse_words(args, values={"capture-group": str})
    e = _engine(app)
    st = e.statistics()
    st["groups"] = _filter(st["groups"], "capture_group", opts.get("capture-group"), "capture group", e)
    return st


def _bps(v: int) -> str:
    return f"{v} bps" if v else "none"


def format_destinations(d) -> str:
    lines = []
    for r in d["content_destinations"]:
        lines += [f"Capture group: {r['capture_group']}, Content destination: {r['content_destination']}",
                  f"  Address: {r['address']}, Port: {r['port'] or '-'}, TTL: {r['ttl']}"
                  + (f", Source address: {r['source_address']}" if r["source_address"] else ""),
                  f"  Criteria: {r['active_criteria']}",
                  f"  Packets sent: {r['packets']}, Bytes sent: {r['bytes']}, Rate: {r['rate_bps']} bps",
                  f"  Hard limit: {_bps(r['hard_limit'])}, Hard limit drops: {r['hard_limit_drops']}",
                  f"  Soft limit: {_bps(r['soft_limit'])}, Soft limit clear: {_bps(r['soft_limit_clear'])}, "
                  f"Congestion: {'Yes' if r['congested'] else 'No'}, Congestion events: {r['congestion_events']}",
                  f"  Send drops: {r['send_drops']}"
                  + "".join(f", {k}: {v}" for k, v in sorted(r["errors"].items()))]
        if r["socket_error"]:
            lines.append(f"  Socket error: {r['socket_error']}")
        lines.append("")
    return "\n".join(lines)


def format_sources(d) -> str:
    lines = []
    for r in d["control_sources"]:
        rq, fl, nt, dl = r["requests"], r["failed"], r["notifications"], r["criteria_deleted"]
        lines += [f"Capture group: {r['capture_group']}, Control source: {r['control_source']}",
                  f"  Source addresses: {', '.join(r['source_addresses'])}, Service port: "
                  f"{r['bound_port'] if r['bound_port'] is not None else r['service_port']}",
                  f"  Criteria added: {r['criteria_added']}, Criteria add failed: {r['criteria_add_failed']}",
                  f"  Active criteria: {r['active_criteria']}, Static criteria: {r['static_criteria']}, "
                  f"Dynamic criteria: {r['dynamic_criteria']}",
                  f"  Control protocol requests: {sum(rq.values())}",
                  f"    Add: {rq['add']}, Delete: {rq['delete']}, List: {rq['list']}, Refresh: {rq['refresh']}, "
                  f"No-op: {rq['noop']}",
                  f"  Control protocol requests failed: {sum(fl.values())}",
                  f"    Add: {fl['add']}, Delete: {fl['delete']}, List: {fl['list']}, Refresh: {fl['refresh']}, "
                  f"No-op: {fl['noop']}",
                  "  Requests refused: " + (", ".join(f"{k}: {v}" for k, v in sorted(r["refused"].items())) or "0"),
                  f"  Total notifications: {sum(nt.values())}",
                  f"    Restart: {nt['restart']}, Timeout: {nt['timeout']}, Congestion: {nt['congestion']}, "
                  f"Dups dropped: {nt['duplicates-dropped']}",
                  f"  Criteria deleted: {sum(dl.values())}",
                  f"    Request: {dl['request']}, Timeout idle: {dl['idle-time']}, Timeout total: {dl['total-time']}, "
                  f"Packets: {dl['packet-limit']}, Bytes: {dl['byte-limit']}",
                  f"  Sequence number: {r['sequence_number'] if r['sequence_number'] is not None else '-'}"]
        for c in r.get("criteria", []):
            fields = ", ".join(f"{k}: {v}" for k, v in c["fields"].items()) or "any"
            lines.append(f"    Criteria {c['id']}: {fields}; destinations {','.join(c['destinations'])}; "
                         f"priority {c['priority']}{' STATIC' if c['static'] else ''}; packets {c['packets']}, "
                         f"bytes {c['bytes']}")
        lines.append("")
    return "\n".join(lines)


def format_statistics(d) -> str:
    rq, fl = d["requests"], d["failed"]
    lines = ["Input",
             f"  Control protocol packets: {d['control_packets']}"]
    lines += ["Control protocol drops"]
    names = {"not_dtcp": "Not DTCP", "bad_request": "Bad request", "bad_command": "Bad command line",
             "too_large": "Request too large", "unknown_control_source": "Unknown control source",
             "unauthorized_control_source": "Unauthorized control source",
             "bad_authentication": "Bad authentication", "sequence_replay": "Sequence replayed",
             "sequence_out_of_window": "Sequence out of window"}
    for key, label in names.items():
        lines.append(f"  {label}: {d['drops'].get(key, 0)}")
    lines += ["Control protocol requests",
              f"  Add: {rq['add']}, Delete: {rq['delete']}, List: {rq['list']}, Refresh: {rq['refresh']}, "
              f"No-op: {rq['noop']}",
              "Control protocol requests failed",
              f"  Add: {fl['add']}, Delete: {fl['delete']}, List: {fl['list']}, Refresh: {fl['refresh']}, "
              f"No-op: {fl['noop']}"]
    if d.get("other"):
        lines += ["Control protocol, other counters"]
        lines += [f"  {k}: {v}" for k, v in sorted(d["other"].items())]
    for g in d["groups"]:
        lines += [f"Capture group: {g['capture_group']}",
                  f"  Active criteria: {g['active_criteria']} (limit {g['criteria_capacity']}), "
                  f"Adds refused at the limit: {g['add_refused_capacity']}",
                  f"  Data packets seen: {g['packets_seen']}, Input rate: {g['input_rate_pps']} pps, "
                  f"Threshold crossings: {g['input_rate_threshold_exceeded']}",
                  f"  Captured data packets: {g['packets_matched']}",
                  f"  Packets copied: {g['packets_copied']}, Bytes copied: {g['bytes_copied']}",
                  f"  Bandwidth exceeded drops: {g['hard_limit_drops']}, Duplicates dropped: "
                  f"{g['duplicates_dropped']}, "
                  f"Send drops: {g['send_drops']}"]
    return "\n".join(lines) + "\n"


def register(register):
    register("show services dynamic-flow-capture content-destination", show_destinations,
             help="DFC content destinations: address, criteria, packets sent, bandwidth limits",
             formatter=format_destinations)
    register("show services dynamic-flow-capture control-source", show_sources,
             help="DFC control sources: requests, criteria, notifications, sequence number",
             formatter=format_sources)
    register("show services dynamic-flow-capture statistics", show_statistics,
             help="DFC control protocol and data statistics", formatter=format_statistics)
