"""Per-record kernels, compiled (Cython) when the extension is built, else their Python/numpy twins.

The columnar pipeline does its bulk work with numpy; a few loops must still run once per record
(walking pcap records, probing the flow cache's hash table).  Those live here twice: ``_compiled.pyx``,
built by setuptools at install when a C compiler and Cython are at hand, and :mod:`flowplane.kernels.pyimpl`,
always present.  Both give identical results (the kernel tests run both).

``FLOWPLANE_NO_EXT=1`` in the environment forces the Python implementation.  :data:`IMPLEMENTATION`
names the one in use and :data:`REASON` says why; ``show system statistics`` prints both.
"""

from __future__ import annotations

import importlib.util
import os
import types

from . import pyimpl

#: Names every implementation provides.
KERNELS = ("pcap_walk", "pcapng_walk_epb", "flow_lookup", "flow_insert")


def _load() -> tuple[types.ModuleType | None, str]:
    if os.environ.get("FLOWPLANE_NO_EXT", "").strip() not in ("", "0"):
        return None, "FLOWPLANE_NO_EXT is set"
    if importlib.util.find_spec(f"{__name__}._compiled") is None:
        return None, "the compiled extension is not built"
    try:
        from . import _compiled
    except ImportError as e:  # built, but for another interpreter or broken
        return None, f"the compiled extension does not load: {e}"
    return _compiled, "Cython extension"


_compiled_mod, REASON = _load()
#: ``"compiled"`` (the Cython extension) or ``"python"`` (the numpy fallback).
IMPLEMENTATION = "compiled" if _compiled_mod is not None else "python"
_active = _compiled_mod or pyimpl

pcap_walk = _active.pcap_walk
pcapng_walk_epb = _active.pcapng_walk_epb
flow_lookup = _active.flow_lookup
flow_insert = _active.flow_insert


def active() -> types.ModuleType:
    """The implementation in use (the module whose functions the names above are)."""
    return _active


def implementations() -> dict[str, types.ModuleType]:
    """Every implementation that can run here, by name (``python`` always; ``compiled`` when built)."""
    impls = {"python": pyimpl}
    if _compiled_mod is not None:
        impls["compiled"] = _compiled_mod
    elif importlib.util.find_spec(f"{__name__}._compiled") is not None:
        try:
            from . import _compiled
        except ImportError:
            pass
        else:
            impls["compiled"] = _compiled
    return impls


def compiled_available() -> bool:
    """Whether the compiled extension is built (whether or not it is in use)."""
    return "compiled" in implementations()


def status() -> dict:
    """What ``show system statistics`` reports."""
    return {"implementation": IMPLEMENTATION, "reason": REASON, "compiled_available": compiled_available(),
            "kernels": list(KERNELS)}
