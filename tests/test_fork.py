"""fork (issue 6, item 6): a poller or IOLoop used in a forked child is its own.

An epoll (or /dev/poll) fd is a reference to one kernel object, and fork()
copies the reference: a child that used it as is would add and remove fds
in the parent's interest set. The pollers re-create their kernel object in
the child (``os.register_at_fork``). These tests fork for real and check,
on every poller of the run:

* poller level: the child registers a new fd and unregisters one inherited
  from the parent; the child sees its new fd's events and not the removed
  one's; afterwards the parent still sees events on the fd the child
  removed, and none for the child's fd;
* IOLoop level: the same through ``add_handler``/``remove_handler`` and a
  running child loop;
* the child closing its loop with ``close(all_fds=True)`` (what a worker
  does) leaves the parent's streams working;
* the loop's waker: a wake-up made in the child (``add_callback`` from a
  child thread) must not wake the parent's loop — the socket pair behind it
  is inherited too.

The child reports through a pipe (JSON) and leaves with ``os._exit``; the
parent reads with a deadline and kills a child that overruns.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _stream_helpers import StreamKit, Waiter, streams_fixture  # noqa: F401  (fixture)

from iostream import IOLoop, pollers
from iostream.pollers import READ, Poller

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: Seconds the parent waits for a child's report.
CHILD_DEADLINE = 20.0


def in_child(
    body: Callable[[], dict[str, Any]], parent: Callable[[], object] | None = None
) -> dict[str, Any]:
    """Run *body* in a forked child; return the dict it returned (or its error).

    *parent*, if given, runs in the parent right after the fork, while the
    child runs *body*.
    """
    r, w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock
        # (pytest-xdist/timeout threads); the child only runs *body*.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(r)
            try:
                report: dict[str, Any] = body()
            except BaseException as exc:
                report = {"error": f"{type(exc).__name__}: {exc}"}
                code = 1
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(w)
    if parent is not None:
        parent()
    chunks: list[bytes] = []
    deadline = time.monotonic() + CHILD_DEADLINE
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the child gave no report within {CHILD_DEADLINE}s")
            ready, _, _ = select.select([r], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _reap(pid)
    raw = b"".join(chunks)
    assert raw, "the child died without a report"
    result: dict[str, Any] = json.loads(raw)
    assert "error" not in result, result["error"]
    return result


def _reap(pid: int) -> None:
    for _ in range(200):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)  # a bounded wait for a process exit (no event to await)
    os.kill(pid, 9)
    os.waitpid(pid, 0)


@pytest.fixture
def poller(poller_name: str) -> Iterator[Poller]:
    """A bare poller of this run's kind."""
    p = pollers.choose(poller_name)()
    yield p
    p.close()


def _drain_events(p: Poller, want: Callable[[dict[int, int]], bool]) -> dict[int, int]:
    """Poll (bounded: 50 x 0.1 s) until *want(events)*; return the events seen."""
    seen: dict[int, int] = {}
    for _ in range(50):
        for fd, ev in p.poll(0.1):
            seen[fd] = seen.get(fd, 0) | ev
        if want(seen):
            break
    return seen


def test_poller_child_has_its_own_interest_set(poller: Poller) -> None:
    a1, a2 = socket.socketpair()
    with a1, a2:
        poller.register(a1, READ)

        def child() -> dict[str, Any]:
            b1, b2 = socket.socketpair()
            poller.register(b1, READ)
            poller.unregister(a1)
            a2.send(b"from child")  # a1 readable: in the child's set no more
            b2.send(b"x")
            seen = _drain_events(poller, lambda ev: b1.fileno() in ev)
            return {"b1": b1.fileno(), "a1": a1.fileno(), "seen": list(seen)}

        report = in_child(child)
        assert report["b1"] in report["seen"], report
        assert report["a1"] not in report["seen"], report
        # The parent: still watching a1 (the child's unregister did not reach
        # it), and nothing of the child's fd.
        seen = _drain_events(poller, lambda ev: a1.fileno() in ev)
        assert seen.get(a1.fileno(), 0) & READ, seen
        assert report["b1"] not in seen or report["b1"] == a1.fileno(), seen
        assert len(poller) == 1  # type: ignore[arg-type]


def test_ioloop_child_runs_its_own_handlers(io_loop: IOLoop) -> None:
    a1, a2 = socket.socketpair()
    with a1, a2:
        parent_hits = Waiter(io_loop)

        def on_a(fd: Any, ev: int) -> None:
            a1.recv(100)
            parent_hits.done()

        io_loop.add_handler(a1, on_a, READ)

        def child() -> dict[str, Any]:
            fired: list[str] = []
            b1, b2 = socket.socketpair()
            io_loop.remove_handler(a1)

            def on_b(fd: Any, ev: int) -> None:
                fired.append("b")
                b1.recv(100)
                io_loop.stop()

            io_loop.add_handler(b1, on_b, READ)
            a2.send(b"for the parent")
            b2.send(b"for the child")
            io_loop.call_later(5.0, io_loop.stop)
            io_loop.start()
            return {"fired": fired, "handlers": io_loop.handler_count()}

        report = in_child(child)
        assert report == {"fired": ["b"], "handlers": 1}
        parent_hits.wait()
        assert io_loop.handler_count() == 1
        io_loop.remove_handler(a1)


def test_child_closing_its_loop_leaves_parent_streams_working(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    client, server = streams.pair()
    got = Waiter(io_loop)
    server.read_bytes(4, got.callback)  # registered with the loop before the fork

    def child() -> dict[str, Any]:
        # Closes the child's copies of every registered stream (server's here).
        io_loop.close(all_fds=True)
        return {"closed": io_loop.closed(), "server": server.closed()}

    assert in_child(child) == {"closed": True, "server": True}
    assert not client.closed() and not server.closed()
    client.write(b"ping")
    assert got.wait() == b"ping"
    back = Waiter(io_loop)
    client.read_bytes(4, back.callback)
    server.write(b"pong")
    assert back.wait() == b"pong"


def test_child_wakeups_do_not_reach_the_parent(io_loop: IOLoop) -> None:
    # The parent's loop has nothing to do: its poller reports nothing.
    assert io_loop.poller.poll(0) == []

    def child() -> dict[str, Any]:
        # A thread of the child's program hands its loop a callback: the
        # loop is woken through its waker.
        t = threading.Thread(target=lambda: io_loop.add_callback(print))
        t.start()
        t.join(10.0)
        return {"queued": len(io_loop._callbacks)}

    assert in_child(child) == {"queued": 1}
    # That wake-up was the child's business: the parent's loop must not wake.
    assert io_loop.poller.poll(0) == []


def test_parent_registrations_after_fork_stay_in_the_parent(io_loop: IOLoop) -> None:
    """An fd the parent registers after the fork is not in the child's set
    (with a shared kernel object, the child would see its events)."""
    a1, a2 = socket.socketpair()
    r, w = os.pipe()
    try:

        def child() -> dict[str, Any]:
            # Wait (bounded) until the parent has registered a1 and made it readable.
            ready, _, _ = select.select([r], [], [], 10.0)
            events = io_loop.poller.poll(0.2)
            return {"fds": [fd for fd, _ in events], "ready": bool(ready)}

        def parent() -> None:
            io_loop.add_handler(a1, lambda fd, ev: None, READ)
            a2.send(b"x")
            os.write(w, b"go")

        report = in_child(child, parent)
        assert report["ready"]
        assert a1.fileno() not in report["fds"], report
        io_loop.remove_handler(a1)
    finally:
        os.close(r)
        os.close(w)
        a1.close()
        a2.close()


def test_default_loop_instance_in_child() -> None:
    """IOLoop.instance() made before fork is usable in the child (its own set)."""
    IOLoop.clear_instance()
    loop = IOLoop.instance()
    try:

        def child() -> dict[str, Any]:
            fired: list[str] = []
            inst = IOLoop.instance()

            def callback() -> None:
                fired.append("cb")
                inst.stop()

            inst.add_callback(callback)
            inst.call_later(5.0, inst.stop)
            inst.start()
            return {"same": inst is loop, "fired": fired}

        assert in_child(child) == {"same": True, "fired": ["cb"]}
    finally:
        loop.close()
        IOLoop.clear_instance()
