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
  ``wrapper=True``.

Use in third-party plugins: implement any of these in a module or object,
decorated with ``flowplane.hookimpl``, and list the module under the
``flowplane.plugins`` entry-point group of your distribution.  An
implementation may take fewer arguments than the spec (pluggy "opt-in
arguments").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from . import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from .app import App
    from .batch import PacketBatch
    from .config import Config
    from .errors import ConfigIssue
    from .profiles import Limits

# ---------------------------------------------------------------------------
# Start-up and discovery
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def flowplane_addhooks(pluginmanager) -> None:
    """Add new hookspecs of a plugin's own, so other plugins can extend it.

    Called (historic) for every plugin at registration.

    :param pluginmanager: the app's ``pluggy.PluginManager``; call
        ``pluginmanager.add_hookspecs(module)``.
    """


@hookspec
def flowplane_register_profiles(register: Callable[[str, Any], None]) -> None:
    """Register hardware profiles: what a platform allows.

    Called at start-up and on reload.

    :param register: ``register(name, HardwareProfile(...))``; a duplicate
        name fails start-up naming both plugins.
    """


@hookspec
def flowplane_register_sources(register: Callable[[str, Any], None]) -> None:
    """Register packet source drivers picked by ``interfaces NAME source``.

    Called at start-up.  See :mod:`flowplane.sources` for the contract.

    :param register: ``register(name, SourceType(...))``.
    """


@hookspec
def flowplane_register_encoders(register: Callable[[str, Any], None]) -> None:
    """Register flow record encoders picked by config (``v5``, ``v9``, ``ipfix`` ...).

    Called at start-up.

    :param register: ``register(name, EncoderType(...))``; see
        :mod:`flowplane.export` for the encoder contract (``encode``,
        ``templates``, ``options_data``, ``reset_templates``).
    """


@hookspec
def flowplane_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register transports picked by config (``udp``, ``tcp``, ``file``, bus ...).

    Called at start-up.

    :param register: ``register(name, TransportType(...))``; see
        :mod:`flowplane.export` for the transport contract (``run``,
        ``send_nowait`` that never blocks, ``flush``, ``on_connect``).
    """


@hookspec
def flowplane_register_actions(register: Callable[[str, Any], None]) -> None:
    """Register firewall term actions this plugin implements (``then { sample; }``).

    Called at start-up, before config validation, so filters naming the
    action validate.  The feature's stateful object binds the handler in
    ``flowplane_configure`` with ``app.bind_action(name, handler)``.

    :param register: ``register(name, TermAction(...))``.
    """


@hookspec
def flowplane_register_control_commands(register: Callable[..., None]) -> None:
    """Register control-socket commands: ``flowplane show|clear|request ...`` served by the running service.

    Called at start-up.

    :param register: ``register(words, fn, help="...", formatter=None)``.
        ``words`` is the command (``"show firewall"``); ``fn(app, args)``
        returns plain data (dicts, lists, numbers, strings) that the control
        socket sends as msgpack; ``formatter(data) -> str`` renders the
        Junos-style text the CLI prints without ``--json``.
    """


@hookspec
def flowplane_register_cli_subcommands(register: Callable[..., None]) -> None:
    """Add ``flowplane SUBCOMMAND`` command-line tools that run on their own (``flowplane twamp client``).

    Called when the CLI is about to parse a command line whose first word is
    not a built-in command.

    :param register: ``register(name, add_parser, run)``; ``add_parser(subparsers)``
        adds the argparse subparser *name*, ``run(args) -> int`` runs it and
        returns the exit code.
    """


@hookspec
def flowplane_register_config_sections(register: Callable[..., None]) -> None:
    """Claim the config sections this plugin validates, so typos are caught.

    Called at start-up.  A key under ``forwarding-options`` or ``services``
    that no plugin claimed is a config error with a "did you mean" hint.
    With ``capability=``, configuring the section on a hardware profile
    without that capability is a config error naming the profile.

    :param register: ``register("forwarding-options sampling", "one-line help", capability="sampling")``
        (``capability`` optional).  ``register("interfaces family KEY", "help")`` adds KEY to the keys
        allowed under ``interfaces IF family FAM`` (the plugin validates what is under it, e.g.
        video monitoring's ``input-flows``).
    """


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@hookspec
def flowplane_config_validate(config: "Config", limits: "Limits") -> list["ConfigIssue"] | None:
    """Check the plugin's own config section against itself and the active profile.

    Called at start-up, on reload (before anything changes) and by
    ``flowplane check-config``.  Report every problem, not just the first.

    :param config: the parsed config; ``config.data`` is the plain dict.
    :param limits: the active hardware profile's limits.
    :return: a list of :class:`flowplane.errors.ConfigIssue` (key path and
        message saying what was expected), or None.
    """


@hookspec
def flowplane_configure(app: "App") -> None:
    """Set the feature up for a validated config.

    Called after validation at start-up and for the new config on reload.
    Register the feature's stateful object here only when the feature is
    enabled (``app.pm.register(obj, name=...)``), and bind term actions with
    ``app.bind_action``.  On a reload the previous objects are already
    unregistered; ``app.previous(MyFeature)`` returns the replaced object so
    the new one can take over its state (counters, flow tables).

    :param app: the application being built (config, profile, registries, counters).
    """


@hookspec
def flowplane_background_tasks(app: "App") -> list[Callable] | None:
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
def flowplane_process_batch(batch: "PacketBatch") -> None:
    """Feature work on a decoded batch that the firewall filters accepted.

    Called for every batch.  Batch hook: must not block or await;
    no wrappers; never log per packet (count instead).  Treat the batch as
    read-only; use ``batch.select(mask)`` to narrow it.  Rows with
    ``status != 0`` did not decode as IP (they pass when no ``family any``
    filter discarded them); mask on ``batch.status == 0`` for IP work.

    :param batch: decoded :class:`flowplane.batch.PacketBatch`.
    """


@hookspec
def flowplane_flows_expired(records: Any, reason: str) -> None:
    """Expired flow records leave a flow cache.

    Called by flow caches when flows expire.  Batch hook:
    must not block or await; no wrappers.  Exporters queue the records for
    their export task.

    :param records: a columnar batch of flow records.
    :param reason: ``"idle"``, ``"active"``, ``"tcp"``, ``"full"`` or ``"shutdown"``.
    """


# ---------------------------------------------------------------------------
# Life cycle
# ---------------------------------------------------------------------------


@hookspec
def flowplane_reload(app: "App", old: "Config", new: "Config") -> None:
    """The config was reloaded (SIGHUP) and the new graph is running.

    Called after the new config validated and was applied.

    :param app: the running application.
    :param old: the config that was running.
    :param new: the config now running.
    """


@hookspec
def flowplane_shutdown(app: "App") -> None:
    """The service is stopping: flush what is in flight.

    Called once on SIGTERM/SIGINT (or the end of a replay) after sources
    stopped and queued batches were processed; must finish inside the drain
    deadline.  Stateful objects registered by ``flowplane_configure`` also get
    it (called directly) when a reload replaces them.

    :param app: the running application.
    :return: None, or an async callable the core awaits (bounded by the drain
        deadline) to flush network buffers.
    """
