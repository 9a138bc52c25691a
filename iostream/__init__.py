"""iostream: non-blocking socket streams that behave the same on every OS.

Three layers, each usable alone (the contract: ``docs/guarantees.md``):

- :mod:`iostream.pollers` — epoll, kqueue, devpoll, poll and select behind one
  interface, chosen at run time (argument, ``IOSTREAM_POLLER``, or the best);
- :class:`IOLoop` — fd handlers, callbacks and timers on a poller;
- :class:`IOStream`, :class:`SSLIOStream`, :class:`PipeIOStream`,
  :class:`TCPServer` — Tornado's streams on the loop, with callbacks or
  awaitable Futures.

Also: :mod:`iostream.asyncio` (asyncio on these pollers),
:mod:`iostream.testing` (fault-injection sockets and a pytest plugin),
:mod:`iostream.netutil` and :mod:`iostream.process` (server set-up).
"""

from __future__ import annotations

import sys as _sys

# Before anything else: on an older Python the imports below would fail with
# a TypeError deep in a module (``int | Protocol``), which says nothing useful.
# name="iostream" lets ``python -m iostream`` show it as one line, no traceback.
if _sys.version_info < (3, 10):  # noqa: UP036  (checked by tests/test_cli.py on a 3.9)
    raise ImportError(
        f"iostream needs Python 3.10+; this is Python {_sys.version.split()[0]}", name="iostream"
    )

from iostream import pollers
from iostream._version import __version__
from iostream.ioloop import IOLoop, Timeout
from iostream.netutil import add_accept_handler, bind_sockets, bind_unix_socket
from iostream.periodic import PeriodicCallback
from iostream.pipe import PipeIOStream
from iostream.pollers import ERROR, READ, WRITE, PollerUnavailable
from iostream.stream import (
    BaseIOStream,
    IOStream,
    SSLIOStream,
    StreamBufferFullError,
    StreamClosedError,
    UnsatisfiableReadError,
)
from iostream.tcpserver import TCPServer

__all__ = [
    "ERROR",
    "READ",
    "WRITE",
    "BaseIOStream",
    "IOLoop",
    "IOStream",
    "PeriodicCallback",
    "PipeIOStream",
    "PollerUnavailable",
    "SSLIOStream",
    "StreamBufferFullError",
    "StreamClosedError",
    "TCPServer",
    "Timeout",
    "UnsatisfiableReadError",
    "__version__",
    "add_accept_handler",
    "bind_sockets",
    "bind_unix_socket",
    "pollers",
]
