"""The one client every echo server faces: raw non-blocking sockets on epoll (or selectors).

It opens ``idle`` connections, then ``active`` ones, and makes one verified
round trip on each (in batches, so a slow ``accept`` cannot drop any), so
that every connection is established and served before anything is timed.
Then the active connections ping-pong 64-byte lines for ``duration``
seconds: each connection has one line in flight, every reply must be the
exact line sent (connection number and sequence number are in it), and only
round trips completed inside the window count. With ``hold`` it then waits
for the harness (stdin EOF) before closing, so the server's memory can be
read with every connection open. While the clock runs it busy-polls
(``epoll`` with a zero timeout), so its own wake-ups are not on the clock.

It is written for speed in one process: no per-event allocation beyond the
received bytes, one ``%``-format per line, a dict lookup per event.
"""

from __future__ import annotations

import select
import selectors
import socket
import sys
import time
from collections.abc import Callable

from iostream.bench._config import ECHO_LINE
from iostream.bench._payload import echo_template
from iostream.bench._proc import emit, raise_nofile

#: Connections opened (and round-tripped once) at a time.
BATCH = 500


class ClientError(RuntimeError):
    """The server's reply was wrong or missing: the run posts no number."""


class _Conn:
    __slots__ = ("expected", "ident", "partial", "recv", "send", "seq", "sock")

    def __init__(self, sock: socket.socket, ident: int) -> None:
        self.sock = sock
        self.ident = ident
        self.seq = 0
        self.expected = b""
        self.partial = b""
        self.recv = sock.recv
        self.send = sock.send


class _Events:
    """``(fd, events)`` pairs of the ready sockets: epoll where there is one, else selectors."""

    def __init__(self, fds: list[int]) -> None:
        self.poll: Callable[[float], list[tuple[int, int]]]
        if hasattr(select, "epoll"):
            epoll = select.epoll()
            for fd in fds:
                epoll.register(fd, select.EPOLLIN)
            self.poll = epoll.poll  # no wrapper: this is the client's hot loop
            self.close: Callable[[], None] = epoll.close
        else:
            selector = selectors.DefaultSelector()
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            self.poll = lambda timeout: [(key.fd, ev) for key, ev in selector.select(timeout)]
            self.close = selector.close


def _exchange(conns: list[_Conn], seconds: float | None, limit: float) -> tuple[int, float, float]:
    """Ping-pong on *conns*: one round trip each if *seconds* is None, else for *seconds*.

    Return the round trips completed, the time they took and the share of
    that time the client spent on replies rather than waiting for them
    (near 1.0: the client, not the server, set the pace). The single round
    trips must all be done within *limit* seconds.
    """
    template = echo_template()
    by_fd = {conn.sock.fileno(): conn for conn in conns}
    events = _Events(list(by_fd))
    for conn in conns:
        _send_next(conn, template)
    started = time.perf_counter()
    idle = 0.0
    stop_at = started + (seconds if seconds is not None else limit)
    waiting = len(conns)
    count = 0
    # Timed: busy-poll. A sleeping process takes tens of microseconds to
    # wake on this VM; a client that slept would add that to every round
    # trip and hide the servers' differences (every peer measured ~7,500
    # round trips/s with one active connection).
    wait = 0.0 if seconds is not None else 0.05
    try:
        while waiting:
            now = time.perf_counter()
            if now >= stop_at:
                if seconds is None:
                    raise ClientError(f"{waiting} connections got no echo in time")
                break
            ready = events.poll(wait)
            if not ready:
                idle += time.perf_counter() - now
            for fd, _ in ready:
                conn = by_fd[fd]
                data = conn.recv(4096)
                if not data:
                    raise ClientError(f"connection {conn.ident}: server closed it")
                if conn.partial:
                    data = conn.partial + data
                    conn.partial = b""
                if len(data) < ECHO_LINE:
                    conn.partial = data
                    continue
                if data != conn.expected:
                    raise ClientError(
                        f"connection {conn.ident}, line {conn.seq}: "
                        f"echo {data[:80]!r} is not the line sent"
                    )
                count += 1
                if seconds is None:
                    waiting -= 1
                    continue
                seq = conn.seq = conn.seq + 1  # _send_next, inlined: the hot path
                line = conn.expected = template % (conn.ident, seq)
                if conn.send(line) != ECHO_LINE:
                    raise ClientError(f"connection {conn.ident}: a 64-byte send was cut short")
        elapsed = time.perf_counter() - started
        return count, elapsed, 1.0 - idle / elapsed
    finally:
        events.close()


def _send_next(conn: _Conn, template: bytes) -> None:
    conn.seq += 1
    line = conn.expected = template % (conn.ident, conn.seq)
    if conn.send(line) != ECHO_LINE:
        raise ClientError(f"connection {conn.ident}: a 64-byte send was cut short")


def _open(port: int, count: int, first_ident: int, deadline: float) -> list[_Conn]:
    conns: list[_Conn] = []
    for start in range(0, count, BATCH):
        batch = []
        for ident in range(first_ident + start, first_ident + min(count, start + BATCH)):
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=max(1.0, deadline - time.monotonic())
            )
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            batch.append(_Conn(sock, ident))
        _exchange(batch, None, max(1.0, deadline - time.monotonic()))
        conns.extend(batch)
    return conns


def run(
    port: int, active: int, idle: int, seconds: float, hold: bool, timeout: float
) -> dict[str, float]:
    """Run the client; return ``round_trips``, ``seconds`` and the connection counts."""
    limit = raise_nofile()
    if active + idle + 64 > limit:
        raise ClientError(f"{active + idle} connections need more fds than RLIMIT_NOFILE={limit}")
    deadline = time.monotonic() + timeout
    conns = _open(port, idle, 0, deadline) + _open(port, active, idle, deadline)
    try:
        result: dict[str, float] = {"active": active, "idle": idle}
        if seconds > 0 and active:
            count, elapsed, cpu = _exchange(conns[idle:], seconds, seconds)
            result.update(round_trips=count, seconds=elapsed, client_cpu=cpu)
        if hold:
            emit("HELD", {"connections": len(conns)})
            sys.stdin.read()
        return result
    finally:
        for conn in conns:
            conn.sock.close()
