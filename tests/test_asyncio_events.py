"""CPython's own selector event-loop tests, on a loop from ``new_event_loop(poller)``.

``Lib/test/test_asyncio/test_events.py`` tests asyncio's event loops through
``EventLoopTestsMixin`` (timers, callbacks, ``add_reader``/``add_writer``,
TCP/UNIX/UDP transports, pipes, ptys, signals, servers, ...) and
``SubprocessTestsMixin`` (subprocess transports). CPython runs them as
``SelectEventLoopTests``, ``PollEventLoopTests``, ... each with one stdlib
selector; here the same class is run with ``create_event_loop`` returning
:func:`iostream.asyncio.new_event_loop` on each poller this run covers (every
available one, or the one ``IOSTREAM_POLLER`` picks).

The module is skipped where the interpreter has no ``test`` package.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from conftest import POLLER_NAMES

from iostream.asyncio import PollerSelector, new_event_loop

test_events: Any = pytest.importorskip(
    "test.test_asyncio.test_events",
    reason="this Python has no test package (Lib/test/test_asyncio/test_events.py)",
)


def tearDownModule() -> None:
    # As CPython's test_events does: leave the default policy behind.
    asyncio.set_event_loop_policy(None)


class _OnPoller:
    """Mixed in first: the loop under test is ours, on ``POLLER``."""

    POLLER: str

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = new_event_loop(self.POLLER)
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollerSelector)
        assert selector.poller.name == self.POLLER
        return loop


def _make_case(name: str) -> type:
    # SelectEventLoopTests is the selector-loop class on every OS (on POSIX
    # with SubprocessTestsMixin); only its create_event_loop is replaced.
    return type(
        f"TestCPythonEventLoop_{name}",
        (_OnPoller, test_events.SelectEventLoopTests),
        {"POLLER": name, "__module__": __name__},
    )


for _name in POLLER_NAMES:
    globals()[f"TestCPythonEventLoop_{_name}"] = _make_case(_name)
del _name


def test_the_cpython_cases_run_on_our_loop() -> None:
    # Guard against a silent fallback to the stdlib's selector (for example
    # if CPython renamed create_event_loop): the generated class must make
    # our loop.
    case = globals()[f"TestCPythonEventLoop_{POLLER_NAMES[0]}"]("test_run_until_complete")
    loop = case.create_event_loop()
    try:
        assert isinstance(loop._selector, PollerSelector)
    finally:
        loop.close()
    assert sys.platform == "win32" or "test_add_signal_handler" in dir(case)
