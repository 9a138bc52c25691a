"""PeriodicCallback (docs/guarantees.md, "IOLoop"; issue 10 item 4).

The schedule tests are Tornado's own (tornado/test/ioloop_test.py,
``TestPeriodicCallbackMath`` and ``TestPeriodicCallbackAsync``, 6.x) ported
onto this API; the loop tests run on every poller.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from iostream.ioloop import IOLoop
from iostream.periodic import PeriodicCallback

LIMIT = 10.0


@pytest.fixture(autouse=True)
def no_current_loop() -> Iterator[None]:
    IOLoop.clear_current()
    yield
    IOLoop.clear_current()


def _dummy() -> None:
    pass


@pytest.fixture(name="pc")
def math_pc(io_loop: IOLoop) -> PeriodicCallback:
    """A 10 s PeriodicCallback whose schedule the math tests drive."""
    return PeriodicCallback(_dummy, 10000, io_loop=io_loop)


def simulate_calls(pc: PeriodicCallback, durations: Sequence[float]) -> list[float]:
    """The due times of successive runs lasting *durations* seconds each
    (negative: the clock went back during the run), starting at t=1000."""
    calls = []
    now = 1000.0
    pc._next_timeout = now
    for duration in durations:
        pc._update_next(now)
        calls.append(pc._next_timeout)
        now = pc._next_timeout + duration
    return calls


# -- the schedule (Tornado's TestPeriodicCallbackMath) -------------------------------


def test_basic(pc: PeriodicCallback) -> None:
    assert simulate_calls(pc, [0] * 5) == [1010, 1020, 1030, 1040, 1050]


def test_overrun_skips_whole_periods(pc: PeriodicCallback) -> None:
    durations = [9, 9, 10, 11, 20, 20, 35, 35, 0, 0, 0]
    expected = [1010, 1020, 1030, 1050, 1070, 1100, 1130, 1170, 1210, 1220, 1230]
    assert simulate_calls(pc, durations) == expected


def test_clock_backwards_is_ignored(pc: PeriodicCallback) -> None:
    assert simulate_calls(pc, [-2, -1, -3, -2, 0]) == [1010, 1020, 1030, 1040, 1050]
    assert simulate_calls(pc, [-100, 0, 0]) == [1010, 1020, 1030]


def test_jitter(io_loop: IOLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    random_times = [0.5, 1, 0, 0.75]
    monkeypatch.setattr(random, "random", lambda: random_times.pop(0))
    pc = PeriodicCallback(_dummy, 10000, jitter=0.5, io_loop=io_loop)
    assert simulate_calls(pc, [0, 0, 0, 0]) == [1010, 1022.5, 1030, 1041.25]


def test_timedelta(io_loop: IOLoop) -> None:
    pc = PeriodicCallback(_dummy, datetime.timedelta(minutes=1, seconds=23), io_loop=io_loop)
    assert pc.callback_time == 83000


# -- on the loop (Tornado's TestPeriodicCallbackAsync, and more) ---------------------


def _run_until(io_loop: IOLoop, done: asyncio.Future[Any]) -> None:
    io_loop.run_sync(lambda: asyncio.wait_for(done, LIMIT), timeout=LIMIT + 1)


def test_periodic_plain(io_loop: IOLoop) -> None:
    count = 0
    done = io_loop.create_future()

    def callback() -> None:
        nonlocal count
        count += 1
        if count == 3:
            done.set_result(None)

    pc = PeriodicCallback(callback, 10, io_loop=io_loop)
    pc.start()
    assert pc.is_running()
    _run_until(io_loop, done)
    pc.stop()
    assert not pc.is_running()
    assert count == 3


@pytest.mark.parametrize("style", ["coroutine function", "returns a future"])
def test_periodic_async_runs_do_not_overlap(io_loop: IOLoop, style: str) -> None:
    counts = [0, 0]
    done = io_loop.create_future()

    async def body() -> None:
        counts[0] += 1
        assert counts[0] == counts[1] + 1, "a run started before the previous one ended"
        await asyncio.sleep(0.025)
        counts[1] += 1
        if counts[1] == 3:
            pc.stop()
            done.set_result(None)

    def returns_future() -> object:
        return asyncio.ensure_future(body())

    pc = PeriodicCallback(body if style == "coroutine function" else returns_future, 10)
    pc.io_loop = io_loop
    pc.start()
    _run_until(io_loop, done)
    assert counts == [3, 3]


def test_io_loop_none_is_the_current_loop_at_construction(poller_name: str) -> None:
    loop = IOLoop(poller_name)
    try:
        assert IOLoop.current() is loop
        assert PeriodicCallback(_dummy, 10).io_loop is loop
    finally:
        loop.close()


def test_nothing_runs_before_start_and_after_stop(io_loop: IOLoop) -> None:
    runs: list[float] = []
    pc = PeriodicCallback(lambda: runs.append(io_loop.time()), 5, io_loop=io_loop)
    io_loop.run_sync(lambda: asyncio.sleep(0.05), timeout=LIMIT)
    assert runs == []
    pc.start()
    pc.start()  # no second schedule
    io_loop.run_sync(lambda: asyncio.sleep(0.05), timeout=LIMIT)
    pc.stop()
    pc.stop()
    count = len(runs)
    assert count >= 1
    io_loop.run_sync(lambda: asyncio.sleep(0.05), timeout=LIMIT)
    assert len(runs) == count


def test_a_slow_callback_skips_missed_runs(io_loop: IOLoop) -> None:
    """A run that blocks for 5 periods is followed by one run, not a burst."""
    times: list[float] = []
    done = io_loop.create_future()

    def callback() -> None:
        times.append(io_loop.time())
        if len(times) == 1:
            time.sleep(0.1)  # the slow run itself (5 periods of 20 ms)
        elif len(times) == 3:
            done.set_result(None)

    pc = PeriodicCallback(callback, 20, io_loop=io_loop)
    pc.start()
    _run_until(io_loop, done)
    pc.stop()
    # After the 100 ms run, the next is on the grid after it, >= 100 ms later;
    # a burst would run at once (gap ~0).
    assert times[1] - times[0] >= 0.1 - 0.005
    assert times[2] - times[1] >= 0.02 - 0.005


def test_an_exception_is_logged_and_runs_go_on(
    io_loop: IOLoop, caplog: pytest.LogCaptureFixture
) -> None:
    count = 0
    done = io_loop.create_future()

    def callback() -> None:
        nonlocal count
        count += 1
        if count == 2:
            done.set_result(None)
        raise KeyError("boom")

    pc = PeriodicCallback(callback, 5, io_loop=io_loop)
    with caplog.at_level(logging.ERROR, logger="iostream"):
        pc.start()
        _run_until(io_loop, done)
        pc.stop()
    errors = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert len(errors) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"callback": 3, "callback_time": 10}, TypeError, "callback"),
        ({"callback": _dummy, "callback_time": 0}, ValueError, "callback_time"),
        ({"callback": _dummy, "callback_time": -5}, ValueError, "callback_time"),
        ({"callback": _dummy, "callback_time": float("inf")}, ValueError, "callback_time"),
        ({"callback": _dummy, "callback_time": "10"}, TypeError, "callback_time"),
        ({"callback": _dummy, "callback_time": 10, "jitter": -1}, ValueError, "jitter"),
        ({"callback": _dummy, "callback_time": 10, "jitter": "x"}, TypeError, "jitter"),
        ({"callback": _dummy, "callback_time": 10, "io_loop": 3}, TypeError, "io_loop"),
    ],
)
def test_bad_arguments(
    io_loop: IOLoop, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        PeriodicCallback(**kwargs)
