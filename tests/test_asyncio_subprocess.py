"""CPython's asyncio subprocess tests (POSIX), on loops from our EventLoopPolicy.

``Lib/test/test_asyncio/test_subprocess.py`` runs ``SubprocessMixin`` (pipes
to and from a child, ``communicate``, ``wait``, signals, the child exiting
early, ...) under each child watcher; its ``setUp`` asks the current policy
for a new loop, so these run under :class:`iostream.asyncio.EventLoopPolicy`
on each poller this run covers. Two watchers: the threaded one (the default
before 3.12) and the pidfd one (the default from 3.12 on Linux), which
watches the child's pidfd with ``add_reader``, i.e. through the poller.

Windows has no subprocess support on a selector loop: nothing to run there.
"""

from __future__ import annotations

import asyncio
import sys
import unittest
from typing import TYPE_CHECKING, Any

import pytest
from conftest import POLLER_NAMES

from iostream.asyncio import EventLoopPolicy, PollerSelector

if sys.platform == "win32":
    pytest.skip(
        "asyncio's selector loop has no subprocess support on Windows", allow_module_level=True
    )

test_subprocess: Any = pytest.importorskip(
    "test.test_asyncio.test_subprocess",
    reason="this Python has no test package (Lib/test/test_asyncio/test_subprocess.py)",
)


def tearDownModule() -> None:
    # As CPython's asyncio test modules do: leave the default policy behind.
    asyncio.set_event_loop_policy(None)


if TYPE_CHECKING:
    _TestCase = unittest.TestCase
else:
    _TestCase = object


class _PolicyOnPoller(_TestCase):
    """Mixed in first: every loop asyncio makes during the test is ours, on ``POLLER``."""

    POLLER: str

    def setUp(self) -> None:
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(EventLoopPolicy(self.POLLER))
        # Cleanups run last-in first-out: the test's loop and watcher go
        # (under our policy) before the previous policy comes back.
        self.addCleanup(asyncio.set_event_loop_policy, previous)
        super().setUp()
        selector = self.loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollerSelector)
        assert selector.poller.name == self.POLLER


_WATCHER_CASES = {
    "Threaded": "SubprocessThreadedWatcherTests",
    "Pidfd": "SubprocessPidfdWatcherTests",
}

for _name in POLLER_NAMES:
    for _watcher, _base in _WATCHER_CASES.items():
        _cls_name = f"TestCPythonSubprocess{_watcher}_{_name}"
        globals()[_cls_name] = type(
            _cls_name,
            (_PolicyOnPoller, getattr(test_subprocess, _base)),
            {"POLLER": _name, "__module__": __name__},
        )
del _name, _watcher, _base, _cls_name
