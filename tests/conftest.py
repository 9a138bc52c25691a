"""Shared fixtures: run each test on every poller (or the one IOSTREAM_POLLER picks).

When ``IOSTREAM_POLLER`` is set (as each tox env does), the suite runs on
exactly the backend it selects, so ``tox -e py312-poll`` is a full run on
poll. When it is unset (the README's test command), every backend available
here is a parameter, so one plain ``pytest`` covers them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from iostream import IOLoop, pollers


def _poller_names() -> list[str]:
    if os.environ.get(pollers.ENV_VAR, "").strip():
        return [pollers.choose().name]
    return list(pollers.available())


POLLER_NAMES = _poller_names()


@pytest.fixture(autouse=True)
def _no_current_loop_between_tests() -> Iterator[None]:
    """No loop made current leaks from one test into the next (a loop a test
    forgot to close would stay current in this thread, and IOLoop.current()
    would hand it to the next test's streams)."""
    IOLoop.clear_current()
    yield
    IOLoop.clear_current()


@pytest.fixture(params=POLLER_NAMES)
def poller_name(request: pytest.FixtureRequest) -> str:
    """The name of the poller this test runs on."""
    name: str = request.param
    return name


@pytest.fixture
def io_loop(poller_name: str) -> Iterator[IOLoop]:
    """A fresh IOLoop on ``poller_name``, closed (with its fds) after the test."""
    loop = IOLoop(poller_name)
    try:
        yield loop
    finally:
        loop.close(all_fds=True)
