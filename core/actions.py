"""Firewall term actions: what a ``then { ... }`` clause may say.

The core implements the terminating actions ``accept``, ``discard`` and
``reject`` and the modifiers ``count NAME`` and ``next term``.  Every other
action (``sample``, ``port-mirror``, ``inline-monitoring-instance NAME`` ...)
is contributed by a plugin through ``flowplane_register_actions``; the
feature's stateful object then binds a handler with
:meth:`flowplane.app.App.bind_action`, and the pipeline hands it the matching
rows of each batch as :class:`flowplane.batch.ActionSelection` lists.

``discard accounting NAME`` (Junos discard accounting) is a core discard
whose rows are also handed to the handler bound to the term action
:data:`DISCARD_ACCOUNTING`: the feature that meters discarded traffic
registers a ``TermAction(DISCARD_ACCOUNTING, arg="required", validate=...)``
(its ``validate`` checks NAME) and binds it like any other action; its
selections carry ``action == "discard-accounting"`` and ``arg == NAME``.  The
packets are discarded (counted by the filter as discarded) whether or not a
handler is bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ArgKind = Literal["none", "required", "optional"]

#: The term action a plugin registers to receive the rows of ``discard accounting NAME``.
DISCARD_ACCOUNTING = "discard-accounting"


@dataclass(frozen=True, slots=True)
class TermAction:
    """A ``then`` action a plugin implements.

    :param name: the Junos keyword, e.g. ``"sample"`` or ``"port-mirror-instance"``.
    :param arg: whether the keyword takes a value (``port-mirror-instance pm1``).
    :param help: one line for ``flowplane plugins``.
    :param validate: optional ``(arg, config_dict) -> error message | None``;
        e.g. checks that the named instance exists in the config.
    :param terminating: True for actions that end filter evaluation for the
        packet (like ``discard``); plugin actions are normally non-terminating.
    """

    name: str
    arg: ArgKind = "none"
    help: str = ""
    validate: Callable[[object, dict], str | None] | None = None
    terminating: bool = False


#: Actions the firewall itself implements.
CORE_ACTIONS: tuple[TermAction, ...] = (
    TermAction("accept", help="accept the packet (terminating)", terminating=True),
    TermAction("discard", arg="optional", help="silently discard the packet (terminating); 'discard accounting NAME' "
               "also meters it into accounting group NAME", terminating=True),
    TermAction("reject", arg="optional", help="discard and count as rejected (terminating)", terminating=True),
    TermAction("count", arg="required", help="count matching packets and bytes in a named counter"),
    TermAction("next", arg="required", help="'next term': continue with the following term"),
)
