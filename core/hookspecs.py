"""The flowplane plugin contract: every hook, in one file.

pluggy is synchronous.  Async work (sources, transports, servers, timers) is
never an ``async def`` hook implementation: a plugin hands the core an object
or an async callable (``flowplane_background_tasks``) and the core runs it in
its nursery.

Two kinds of hooks:

* **Rare hooks** (start, reload, shutdown, ``check-config``) are plain pluggy
  calls.  An exception in one fails start-up or the reload, naming the plugin.
* **Batch hooks** (``flowplane_process_batch``, ``flowplane_flows_expired``)
  run on the data path.  The core compiles them once into a list of
  implementations (pluggy's call order) and calls each in its own error
  guard: a failing plugin is counted and logged as ``plugin_failed`` and never
  silences the others; after repeated consecutive failures it is disabled.
  Batch hooks must not block or await, must not log per packet, and cannot be
  ``wrapper=True``.  Term-action handlers bound with ``app.bind_action`` are
  not hooks but run under the same guard.

Use in third-party plugins: implement any of these in a module or object,
decorated with ``flowplane.hookimpl``, and list the module under the
``flowplane.plugins`` entry-point group of your distribution.  An
implementation may take fewer arguments than the spec (pluggy "opt-in
arguments").
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from . import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from .actions import TermAction
    from .app import App
    from .batch import PacketBatch
    from .config import Config
    from .errors import ConfigIssue
    from .export import EncoderType, TransportType
    from .flows import FlowRecords
    from .metricfamilies import Metric
    from .profiles import HardwareProfile, LimitField, Limits
    from .registries import RegistriesView
    from .sources import SourceType


class RegisterControlCommand(Protocol):
    """The ``register`` of ``flowplane_register_control_commands``."""

    def __call__(self, words: str, fn: Callable[[App, list[str]], Any], help: str = "",
                 formatter: Callable[[Any], str] | None = None) -> None: ...


class RegisterConfigSection(Protocol):
    """The ``register`` of ``flowplane_register_config_sections``."""

    def __call__(self, name: str, item: str, capability: str | None = None, *,
                 capability_help: str | None = None, limits: Iterable[LimitField] = ()) -> None: ...


class RegisterLimit(Protocol):
    """The ``register`` of ``flowplane_register_limits``."""

    def __call__(self, name: str, default: Any, help: str = "") -> None: ...


class RegisterCapability(Protocol):
    """The ``register`` of ``flowplane_register_capabilities``."""

    def __call__(self, name: str, help: str = "") -> None: ...


#: ``register(name, add_parser, run)`` of ``flowplane_register_cli_subcommands``.
RegisterCliSubcommand = Callable[[str, Callable[[Any], Any], Callable[[argparse.Namespace], int]], None]

#: What ``flowplane_background_tasks`` returns: async callables ``fn(*, task_status)``.
BackgroundTask = Callable[..., Awaitable[None]]

# ---------------------------------------------------------------------------
# Start-up and discovery
# ---------------------------------------------------------------------------


@hookspec
def flowplane_register_profiles(register: Callable[[str, HardwareProfile], None]) -> None:
    """Register hardware profiles: what a platform allows.

    Called once at start-up (a reload keeps the registered profiles).

    :param register: ``register(name, HardwareProfile(name, description,
        limits={"limit_name": value, ...}, capabilities=frozenset({...})))``.
        A duplicate name fails start-up naming both plugins; so does a limit
        or capability that no plugin declared, or a value whose type differs
        from the declared default's.
    """


@hookspec
def flowplane_register_limits(register: RegisterLimit) -> None:
    """Declare the hardware-profile limits this plugin's feature has.

    Called at start-up.  Profiles fill them by name; a profile that does not
    keeps the default.  The plugin reads the value as an attribute of the
    ``limits`` that ``flowplane_config_validate`` receives
    (``limits.my_feature_instances``), and names the field in error messages.
    ``show system profile`` lists every limit with the plugin that declared it.

    :param register: ``register(name, default, help="one line")``; *name* is a
        Python identifier; a name declared twice fails start-up naming both plugins.
    """


@hookspec
def flowplane_register_capabilities(register: RegisterCapability) -> None:
    """Declare the hardware-profile capabilities this plugin's features define.

    Called at start-up.  A profile lists the capabilities it has; a section
    claim with ``capability=`` (``flowplane_register_config_sections``) is
    refused on a profile without it.

    :param register: ``register(name, help="one line")``.
    """


@hookspec
def flowplane_register_sources(register: Callable[[str, SourceType], None]) -> None:
    """Register packet source drivers picked by ``interfaces NAME source``.

    Called at start-up.  See :mod:`flowplane.sources` for the contract.

    :param register: ``register(name, SourceType(...))``.
    """


@hookspec
def flowplane_register_encoders(register: Callable[[str, EncoderType], None]) -> None:
    """Register flow record encoders picked by config (``v5``, ``v9``, ``ipfix`` ...).

    Called at start-up.

    :param register: ``register(name, EncoderType(...))``; see
        :mod:`flowplane.export` for the encoder contract (``encode``,
        ``templates``, ``options_data``, ``reset_templates``).
    """


@hookspec
def flowplane_register_transports(register: Callable[[str, TransportType], None]) -> None:
    """Register transports picked by config (``udp``, ``tcp``, ``file``, bus ...).

    Called at start-up.

    :param register: ``register(name, TransportType(...))``; see
        :mod:`flowplane.export` for the transport contract (``run``,
        ``send_nowait`` that never blocks, ``flush``, ``on_connect``).
    """


@hookspec
def flowplane_register_actions(register: Callable[[str, TermAction], None]) -> None:
    """Register firewall term actions this plugin implements (``then { sample; }``).

    Called at start-up, before config validation, so filters naming the
    action validate.  The feature's stateful object binds the handler in
    ``flowplane_configure`` with ``app.bind_action(name, handler)``; the data
    path calls ``handler(selections)`` once per batch with the
    ``list[ActionSelection]`` of the terms that chose the action.  Handlers
    follow the batch-hook rules and run under the same guard: a failure is
    counted (``action_errors.NAME``), logged once per burst as
    ``plugin_failed``, and after 100 consecutive failures the handler is
    disabled until the next reload (what terms send to it is then counted as
    dropped, ``disabled:NAME``).

    :param register: ``register(name, TermAction(...))``.
    """


@hookspec
def flowplane_register_control_commands(register: RegisterControlCommand) -> None:
    """Register control-socket commands: ``flowplane show|clear|request ...`` served by the running service.

    Called at start-up.

    :param register: ``register(words, fn, help="...", formatter=None, report=None)``.
        ``words`` is the command (``"show firewall"``); ``fn(app, args)``
        returns plain data (dicts, lists, numbers, strings) that the control
        socket sends as msgpack; ``formatter(data) -> str`` renders the
        Junos-style text the CLI prints without ``--json``; ``report=True``
        (or a string of arguments, ``report="limit 10"``) makes it one of the
        reports ``flowplane run --exit-on-eof`` prints by default.
    """


@hookspec
def flowplane_register_cli_subcommands(register: RegisterCliSubcommand) -> None:
    """Add ``flowplane NAME`` command-line tools that run on their own, beside the service (one-shot clients).

    Called when the CLI is about to parse a command line whose first word is
    not a core command, and for ``flowplane --help``.  A disabled plugin's
    subcommands are absent; invoking one names the plugin.

    :param register: ``register(name, add_parser, run)``; ``add_parser(subparsers)``
        adds the argparse subparser *name*, ``run(args) -> int`` runs it and
        returns the exit code.
    """


@hookspec
def flowplane_register_config_sections(register: RegisterConfigSection) -> None:
    """Claim the config sections this plugin validates, so typos are caught.

    Called at start-up.  A key under ``forwarding-options`` or ``services``
    that no plugin claimed is a config error with a "did you mean" hint.
    With ``capability=``, configuring the section on a hardware profile
    without that capability is a config error naming the profile.  The claim
    can declare what the feature brings in the same call: ``capability_help=``
    declares the capability (as ``flowplane_register_capabilities`` does) and
    ``limits=`` declares :class:`LimitField` s (as ``flowplane_register_limits``
    does), owned by the claiming plugin.

    :param register: ``register("forwarding-options sampling", "one-line help", capability="sampling",
        capability_help="one line", limits=(LimitField(...), ...))`` (all but the first two optional).
        ``register("interfaces family KEY", "help")`` adds KEY
        to the keys allowed under ``interfaces IF family FAM`` (the plugin validates what is under it, e.g.
        video monitoring's ``input-flows``).  Claims form a tree: ``services rpm twamp`` and ``services rpm
        probe`` may come from two plugins.
    """


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@hookspec
def flowplane_config_validate(config: Config, limits: Limits,
                              registries: RegistriesView) -> list[ConfigIssue] | None:
    """Check the plugin's own config section against itself and the active profile.

    Called at start-up, on reload (before anything changes) and by
    ``flowplane check-config``.  Report every problem, not just the first.

    :param config: the parsed config; ``config.data`` is the plain dict.
    :param limits: the active hardware profile's limits.
    :param registries: opt-in; read-only views of the ``sources``, ``encoders``
        (``for_version(v)``), ``transports`` and ``actions`` registries, so a
        config naming a driver is checked against what is registered.
    :return: a list of :class:`flowplane.errors.ConfigIssue` (key path and
        message saying what was expected), or None.
    """


@hookspec
def flowplane_configure(app: App) -> None:
    """Set the feature up for a validated config.

    Called after validation at start-up and for the new config on reload.
    Register the feature's stateful object here only when the feature is
    enabled (``app.pm.register(obj, name=...)``), and bind term actions with
    ``app.bind_action``.  On a reload the previous objects are already
    unregistered; ``app.previous(MyFeature)`` returns the replaced object so
    the new one can take over its state (counters, flow tables);
    ``app.register_configured(obj, name)`` does both (``obj.adopt(previous)``, then registers).

    :param app: the application being built (config, profile, registries, counters).
    """


@hookspec
def flowplane_background_tasks(app: App) -> list[BackgroundTask] | None:
    """Async services this plugin runs in the core nursery (servers, timers).

    Called at start-up after ``flowplane_configure``.

    :param app: the running application.
    :return: a list of async callables ``fn(*, task_status)``; each is started
        with ``nursery.start`` and must call ``task_status.started()`` once
        listening.  READY=1 is sent only after all of them started.  Tasks of
        a stateful object registered by ``flowplane_configure`` run in a scope
        of that config: a reload flushes the object (its ``flowplane_shutdown``)
        and cancels them, then starts the new object's tasks.
    """


# ---------------------------------------------------------------------------
# Data path (batch hooks: compiled once, each implementation error-guarded)
# ---------------------------------------------------------------------------


@hookspec
def flowplane_process_batch(batch: PacketBatch) -> None:
    """Feature work on a decoded batch that the firewall filters accepted.

    Called for every batch.  Batch hook: must not block or await;
    no wrappers; never log per packet (count instead).  Treat the batch as
    read-only; use ``batch.select(mask)`` to narrow it.  Rows with
    ``status != 0`` did not decode as IP (they pass when no ``family any``
    filter discarded them); mask on ``batch.status == 0`` for IP work.

    :param batch: decoded :class:`flowplane.batch.PacketBatch`.
    """


@hookspec
def flowplane_flows_expired(records: FlowRecords, reason: str) -> None:
    """Observe flow records leaving a flow cache of flow monitoring.

    Called once per cache and expiry reason, after the configured exporters
    took the records (so an observer never delays export).  Observers only:
    count, tally or hand the records on through a bounded queue; the records
    are shared with the exporters and must not be changed.  Batch hook:
    must not block or await; no wrappers.

    :param records: :class:`flowplane.flows.FlowRecords`: ``records.data`` is
        an array of :data:`flowplane.flows.FLOW_DTYPE`, ``records.instance``
        the sampling instance, accounting or monitoring group.
    :param reason: ``"idle"``, ``"active"``, ``"tcp"`` (FIN/RST), ``"full"``
        (cache full) or ``"shutdown"`` (the cache was flushed).
    """


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@hookspec
def flowplane_metrics(app: App) -> Iterable[Metric] | None:
    """Prometheus metric families of this plugin's feature, read from its live objects.

    Called at every scrape of the metrics endpoint (``system metrics listen``), on the service's trio
    loop between two batches, so the counters read are consistent with what ``show`` prints; never on
    the packet path, and nothing is counted twice for it.  Read counters, do not compute much, do not
    block.  Stateful objects registered by ``flowplane_configure`` implement it to report only while
    their feature is configured.  A failure (or a result that is not metric families) is counted
    (``flowplane_metrics_plugin_failures_total``) and logged as ``metrics_failed``; the scrape goes on
    without this plugin's families.  A family whose name an earlier plugin or the core gave is left out.

    :param app: the running application.
    :return: an iterable of metric families (``flowplane.api.MetricFamilies``, or prometheus-client's
        ``CounterMetricFamily`` / ``GaugeMetricFamily`` as exported by ``flowplane.api``), named
        ``flowplane_FEATURE_...``; or None.
    """


# ---------------------------------------------------------------------------
# Life cycle
# ---------------------------------------------------------------------------


@hookspec
def flowplane_shutdown(app: App) -> Callable[[], Awaitable[None]] | None:
    """The service is stopping: flush what is in flight.

    Called once on SIGTERM/SIGINT (or the end of a replay) after sources
    stopped and queued batches were processed; must finish inside the drain
    deadline.  Stateful objects registered by ``flowplane_configure`` also get
    it (called directly) when a reload replaces them.

    :param app: the running application.
    :return: None, or an async callable the core awaits (bounded by the drain
        deadline) to flush network buffers.
    """
