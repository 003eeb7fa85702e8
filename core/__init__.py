"""flowplane: an open software appliance for network flow monitoring.

The public API for plugin authors lives here; import from ``flowplane``
(or ``flowplane.api``), never from another plugin.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

PROJECT = "flowplane"
ENTRYPOINT_GROUP = "flowplane.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["hookimpl", "hookspec", "PROJECT", "ENTRYPOINT_GROUP", "__version__"]
