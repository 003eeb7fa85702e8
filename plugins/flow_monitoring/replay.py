"""``flowplane replay PCAP --export HOST:PORT --version N``: a capture through the flow engine.

Like ``softflowd -r``: the capture is metered on packet time, every flow is
exported (the shutdown flush included), and the command exits.  It builds an
ordinary config (``--print-config`` shows it), so everything it does can be
written in the config file too.  The flow-monitoring plugin adds the
subcommand through ``flowplane_register_cli_subcommands``.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import sys
from typing import Any

import trio

from flowplane.api import hookimpl, run_oneshot

from .commands import PLUGIN_OBJECT

V8_SCHEMES = ("autonomous-system", "protocol-port", "source-prefix", "destination-prefix", "source-destination-prefix")


def add_parser(subparsers) -> Any:
    rp = subparsers.add_parser("replay", help="run a pcap through the flow engine and export every flow "
                                              "(like softflowd -r)")
    rp.add_argument("pcap")
    rp.add_argument("--export", action="append", required=True, metavar="HOST:PORT",
                    help="flow server (repeatable: the same records go to each)")
    rp.add_argument("--version", type=int, choices=(5, 8, 9, 10), default=10, help="export format (default 10, IPFIX)")
    rp.add_argument("--transport", choices=("udp", "tcp"), default="udp", help="tcp for IPFIX only")
    rp.add_argument("--sampling-rate", type=int, default=1, help="sample 1 in N packets (deterministic)")
    rp.add_argument("--active-timeout", type=int, default=60, help="seconds (default 60)")
    rp.add_argument("--inactive-timeout", type=int, default=15, help="seconds (default 15)")
    rp.add_argument("--tcp-end-grace", type=float, default=0.0, help="seconds a flow lives after FIN/RST")
    rp.add_argument("--aggregation", choices=V8_SCHEMES, help="v8 scheme")
    rp.add_argument("--engine-id", type=int, default=0)
    rp.add_argument("--engine-type", type=int, default=0)
    rp.add_argument("--max-flows", type=int, default=1_000_000, help="flow table size")
    rp.add_argument("--speed", type=float, default=0.0, help="0 = as fast as possible, 1 = capture speed")
    rp.add_argument("--print-config", action="store_true", help="print the equivalent config file and exit")
    return rp


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    ipaddress.ip_address(host)
    p = int(port)
    if not 0 < p < 65536:
        raise ValueError(f"port {p} out of range")
    return host, p


def build_config(args: Any, control_socket: str) -> dict:
    """The config ``flowplane replay`` runs (also what ``--print-config`` prints)."""
    version = args.version
    servers: dict[str, dict] = {}
    for target in args.export:
        host, port = parse_hostport(target)
        server: dict[str, Any] = {"port": port}
        if version in (5, 8):
            server["version"] = version
            if version == 8:
                server["aggregation"] = args.aggregation or "protocol-port"
        else:
            server["version9" if version == 9 else "version-ipfix"] = {"template": "replay"}
            if args.transport == "tcp":
                server["transport"] = "tcp"
        servers[host] = server
    output: dict[str, Any] = {
        "flow-server": servers,
        "flow-active-timeout": args.active_timeout,
        "flow-inactive-timeout": args.inactive_timeout,
    }
    if args.tcp_end_grace:
        output["tcp-end-grace"] = args.tcp_end_grace
    if version in (5, 8) and (args.engine_id or args.engine_type):
        output["interface"] = {"replay": {"engine-id": args.engine_id, "engine-type": args.engine_type}}
    families = {"inet": {"output": output}}
    if version in (9, 10):
        families["inet6"] = {"output": copy.deepcopy(output)}
    cfg: dict[str, Any] = {
        "system": {"control-socket": control_socket, "log": {"level": "warning"}},
        "interfaces": {"replay0": {"source": "pcap", "file": os.path.abspath(args.pcap), "speed": args.speed,
                                   "family": {"any": {"filter": {"input": "replay-all"}}}}},
        "firewall": {"family": {"any": {"filter": {"replay-all": {
            "term": {"all": {"then": {"sample": True, "accept": True}}}}}}}},
        "forwarding-options": {"sampling": {
            "input": {"rate": args.sampling_rate, "algorithm": "deterministic"},
            "flow-table-size": args.max_flows,
            "family": families}},
    }
    if version in (9, 10):
        key = "version9" if version == 9 else "version-ipfix"
        # the template names the record layouts; timeouts stay on the family output
        template = {"replay": {"ipv4-template": True, "ipv6-template": True}}
        cfg["services"] = {"flow-monitoring": {key: {"template": template}}}
    return cfg


class Progress:
    """A progress bar on a TTY for the pcap source (a plugin object for the replay's App)."""

    def __init__(self, pcap: str, stream=sys.stderr) -> None:
        self.size = max(1, os.path.getsize(pcap))
        self.stream = stream
        self.app = None

    @hookimpl
    def flowplane_background_tasks(self, app):
        self.app = app
        return [self._run] if self.stream.isatty() else []

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(0.2)
            self.draw()

    def draw(self, done: bool = False) -> None:
        src = (self.app.sources if self.app else {}).get("replay0")
        c = getattr(src, "counters", None)
        if c is None:
            return
        pos = getattr(src, "position", None)
        frac = 1.0 if done else min(1.0, (pos if pos is not None else c["bytes"]) / self.size)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        self.stream.write(f"\r[{bar}] {frac * 100:5.1f}%  {c['packets']:,} packets")
        if done:
            self.stream.write("\n")
        self.stream.flush()


def run_replay(args) -> int:
    """``flowplane replay``: run the capture, export every flow, print what each flow server got."""
    try:
        for t in args.export:
            parse_hostport(t)
    except ValueError as exc:
        print(f"flowplane replay: bad --export: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.pcap, "rb"):
            pass
    except OSError as exc:
        print(f"flowplane replay: cannot read {args.pcap}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    progress = Progress(args.pcap)

    def summary(app) -> None:
        if sys.stderr.isatty():
            progress.draw(done=True)
        fm = app.pm.get_plugin(PLUGIN_OBJECT)
        for engine in (fm.engines.values() if fm else []):
            for e in engine.all_exporters:
                t = e.transport.counters
                lost = t["dropped"] + t["dropped_backlog"] + t["dropped_at_shutdown"]
                print(f"{'+'.join(e.families)} -> {e.server.label}: {e.counters['records']} flows in {t['packets']} "
                      "datagrams/messages" + (f", {t['refused']} refused" if t["refused"] else "")
                      + (f", {lost} dropped" if lost else ""), file=sys.stderr)

    return run_oneshot("replay", lambda sock: build_config(args, sock), print_config=args.print_config,
                       plugins=[(progress, "replay-progress")], after=summary, speed=args.speed, exit_on_eof=True)
