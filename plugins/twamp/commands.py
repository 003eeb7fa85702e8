"""``show services rpm twamp server [session | connection]``."""

from __future__ import annotations

from flowplane.commands import CommandError, parse_words

from .server import PLUGIN_OBJECT


def _server(app):
    s = app.pm.get_plugin(PLUGIN_OBJECT)
    if s is None:
        raise CommandError("the TWAMP server is not configured (services rpm twamp server)")
    return s


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
    lines = [f"{'Session ID':<34}{'Sender':<24}{'Port':>6}{'Mode':>16}{'Received':>10}{'Reflected':>10}"]
    for s in d["sessions"]:
        lines.append(f"{s['sid']:<34}{s['sender']:<24}{s['port']:>6}{s['mode']:>16}{s['received']:>10}"
                     f"{s['reflected']:>10}")
        for reason, n in s["dropped"].items():
            lines.append(f"    dropped {reason}: {n}")
    return "\n".join(lines) + "\n"


def format_connections(d) -> str:
    lines = [f"{'Client':<40}{'Port':>6}{'Mode':>16}{'State':>9}{'Sessions':>9}{'Seconds':>9}"]
    for c in d["connections"]:
        lines.append(f"{c['client']:<40}{c['port']:>6}{c['mode']:>16}{c['state']:>9}{c['sessions']:>9}"
                     f"{c['seconds']:>9}")
    return "\n".join(lines) + "\n"


def format_server(d) -> str:
    b = d["listening"]
    head = [f"TWAMP server: {'listening on ' + b[0] + ':' + str(b[1]) if b else 'not listening'}",
            f"  Modes: {', '.join(d['modes'])}",
            "  Counters:" + ("" if d["counters"] else " none")]
    head += [f"    {k:<32}{v:>10}" for k, v in d["counters"].items()]
    return "\n".join(head) + "\n\n" + format_connections(d) + "\n" + format_sessions(d)


def register(register):
    register("show services rpm twamp server", show_server, help="TWAMP server: listener, counters, connections, sessions",
             formatter=format_server)
    register("show services rpm twamp server session", show_sessions, help="TWAMP reflector sessions",
             formatter=format_sessions)
    register("show services rpm twamp server connection", show_connections, help="TWAMP control connections",
             formatter=format_connections)
