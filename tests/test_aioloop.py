"""IOLoop.from_asyncio: the IOLoop interface on an asyncio loop (docs/asyncio.md,
"IOStream inside asyncio: `IOLoop.from_asyncio`"; issue 11 item 5).

Each test runs on every kind of asyncio loop here: asyncio's default loop,
``iostream.asyncio``'s loop on each poller, and uvloop's when installed.
Every wait is bounded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import socket
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from conftest import POLLER_NAMES

import iostream.asyncio as iostream_asyncio
from iostream import READ, WRITE
from iostream._aioloop import AsyncioIOLoop
from iostream.ioloop import IOLoop
from iostream.periodic import PeriodicCallback
from iostream.stream import IOStream

LIMIT = 10.0
_T = TypeVar("_T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _factories() -> list[Any]:
    params: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    for name in POLLER_NAMES:
        params.append(
            pytest.param(
                lambda name=name: iostream_asyncio.new_event_loop(name), id=f"iostream-{name}"
            )
        )
    params.append(pytest.param(_uvloop_factory, id="uvloop"))
    return params


@pytest.fixture(params=_factories())
def make_loop(request: pytest.FixtureRequest) -> LoopFactory:
    """Makes a new asyncio loop of one kind."""
    factory: LoopFactory = request.param
    return factory


@pytest.fixture(autouse=True)
def no_current_loop() -> Iterator[None]:
    IOLoop.clear_current()
    yield
    IOLoop.clear_current()


def run(make_loop: LoopFactory, main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """``asyncio.run(main())`` on a loop from *make_loop*, bounded in time."""
    loop = make_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), LIMIT))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# -- identity -------------------------------------------------------------------------


def test_one_ioloop_per_asyncio_loop_and_it_is_current(make_loop: LoopFactory) -> None:
    async def main() -> None:
        running = asyncio.get_running_loop()
        bridge = IOLoop.from_asyncio()
        assert isinstance(bridge, AsyncioIOLoop)
        assert isinstance(bridge, IOLoop)
        assert IOLoop.from_asyncio(running) is bridge
        assert IOLoop.current() is bridge
        assert bridge.asyncio_loop is running
        future = bridge.create_future()
        assert future.get_loop() is running
        assert bridge.time() == pytest.approx(running.time(), abs=1.0)

    run(make_loop, main)


def test_from_asyncio_bad_uses() -> None:
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        IOLoop.from_asyncio()
    with pytest.raises(TypeError, match="loop"):
        IOLoop.from_asyncio(3)  # type: ignore[arg-type]
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        IOLoop.from_asyncio(closed)


def test_from_asyncio_of_a_native_loop_is_itself(io_loop: IOLoop) -> None:
    assert IOLoop.from_asyncio(io_loop) is io_loop  # type: ignore[arg-type]


def test_the_bridge_does_not_outlive_its_asyncio_loop(make_loop: LoopFactory) -> None:
    refs: list[weakref.ref[IOLoop]] = []

    async def main() -> None:
        refs.append(weakref.ref(IOLoop.from_asyncio()))

    run(make_loop, main)
    gc.collect()
    assert refs[0]() is None


def test_close_detaches_and_leaves_the_asyncio_loop_open(make_loop: LoopFactory) -> None:
    async def main() -> None:
        first = IOLoop.from_asyncio()
        a, b = socket.socketpair()
        try:
            first.add_handler(a, lambda fd, events: None, READ)
            first.close(all_fds=True)
            assert a.fileno() == -1
            assert first.handler_count() == 0
            assert not asyncio.get_running_loop().is_closed()
            assert IOLoop.from_asyncio() is not first
        finally:
            a.close()
            b.close()

    run(make_loop, main)


def test_no_poller_attribute(make_loop: LoopFactory) -> None:
    async def main() -> None:
        bridge = IOLoop.from_asyncio()
        assert getattr(bridge, "poller", None) is None
        with pytest.raises(AttributeError, match="asyncio"):
            bridge.poller  # noqa: B018

    run(make_loop, main)


# -- handlers, callbacks, timers --------------------------------------------------------


def test_handlers_get_read_and_write(make_loop: LoopFactory) -> None:
    async def main() -> list[tuple[object, int]]:
        bridge = IOLoop.from_asyncio()
        a, b = socket.socketpair()
        seen: list[tuple[object, int]] = []
        done = asyncio.get_running_loop().create_future()

        def handler(fd: object, events: int) -> None:
            seen.append((fd, events))
            if events == READ:
                bridge.update_handler(a, WRITE)
            else:
                bridge.remove_handler(a)
                done.set_result(None)

        try:
            bridge.add_handler(a, handler, READ)
            with pytest.raises(FileExistsError):
                bridge.add_handler(a, handler, READ)
            assert bridge.handler_count() == 1
            b.send(b"x")
            await done
            assert bridge.handler_count() == 0
            return [(fd is a, events) for fd, events in seen]
        finally:
            a.close()
            b.close()

    assert run(make_loop, main) == [(True, READ), (True, WRITE)]


def test_removed_handler_gets_no_stale_event(make_loop: LoopFactory) -> None:
    """Two readable fds; the first handler to run drains its own, removes and
    closes the other, and watches a new idle socket that took its number:
    no handler may run for the old event."""

    async def main() -> tuple[list[str], list[bool]]:
        bridge = IOLoop.from_asyncio()
        p1, q1 = socket.socketpair()
        p2, q2 = socket.socketpair()
        socks = [p1, q1, p2, q2]
        calls: list[str] = []
        reused: list[bool] = []

        def first(fd: object, events: int) -> None:
            calls.append("first")
            assert isinstance(fd, socket.socket)
            fd.recv(16)
            other = p2 if fd is p1 else p1
            number = other.fileno()
            bridge.remove_handler(other)
            other.close()
            fresh, peer = socket.socketpair()
            socks.extend((fresh, peer))
            reused.append(number in (fresh.fileno(), peer.fileno()))
            target = fresh if fresh.fileno() == number else peer
            bridge.add_handler(target, lambda fd, events: calls.append("new"), READ)

        try:
            bridge.add_handler(p1, first, READ)
            bridge.add_handler(p2, first, READ)
            q1.send(b"x")
            q2.send(b"x")
            await asyncio.sleep(0.05)
            return calls, reused
        finally:
            for sock in socks:
                bridge.remove_handler(sock)
                sock.close()

    calls, reused = run(make_loop, main)
    assert calls == ["first"]
    assert reused == [True]


def test_handler_exception_is_logged_on_iostream(
    make_loop: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        bridge = IOLoop.from_asyncio()
        a, b = socket.socketpair()
        done = asyncio.get_running_loop().create_future()

        def handler(fd: object, events: int) -> None:
            bridge.remove_handler(a)
            done.set_result(None)
            raise KeyError("handler")

        try:
            bridge.add_handler(a, handler, READ)
            b.send(b"x")
            await done
            await asyncio.sleep(0)
        finally:
            a.close()
            b.close()

    with caplog.at_level(logging.ERROR, logger="iostream"):
        run(make_loop, main)
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]


def test_callbacks_and_timers(make_loop: LoopFactory) -> None:
    async def main() -> list[str]:
        bridge = IOLoop.from_asyncio()
        order: list[str] = []
        done = asyncio.get_running_loop().create_future()
        cancelled = bridge.call_later(0.01, order.append, "cancelled")
        bridge.remove_timeout(cancelled)
        bridge.call_later(0.02, lambda: done.set_result(None))
        bridge.add_timeout(bridge.time() + 0.01, order.append, "timer")
        bridge.add_callback(order.append, "callback")
        thread = threading.Thread(target=bridge.add_callback, args=(order.append, "thread"))
        thread.start()
        thread.join(LIMIT)
        await done
        return order

    order = run(make_loop, main)
    assert sorted(order) == ["callback", "thread", "timer"]
    assert order.index("callback") < order.index("timer")


def test_timer_from_another_thread(make_loop: LoopFactory) -> None:
    async def main() -> None:
        bridge = IOLoop.from_asyncio()
        done = asyncio.get_running_loop().create_future()
        thread = threading.Thread(
            target=bridge.call_later, args=(0.01, lambda: done.set_result("ran"))
        )
        thread.start()
        thread.join(LIMIT)
        assert await done == "ran"

    run(make_loop, main)


def test_spawn_callback_coroutine_and_periodic_callback(make_loop: LoopFactory) -> None:
    async def main() -> int:
        bridge = IOLoop.from_asyncio()
        done = asyncio.get_running_loop().create_future()
        ticks = 0

        async def spawned() -> None:
            await asyncio.sleep(0)
            done.set_result(None)

        def tick() -> None:
            nonlocal ticks
            ticks += 1

        bridge.spawn_callback(spawned)
        await done
        pc = PeriodicCallback(tick, 5)  # io_loop=None: the bridge
        assert pc.io_loop is bridge
        pc.start()
        while ticks < 3:
            await asyncio.sleep(0.005)
        pc.stop()
        return ticks

    assert run(make_loop, main) >= 3


def test_asyncio_methods_are_the_asyncio_loops(make_loop: LoopFactory) -> None:
    async def main() -> None:
        bridge = IOLoop.from_asyncio()
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            transport, _ = await bridge.create_connection(  # type: ignore[attr-defined]
                asyncio.Protocol, "127.0.0.1", port
            )
            transport.close()
            assert await bridge.run_in_executor(None, sum, [1, 2]) == 3
            assert await bridge.create_task(asyncio.sleep(0, "task")) == "task"
            running = asyncio.get_running_loop()
            factory = running.get_task_factory()
            try:
                bridge.set_task_factory(None)
                assert running.get_task_factory() is None
            finally:
                running.set_task_factory(factory)
            assert bridge.get_task_factory() is factory
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                bridge.set_default_executor(pool)
                assert await running.run_in_executor(None, threading.get_ident) != (
                    threading.get_ident()
                )
                await bridge.shutdown_default_executor()
        finally:
            server.close()
            await server.wait_closed()

    run(make_loop, main)


def test_run_sync_on_a_loop_that_is_not_running(make_loop: LoopFactory) -> None:
    loop = make_loop()
    try:
        bridge = IOLoop.from_asyncio(loop)

        async def answer() -> int:
            await asyncio.sleep(0.01)
            assert asyncio.get_running_loop() is loop
            return 42

        assert bridge.run_sync(answer, timeout=LIMIT) == 42
        with pytest.raises(TimeoutError):
            bridge.run_sync(lambda: asyncio.sleep(LIMIT), timeout=0.02)
        bridge.close()
    finally:
        loop.close()


# -- an IOStream next to asyncio.open_connection ----------------------------------------


def test_iostream_next_to_asyncio_open_connection(make_loop: LoopFactory) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            # An asyncio client...
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # ...and an IOStream on the same loop, through IOLoop.current().
            stream = IOStream(socket.socket(), io_loop=IOLoop.current())
            assert stream.io_loop is IOLoop.from_asyncio(loop)
            connected = loop.create_future()
            stream.connect(("127.0.0.1", port), lambda: connected.set_result(None))
            await connected
            got_line = loop.create_future()
            stream.write(b"from iostream\n")
            stream.read_until(b"\n", got_line.set_result)
            writer.write(b"from asyncio\n")
            asyncio_line = await reader.readline()
            iostream_line: bytes = await got_line
            closed = loop.create_future()
            stream.set_close_callback(lambda: closed.set_result(None))
            stream.close()
            await closed
            writer.close()
            await writer.wait_closed()
            return iostream_line, asyncio_line
        finally:
            server.close()
            await server.wait_closed()

    assert run(make_loop, main) == (b"FROM IOSTREAM\n", b"FROM ASYNCIO\n")
