"""The pollers: one interface over epoll, kqueue, devpoll, poll and select.

- :class:`Poller` is the interface (``register``/``modify``/``unregister``/
  ``poll``/``close``); :class:`EpollPoller`, :class:`KqueuePoller`,
  :class:`DevpollPoller`, :class:`PollPoller` and :class:`SelectPoller` are
  the backends, one module each.
- :func:`available` lists the backends usable here, best first;
  :func:`choose` picks one by name, by the ``IOSTREAM_POLLER`` environment
  variable (:data:`ENV_VAR`), or the best; :func:`unavailable_reasons` says
  why the others cannot run here.
- :data:`READ`, :data:`WRITE`, :data:`ERROR` are the event bits.
"""

from __future__ import annotations

import os
import sys

from iostream.pollers.base import (
    ERROR,
    READ,
    WRITE,
    FdTablePoller,
    Poller,
    PollerUnavailable,
)
from iostream.pollers.devpoll import DevpollPoller
from iostream.pollers.epoll import EpollPoller
from iostream.pollers.kqueue import KqueuePoller
from iostream.pollers.poll import PollPoller
from iostream.pollers.select_ import SelectPoller

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "ERROR",
    "READ",
    "WRITE",
    "DevpollPoller",
    "EpollPoller",
    "KqueuePoller",
    "PollPoller",
    "Poller",
    "PollerUnavailable",
    "SelectPoller",
    "available",
    "choose",
    "unavailable_reasons",
]

#: The environment variable :func:`choose` reads when no name is given.
ENV_VAR = "IOSTREAM_POLLER"

#: Every backend by name, best first: the order :func:`available` keeps.
BACKENDS: dict[str, type[FdTablePoller]] = {
    "kqueue": KqueuePoller,
    "epoll": EpollPoller,
    "devpoll": DevpollPoller,
    "poll": PollPoller,
    "select": SelectPoller,
}


def available() -> tuple[str, ...]:
    """The names of the backends usable on this platform, best first.

    The order is kqueue, epoll, devpoll, poll, select; poll is not offered on
    macOS. ``select`` is always there.
    """
    return tuple(name for name, cls in BACKENDS.items() if cls.available())


def unavailable_reasons() -> dict[str, str]:
    """Each backend that cannot run here, with the reason, in a human sentence."""
    reasons: dict[str, str] = {}
    for name, cls in BACKENDS.items():
        reason = cls._unavailable_reason()
        if reason is not None:
            reasons[name] = reason
    return reasons


def choose(name: str | None = None) -> type[Poller]:
    """The poller class for *name*, else for ``$IOSTREAM_POLLER``, else the best.

    The value is case-insensitive and may be a comma-separated preference
    list (``"kqueue,poll"``): the first available backend wins. Whitespace
    and empty items are ignored; an empty value means the best available.

    Raises :class:`ValueError` for an unknown name (listing the known ones)
    and :class:`PollerUnavailable` if no name in the list is available here
    (naming this platform and what is available).
    """
    if name is None:
        value = os.environ.get(ENV_VAR, "")
        source = f"{ENV_VAR}={value!r}"
    elif isinstance(name, str):
        value = name
        source = repr(name)
    else:
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    names = [item.strip().lower() for item in value.split(",")]
    names = [item for item in names if item]
    here = available()
    if not names:
        return BACKENDS[here[0]]
    unknown = [item for item in names if item not in BACKENDS]
    if unknown:
        raise ValueError(
            f"unknown poller {', '.join(map(repr, unknown))} in {source}; "
            f"known pollers: {', '.join(BACKENDS)}"
        )
    for item in names:
        if item in here:
            return BACKENDS[item]
    why = "; ".join(f"{item}: {BACKENDS[item]._unavailable_reason()}" for item in names)
    raise PollerUnavailable(
        f"poller {source} is not available on this platform ({sys.platform}): {why}; "
        f"available here: {', '.join(here)}"
    )
