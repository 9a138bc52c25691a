"""What asyncio streams cost on ``new_event_loop("epoll")``, in counts, against asyncio's own loop.

The same echo (``readuntil``/``write``/``drain`` against
``write``/``drain``/``readexactly``, 64-byte lines over socket pairs, both
ends in this process) runs on ``SelectorEventLoop(selectors.EpollSelector())``
and on :func:`iostream.asyncio.new_event_loop` with the epoll poller. Being
in one process over socket pairs, with no timers, its sequence of events is
the same on every run at any machine load, so the bounds are on counts, never
on time: the epoll system calls (``epoll_wait`` and ``epoll_ctl``, counted on
the ``select.epoll`` object each selector holds), the selector calls asyncio
makes, and the Python function calls per round trip (cProfile's count).

``bench/asyncio_loop_cost.py`` prints the same counts, and with
``--strace``/``--callgrind`` the system calls and instructions.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import select
import selectors
import socket
from collections import Counter
from typing import Any

import pytest

from iostream.asyncio import PollerSelector, new_event_loop
from iostream.pollers.fallback import FallbackPoller

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux only")

LINE = b"x" * 63 + b"\n"

#: Python function calls one ``PollerSelector.select`` may make beyond
#: ``EpollSelector.select``'s, however many fds are ready: the layers
#: between asyncio and the kernel (FallbackPoller.poll, EpollPoller.poll,
#: normalize_timeout and its two isinstance checks) and EpollPoller's
#: ``max(len(table), 1)`` maxevents (3.13's EpollSelector no longer computes
#: one). Measured per select, one connection: 4.6 on 3.11, 5.5 on 3.13
#: (EpollSelector's ``math.ceil`` for a positive timeout is the difference);
#: fewer with many fds ready, as 3.10-3.12's EpollSelector makes a
#: ``_key_from_fd`` call per ready fd where PollerSelector does a dict.get.
EXTRA_CALLS_PER_SELECT = 6


class _CountingEpoll:
    """Stands in for a ``select.epoll`` object; counts each call (one system call each)."""

    def __init__(self, epoll: Any, counts: Counter[str]) -> None:
        self._epoll = epoll
        self._counts = counts

    def poll(self, *args: Any) -> Any:
        self._counts["epoll_wait"] += 1
        return self._epoll.poll(*args)

    def register(self, *args: Any) -> Any:
        self._counts["epoll_ctl"] += 1
        return self._epoll.register(*args)

    def modify(self, *args: Any) -> Any:
        self._counts["epoll_ctl"] += 1
        return self._epoll.modify(*args)

    def unregister(self, *args: Any) -> Any:
        self._counts["epoll_ctl"] += 1
        return self._epoll.unregister(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._epoll, name)


class _CountingSelector:
    """Counts the selector calls asyncio makes, and those that change an fd's events."""

    def __init__(self, selector: selectors.BaseSelector, counts: Counter[str]) -> None:
        self._counts = counts
        self._select = selector.select
        self._modify = selector.modify
        self._register = selector.register
        self._unregister = selector.unregister
        self._get_key = selector.get_key
        selector.select = self.select  # type: ignore[method-assign]
        selector.modify = self.modify  # type: ignore[method-assign]
        selector.register = self.register  # type: ignore[method-assign]
        selector.unregister = self.unregister  # type: ignore[method-assign]

    def select(self, timeout: float | None = None) -> Any:
        self._counts["select"] += 1
        return self._select(timeout)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> Any:
        self._counts["modify"] += 1
        if self._get_key(fileobj).events != events:
            self._counts["modify that changes the events"] += 1
        return self._modify(fileobj, events, data)

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any:
        self._counts["register"] += 1
        return self._register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> Any:
        self._counts["unregister"] += 1
        return self._unregister(fileobj)


def _loop(kind: str, counts: Counter[str]) -> asyncio.AbstractEventLoop:
    if kind == "stock":
        selector: selectors.BaseSelector = selectors.EpollSelector()
        selector._selector = _CountingEpoll(selector._selector, counts)  # type: ignore[attr-defined]
        loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop(selector)
    else:
        loop = new_event_loop("epoll")
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollerSelector)
        fallback = selector.poller
        assert isinstance(fallback, FallbackPoller)
        primary: Any = fallback.primary
        primary._epoll = _CountingEpoll(primary._epoll, counts)
    _CountingSelector(selector, counts)
    return loop


async def _echo(rounds: int, conns: int, payload: bytes) -> None:
    """*rounds* round trips of *payload* on each of *conns* socket pairs."""

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(await reader.readexactly(len(payload)))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(rounds):
            writer.write(payload)
            await writer.drain()
            assert await reader.readexactly(len(payload)) == payload
        writer.close()

    tasks = []
    for _ in range(conns):
        a, b = socket.socketpair()
        server_ends = await asyncio.open_connection(sock=b)
        client_ends = await asyncio.open_connection(sock=a)
        tasks.append(asyncio.ensure_future(server(*server_ends)))
        tasks.append(asyncio.ensure_future(client(*client_ends)))
    await asyncio.wait_for(asyncio.gather(*tasks), 60)


def _run(kind: str, rounds: int, conns: int, payload: bytes = LINE) -> Counter[str]:
    counts: Counter[str] = Counter()
    loop = _loop(kind, counts)
    try:
        loop.run_until_complete(_echo(1, conns, payload))  # connections set up, warm
        counts.clear()
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            loop.run_until_complete(_echo(rounds, conns, payload))
        finally:
            profiler.disable()
        counts["python calls"] = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
    finally:
        loop.close()
    return counts


@pytest.mark.parametrize("conns", [1, 20])
def test_echo_makes_the_epoll_calls_of_asyncio_own_loop(conns: int) -> None:
    """As many epoll_wait and epoll_ctl calls as on EpollSelector, and selector calls."""
    stock = _run("stock", 100, conns)
    ours = _run("iostream", 100, conns)
    assert stock["select"] > 0  # the run did wait
    for key in ("epoll_wait", "epoll_ctl", "select", "modify", "register", "unregister"):
        assert ours[key] <= stock[key] + 1, (key, ours, stock)


@pytest.mark.parametrize("conns", [1, 20])
def test_echo_python_calls_within_a_fixed_few_per_select(conns: int) -> None:
    """The selector adds at most EXTRA_CALLS_PER_SELECT Python calls per wait.

    Not per event: with many fds ready at once the per-event work is a dict
    lookup and a table index, no function call (EpollSelector makes one,
    ``_key_from_fd``, per event).
    """
    # The difference between 150 and 50 round trips: per round trip, with
    # the connections' set-up and tear-down (register, unregister) left out.
    stock = _run("stock", 150, conns) - _run("stock", 50, conns)
    ours = _run("iostream", 150, conns) - _run("iostream", 50, conns)
    assert ours["select"] == stock["select"] > 0, (ours, stock)
    bound = stock["python calls"] + EXTRA_CALLS_PER_SELECT * ours["select"]
    assert ours["python calls"] <= bound, (ours, stock)


def test_writes_that_block_change_the_kernel_set_once_per_change() -> None:
    """add_writer/remove_writer (selector.modify) cost one epoll_ctl per change, as on stock.

    256 KiB messages overflow the socket pair's buffer, so each write waits
    for writability: asyncio calls ``selector.modify`` to add and to remove
    WRITE (and, as the reader's flow control pauses and resumes reading,
    ``unregister`` and ``register``). One epoll_ctl per call that changes
    something; a ``modify`` that leaves the events as they are must not
    reach the kernel.
    """
    payload = b"y" * (256 * 1024)
    for kind in ("stock", "iostream"):
        counts = _run(kind, 20, 2, payload)
        changes = counts["modify that changes the events"]
        assert changes > 0, (kind, counts)  # the path under test was taken
        expected = changes + counts["register"] + counts["unregister"]
        assert counts["epoll_ctl"] == expected, (kind, counts)
