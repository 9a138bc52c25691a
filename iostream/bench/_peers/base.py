"""The interface every peer adapter implements, and what the harness hands it.

A *peer* is one library under test. The harness gives it either an accepted
socket and a list of :class:`~iostream.bench._jobs.ReadPhase` (the one-way
workloads: the peer is the receiver), a port and a list of
:class:`~iostream.bench._jobs.WritePhase` (the ``own-*`` workloads: the
peer's own client connects and writes, while the same peer reads in another
process), or nothing but a :class:`ServerStats` (echo, idle and memory: the
peer is a line echo server on 127.0.0.1). The
adapter only translates those into its library's idiom; timing, payloads and
verification belong to the harness.
"""

from __future__ import annotations

import abc
import socket
import ssl
from collections.abc import Callable
from typing import ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase

#: Listen backlog for the echo servers: 10,000 connections arrive in bursts.
BACKLOG = 4096


class BenchError(RuntimeError):
    """A run failed (closed early, timed out, library error): it posts no number."""


class ServerStats:
    """Counters an echo server keeps for the harness (read from another thread)."""

    def __init__(self) -> None:
        self.accepted = 0


class Peer(abc.ABC):
    """One library under test.

    ``name`` is what ``--peers`` accepts; ``keeps_delimiter`` says whether
    lines reach ``feed`` with their ``b"\\n"`` (``read_until`` semantics) or
    without it (``bytes.split`` in a Protocol); ``workloads`` limits a peer
    that exists for some workloads only.
    """

    name: ClassVar[str]
    keeps_delimiter: ClassVar[bool] = True
    #: The workloads this peer runs (``None``: all of them).
    workloads: ClassVar[frozenset[str] | None] = None

    def __init__(self, poller: str | None = None) -> None:
        self.poller = poller

    @property
    def label(self) -> str:
        """The column name in the results table."""
        return self.name

    @classmethod
    def unavailable(cls) -> str | None:
        """Return why this peer cannot run here, or ``None`` if it can."""
        return None

    @abc.abstractmethod
    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Run *phases* on the accepted, non-blocking *sock* (TLS server side if *tls*).

        Raise :class:`BenchError` if the stream closes early, the library
        reports an error, or *timeout* seconds pass.
        """

    @abc.abstractmethod
    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect to 127.0.0.1:*port* with the library's own client and run *phases*.

        Each phase: read its ``go`` bytes (pass them to ``check_go``),
        ``begin()``, one library ``write`` per chunk with the library's
        usual flow control, ``end()``. Then wait for the other side to close.
        Raise :class:`BenchError` if the stream closes early, bytes arrive
        after the last phase, or *timeout* seconds pass.
        """

    @abc.abstractmethod
    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Run a line echo server on 127.0.0.1, port 0, for ever.

        Call ``ready(port)`` once it listens, count each accepted connection
        in ``stats.accepted``, and echo every ``b"\\n"``-terminated line.
        """
