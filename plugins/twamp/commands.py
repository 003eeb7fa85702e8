"""``show services rpm twamp server [session | connection]``."""

from __future__ import annotations

from flowplane.api import CommandError, Table, configured_object, parse_words

from .server import PLUGIN_OBJECT

_SESSIONS = Table("{sid:<34}{sender:<24}{port:>6}{mode:>16}{received:>10}{reflected:>10}", sid="Session ID",
                  sender="Sender", port="Port", mode="Mode", received="Received", reflected="Reflected")
_CONNECTIONS = Table("{client:<40}{port:>6}{mode:>16}{state:>9}{sessions:>9}{seconds:>9}", client="Client",
                     port="Port", mode="Mode", state="State", sessions="Sessions", seconds="Seconds")
_CLIENT_SESSIONS = Table("  {name:<20}{target:<28}{reflector_port:>7}{current_test:>8}{probes_sent:>8}{tests:>8}"
                         "  {thresholds_exceeded}", name="Test session", target="Target", reflector_port="Port",
                         current_test="Test", probes_sent="Sent", tests="Tests",
                         thresholds_exceeded="Thresholds exceeded")
_STATISTICS = ("min", "max", "avg", "peak_to_peak", "stddev", "p50", "p95", "p99")
_MEASUREMENTS = Table("    {label:<28}{samples:>8}" + "".join(f"{{{k}:>11}}" for k in _STATISTICS),
                      label="Measurement (us)", samples="Samples", min="Min", max="Max", avg="Avg",
                      peak_to_peak="Peak-peak", stddev="Stddev", p50="P50", p95="P95", p99="P99")
_HISTORY = Table("    {test:>6}{seq:>8}  {status:<7}{rtt_us:>12}{egress_us:>12}{ingress_us:>12}", test="Test",
                 seq="Seq", status="Status", rtt_us="RTT us", egress_us="Egress us", ingress_us="Ingress us")


def _server(app):
    return configured_object(app, PLUGIN_OBJECT, "the TWAMP server is not configured (services rpm twamp server)")


def show_server(app, args):
    parse_words(args)
    return _server(app).status()


def show_sessions(app, args):
    parse_words(args)
    return {"sessions": _server(app).status()["sessions"]}


def show_connections(app, args):
    parse_words(args)
    return {"connections": _server(app).status()["connections"]}


def format_sessions(d) -> str:
    lines = [_SESSIONS.header]
    for s in d["sessions"]:
        lines.append(_SESSIONS.row(s))
        for reason, n in s["dropped"].items():
            lines.append(f"    dropped {reason}: {n}")
    return "\n".join(lines) + "\n"


def format_connections(d) -> str:
    return "\n".join(_CONNECTIONS.lines(d["connections"])) + "\n"


def format_server(d) -> str:
    b = d["listening"]
    head = [f"TWAMP server: {'listening on ' + b[0] + ':' + str(b[1]) if b else 'not listening'}",
            f"  Modes: {', '.join(d['modes'])}",
            "  Counters:" + ("" if d["counters"] else " none")]
    head += [f"    {k:<32}{v:>10}" for k, v in d["counters"].items()]
    return "\n".join(head) + "\n\n" + format_connections(d) + "\n" + format_sessions(d)


def register(register):
    register("show services rpm twamp server", show_server,
             help="TWAMP server: listener, counters, connections, sessions",
             formatter=format_server)
    register("show services rpm twamp server session", show_sessions, help="TWAMP reflector sessions",
             formatter=format_sessions)
    register("show services rpm twamp server connection", show_connections, help="TWAMP control connections",
             formatter=format_connections)


# -- services rpm twamp client --------------------------------------------------------------------------------

def _client(app):
    from .service import PLUGIN_OBJECT as CLIENT_OBJECT

    return configured_object(app, CLIENT_OBJECT, "the TWAMP client is not configured (services rpm twamp client)")


def show_client_session(app, args):
    opts = parse_words(args, values={"control-connection": str})
    st = _client(app).status()
    if "control-connection" in opts:
        st["control_connections"] = [c for c in st["control_connections"] if c["name"] == opts["control-connection"]]
        if not st["control_connections"]:
            raise CommandError(f"no control-connection {opts['control-connection']!r}")
    return st


def show_probe_results(app, args):
    opts = parse_words(args, values={"control-connection": str, "test-session": str}, flags=("history",))
    try:
        return _client(app).probe_results(opts.get("control-connection"), opts.get("test-session"),
                                          history=opts.get("history", False))
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None


def _request(app, args, what: str):
    """``request services rpm twamp start|stop client [[control-connection] NAME]``; no name: every one."""
    if args[:1] == ["control-connection"]:
        args = args[1:]
    if len(args) > 1:
        raise CommandError(f"usage: request services rpm twamp {what} client [control-connection] [NAME]")
    svc = _client(app)
    if not args:  # Junos: without a name, every control connection (those it applies to)
        names = [n for n, r in svc.runners.items() if r.active == (what == "stop")]
        if not names:
            raise CommandError(f"no control connection to {what}")
        return {"control_connections": [getattr(svc, what)(n) for n in names]}
    try:
        return getattr(svc, what)(args[0])
    except (KeyError, ValueError) as exc:
        raise CommandError(exc.args[0]) from None


def request_start(app, args):
    return _request(app, args, "start")


def request_stop(app, args):
    return _request(app, args, "stop")


def _server_status(c: dict) -> str:
    if c.get("control_type") == "light":
        return f"  Control type: light, no TWAMP-Control connection ({c['state']})"
    return (f"  TWAMP-Server-Status: {'Connected' if c['connected'] else 'Not connected'} ({c['state']})"
            + (f", {c['connected_seconds']} s" if c["connected"] else ""))


def format_client_session(d) -> str:
    lines = []
    for c in d["control_connections"]:
        lines += [f"Control connection: {c['name']}",
                  f"  TWAMP-Server: {c['server']}:{c['port']}, client {c['local'] or '-'}, mode {c['mode']}",
                  _server_status(c),
                  f"  Number-Of-Retries-With-TWAMP-Server: {c['retries']}",
                  f"  Tests: {c['tests_done']} of {c['test_count'] or 'unlimited'} (every {c['test_interval']} s), "
                  f"connects {c['connects']}, aborted {c['aborted_tests']}",
                  f"  Persistent results: {'yes' if c['persistent_results'] else 'no'}; keepalive idle "
                  f"{c['keepalive']['idle']} s, interval {c['keepalive']['interval']} s, "
                  f"count {c['keepalive']['count']}"]
        if c["last_error"]:
            lines.append(f"  Last error: {c['last_error']}")
        lines += _CLIENT_SESSIONS.lines(
            dict(s, current_test="-" if s["current_test"] is None else s["current_test"],
                 thresholds_exceeded=", ".join(s["thresholds_exceeded"]) or "-") for s in c["sessions"])
        lines.append("")
    return "\n".join(lines) + ("\n" if not lines else "")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_test(label: str, t: dict | None) -> list[str]:
    """One results block (the current test, the last test or all tests), as the one-shot tool prints it too."""
    if t is None:
        return [f"  {label}: none yet"]
    head = f"  {label}" + (f" (test {t['test']})" if "test" in t else f" ({t['tests']} tests)") + ":"
    sync = t["clock_synchronised"]
    lines = [head,
             f"    Probes sent: {t['sent']}, received: {t['received']}, loss: {t['loss_percent']} % "
             f"(egress {t['forward_lost']}, ingress {t['backward_lost']}, unknown {t['unknown_direction_lost']}); "
             f"successive loss {t['successive_loss']}",
             f"    Duplicates: {t['duplicates']}, reordered: {t['reordered']}",
             _MEASUREMENTS.header]
    from .results import LABELS, ONE_WAY

    for name, s in t["measurements_us"].items():
        label_m = LABELS[name] + ("*" if name in ONE_WAY and not sync else "")
        lines.append(_MEASUREMENTS.row({k: _fmt(s[k]) for k in _STATISTICS}, label=label_m, samples=s["samples"]))
    j = t["rfc3550_jitter_us"]
    lines.append(f"    RFC 3550 jitter (us): round trip {j['rtt']:.1f}, egress {j['egress']:.1f}, "
                 f"ingress {j['ingress']:.1f}")
    if not sync:
        lines.append("    * one-way values: the clocks are not synchronised (S bit clear), they include the clock "
                     f"offset; {t['negative_one_way']} negative")
    return lines


def format_probe_results(d) -> str:
    lines = []
    for r in d["results"]:
        lines += [f"Owner: {r['control_connection']}, Test: {r['test_session']}",
                  f"  TWAMP-Server: {r['server']}:{r['port']}, client {r['client'] or '-'}, reflector "
                  f"{r['target']}:{r['reflector_port']} ({r['state']})",
                  f"  Data size: {r['data_size']}, DSCP: {r['dscp']}, probes per test: {r['probe_count']} "
                  f"every {r['probe_interval']} s"]
        lines += format_test("Current test", r["current_test"])
        lines += format_test("Last test", r["last_test"])
        lines += format_test("All tests", r["all_tests"] if r["all_tests"]["tests"] else None)
        ma = r.get("moving_average_us")
        if ma is not None:
            lines.append(f"  Moving average over the last {ma['samples']} probes (us): round trip {_fmt(ma['rtt'])}, "
                         f"egress {_fmt(ma['egress'])}, ingress {_fmt(ma['ingress'])}")
        if r["thresholds"]:
            lines.append("  Thresholds: " + ", ".join(f"{k} {v}" for k, v in r["thresholds"].items())
                         + f"; exceeded now: {', '.join(r['thresholds_exceeded']) or 'none'}")
        if "history" in r:
            lines.append(f"  History (last {r['history_size']}):")
            lines += _HISTORY.lines(dict(h, rtt_us=_fmt(h["rtt_us"]), egress_us=_fmt(h["egress_us"]),
                                         ingress_us=_fmt(h["ingress_us"])) for h in r["history"])
        lines.append("")
    return "\n".join(lines) + "\n"


def format_request(d) -> str:
    items = d["control_connections"] if "control_connections" in d else [d]
    return "".join(f"TWAMP client {x['control_connection']}: {x['state']}\n" for x in items)


def register_client(register):
    register("show services rpm twamp client session", show_client_session,
             help="TWAMP client control connections and test sessions [control-connection NAME]",
             formatter=format_client_session)
    register("show services rpm twamp client probe-results", show_probe_results,
             help="TWAMP client results [control-connection NAME] [test-session NAME] [history]",
             formatter=format_probe_results)
    register("request services rpm twamp start client", request_start,
             help="start TWAMP client control connections: [control-connection] [NAME] (all without a name)",
             formatter=format_request)
    register("request services rpm twamp stop client", request_stop,
             help="stop TWAMP client control connections: [control-connection] [NAME] (all without a name)",
             formatter=format_request)
