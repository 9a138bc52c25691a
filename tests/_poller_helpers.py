"""Helpers for the poller tests: socket pairs, a refused connect, bounded waits."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from iostream.pollers import Poller
from iostream.testing import socket_pair

#: One loopback pair for every suite: the public helper users get too.
loopback_pair = socket_pair

#: Longest a test waits for an event that should come at once. Generous for
#: slow CI machines; a passing test never waits this long.
EVENT_TIMEOUT = 10.0


@contextmanager
def refused_connect() -> Iterator[socket.socket]:
    """A non-blocking socket whose connect to a closed loopback port is failing.

    The port is held by a bound socket that does not listen, so no other test
    can take it, and the kernel answers the SYN with a reset (ECONNREFUSED).
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex(holder.getsockname())
        assert err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.ECONNREFUSED), err
        try:
            yield sock
        finally:
            sock.close()


def poll_until(
    poller: Poller, fd: int, mask: int, timeout: float = EVENT_TIMEOUT
) -> tuple[int, list[list[tuple[int, int]]]]:
    """Poll until *fd* is reported with a bit of *mask*; return (its events, all results).

    Bounded in time (*timeout*) and in count (1000 polls). Fails the test
    if *fd* is reported twice in one result, or never with *mask*.
    """
    deadline = time.monotonic() + timeout
    results: list[list[tuple[int, int]]] = []
    for _ in range(1000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        result = poller.poll(min(remaining, 1.0))
        results.append(result)
        fds = [pair[0] for pair in result]
        assert len(fds) == len(set(fds)), f"an fd reported twice in one poll: {result}"
        for got_fd, events in result:
            if got_fd == fd and events & mask:
                return events, results
    raise AssertionError(f"fd {fd} not reported with {mask:#x} within {timeout}s: {results}")


def drain(sock: socket.socket) -> bytes:
    """Read everything *sock* has now (non-blocking)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
