"""Defects an audit of the native IOLoop's asyncio side found (round two).

Every test here failed on the code before its fix: the same program on
asyncio's own loop is the reference (docs/asyncio.md: coroutines on the
native loop use asyncio's API).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import math
import socket
from typing import Any

import pytest

from iostream import READ, IOLoop

#: Seconds any one run_sync here may take (a passing test: milliseconds).
LIMIT = 20

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def _interrupt() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("make_loop", [IOLoop, asyncio.new_event_loop], ids=["iostream", "asyncio"])
def test_interrupt_in_a_timer_keeps_the_other_due_timers(make_loop: Any) -> None:
    # The native loop took every due timer off the heap before running them;
    # a KeyboardInterrupt from one lost the rest for good (a task sleeping
    # on one of them never woke).
    loop = make_loop() if make_loop is asyncio.new_event_loop else make_loop(make_current=False)
    fired: list[str] = []
    try:
        past = loop.time() - 1.0  # due at once: one batch
        loop.call_at(past, _interrupt)
        loop.call_at(past, fired.append, "same batch")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert fired == ["same batch"]
    finally:
        loop.close()


def test_a_task_sleeping_through_an_interrupt_wakes_up(io_loop: IOLoop) -> None:
    async def worker() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return "woke"

    task: list[asyncio.Task[str]] = []

    async def main() -> None:
        task.append(asyncio.ensure_future(worker()))
        await asyncio.sleep(0)
        io_loop.call_later(0.001, _interrupt)  # due in the same batch as the sleep
        await task[0]

    with pytest.raises(KeyboardInterrupt):
        io_loop.run_sync(main, timeout=LIMIT)
    assert io_loop.run_sync(lambda: task[0], timeout=LIMIT) == "woke"


def test_infinite_delays_are_never_not_errors(io_loop: IOLoop) -> None:
    # asyncio.sleep(math.inf), wait_for(..., math.inf), timeout(math.inf) and
    # call_later(math.inf) raised ValueError on the native loop.
    async def main() -> list[str]:
        got = []
        sleeper = asyncio.ensure_future(asyncio.sleep(math.inf))
        await asyncio.sleep(0)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        got.append("sleep(inf) cancelled")
        got.append(await asyncio.wait_for(asyncio.sleep(0, "wait_for"), math.inf))
        handle = io_loop.call_later(math.inf, got.append, "never")
        assert handle.when() == math.inf
        handle.cancel()
        return got

    assert io_loop.run_sync(main, timeout=LIMIT) == ["sleep(inf) cancelled", "wait_for"]
    with pytest.raises(ValueError, match="delay"):
        io_loop.call_later(math.nan, print)


def test_add_callback_runs_in_a_copy_of_the_callers_context(io_loop: IOLoop) -> None:
    # Callbacks ran in the loop's own context: a ContextVar one set leaked
    # into later callbacks, spawned coroutines and the caller of start().
    seen: list[tuple[str, str | None]] = []

    def first() -> None:
        request_id.set("req-1")

    def second() -> None:
        seen.append(("callback", request_id.get()))

    async def spawned() -> None:
        seen.append(("coroutine", request_id.get()))

    a, b = socket.socketpair()

    def handler_sets(fd: object, events: int) -> None:
        # An fd handler's ContextVar stays in the loop, not in the caller.
        request_id.set("from a handler")
        io_loop.remove_handler(a)
        seen.append(("handler", None))

    try:
        request_id.set("caller's")
        io_loop.add_callback(first)
        io_loop.add_callback(lambda: io_loop.add_callback(second))
        io_loop.add_callback(lambda: io_loop.spawn_callback(spawned))
        io_loop.add_handler(a, handler_sets, READ)
        b.send(b"x")
        io_loop.run_sync(lambda: _until(lambda: len(seen) == 3), timeout=LIMIT)
    finally:
        a.close()
        b.close()
    assert sorted(seen) == [("callback", "caller's"), ("coroutine", "caller's"), ("handler", None)]
    assert request_id.get() == "caller's"


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("not reached")


def test_call_soon_and_call_later_errors_reach_the_exception_handler(io_loop: IOLoop) -> None:
    # The native loop logged them on "iostream" (naming its internal
    # Handle._run) and never called the handler set by set_exception_handler.
    def failing() -> None:
        raise ZeroDivisionError("boom")

    async def main() -> list[tuple[str, str, bool]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, str, bool]] = []
        loop.set_exception_handler(
            lambda _loop, ctx: seen.append(
                (ctx["message"], repr(ctx["exception"]), ctx.get("handle") is not None)
            )
        )
        loop.call_soon(failing)
        loop.call_later(0, failing)
        loop.call_at(loop.time(), failing)
        for _ in range(10):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.001)
        loop.set_exception_handler(None)
        return seen

    seen = io_loop.run_sync(main, timeout=LIMIT)
    assert len(seen) == 3, seen
    for message, error, has_handle in seen:
        assert "failing" in message and "Handle._run" not in message
        assert error == "ZeroDivisionError('boom')"
        assert has_handle


def test_from_asyncio_keeps_its_asyncio_loop_alive() -> None:
    # The IOLoop held the asyncio loop weakly: with no other reference, it
    # was collected and run_sync raised RuntimeError.
    async def main() -> str:
        return "ran"

    io_loop = IOLoop.from_asyncio(asyncio.new_event_loop())
    gc.collect()
    try:
        assert io_loop.run_sync(main, timeout=LIMIT) == "ran"
    finally:
        io_loop.close()
        io_loop.asyncio_loop.close()  # type: ignore[attr-defined]


def test_from_asyncio_leaves_nothing_behind_once_dropped() -> None:
    import weakref

    loop = asyncio.new_event_loop()
    io_loop = IOLoop.from_asyncio(loop)
    assert IOLoop.from_asyncio(loop) is io_loop
    loop_ref, io_ref = weakref.ref(loop), weakref.ref(io_loop)
    loop.close()
    del loop, io_loop
    gc.collect()
    assert loop_ref() is None and io_ref() is None


def test_shutdown_default_executor_joins_its_threads_and_honours_timeout(io_loop: IOLoop) -> None:
    # It ignored *timeout* and made (and never shut down) a new one-thread
    # executor for each call.
    import threading
    import warnings

    release = threading.Event()

    async def main() -> list[str]:
        got = [await io_loop.run_in_executor(None, str, "ran")]
        await io_loop.shutdown_default_executor()  # joins: nothing blocks it
        blocked = io_loop.run_in_executor(None, release.wait, LIMIT)
        await asyncio.sleep(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await io_loop.shutdown_default_executor(timeout=0.01)
        got += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        release.set()
        assert await blocked is True
        return got

    before = {t.name for t in threading.enumerate()}
    got = io_loop.run_sync(main, timeout=LIMIT)
    assert got[0] == "ran"
    assert len(got) == 2 and "within 0.01 seconds" in got[1], got
    joiners = [t for t in threading.enumerate() if t.name.startswith("iostream-executor")]
    for thread in joiners:  # they end once the jobs have: no thread is left behind
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert before.isdisjoint(t.name for t in joiners)
