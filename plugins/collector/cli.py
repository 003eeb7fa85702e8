"""A flow collector in the foreground.

``flowplane collect --listen udp:HOST:PORT [--listen tcp:HOST:PORT] [--output jsonl:PATH]``

Like ``nfcapd`` without a config file: it builds an ordinary config with a
``services flow-collector`` section (``--print-config`` shows it), runs the
service until SIGINT/SIGTERM, ``--duration`` seconds or ``--count`` flow
records (then it stops through ``app.request_stop()``, the SIGTERM path),
and prints a summary.  The collector plugin adds the subcommand through
``flowplane_register_cli_subcommands``.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import trio

from flowplane.api import hookimpl, run_oneshot

from .collector import PLUGIN_OBJECT


def add_parser(subparsers) -> Any:
    p = subparsers.add_parser("collect", help="receive NetFlow v5/v9 and IPFIX in the foreground (like nfcapd)")
    p.add_argument("--listen", action="append", required=True, metavar="udp|tcp:HOST:PORT",
                   help="listen here (repeat for several; IPv6 as udp:[::1]:PORT; tcp: IPFIX over TCP)")
    p.add_argument("--output", action="append", default=[], metavar="KIND:WHERE",
                   help="jsonl:PATH (one JSON object per flow and line), msgpack:PATH (one map per flow), "
                        "flows:PATH (binary blocks of raw records, the fastest; read with "
                        "python -m flowplane.plugins.collector.flowfile), "
                        "ipfix:HOST:PORT / v9:HOST:PORT (re-export over UDP, the exporter address kept), "
                        "ipfix+tcp:HOST:PORT; nats:nats://HOST:PORT (JetStream, stream FLOWS, subjects "
                        "flows.EXPORTER); repeat for several (replication)")
    p.add_argument("--spool", default=None, metavar="DIR",
                   help="the nats output's on-disk spool while the bus is away (default /var/lib/flowplane/spool)")
    p.add_argument("--rotate-seconds", type=float, default=None,
                   help="rotate the jsonl/msgpack files every S seconds (PATH.current -> PATH.YYYYmmddHHMMSS)")
    p.add_argument("--rotate-bytes", type=int, default=None, help="rotate the files before they exceed N bytes")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--count", type=int, default=None, help="stop after N flow records")
    p.add_argument("--max-templates", type=int, default=1024, help="templates kept per exporter (default 1024)")
    p.add_argument("--pending-timeout", type=float, default=10.0,
                   help="seconds data waits for its template (default 10)")
    p.add_argument("--template-timeout", type=float, default=1800.0,
                   help="seconds a UDP template lives unless refreshed (default 1800, 0: never)")
    p.add_argument("--scale", action="store_true",
                   help="multiply packets and bytes by the sampling interval that applies (scale-by-sampling-rate)")
    p.add_argument("--receive-buffer", type=int, default=None, metavar="BYTES",
                   help="SO_RCVBUF asked for on the UDP sockets (default 8388608; the kernel doubles it)")
    p.add_argument("--print-config", action="store_true", help="print the config it would run and exit")
    return p


def parse_listen(text: str) -> dict:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` (or ``HOST:PORT``, ``udp:[V6]:PORT``) -> a ``listen`` entry."""
    proto, sep, rest = text.partition(":")
    if proto not in ("udp", "tcp") or not sep or not rest:
        proto, rest = "udp", text
    if rest.startswith("["):
        host, _, port_s = rest[1:].partition("]:")
    else:
        host, _, port_s = rest.rpartition(":")
    host = str(ipaddress.ip_address(host))
    port = int(port_s)
    if not 0 <= port < 65536:
        raise ValueError(f"{text!r}: port {port} out of range")
    return {"address": host, "port": port, "protocol": proto}


FILE_OUTPUTS = ("jsonl", "msgpack", "flows")
FORWARD_OUTPUTS = {"ipfix": (10, "udp"), "ipfix+udp": (10, "udp"), "ipfix+tcp": (10, "tcp"), "v9": (9, "udp"),
                   "v9+udp": (9, "udp")}


def parse_output(text: str) -> tuple[str, Any]:
    """``jsonl:PATH`` / ``msgpack:PATH`` -> (kind, path); ``ipfix[+tcp]:HOST:PORT`` / ``v9:HOST:PORT`` ->
    ("forward", a ``forward`` entry)."""
    kind, sep, rest = text.partition(":")
    if kind in FILE_OUTPUTS and sep and rest:
        return kind, rest
    if kind == "nats" and sep and rest:  # nats:nats://HOST:PORT, or nats:HOST:PORT
        url = rest if rest.startswith(("nats://", "tls://")) else "nats://" + rest
        return "nats", {"url": url}
    if kind in FORWARD_OUTPUTS and sep and rest:
        version, transport = FORWARD_OUTPUTS[kind]
        if rest.startswith("["):
            host, _, port_s = rest[1:].partition("]:")
        else:
            host, _, port_s = rest.rpartition(":")
        try:
            host = str(ipaddress.ip_address(host))
            port = int(port_s)
        except ValueError:
            raise ValueError(f"{text!r}: expected {kind}:HOST:PORT (an IP address; IPv6 as [::1]:PORT)") from None
        if not 0 < port < 65536:
            raise ValueError(f"{text!r}: port {port} out of range")
        return "forward", {"address": host, "port": port, "version": version, "transport": transport}
    raise ValueError(f"{text!r}: expected jsonl:PATH, msgpack:PATH, flows:PATH, ipfix:HOST:PORT, ipfix+tcp:HOST:PORT "
                     f"v9:HOST:PORT or nats:nats://HOST:PORT")


def build_config(args: Any, control_socket: str) -> dict:
    section: dict[str, Any] = {"listen": [parse_listen(x) for x in args.listen],
                               "max-templates-per-exporter": args.max_templates,
                               "pending-timeout": args.pending_timeout}
    if getattr(args, "scale", False):
        section["scale-by-sampling-rate"] = True
    if getattr(args, "receive_buffer", None) is not None:
        section["receive-buffer"] = args.receive_buffer
    if getattr(args, "template_timeout", 1800.0) != 1800.0:
        section["template-timeout"] = args.template_timeout
    output: dict[str, Any] = {}
    for out in args.output:
        kind, where = parse_output(out)
        if kind == "forward":
            output.setdefault("forward", []).append(where)
        elif kind == "nats":
            if getattr(args, "spool", None):
                where["spool"] = {"path": os.path.abspath(args.spool)}
            output["nats"] = where
        else:
            output[kind] = os.path.abspath(where)
    rotate = {k: v for k, v in (("seconds", getattr(args, "rotate_seconds", None)),
                                ("bytes", getattr(args, "rotate_bytes", None))) if v is not None}
    if rotate:
        output["rotate"] = rotate
    if output:
        section["output"] = output
    return {"system": {"control-socket": control_socket, "log": {"level": "warning"}},
            "services": {"flow-collector": section}}


class Stopper:
    """Announces the bound listeners and stops the service after ``--duration`` or ``--count``."""

    def __init__(self, duration: float | None, count: int | None) -> None:
        self.duration = duration
        self.count = count
        self.started = time.monotonic()
        self.app = None
        self.announced = False

    @hookimpl
    def flowplane_background_tasks(self, app):
        self.app = app
        return [self._run]

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.started = time.monotonic()
        while True:
            await trio.sleep(0.05)
            c = app_collector(self.app) if self.app is not None else None
            if c is not None and not self.announced and c.listeners and all(x.bound for x in c.listeners):
                self.announced = True
                for x in c.listeners:
                    host, port = x.bound[0], x.bound[1]
                    print(f"listening on {x.listen.protocol}:{'[' + host + ']' if ':' in host else host}:{port}",
                          file=sys.stderr, flush=True)
            reason = self._done(c)
            if reason:
                self.app.request_stop(reason)  # drain and flush exactly as SIGTERM does
                return

    def _done(self, collector) -> str | None:
        if self.count is not None and collector is not None and collector.counters["records"] >= self.count:
            return f"{self.count} flow records received"
        if self.duration is not None and time.monotonic() - self.started >= self.duration:
            return f"{self.duration:g} s elapsed"
        return None


def app_collector(app):
    return app.pm.get_plugin(PLUGIN_OBJECT)


def summary_lines(app, elapsed: float) -> list[str]:
    c = app_collector(app)
    if c is None:
        return ["no collector ran"]
    cnt = c.counters
    lines = [f"{cnt['datagrams']} datagrams, {cnt['records']} flow records from {len(c.decoder.exporters)} "
             f"exporter(s) in {elapsed:.1f} s"]
    for exp in sorted(c.decoder.exporters.values(), key=lambda e: e.address):
        e = exp.counters
        lines.append(f"  {exp.address}: v{'/v'.join(str(v) for v in sorted(exp.versions)) or '?'}, "
                     f"{e['datagrams']} datagrams, {e['records']} records, {exp.template_count} templates"
                     + (f", {e['errors']} errors" if e["errors"] else "")
                     + (f", {e['lost']} lost" if e["lost"] else ""))
    errs = {r: n for (s, r), n in cnt.drops.items() if s == "decode"}
    if errs:
        lines.append("decode errors: " + ", ".join(f"{r} {n}" for r, n in sorted(errs.items())))
    drops = sum(lst.kernel_drops() or 0 for lst in c.listeners)
    if drops:
        lines.append(f"kernel drops: {drops}")
    outputs = getattr(c, "outputs", None)
    for w in (outputs.files if outputs is not None else [c.jsonl] if c.jsonl is not None else []):
        extra = f" in {w.rotations} rotated files" if getattr(w, "rotate", None) else ""
        lines.append(f"wrote {w.lines} flows to {w.path}{extra}"
                     + (f" ({w.errors} write errors, {w.dropped} flows dropped)" if w.errors else ""))
    for fw in (outputs.forwarders if outputs is not None else []):
        st = fw.stats()
        lines.append(f"forwarded {st['records']} flows to {st['server']} ({st['sent']} messages sent"
                     + (f", {st['dropped']} dropped)" if st["dropped"] else ")"))
    bus = getattr(outputs, "bus", None) if outputs is not None else None
    if bus is not None:
        st, sp = bus.stats(), bus.stats()["spool"]
        lines.append(f"published {st['published_flows']} flows in {st['published_batches']} batches to "
                     f"{st['url']} stream {st['stream']} ({st['duplicates']} duplicates); spooled "
                     f"{sp['written_flows']} flows, replayed {sp['replayed_flows']}, {sp['flows']} left in "
                     f"{sp['path']}, {sp['dropped_flows']} dropped, {st['queue_dropped_flows']} dropped at the queue")
    return lines


def run_collect(args, *, plugins: Iterable[tuple[object, str]] = ()) -> int:
    """``flowplane collect``: validate the arguments, run the collector, print the summary."""
    try:
        for x in args.listen:
            parse_listen(x)
        for x in args.output:
            parse_output(x)
    except ValueError as exc:
        print(f"flowplane collect: {exc}", file=sys.stderr)
        return 2
    stopper = Stopper(args.duration, args.count)
    t0 = time.monotonic()

    def after(app) -> None:
        for line in summary_lines(app, time.monotonic() - t0):
            print(line, flush=True)

    return run_oneshot("collect", lambda sock: build_config(args, sock), print_config=args.print_config,
                       plugins=[*plugins, (stopper, "collect-stopper")], after=after)
