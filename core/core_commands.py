"""Operational commands of the core: firewall counters, decode errors, interfaces, plugins.

``show firewall [filter NAME]``, ``clear firewall [filter NAME]``,
``show services accounting errors [interface NAME]``,
``clear services accounting errors``, ``show interfaces statistics``,
``show system statistics``, ``show system metrics``, ``show system plugins``, ``show system profile``,
``show version``.
"""

from __future__ import annotations

from . import __version__, hookimpl, kernels
from .commands import CommandError, parse_words
from .decode import REASON_TEXT, Reason
from .firewall import format_show_firewall
from .graph import hook_status

# -- firewall -------------------------------------------------------------------------


def show_firewall(app, args):
    opts = parse_words(args, values={"filter": str})
    fw = app.graph.firewall
    name = opts.get("filter")
    data = fw.show_firewall(name)
    if name and not data.get("filters"):
        raise CommandError(f"no filter named {name!r}")
    return data


def clear_firewall(app, args):
    opts = parse_words(args, values={"filter": str}, flags=("all",))
    app.graph.firewall.clear(opts.get("filter"))
    return {"cleared": opts.get("filter") or "all"}


# -- decode errors ------------------------------------------------------------------


def show_accounting_errors(app, args):
    opts = parse_words(args, values={"interface": str})
    want = opts.get("interface")
    rows = []
    for iid, counts in sorted(app.decode_counts.items()):
        name = app.interfaces.name(iid)
        if want and name != want:
            continue
        src = app.sources.get(name)
        sc = getattr(src, "counters", None)
        rows.append({
            "interface": name,
            "index": iid,
            "received": int(counts.sum()),
            "decoded": int(counts[Reason.OK]),
            "errors": {REASON_TEXT[Reason(i)]: int(counts[i]) for i in range(1, len(counts))
                       if i in Reason._value2member_map_},
            "ingest_backpressure": int(sc.drops.get(("ingest", "backpressure"), 0)) if sc else 0,
            "kernel_drops": int(sc.values.get("kernel_drops", 0)) if sc else 0,
        })
    if want and not rows:
        raise CommandError(f"no packets seen on interface {want!r}")
    pipe = app.counters["pipeline"]
    return {"interfaces": rows, "filter_discarded": pipe["filter_discarded"],
            "filter_rejected": pipe["filter_rejected"]}


def format_accounting_errors(data) -> str:
    out = []
    for row in data["interfaces"]:
        out.append(f"Service Accounting interface: {row['interface']}, Local interface index: {row['index']}")
        out.append("Service name: (default sampling)")
        out.append("Error information")
        out.append(f"  Packets received: {row['received']}, Packets decoded: {row['decoded']}")
        pairs = [(f"Packets dropped ({k})", v) for k, v in row["errors"].items()]
        pairs += [("Packets dropped (ingest backpressure)", row["ingest_backpressure"]),
                  ("Packets dropped (kernel)", row["kernel_drops"])]
        for i in range(0, len(pairs), 2):
            out.append("  " + ", ".join(f"{k}: {v}" for k, v in pairs[i:i + 2]))
        out.append("")
    if not data["interfaces"]:
        out.append("No packets received yet")
    return "\n".join(out).rstrip() + "\n"


def clear_accounting_errors(app, args):
    parse_words(args)
    for counts in app.decode_counts.values():
        counts[:] = 0
    return {"cleared": "errors"}


# -- interfaces, system --------------------------------------------------------------


def show_interfaces(app, args):
    parse_words(args)
    rows = []
    for name, src in sorted(app.sources.items()):
        c = getattr(src, "counters", None)
        rows.append({
            "name": name,
            "index": app.interfaces.lookup(name),
            "source": (app.config.get("interfaces", name, "source") or "af-packet"),
            "counters": dict(c.values) if c else {},
            "drops": [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(c.drops.items())] if c else [],
        })
    return {"interfaces": rows}


def format_interfaces(data) -> str:
    out = []
    for row in data["interfaces"]:
        out.append(f"Interface: {row['name']}, Index: {row['index']}, Source: {row['source']}")
        c = row["counters"]
        out.append(f"  Input packets: {c.get('packets', 0)}, Input bytes: {c.get('bytes', 0)}, "
                   f"Batches: {c.get('batches', 0)}")
        if "kernel_packets" in c or "kernel_drops" in c:
            out.append(f"  Kernel packets: {c.get('kernel_packets', 0)}, Kernel drops: {c.get('kernel_drops', 0)}")
        for d in row["drops"]:
            out.append(f"  Dropped ({d['stage']}, {d['reason']}): {d['count']}")
    return "\n".join(out) + "\n" if out else "No interfaces\n"


def show_system_statistics(app, args):
    parse_words(args)
    return {
        "uptime_s": round(app.uptime(), 1),
        "pipeline": app.counters["pipeline"].snapshot(),
        "plugins": app.counters["plugins"].snapshot(),
        "batch_hooks": hook_status(app.graph),
        "queue": app.pipeline.status() if app.pipeline else None,
        "kernels": kernels.status(),
    }


def format_system_statistics(data) -> str:
    out = [f"Uptime: {data['uptime_s']} seconds"]
    k = data.get("kernels")
    if k:
        out.append(f"Kernels: {k['implementation']} ({k['reason']})")
    out.append("Pipeline:")
    for k, v in sorted(data["pipeline"]["counters"].items()):
        out.append(f"  {k}: {v}")
    for d in data["pipeline"]["drops"]:
        out.append(f"  dropped ({d['stage']}, {d['reason']}): {d['count']}")
    if data["queue"]:
        out.append(f"Ingest queue: {data['queue']['queue_used']}/{data['queue']['queue_size']} batches")
    errs = data["plugins"]["counters"]
    out.append("Plugin errors:" if errs else "Plugin errors: none")
    for k, v in sorted(errs.items()):
        out.append(f"  {k}: {v}")
    for hook, rows in sorted((data.get("batch_hooks") or {}).items()):
        for row in rows:
            if row["disabled"]:
                what = f"action {row['action']}" if "action" in row else hook
                out.append(f"  disabled: {row['plugin']} ({what}) after {row['failures']} failures")
    return "\n".join(out) + "\n"


def show_metrics(app, args):
    parse_words(args)
    endpoint = getattr(app, "metrics", None)
    if endpoint is None:
        return {"listen": None, "bound": None, "plugin_failures": {}, "duplicate_families": 0}
    return endpoint.status()


def format_metrics(data) -> str:
    if not data["listen"]:
        return "Metrics endpoint: off (system metrics listen ADDRESS:PORT)\n"
    out = [f"Metrics endpoint: http://{data['bound'] or data['listen']}/metrics"
           + ("" if data["bound"] else " (not bound)")]
    for plugin, n in sorted(data["plugin_failures"].items()):
        out.append(f"  flowplane_metrics failures of {plugin}: {n}")
    if data["duplicate_families"]:
        out.append(f"  families left out (name given twice): {data['duplicate_families']}")
    return "\n".join(out) + "\n"


def show_plugins(app, args):
    parse_words(args)
    return {"plugins": app.plugin_table()}


def format_plugins(data) -> str:
    out = []
    for p in data["plugins"]:
        flag = " (blocked)" if p.get("blocked") else ""
        out.append(f"{p['name']} {p['version']}{flag}")
        if p["hooks"]:
            out.append(f"  hooks: {', '.join(p['hooks'])}")
        for kind, names in sorted(p["registered"].items()):
            out.append(f"  {kind}: {', '.join(names)}")
        for what, f in sorted(p.get("failures", {}).items()):
            out.append(f"  failures in {what}: {f['failures']}" + (" (disabled)" if f["disabled"] else ""))
    return "\n".join(out) + "\n"


def show_profile(app, args):
    parse_words(args)
    profile, limits, regs = app.profile, app.limits, app.registries
    return {
        "name": profile.name,
        "description": profile.description,
        "limits": {name: _plain(getattr(limits, name)) for name in limits},
        "limit_fields": [{"name": name, "value": _plain(getattr(limits, name)), "set": name in profile.limits,
                          "plugin": regs.limits.owner(name), "help": regs.limits[name].help} for name in limits],
        "capabilities": sorted(profile.capabilities),
        "capability_fields": [{"name": name, "plugin": regs.capabilities.owner(name), "help": regs.capabilities[name]}
                              for name in sorted(profile.capabilities) if name in regs.capabilities],
    }


def _plain(value):
    return list(value) if isinstance(value, (tuple, frozenset, set)) else value


def format_profile(data) -> str:
    out = [f"Hardware profile: {data['name']}", f"  {data['description']}", "Limits:"]
    width = max((len(f["name"]) for f in data["limit_fields"]), default=0)
    for f in data["limit_fields"]:
        value = ", ".join(map(str, f["value"])) if isinstance(f["value"], list) else f["value"]
        origin = f"{f['plugin']}" + ("" if f["set"] else ", default")
        out.append(f"  {f['name']:<{width}}  {value}  ({origin})")
    out.append(f"Capabilities: {', '.join(data['capabilities']) or 'none'}")
    for f in data["capability_fields"]:
        out.append(f"  {f['name']}  ({f['plugin']})")
    return "\n".join(out) + "\n"


def show_version(app, args):
    parse_words(args)
    return {"version": __version__, "profile": app.profile.name, "config": app.config.path}


@hookimpl
def flowplane_register_control_commands(register):
    register("show firewall", show_firewall, help="filter, counter and term statistics", formatter=format_show_firewall,
             report=True)
    register("clear firewall", clear_firewall, help="reset firewall counters [filter NAME]")
    register("show services accounting errors", show_accounting_errors,
             help="decode errors and drops by reason, per interface", formatter=format_accounting_errors,
             report=True)
    register("clear services accounting errors", clear_accounting_errors, help="reset decode error counters")
    register("show interfaces statistics", show_interfaces, help="per-source packet, byte and drop counters",
             formatter=format_interfaces)
    register("show system statistics", show_system_statistics, help="pipeline counters, drops, plugin errors",
             formatter=format_system_statistics)
    register("show system metrics", show_metrics, help="the Prometheus metrics endpoint", formatter=format_metrics)
    register("show system plugins", show_plugins, help="loaded plugins and what they registered",
             formatter=format_plugins)
    register("show system profile", show_profile, help="active hardware profile and its limits",
             formatter=format_profile)
    register("show version", show_version, help="flowplane version",
             formatter=lambda d: f"flowplane {d['version']} (profile {d['profile']}, config {d['config']})\n")
