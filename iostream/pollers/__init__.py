"""The pollers: one interface over epoll, kqueue, devpoll, poll and select.

- :class:`Poller` is the interface (``register``/``modify``/``unregister``/
  ``poll``/``close``); :class:`EpollPoller`, :class:`KqueuePoller`,
  :class:`DevpollPoller`, :class:`PollPoller` and :class:`SelectPoller` are
  the backends, one module each.
- :func:`available` lists the backends this platform has, best first;
  :func:`choose` picks one by name, by the ``IOSTREAM_POLLER`` environment
  variable (:data:`ENV_VAR`), or the best that passes a socket probe;
  :func:`unavailable_reasons` says why the others cannot run here.
- :data:`READ`, :data:`WRITE`, :data:`ERROR` are the event bits.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

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
    """Each backend that cannot run here, with the reason, in a human sentence.

    That is the backends this platform lacks, and those it has that fail
    the socket probe (see :func:`choose`; probed here if they were not yet).
    """
    reasons: dict[str, str] = {}
    for name, cls in BACKENDS.items():
        reason = cls._unavailable_reason()
        if reason is None:
            reason = _probe(name)
        if reason is not None:
            reasons[name] = reason
    return reasons


#: How long the socket probe waits for READ before it calls a backend broken.
_PROBE_TIMEOUT = 2.0

#: The probe's verdicts in this process: name -> why it failed, or None.
_probe_results: dict[str, str | None] = {}
_probe_pid = os.getpid()
_probe_lock = threading.Lock()


def _probe(name: str) -> str | None:
    """Why backend *name* fails the socket probe here, or ``None`` if it passes.

    The probe: make the poller, register one end of a socket pair for READ,
    write a byte to the other end, and expect ``(fd, READ)`` within
    :data:`_PROBE_TIMEOUT` seconds. Why: a backend can exist and still not
    work — a seccomp or sandbox policy that refuses ``epoll_create`` or
    ``kqueue()``, an emulation layer (WSL 1, gVisor, qemu-user) whose
    epoll or poll misreports. Run once per backend per process (a forked
    child probes again), under a lock.
    """
    global _probe_pid
    with _probe_lock:
        if os.getpid() != _probe_pid:
            _probe_results.clear()
            _probe_pid = os.getpid()
        if name not in _probe_results:
            _probe_results[name] = _run_probe(BACKENDS[name])
        return _probe_results[name]


def _run_probe(cls: type[Poller]) -> str | None:
    where = f"on {sys.platform}"
    try:
        poller = cls()
    except Exception as exc:  # a sandbox refusing the kernel object, say
        return f"failed a socket probe {where}: making it raised {type(exc).__name__}: {exc}"
    reader: socket.socket | None = None
    writer: socket.socket | None = None
    try:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        fd = reader.fileno()
        poller.register(fd, READ)
        writer.send(b"p")
        deadline = time.monotonic() + _PROBE_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return (
                    f"failed a socket probe {where}: a socket pair with a byte "
                    f"to read was not reported readable within {_PROBE_TIMEOUT:g} s"
                )
            if any(got == fd and bits & READ for got, bits in poller.poll(left)):
                return None
    except Exception as exc:
        return f"failed a socket probe {where}: {type(exc).__name__}: {exc}"
    finally:
        poller.close()
        for sock in (reader, writer):
            if sock is not None:
                sock.close()


def choose(name: str | None = None) -> type[Poller]:
    """The poller class for *name*, else for ``$IOSTREAM_POLLER``, else the best.

    With neither (or an empty value), the choice is automatic: the best
    backend of :func:`available` that passes a socket probe (a socket pair
    registered for READ is reported readable after a write), so that a
    backend a sandbox or an emulation layer breaks is skipped; the probe
    runs once per backend per process, and :func:`unavailable_reasons` says
    why a backend was skipped. A name that is given is used as it is.

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
        # Automatic choice: the best backend that passes the socket probe.
        for item in here:
            if _probe(item) is None:
                return BACKENDS[item]
        why = "; ".join(f"{item}: {_probe(item)}" for item in here)
        raise PollerUnavailable(f"no poller works on this platform ({sys.platform}): {why}")
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
