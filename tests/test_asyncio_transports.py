"""More of CPython's asyncio suites on ``new_event_loop(poller)`` loops: TLS, sendfile, servers.

Beyond the events, sockets, streams and subprocess suites (their own
modules), these CPython modules have a selector-loop class whose loop can be
swapped for ours:

- ``test_sendfile``: ``loop.sendfile`` / ``loop.sock_sendfile`` (with and
  without ``os.sendfile``), ``SelectEventLoopTests``;
- ``test_server``: ``start_server``/``serve_forever``/``Server`` life cycle,
  ``SelectorStartServerTests``;
- ``test_buffered_proto``: ``asyncio.BufferedProtocol``,
  ``BufferedProtocolSelectorTests``;
- ``test_sslproto``: ``start_tls``, TLS over transports and streams,
  ``SelectorStartTLSTests``;
- ``test_ssl`` (3.11+): asyncio's TLS implementation end to end (handshake
  and shutdown timeouts, half-close, large transfers, renegotiation
  refusal); its loops come from ``asyncio.new_event_loop()``, so it runs
  under :class:`iostream.asyncio.EventLoopPolicy`. It spends ~20 s per
  poller mostly waiting out its own timeouts, so it is marked ``slow``
  (``pytest -m slow`` runs it); ``test_sslproto`` covers TLS by default.

One class per suite and poller this run covers (every available one, or the
one ``IOSTREAM_POLLER`` picks). A suite this Python lacks is left out; the
module is skipped where the interpreter has no ``test`` package.
"""

from __future__ import annotations

import asyncio
import importlib
import unittest
from typing import TYPE_CHECKING, Any

import pytest
from conftest import POLLER_NAMES

from iostream.asyncio import EventLoopPolicy, PollerSelector, new_event_loop

pytest.importorskip(
    "test.test_asyncio.utils", reason="this Python has no test package (Lib/test/test_asyncio)"
)


def tearDownModule() -> None:
    # As CPython's asyncio test modules do: leave the default policy behind.
    asyncio.set_event_loop_policy(None)


def _ours(poller: str) -> asyncio.AbstractEventLoop:
    loop = new_event_loop(poller)
    selector = loop._selector  # type: ignore[attr-defined]
    assert isinstance(selector, PollerSelector)
    assert selector.poller.name == poller
    return loop


class _CreateEventLoopOnPoller:
    """For classes whose loop comes from ``create_event_loop()``."""

    POLLER: str

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        return _ours(self.POLLER)


class _NewLoopOnPoller:
    """For classes whose loop comes from ``new_loop()`` (functional.py's mixin)."""

    POLLER: str

    def new_loop(self) -> asyncio.AbstractEventLoop:
        return _ours(self.POLLER)


if TYPE_CHECKING:
    _TestCase = unittest.TestCase
else:
    _TestCase = object


class _PolicyOnPoller(_TestCase):
    """For classes that call ``asyncio.new_event_loop()`` themselves."""

    POLLER: str

    def setUp(self) -> None:
        previous = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(EventLoopPolicy(self.POLLER))
        # Cleanups run last-in first-out: the test's loop is closed before
        # the previous policy comes back.
        self.addCleanup(asyncio.set_event_loop_policy, previous)
        super().setUp()
        selector = self.loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollerSelector)
        assert selector.poller.name == self.POLLER


#: (CPython test module, its selector-loop class, how its loop is made ours,
#: whether the suite is slow).
SUITES: list[tuple[str, str, type, bool]] = [
    ("test_sendfile", "SelectEventLoopTests", _CreateEventLoopOnPoller, False),
    ("test_server", "SelectorStartServerTests", _NewLoopOnPoller, False),
    ("test_buffered_proto", "BufferedProtocolSelectorTests", _NewLoopOnPoller, False),
    ("test_sslproto", "SelectorStartTLSTests", _NewLoopOnPoller, False),
    ("test_ssl", "TestSSL", _PolicyOnPoller, True),
]


def _load(module_name: str, class_name: str) -> type | None:
    try:
        module: Any = importlib.import_module(f"test.test_asyncio.{module_name}")
    except ImportError:  # test_ssl is 3.11+; ssl may be missing
        return None
    cls = getattr(module, class_name, None)
    return cls if isinstance(cls, type) else None


for _module_name, _class_name, _mixin, _slow in SUITES:
    _base = _load(_module_name, _class_name)
    if _base is None:
        continue
    _suite = "".join(part.title() for part in _module_name.removeprefix("test_").split("_"))
    for _name in POLLER_NAMES:
        _cls_name = f"TestCPython{_suite}_{_name}"
        _case = type(_cls_name, (_mixin, _base), {"POLLER": _name, "__module__": __name__})
        globals()[_cls_name] = pytest.mark.slow(_case) if _slow else _case
del _module_name, _class_name, _mixin, _slow, _base, _suite, _name, _cls_name, _case
