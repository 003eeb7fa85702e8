"""``show services rpm probe-results | history-results | active-servers`` in the Junos layout (``--json``)."""

from __future__ import annotations

import time

from flowplane.api import CommandError, Table, configured_object, parse_words

from .results import LABELS
from .service import PLUGIN_OBJECT


def _service(app):
    return configured_object(app, PLUGIN_OBJECT,
                             "no RPM probes or probe servers are configured (services rpm probe | probe-server)")


def _select(args) -> tuple[str | None, str | None]:
    opts = parse_words(args, values={"owner": str, "test": str})
    return opts.get("owner"), opts.get("test")


def show_probe_results(app, args):
    try:
        return _service(app).probe_results(*_select(args))
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None


def parse_since(text: str) -> int:
    """Junos ``since yyyy-mm-dd.hh:mm:ss`` (local time) -> ns since the epoch."""
    try:
        return int(time.mktime(time.strptime(text, "%Y-%m-%d.%H:%M:%S")) * 1e9)
    except ValueError:
        raise ValueError(f"expected yyyy-mm-dd.hh:mm:ss, got {text!r}") from None


def show_history(app, args):
    """``show services rpm history-results [brief | detail] [owner O] [since yyyy-mm-dd.hh:mm:ss] [test T]``."""
    opts = parse_words(args, values={"owner": str, "test": str, "since": parse_since}, flags=("brief", "detail"))
    try:
        d = _service(app).history(opts.get("owner"), opts.get("test"), since=opts.get("since", 0))
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    d["detail"] = bool(opts.get("detail"))
    return d


def show_active_servers(app, args):
    parse_words(args)
    return _service(app).active_servers()


def when(ns: int | None) -> str:
    """A time as Junos prints it: ``Mon Dec  7 21:21:00 2026``."""
    if not ns:
        return "-"
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(ns / 1e9))


def _usec(v) -> str:
    return "-" if v is None else f"{v} usec"


def format_collection(title: str, c: dict, extra: list[str] | None = None) -> list[str]:
    lines = [f"  {title}"] + [f"    {x}" for x in (extra or [])]
    lines.append(f"    Probes sent: {c['probes_sent']}, Probes received: {c['probes_received']}, "
                 f"Loss percentage: {c['loss_percentage']:.6f}")
    for name, s in c["measurements"].items():
        lines.append(f"    Measurement: {LABELS[name]}")
        if not s["samples"]:
            lines.append("      Samples: 0")
            continue
        lines.append(f"      Samples: {s['samples']}, Minimum: {s['min']} usec, Maximum: {s['max']} usec, "
                     f"Average: {s['avg']} usec,")
        lines.append(f"      Peak to peak: {s['peak_to_peak']} usec, Stddev: {s['stddev']} usec, Sum: {s['sum']} usec")
    return lines


TIMESTAMP_NOTE = {"kernel-rx": ", user-space send time", "user": ", user-space times"}


def _probe_lines(p: dict) -> list[str]:
    status = {"response": "Response received", "timeout": "Request timed out"}.get(p["status"],
                                                                              f"Probe failed: {p['reason']}")
    lines = ["  Probe results:", f"    {status}", f"    Probe sent time: {when(p['sent'])}",
             f"    Probe rcvd/timeout time: {when(p['received'])}, No hardware timestamps"
             + TIMESTAMP_NOTE.get(p["timestamp"], "")]
    if p["status"] == "response":
        jitter = p["jitter"].get("rtt")
        lines.append(f"    Rtt: {_usec(p['rtt'])}"
                     + (f", Round trip jitter: {jitter} usec" if jitter is not None else ""))
        if p["egress"] is not None:
            lines.append(f"    Egress time: {_usec(p['egress'])}, Ingress time: {_usec(p['ingress'])}")
        if p["interarrival"] is not None:
            lines.append(f"    Round trip interarrival jitter: {p['interarrival']} usec")
        if p["http_status"] is not None:
            lines.append(f"    HTTP status: {p['http_status']}")
    return lines


def format_test(t: dict) -> str:
    head = f"Target address: {t['target_address'] or '-'}"
    head += f", Source address: {t['source_address'] or '-'}, Probe type: {t['probe_type']}"
    if t.get("icmp_id") is not None:
        head += f", Icmp-id: {t['icmp_id']}"
    lines = [f"    Owner: {t['owner']}, Test: {t['test']}", f"    {head}"]
    if t["url"]:
        lines.append(f"    Target URL: {t['url']}")
    if t["routing_instance"]:
        lines.append(f"    Routing Instance Name: {t['routing_instance']}")
    lines.append(f"    Test size: {t['test_size']} probes")
    if t["last_error"]:
        lines.append(f"    Last error: {t['last_error']}")
    body = []
    if t["last_probe"]:
        body += _probe_lines(t["last_probe"])
    if t["current_test"]:
        body += format_collection("Results over current test:", t["current_test"])
    if t["last_test"]:
        body += format_collection("Results over last test:", t["last_test"],
                                  [f"Test completed on {when(t['last_test_completed'])}"])
    if t["moving_average"]:
        body += format_collection(f"Results over the last {t['moving_average_size']} probes (moving average):",
                                  t["moving_average"])
    body += format_collection("Results over all tests:", t["all_tests"])
    ts = t["threshold_state"]
    if ts["exceeded"]:
        body.append(f"  Thresholds exceeded: {', '.join(ts['exceeded'])}")
    return "\n".join(lines + ["  " + x for x in body]) + "\n"


def format_probe_results(d: dict) -> str:
    if not d["tests"]:
        return "No RPM tests configured\n"
    return "\n".join(format_test(t) for t in d["tests"])


def format_history(d: dict) -> str:
    if d.get("detail"):
        return format_history_detail(d)
    lines = ["    Owner, Test                 Probe received              Round trip time"] if d["tests"] else []
    for t in d["tests"]:
        name = f"{t['owner']}, {t['test']}"
        for p in t["probes"]:
            if p["status"] == "response":
                value = f"{p['rtt']} usec"
            elif p["status"] == "timeout":
                value = "Request timed out"
            else:
                value = f"Probe failed: {p['reason']}"
            lines.append(f"    {name:<27} {when(p['received']):<27} {value}")
    return ("\n".join(lines) if lines else "No RPM tests configured") + "\n"


def format_history_detail(d: dict) -> str:
    """``detail``: every kept probe with its probe results."""
    if not d["tests"]:
        return "No RPM tests configured\n"
    lines = []
    for t in d["tests"]:
        for p in t["probes"]:
            lines += [f"    Owner: {t['owner']}, Test: {t['test']}, Probe type: {t['probe_type']}, "
                      f"Target: {t['target']}, Test: {p['test']}, Probe: {p['seq']}"]
            lines += ["  " + x for x in _probe_lines(p)]
    return "\n".join(lines) + "\n"


_SERVERS = Table("{protocol:<10}{port:>6}  {address:<18}{listening:<11}{counters}", protocol="Protocol", port="Port",
                 address="Address", listening="Listening", counters="Counters")


def format_active_servers(d: dict) -> str:
    if not d["servers"]:
        return "No probe servers configured\n"
    return "\n".join(_SERVERS.lines(
        {"protocol": s["protocol"].upper(), "port": s["port"], "address": s["address"],
         "listening": "yes" if s["listening"] else "no",
         "counters": ", ".join(f"{k} {v}" for k, v in s["counters"].items()) or "-"} for s in d["servers"])) + "\n"


def register(register):
    register("show services rpm probe-results", show_probe_results, formatter=format_probe_results,
             help="RPM tests: last probe, current / last / moving-average / all-tests results [owner O] [test T]")
    register("show services rpm history-results", show_history, formatter=format_history,
             help="RPM probe history (history-size probes per test) [brief|detail] [owner O] [since T] [test T]")
    register("show services rpm active-servers", show_active_servers, formatter=format_active_servers,
             help="RPM probe servers (probe-server udp|tcp): protocol, port, counters")
