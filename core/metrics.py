"""The Prometheus metrics endpoint: ``system metrics { listen 127.0.0.1:9464; }`` (off by default).

prometheus-client's HTTP server answers scrapes in its own threads, off the packet loop.  Nothing is
counted twice: at each scrape :class:`AppCollector` asks the service's trio loop (between two
batches) to read the live counters that ``show`` reads, the core's and those plugins return from
``flowplane_metrics``, and renders them in the server thread.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog
import trio
from prometheus_client import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from . import __version__
from .config import Config, check_keys, check_mapping, check_str
from .decode import REASON_TEXT, Reason
from .errors import ConfigIssue
from .graph import hook_status
from .metricfamilies import MetricFamilies

if TYPE_CHECKING:  # pragma: no cover
    from .app import App

log = structlog.get_logger("flowplane.metrics")

METRICS_KEYS = ("listen",)
PIPELINE_COUNTERS = ("packets", "batches", "filter_discarded", "filter_rejected")
DEFAULT_PORT = 9464  # the port the Prometheus wiki allocates to "OpenTelemetry exporters"; free in practice


# -- config ----------------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``"127.0.0.1"`` (port 9464) as ``(address, port)``.

    :raises ValueError: not an IP address literal with an optional port 0-65535.
    """
    text = text.strip()
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("an IPv6 address in brackets needs the closing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected ':PORT' after ']'")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    ipaddress.ip_address(host)  # a literal: the endpoint never resolves names
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number 0-65535")
    return host, int(port)


def validate_metrics(section: Any, path: tuple) -> list[ConfigIssue]:
    """Issues in ``system metrics``."""
    issues = check_mapping(section, path, "metrics settings (listen ADDRESS:PORT)")
    if not isinstance(section, dict):
        return issues
    issues += check_keys(section, METRICS_KEYS, path)
    if "listen" not in section:
        issues.append(ConfigIssue(path, "missing 'listen': the address and port to serve /metrics on, "
                                        "e.g. 127.0.0.1:9464"))
    else:
        listen = section["listen"]
        issues += check_str(listen, path + ("listen",))
        if isinstance(listen, str):
            try:
                parse_listen(listen)
            except ValueError as exc:
                issues.append(ConfigIssue(path + ("listen",), f"expected ADDRESS:PORT with an IP address literal "
                                                              f"(127.0.0.1:9464, [::1]:9464), got {listen!r}: {exc}"))
    return issues


def configured_listen(config: Config) -> tuple[str, int] | None:
    """The configured ``system metrics listen`` of a validated *config*, or None (metrics off)."""
    listen = config.get("system", "metrics", "listen")
    return parse_listen(listen) if isinstance(listen, str) else None


# -- what a scrape reads ---------------------------------------------------------------------------


def core_families(app: App, service: Any = None) -> MetricFamilies:
    """The core's counters, as ``show system statistics``, ``show interfaces statistics``,
    ``show services accounting errors``, ``show firewall`` and ``show system plugins`` print them."""
    m = MetricFamilies()
    m.gauge("build_info", "flowplane version and active hardware profile (always 1)", 1, version=__version__,
            profile=app.graph.profile.name if app.graph else "")
    m.gauge("uptime_seconds", "seconds since the service started", app.uptime())
    if service is not None:
        m.counter("config_reloads", "configuration reloads by result", service.reloads, result="applied")
        m.counter("config_reloads", "configuration reloads by result", service.reloads_rejected, result="rejected")
    pipe = app.counters["pipeline"]
    for key in PIPELINE_COUNTERS:  # present from the start, so dashboards and rate() see them before traffic
        if key not in pipe.values:
            m.counter(f"pipeline_{key}", f"packet pipeline: {key.replace('_', ' ')}", 0)
    m.counters("pipeline", "packet pipeline", pipe)
    if app.pipeline is not None:
        status = app.pipeline.status()
        m.gauge("ingest_queue_batches", "batches waiting in the ingest queue", status["queue_used"])
        m.gauge("ingest_queue_capacity_batches", "ingest queue size in batches (-1: unbounded)", status["queue_size"])
    _interfaces(m, app)
    if app.graph is not None:
        _firewall(m, app.graph.firewall.show_firewall())
        _plugin_failures(m, hook_status(app.graph))
    return m


def _interfaces(m: MetricFamilies, app: App) -> None:
    for name, src in sorted(app.sources.items()):
        c = getattr(src, "counters", None)
        if c is not None:
            m.counters("interface", "interface (packet source)", c, interface=name)
    for iid, counts in sorted(app.decode_counts.items()):
        name = app.interfaces.name(iid)
        m.counter("interface_received_packets", "packets that reached the decoder", int(counts.sum()), interface=name)
        m.counter("interface_decoded_packets", "packets decoded", int(counts[Reason.OK]), interface=name)
        for i in range(1, len(counts)):
            if i in Reason._value2member_map_:
                m.counter("interface_decode_errors", "packets that failed to decode, by reason", int(counts[i]),
                          interface=name, reason=REASON_TEXT[Reason(i)])


def _firewall(m: MetricFamilies, data: dict) -> None:
    for f in data["filters"]:
        labels = {"filter": f["filter"], "family": f["family"]}
        for counter, v in f["counters"].items():
            m.counter("firewall_counter_packets", "packets counted by 'then count NAME'", v["packets"], **labels,
                      counter=counter)
            m.counter("firewall_counter_bytes", "bytes counted by 'then count NAME'", v["bytes"], **labels,
                      counter=counter)
        for term, v in f["terms"].items():
            m.counter("firewall_term_packets", "packets that matched the term", v["packets"], **labels, term=term)
            m.counter("firewall_term_bytes", "bytes that matched the term", v["bytes"], **labels, term=term)
        m.counter("firewall_implicit_discard_packets", "packets no term matched (implicit discard)",
                  f["implicit_discard"]["packets"], **labels)
        m.counter("firewall_implicit_discard_bytes", "bytes no term matched (implicit discard)",
                  f["implicit_discard"]["bytes"], **labels)
        for action, n in sorted(f["packets"].items()):
            m.counter("firewall_filter_packets", "packets the filter decided, by outcome", n, **labels, outcome=action)


def _plugin_failures(m: MetricFamilies, status: dict[str, list[dict]]) -> None:
    for hook, rows in sorted(status.items()):
        for row in rows:
            what = f"action {row['action']}" if "action" in row else hook
            m.counter("plugin_failures", "failures of a plugin's data-path hook or term action", row["failures"],
                      plugin=row["plugin"], hook=what)
            m.gauge("plugin_disabled", "1 when repeated failures disabled the hook or action until a reload",
                    int(row["disabled"]), plugin=row["plugin"], hook=what)


def plugin_families(app: App, failures: dict[str, int]) -> list[Metric]:
    """What each plugin's ``flowplane_metrics`` returns, each implementation guarded: one that raises
    or returns something that is not a metric family is counted in *failures* and logged, never
    failing the scrape; a family whose name an earlier source already gave is left out (and counted)."""
    out: list[Metric] = []
    for impl in reversed(app.pm.hook.flowplane_metrics.get_hookimpls()):
        try:
            result = impl.function(**{a: app for a in impl.argnames})
            families = list(result or ())
            bad = [f for f in families if not isinstance(f, Metric)]
            if bad:
                raise TypeError(f"expected prometheus metric families, got {type(bad[0]).__name__}")
        except Exception as exc:  # a plugin bug costs its own metrics, never the scrape
            n = failures[impl.plugin_name] = failures.get(impl.plugin_name, 0) + 1
            if n == 1 or n % 100 == 0:
                log.error("metrics_failed", plugin=impl.plugin_name, error=f"{type(exc).__name__}: {exc}",
                          failures=n)
            continue
        out += families
    return out


class AppCollector(Collector):
    """A prometheus-client collector reading the running app at scrape time, on the app's trio loop."""

    def __init__(self, app: App, token: trio.lowlevel.TrioToken | None = None, service: Any = None) -> None:
        self.app = app
        self.token = token
        self.service = service
        self.failures: dict[str, int] = {}  # plugin -> flowplane_metrics failures
        self.duplicates = 0

    def snapshot(self) -> list[Metric]:
        """Every family, read now (call on the trio loop's thread)."""
        families = list(core_families(self.app, self.service))
        families += plugin_families(self.app, self.failures)
        seen: set[str] = set()
        out = []
        for f in families:
            if f.name in seen:
                self.duplicates += 1
                continue
            seen.add(f.name)
            out.append(f)
        own = MetricFamilies()
        for plugin, n in sorted(self.failures.items()):
            own.counter("metrics_plugin_failures", "scrapes in which a plugin's flowplane_metrics failed", n,
                        plugin=plugin)
        own.counter("metrics_duplicate_families", "metric families left out because their name was already given",
                    self.duplicates)
        return out + [f for f in own if f.name not in seen]

    def collect(self) -> Iterable[Metric]:
        if self.token is None:
            return self.snapshot()
        try:
            return trio.from_thread.run_sync(self.snapshot, trio_token=self.token)
        except trio.RunFinishedError:  # the service is gone; an empty scrape
            return []


# -- the HTTP endpoint -----------------------------------------------------------------------------


class MetricsEndpoint:
    """The ``/metrics`` HTTP server of a running service, (re)bound to ``system metrics listen``."""

    def __init__(self, app: App, service: Any = None) -> None:
        self.app = app
        self.service = service
        self.listen: tuple[str, int] | None = None
        self.bound: tuple[str, int] | None = None
        self.scrapes = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._collector: AppCollector | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Bind the configured endpoint (if any), report started, serve until cancelled."""
        self._collector = AppCollector(self.app, trio.lowlevel.current_trio_token(), self.service)
        try:
            self._start(configured_listen(self.app.config))
            task_status.started()
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()

    async def reload(self, config: Config) -> None:
        """Follow a reloaded config: bind the new address before letting go of the old one; a new address
        that cannot be bound is logged and the old endpoint keeps serving."""
        listen = configured_listen(config)
        if listen == self.listen:
            return
        old = self._server, self._thread, self.bound
        try:
            self._server = self._thread = None
            self._start(listen)
        except OSError as exc:
            self._server, self._thread, self.bound = old
            log.error("metrics_listen_failed", listen=_label(listen), error=str(exc), keeping=_label(self.bound))
            return
        await _shutdown(old[0], old[1])
        if listen is None and old[0] is not None:
            log.info("metrics_stopped", listen=_label(old[2]))

    def _start(self, listen: tuple[str, int] | None) -> None:
        self.listen = listen
        self.bound = None
        if listen is None:
            return
        registry = CollectorRegistry(auto_describe=False)
        assert self._collector is not None
        registry.register(self._collector)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        try:
            self._server, self._thread = start_http_server(listen[1], listen[0], registry=registry)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics endpoint {_label(listen)}: {exc.strerror or exc}") from exc
        self.bound = tuple(self._server.server_address[:2])  # type: ignore[assignment]
        log.info("metrics_listening", listen=_label(listen), bound=_label(self.bound))

    async def _stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        await _shutdown(server, thread)

    def status(self) -> dict:
        """What ``show system metrics`` prints."""
        c = self._collector
        return {"listen": _label(self.listen), "bound": _label(self.bound),
                "plugin_failures": dict(c.failures) if c else {}, "duplicate_families": c.duplicates if c else 0}


async def _shutdown(server: Any, thread: threading.Thread | None) -> None:
    if server is None:
        return

    def stop() -> None:
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    await trio.to_thread.run_sync(stop)


def _label(addr: tuple[str, int] | None) -> str | None:
    if addr is None:
        return None
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
