"""The native IOLoop as an asyncio loop (docs/guarantees.md, "IOLoop"; docs/asyncio.md).

``async def`` code runs on the IOLoop with no asyncio loop in the process:
futures, tasks, timers, ``run_sync``, ``add_future``, ``spawn_callback`` and
``IOLoop.current()``. Every test runs on every poller; every ``run_sync`` has
a timeout, so a broken loop fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from iostream.ioloop import Handle, IOLoop, Timeout

#: Generous bound for one run_sync: a passing test needs a fraction of it.
LIMIT = 10.0


@pytest.fixture(autouse=True)
def no_current_loop() -> Iterator[None]:
    """Each test starts and ends with no loop made current in this thread."""
    IOLoop.clear_current()
    IOLoop.clear_instance()
    yield
    IOLoop.clear_current()
    IOLoop.clear_instance()


# -- IOLoop.current() / make_current() ---------------------------------------------


def test_a_new_loop_becomes_current_when_there_is_none(poller_name: str) -> None:
    loop = IOLoop(poller_name)
    try:
        assert IOLoop.current() is loop
        assert IOLoop.current(instance=False) is loop
    finally:
        loop.close()


def test_a_second_loop_does_not_replace_the_current_one(poller_name: str) -> None:
    first = IOLoop(poller_name)
    second = IOLoop(poller_name)
    try:
        assert IOLoop.current() is first
        second.make_current()
        assert IOLoop.current() is second
    finally:
        first.close()
        second.close()


def test_make_current_keyword(poller_name: str) -> None:
    first = IOLoop(poller_name)
    never = IOLoop(poller_name, make_current=False)
    always = IOLoop(poller_name, make_current=True)
    try:
        assert IOLoop.current() is always
        assert IOLoop.current() is not never
    finally:
        for loop in (first, never, always):
            loop.close()
    with pytest.raises(TypeError, match="make_current"):
        IOLoop(poller_name, make_current="yes")  # type: ignore[arg-type]


def test_closing_the_current_loop_uncurrents_it(poller_name: str) -> None:
    loop = IOLoop(poller_name)
    loop.close()
    assert IOLoop.current(instance=False) is None
    with pytest.raises(RuntimeError, match="closed"):
        loop.make_current()


def test_current_outside_any_loop_is_the_instance() -> None:
    instance = IOLoop.instance()
    try:
        IOLoop.clear_current()
        assert IOLoop.current() is instance
        assert IOLoop.current(instance=False) is None
    finally:
        instance.close()


def test_current_is_the_running_loop(poller_name: str) -> None:
    made = IOLoop(poller_name)
    other = IOLoop(poller_name, make_current=False)
    seen: list[IOLoop | None] = []
    try:

        async def look() -> None:
            seen.append(IOLoop.current())

        other.run_sync(look, timeout=LIMIT)
        assert seen == [other]
        assert IOLoop.current() is made
    finally:
        made.close()
        other.close()


def test_current_is_per_thread(io_loop: IOLoop) -> None:
    io_loop.make_current()
    seen: list[IOLoop | None] = []
    thread = threading.Thread(target=lambda: seen.append(IOLoop.current(instance=False)))
    thread.start()
    thread.join(LIMIT)
    assert seen == [None]


# -- run_sync ------------------------------------------------------------------------


def test_run_sync_returns_the_coroutine_result(io_loop: IOLoop) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert io_loop.run_sync(answer, timeout=LIMIT) == 42


def test_run_sync_raises_the_coroutine_exception(io_loop: IOLoop) -> None:
    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        io_loop.run_sync(fail, timeout=LIMIT)


def test_run_sync_raises_what_func_itself_raises(io_loop: IOLoop) -> None:
    def fail() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        io_loop.run_sync(fail, timeout=LIMIT)


def test_run_sync_of_none_is_none(io_loop: IOLoop) -> None:
    assert io_loop.run_sync(lambda: None, timeout=LIMIT) is None


def test_run_sync_of_a_non_awaitable_raises_type_error(io_loop: IOLoop) -> None:
    with pytest.raises(TypeError, match="awaitable"):
        io_loop.run_sync(lambda: 3, timeout=LIMIT)


def test_run_sync_stopped_before_completion(io_loop: IOLoop) -> None:
    never: asyncio.Future[None] = io_loop.create_future()

    async def stop_then_wait() -> None:
        io_loop.stop()
        await never

    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        io_loop.run_sync(stop_then_wait, timeout=LIMIT)
    never.cancel()
    io_loop.run_sync(lambda: asyncio.sleep(0), timeout=LIMIT)  # let the task finish


def test_run_sync_timeout_raises_timeout_error_and_cancels(io_loop: IOLoop) -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await io_loop.create_future()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(TimeoutError):
        io_loop.run_sync(forever, timeout=0.05)
    assert cancelled == [True]


def test_run_sync_awaits_a_concurrent_future(io_loop: IOLoop) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert io_loop.run_sync(lambda: pool.submit(sum, [1, 2, 3]), timeout=LIMIT) == 6


def test_run_sync_refuses_bad_arguments(io_loop: IOLoop) -> None:
    with pytest.raises(TypeError, match="func"):
        io_loop.run_sync(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout"):
        io_loop.run_sync(lambda: None, timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        io_loop.run_sync(lambda: None, timeout=float("nan"))


def test_run_sync_on_a_running_loop_raises(io_loop: IOLoop) -> None:
    errors: list[BaseException] = []

    async def nested() -> None:
        try:
            io_loop.run_sync(lambda: None)
        except RuntimeError as error:
            errors.append(error)

    io_loop.run_sync(nested, timeout=LIMIT)
    assert len(errors) == 1 and "running" in str(errors[0])


# -- asyncio on the native loop, no asyncio loop in the process -----------------------


def test_create_future_is_bound_to_the_loop(io_loop: IOLoop) -> None:
    future = io_loop.create_future()
    assert isinstance(future, asyncio.Future)
    assert future.get_loop() is cast(object, io_loop)


def test_asyncio_primitives_work_inside(io_loop: IOLoop) -> None:
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        assert loop is cast(object, io_loop)
        results: list[object] = []
        results.append(await asyncio.gather(asyncio.sleep(0.01, "a"), asyncio.sleep(0, "b")))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(LIMIT), 0.02)
        event = asyncio.Event()
        loop.call_later(0.01, event.set)
        await event.wait()
        results.append(event.is_set())
        task = asyncio.create_task(asyncio.sleep(0, "task"))
        results.append(await task)
        queue: asyncio.Queue[int] = asyncio.Queue()
        loop.call_soon(queue.put_nowait, 7)
        results.append(await queue.get())
        results.append(await loop.run_in_executor(None, sum, [1, 2]))
        results.append(await asyncio.shield(asyncio.sleep(0, "shielded")))
        return results

    assert io_loop.run_sync(main, timeout=LIMIT) == [["a", "b"], True, "task", 7, 3, "shielded"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout/TaskGroup are 3.11+")
def test_asyncio_timeout_and_task_group_work_inside(io_loop: IOLoop) -> None:
    async def main() -> str:
        with pytest.raises(TimeoutError):
            async with getattr(asyncio, "timeout")(0.02):  # noqa: B009 (3.11+)
                await asyncio.sleep(LIMIT)
        async with getattr(asyncio, "TaskGroup")() as group:  # noqa: B009 (3.11+)
            task = group.create_task(asyncio.sleep(0, "grouped"))
        result: str = task.result()
        return result

    assert io_loop.run_sync(main, timeout=LIMIT) == "grouped"


def test_a_future_of_another_loop_is_refused(poller_name: str, io_loop: IOLoop) -> None:
    other = IOLoop(poller_name, make_current=False)
    try:
        foreign = other.create_future()
        with pytest.raises(ValueError):
            io_loop.run_sync(lambda: foreign, timeout=LIMIT)
    finally:
        other.close()


def test_start_inside_a_running_asyncio_loop_raises(io_loop: IOLoop) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            io_loop.start()

    asyncio.run(main())
    assert not io_loop.running()


def test_running_loop_is_reset_after_start_returns(io_loop: IOLoop) -> None:
    io_loop.run_sync(lambda: asyncio.sleep(0), timeout=LIMIT)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_call_soon_handle_cancel_and_context(io_loop: IOLoop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    var.set("caller")
    cancelled = io_loop.call_soon(seen.append, "cancelled")
    assert isinstance(cancelled, Handle)
    cancelled.cancel()
    assert cancelled.cancelled()
    io_loop.call_soon(lambda: seen.append(var.get()))
    other = contextvars.Context()
    io_loop.call_soon(lambda: seen.append(var.get()), context=other)
    io_loop.call_later(0, lambda: seen.append("timer " + var.get()))
    io_loop.call_later(0.01, io_loop.stop)
    io_loop.start()
    assert seen == ["caller", "unset", "timer caller"]


def test_call_later_handle_is_a_timeout(io_loop: IOLoop) -> None:
    handle = io_loop.call_later(60, lambda: None)
    assert isinstance(handle, Timeout)
    assert handle.when() == pytest.approx(io_loop.time() + 60, abs=1)
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    io_loop.remove_timeout(handle)  # still a no-op


def test_unretrieved_future_exception_goes_to_the_exception_handler(io_loop: IOLoop) -> None:
    reports: list[dict[str, Any]] = []
    io_loop.set_exception_handler(lambda loop, context: reports.append(context))
    future = io_loop.create_future()
    future.set_exception(KeyError("lost"))
    del future
    import gc

    gc.collect()
    assert len(reports) == 1
    assert isinstance(reports[0]["exception"], KeyError)


def test_socket_methods_raise_naming_iostream_asyncio(io_loop: IOLoop) -> None:
    for name in ("create_connection", "add_reader", "sock_recv", "subprocess_exec"):
        with pytest.raises(NotImplementedError, match=r"iostream\.asyncio"):
            getattr(io_loop, name)()


# -- add_future / spawn_callback / add_callback returning awaitables ------------------


def test_add_future_calls_back_with_the_future(io_loop: IOLoop) -> None:
    future = io_loop.create_future()
    got: list[object] = []

    def done(f: asyncio.Future[int]) -> None:
        got.append(f.result())
        io_loop.stop()

    io_loop.add_future(future, done)
    io_loop.call_later(0, future.set_result, 5)
    io_loop.call_later(LIMIT, io_loop.stop)
    io_loop.start()
    assert got == [5]


def test_add_future_of_a_concurrent_future_calls_back_on_the_loop_thread(
    io_loop: IOLoop,
) -> None:
    threads: list[int] = []

    def done(f: concurrent.futures.Future[int]) -> None:
        threads.append(threading.get_ident())
        io_loop.stop()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        io_loop.add_future(pool.submit(sum, [1]), done)
        io_loop.call_later(LIMIT, io_loop.stop)
        io_loop.start()
    assert threads == [threading.get_ident()]


def test_add_future_refuses_a_non_future(io_loop: IOLoop) -> None:
    with pytest.raises(TypeError, match="future"):
        io_loop.add_future(3, print)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["add_callback", "spawn_callback"])
def test_a_callback_returning_a_coroutine_has_it_run_and_its_error_logged(
    io_loop: IOLoop, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def work(tag: str) -> None:
        await asyncio.sleep(0)
        ran.append(tag)
        io_loop.stop()
        raise KeyError(tag)

    getattr(io_loop, method)(work, "tag")
    io_loop.call_later(LIMIT, io_loop.stop)
    with caplog.at_level(logging.ERROR, logger="iostream"):
        io_loop.start()
        # One more iteration: the task's done callback logs.
        io_loop.run_sync(lambda: asyncio.sleep(0), timeout=LIMIT)
    assert ran == ["tag"]
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert len(errors) == 1


def test_a_timer_returning_a_coroutine_has_it_run(io_loop: IOLoop) -> None:
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)
        io_loop.stop()

    io_loop.call_later(0, work)
    io_loop.call_later(LIMIT, io_loop.stop)
    io_loop.start()
    assert ran == [True]


# -- ported from Tornado's tornado/test/ioloop_test.py (6.x) ---------------------------


def test_callbacks_returning_a_dict_or_list_do_not_spin(io_loop: IOLoop) -> None:
    """Tornado issue #1803: a non-awaitable return value is ignored."""
    calls = 0
    real_add_callback = io_loop.add_callback

    def counting(callback: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        real_add_callback(callback, *args)

    io_loop.add_callback = counting  # type: ignore[method-assign]
    io_loop.add_callback(dict)
    io_loop.add_callback(list)
    io_loop.call_later(0.05, io_loop.stop)
    io_loop.start()
    assert calls < 10


def test_non_current_loop_is_current_only_while_running(poller_name: str) -> None:
    loop = IOLoop(poller_name, make_current=False)
    try:
        assert IOLoop.current(instance=False) is None
        seen: list[IOLoop | None] = []

        def look() -> None:
            seen.append(IOLoop.current())
            loop.stop()

        for round_number in range(1, 4):
            loop.add_callback(look)
            loop.start()
            assert seen == [loop] * round_number
            assert IOLoop.current(instance=False) is None
    finally:
        loop.close()


def test_clear_current_without_current_in_a_fresh_thread() -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(IOLoop.clear_current).result(LIMIT) is None


def test_run_in_executor_runs_in_parallel(io_loop: IOLoop) -> None:
    """Two functions that wait for each other would deadlock if run in turn."""
    event1 = threading.Event()
    event2 = threading.Event()

    def sync_func(mine: threading.Event, other: threading.Event) -> threading.Event:
        mine.set()
        other.wait(LIMIT)
        return mine

    async def main() -> list[threading.Event]:
        loop = IOLoop.current()
        return list(
            await asyncio.gather(
                loop.run_in_executor(None, sync_func, event1, event2),
                loop.run_in_executor(None, sync_func, event2, event1),
            )
        )

    assert io_loop.run_sync(main, timeout=LIMIT) == [event1, event2]


def test_set_default_executor(io_loop: IOLoop) -> None:
    count = 0

    class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            return super().submit(fn, *args, **kwargs)

    executor = CountingExecutor(1)
    try:
        io_loop.set_default_executor(executor)
        io_loop.run_sync(lambda: io_loop.run_in_executor(None, sum, [1]), timeout=LIMIT)
        assert count == 1
    finally:
        executor.shutdown()


def test_run_sync_current_is_the_loop(io_loop: IOLoop) -> None:
    async def look() -> IOLoop:
        return IOLoop.current()

    assert io_loop.run_sync(look, timeout=LIMIT) is io_loop


def test_run_sync_native_coroutine_with_sleep(io_loop: IOLoop) -> None:
    async def f1() -> str:
        await asyncio.sleep(0)
        return "x"

    async def f2() -> str:
        return await f1()

    assert io_loop.run_sync(f2, timeout=LIMIT) == "x"


def test_run_sync_stop_without_timeout(io_loop: IOLoop) -> None:
    async def f() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        IOLoop.current().stop()
        await asyncio.sleep(LIMIT)

    with pytest.raises(RuntimeError, match="Event loop stopped"):
        io_loop.run_sync(f, timeout=LIMIT)
