"""CPython's socket and stream tests for asyncio, on loops from ``new_event_loop(poller)``.

- ``Lib/test/test_asyncio/test_sock_lowlevel.py``: ``loop.sock_*`` (connect,
  accept, recv/recv_into/recvfrom, sendall/sendto, UNIX sockets, huge
  transfers), run as CPython runs it for each stdlib selector, with
  ``create_event_loop`` returning our loop;
- ``Lib/test/test_asyncio/test_streams.py``: ``open_connection``,
  ``start_server``, ``StreamReader``/``StreamWriter``. Its ``setUp`` calls
  ``asyncio.new_event_loop()``, and some tests call ``asyncio.run``, so these
  run under :class:`iostream.asyncio.EventLoopPolicy`, which is also how
  ``python -m iostream run`` reaches unmodified programs.

One class per poller this run covers (every available one, or the one
``IOSTREAM_POLLER`` picks). Skipped where the interpreter has no ``test``
package.
"""

from __future__ import annotations

import asyncio
import unittest
from typing import TYPE_CHECKING, Any

import pytest
from conftest import POLLER_NAMES

from iostream.asyncio import EventLoopPolicy, PollerSelector, new_event_loop

test_sock_lowlevel: Any = pytest.importorskip(
    "test.test_asyncio.test_sock_lowlevel",
    reason="this Python has no test package (Lib/test/test_asyncio/test_sock_lowlevel.py)",
)
test_streams: Any = pytest.importorskip(
    "test.test_asyncio.test_streams",
    reason="this Python has no test package (Lib/test/test_asyncio/test_streams.py)",
)


def tearDownModule() -> None:
    # As CPython's asyncio test modules do: leave the default policy behind.
    asyncio.set_event_loop_policy(None)


class _LoopOnPoller:
    """Mixed in first: ``create_event_loop`` makes our loop on ``POLLER``."""

    POLLER: str

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = new_event_loop(self.POLLER)
        assert isinstance(loop._selector, PollerSelector)  # type: ignore[attr-defined]
        return loop


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
        # Cleanups run last-in first-out: the loop the test set up is closed
        # (under our policy) before the previous policy comes back.
        self.addCleanup(asyncio.set_event_loop_policy, previous)
        super().setUp()
        selector = self.loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollerSelector)
        assert selector.poller.name == self.POLLER


def _case(prefix: str, mixin: type, base: type, name: str) -> None:
    cls_name = f"{prefix}_{name}"
    globals()[cls_name] = type(cls_name, (mixin, base), {"POLLER": name, "__module__": __name__})


for _name in POLLER_NAMES:
    # SelectEventLoopTests is the selector-loop class on every OS.
    _case("TestCPythonSockLowlevel", _LoopOnPoller, test_sock_lowlevel.SelectEventLoopTests, _name)
    _case("TestCPythonStreams", _PolicyOnPoller, test_streams.StreamTests, _name)
del _name
