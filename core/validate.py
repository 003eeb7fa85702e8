"""Config validation of the core's own sections: top level, section claims and capabilities, ``system``,
``interfaces``; then the firewall and every plugin's ``flowplane_config_validate``.

Every problem is reported (not just the first), each with the key path and what was expected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .config import Config, check_bool, check_int, check_keys, check_mapping, check_number, check_str, suggest
from .errors import ConfigIssue
from .metrics import validate_metrics
from .profiles import DEFAULT_PROFILE, HardwareProfile, Limits
from .registry import Registry, SectionRegistry
from .sources import SourceType

if TYPE_CHECKING:  # pragma: no cover
    from .app import Registries

#: Top-level sections; the ones in CLAIMABLE hold plugin-owned subsections.
TOP_LEVEL = ("system", "interfaces", "firewall", "policy-options", "forwarding-options", "services", "chassis",
             "routing-options")
CLAIMABLE = ("forwarding-options", "services", "chassis", "routing-options")

SYSTEM_KEYS = ("hardware-profile", "batch-size", "ingest-queue", "control-socket", "control-socket-mode",
               "drain-timeout", "plugins", "log", "watchdog", "metrics")
INTERFACE_KEYS = ("source", "description", "family", "monitoring-only")
FAMILIES = ("inet", "inet6", "any")
FAMILY_KEYS = ("filter",)
#: A section claim ``"interfaces family KEY"`` lets a plugin own KEY under ``interfaces IF family FAM``
#: (``input-flows`` of video monitoring); the plugin validates what is under it.
FAMILY_CLAIM = ("interfaces", "family")


def validate_config(cfg: Config, registries: Registries, pm: pluggy.PluginManager) -> list[str]:
    """Every problem in *cfg*, formatted with file:line:col."""
    from .firewall import validate_firewall

    issues: list[ConfigIssue] = []
    profile = registries.profile_for(cfg)
    if profile is None:
        name = cfg.get("system", "hardware-profile")
        issues.append(ConfigIssue(("system", "hardware-profile"),
                                  f"unknown hardware profile {name!r}{suggest(str(name), registries.profiles)}; "
                                  f"expected one of: {', '.join(registries.profiles)}"))
        profile = registries.profiles.get(DEFAULT_PROFILE) or HardwareProfile(DEFAULT_PROFILE, "built-in defaults")
    limits = registries.limits_of(profile)
    issues += validate_top(cfg, registries.sections)
    issues += validate_capabilities(cfg, profile, registries.sections)
    issues += validate_system(cfg, limits)
    issues += validate_interfaces(cfg, registries.sources, claimed_family_keys(registries.sections))
    issues += validate_firewall(cfg.data, registries.actions)
    for plugin, result in _plugin_validators(cfg, pm, limits, registries):
        for item in result or []:
            if isinstance(item, ConfigIssue):
                issues.append(item)
            else:
                issues.append(ConfigIssue((), f"{item} (from plugin {plugin})"))
    return cfg.format_issues(issues)


def _plugin_validators(cfg: Config, pm: pluggy.PluginManager, limits: Limits,
                       registries: Registries) -> list[tuple[str, list]]:
    """Each plugin's ``flowplane_config_validate`` result; a validator that raises (a value of a type it did
    not expect) becomes an issue at the plugin's section naming the plugin, and the others still run."""
    out: list[tuple[str, list]] = []
    view = registries.view()
    for impl in reversed(pm.hook.flowplane_config_validate.get_hookimpls()):
        args = {"config": cfg, "limits": limits, "registries": view}
        try:
            out.append((impl.plugin_name, impl.function(**{a: args[a] for a in impl.argnames})))
        except Exception as exc:
            present = _sections_in(cfg, [tuple(w.split()) for w in registries.sections.by_owner(impl.plugin_name)])
            why = f"{type(exc).__name__}: {exc}"
            out.append((impl.plugin_name, [ConfigIssue(p, f"plugin {impl.plugin_name!r} could not check this "
                                                          f"section ({why}); is a value of the wrong type "
                                                          "(a word where a mapping or list belongs)?")
                                           for p in present]))
    return out


def _sections_in(cfg: Config, claimed: list[tuple]) -> list[tuple]:
    """The claimed section paths that reach deepest into *cfg* (the top level if none does)."""
    def depth(path: tuple) -> int:
        return max((n for n in range(1, len(path) + 1) if cfg.get(*path[:n]) is not None), default=0)
    best = max((depth(p) for p in claimed), default=0)
    if not best:
        return [()]
    return sorted({p[:best] for p in claimed if depth(p) == best})


def validate_top(cfg: Config, sections: SectionRegistry) -> list[ConfigIssue]:
    """Top-level sections known, and every key under a claimable section owned by a plugin's claim.

    Claims form a tree: ``services rpm twamp``, ``services rpm probe`` and ``services rpm
    rfc2544-benchmarking`` may come from three plugins; ``services rpm`` itself is then checked here
    (its keys must each be claimed) and each claimed subsection is left to its plugin.
    """
    issues = check_keys(cfg.data, TOP_LEVEL, (), "section")
    claims = {tuple(words.split()) for words in sections}

    def walk(path: tuple[str, ...], value: object) -> None:
        if path in claims:
            return  # the claiming plugin validates what is under it
        nonlocal issues
        where = " ".join(path)
        issues += check_mapping(value, path, f"{where} subsections")
        if not isinstance(value, dict):
            return
        known = sorted({c[len(path)] for c in claims if len(c) > len(path) and c[:len(path)] == path})
        for key, sub in value.items():
            if key in known:
                walk(path + (key,), sub)
            else:
                issues.append(ConfigIssue(path + (key,), f"no enabled plugin handles '{where} {key}'"
                                          f"{suggest(str(key), known)}"
                                          + (f"; known: {', '.join(known)}" if known else "")))

    for top in CLAIMABLE:
        walk((top,), cfg.get(top))
    return issues


def validate_capabilities(cfg: Config, profile: HardwareProfile, sections: SectionRegistry) -> list[ConfigIssue]:
    """A configured section whose claim names a capability the hardware profile lacks is an error."""
    issues = []
    for words, capability in sorted(sections.capabilities.items()):
        path = tuple(words.split())
        if cfg.get(*path) is not None and capability not in profile.capabilities:
            has = ", ".join(sorted(profile.capabilities)) or "none"
            issues.append(ConfigIssue(path, f"hardware profile {profile.name!r} has no {capability!r} capability "
                                            f"(it has: {has}); pick another system hardware-profile or remove "
                                            f"'{words}'"))
    return issues

def validate_system(cfg: Config, limits: Limits) -> list[ConfigIssue]:
    sysconf = cfg.get("system")
    p = ("system",)
    issues = check_mapping(sysconf, p, "system settings")
    if not isinstance(sysconf, dict):
        return issues
    issues += check_keys(sysconf, SYSTEM_KEYS, p)
    if "batch-size" in sysconf:
        issues += check_int(sysconf["batch-size"], p + ("batch-size",), 1, limits.max_batch, limit="max_batch")
    if "ingest-queue" in sysconf:
        issues += check_int(sysconf["ingest-queue"], p + ("ingest-queue",), 1, limits.max_queue, limit="max_queue")
    if "control-socket" in sysconf:
        issues += check_str(sysconf["control-socket"], p + ("control-socket",))
    if "control-socket-mode" in sysconf:
        mode = sysconf["control-socket-mode"]
        if not (isinstance(mode, str) and len(mode) in (3, 4) and all(c in "01234567" for c in mode)):
            issues.append(ConfigIssue(p + ("control-socket-mode",), "expected an octal mode string like \"0660\", "
                                                                    f"got {mode!r}"))
    if "drain-timeout" in sysconf:
        issues += check_number(sysconf["drain-timeout"], p + ("drain-timeout",), 0, 3600)
    plugins = sysconf.get("plugins")
    if plugins is not None:
        issues += check_mapping(plugins, p + ("plugins",), "plugin settings")
        if isinstance(plugins, dict):
            issues += check_keys(plugins, ("disable",), p + ("plugins",))
            dis = plugins.get("disable", [])
            if not isinstance(dis, list) or not all(isinstance(x, str) for x in dis):
                issues.append(ConfigIssue(p + ("plugins", "disable"), f"expected a list of plugin names, got {dis!r}"))
    if "metrics" in sysconf:
        issues += validate_metrics(sysconf["metrics"], p + ("metrics",))
    logc = sysconf.get("log")
    if logc is not None:
        issues += check_mapping(logc, p + ("log",), "log settings")
        if isinstance(logc, dict):
            issues += check_keys(logc, ("level", "format"), p + ("log",))
            if "level" in logc:
                issues += check_str(logc["level"], p + ("log", "level"), ("debug", "info", "warning", "error"))
            if "format" in logc:
                issues += check_str(logc["format"], p + ("log", "format"), ("auto", "json", "console"))
    return issues

def claimed_family_keys(sections: SectionRegistry) -> tuple[str, ...]:
    """Keys plugins claimed under ``interfaces IF family FAM`` (section claims ``"interfaces family KEY"``)."""
    n = len(FAMILY_CLAIM)
    return tuple(sorted(w.split()[n] for w in sections
                        if tuple(w.split()[:n]) == FAMILY_CLAIM and len(w.split()) == n + 1))


def validate_interfaces(cfg: Config, sources: Registry[SourceType],
                        family_claims: tuple[str, ...] = ()) -> list[ConfigIssue]:
    ifaces = cfg.get("interfaces")
    issues = check_mapping(ifaces, ("interfaces",), "interface name -> settings")
    if not isinstance(ifaces, dict):
        return issues
    fw = cfg.section("firewall", "family")
    for name, section in ifaces.items():
        p = ("interfaces", name)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            issues.append(ConfigIssue(p, f"expected the interface's settings as a mapping, got {section!r}"))
            continue
        driver_name = section.get("source", "af-packet")
        driver = sources.get(driver_name) if isinstance(driver_name, str) else None
        if driver is None:
            issues.append(ConfigIssue(p + ("source",), f"unknown source {driver_name!r}"
                                      f"{suggest(str(driver_name), sources)}; expected one of: "
                                      f"{', '.join(sources) or '(no source plugin enabled)'}"))
            driver_keys: tuple[str, ...] = ()
        else:
            driver_keys = driver.keys
            if driver.validate:
                issues += driver.validate(name, section, p, cfg.base_dir)
        issues += check_keys(section, INTERFACE_KEYS + driver_keys, p)
        if "monitoring-only" in section:
            issues += check_bool(section["monitoring-only"], p + ("monitoring-only",))
        fam = section.get("family")
        issues += check_mapping(fam, p + ("family",), "inet / inet6 / any")
        if not isinstance(fam, dict):
            continue
        issues += check_keys(fam, FAMILIES, p + ("family",), "family")
        for family, fsec in fam.items():
            fp = p + ("family", family)
            if family not in FAMILIES or fsec is None:
                continue
            if not isinstance(fsec, dict):
                issues.append(ConfigIssue(fp, f"expected a mapping like {{filter: {{input: NAME}}}}, got {fsec!r}"))
                continue
            issues += check_keys(fsec, FAMILY_KEYS + family_claims, fp)
            filt = fsec.get("filter")
            issues += check_mapping(filt, fp + ("filter",), "input / output -> filter name")
            if not isinstance(filt, dict):
                continue
            issues += check_keys(filt, ("input", "output"), fp + ("filter",), "direction")
            fam_fw = fw.get(family)
            filters = fam_fw.get("filter") if isinstance(fam_fw, dict) else None
            defined = dict(filters) if isinstance(filters, dict) else {}
            if family == "inet":  # Junos shorthand: 'firewall filter X' is family inet
                top = cfg.get("firewall", "filter")
                if isinstance(top, dict):
                    defined.update(top)
            for direction, fname in filt.items():
                if direction not in ("input", "output"):
                    continue
                if not isinstance(fname, str):
                    issues.append(ConfigIssue(fp + ("filter", direction), f"expected a filter name, got {fname!r}"))
                elif fname not in defined:
                    issues.append(ConfigIssue(fp + ("filter", direction),
                                              f"filter {fname!r} is not defined under 'firewall family {family} filter'"
                                              f"{suggest(fname, defined)}"))
    return issues
