"""PollerSelector: CPython's own selector tests on every poller, and our additions.

``Lib/test/test_selectors.py`` ships with CPython (the ``test`` package; some
distributions split it out, and then this module is skipped). Its
``BaseSelectorTestCase`` is run with ``SELECTOR`` = a :class:`PollerSelector`
bound to each poller available here (or only the one ``IOSTREAM_POLLER``
picks, as for the rest of the suite), and ``ScalableSelectorMixIn`` (more fds
than FD_SETSIZE) for all of them: select too, whose fds >= FD_SETSIZE go to
poll through PollerSelector's per-fd fallback.
"""

from __future__ import annotations

import selectors
import socket
import unittest
from typing import Any
from unittest import mock

import pytest
from conftest import POLLER_NAMES

from iostream import pollers
from iostream.asyncio import PollerSelector
from iostream.pollers import ERROR, READ, WRITE

test_selectors: Any = pytest.importorskip(
    "test.test_selectors", reason="this Python has no test package (Lib/test/test_selectors.py)"
)


def _bound_selector(name: str) -> type[PollerSelector]:
    """A PollerSelector class whose no-argument constructor uses poller *name*.

    CPython's tests call ``SELECTOR()`` and read ``SELECTOR.__name__``, so a
    class is needed, not a partial.
    """

    class Bound(PollerSelector):
        def __init__(self) -> None:
            super().__init__(name)

    Bound.__name__ = Bound.__qualname__ = f"PollerSelector_{name}"
    return Bound


class _PollerSelectorCases:
    """What we add to CPython's cases, for every poller."""

    SELECTOR: type[PollerSelector]

    def test_modify_unregister(self: Any) -> None:
        # CPython's test of bpo-30014 patches the stdlib selector classes and
        # skips any other; this is the same check on the poller's modify:
        # when it fails, the fd is unregistered and the error propagates.
        s = self.SELECTOR()
        self.addCleanup(s.close)
        rd, _wr = self.make_socketpair()
        s.register(rd, selectors.EVENT_READ)
        with (
            mock.patch.object(s.poller, "modify", side_effect=ZeroDivisionError),
            self.assertRaises(ZeroDivisionError),
        ):
            s.modify(rd, selectors.EVENT_WRITE)
        self.assertEqual(len(s.get_map()), 0)
        self.assertEqual(len(s.poller), 0)


def _make_case(name: str) -> type[unittest.TestCase]:
    """CPython's cases (and ours) with SELECTOR bound to poller *name*.

    Every poller gets ScalableSelectorMixIn (more fds than FD_SETSIZE), even
    select, which CPython's SelectSelector does not pass: PollerSelector's
    per-fd fallback moves select's fds >= FD_SETSIZE to poll.
    """
    bases: list[type] = [
        _PollerSelectorCases,
        test_selectors.BaseSelectorTestCase,
        test_selectors.ScalableSelectorMixIn,
        unittest.TestCase,
    ]
    return type(f"TestCPythonSelectors_{name}", tuple(bases), {"SELECTOR": _bound_selector(name)})


# One class per poller this run covers (every available one, or the one
# IOSTREAM_POLLER picks): TestCPythonSelectors_epoll, ..._poll, ..._select.
for _name in POLLER_NAMES:
    globals()[f"TestCPythonSelectors_{_name}"] = _make_case(_name)
del _name


# ------------------------------------------------------------ our own tests


@pytest.fixture
def pair() -> Any:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_poller_argument_forms(poller_name: str) -> None:
    cls = pollers.choose(poller_name)
    for arg in (poller_name, cls, cls()):
        with PollerSelector(arg) as s:
            assert s.poller.name == poller_name


def test_default_poller_follows_env(monkeypatch: pytest.MonkeyPatch, poller_name: str) -> None:
    monkeypatch.setenv(pollers.ENV_VAR, poller_name)
    with PollerSelector() as s:
        assert s.poller.name == poller_name


def test_bad_poller_arguments() -> None:
    with pytest.raises(ValueError, match="unknown poller 'nope'"):
        PollerSelector("nope")
    with pytest.raises(TypeError, match="poller must be"):
        PollerSelector(3)  # type: ignore[arg-type]


def test_bad_events_and_fileobj_name_the_argument(poller_name: str, pair: Any) -> None:
    a, _ = pair
    with PollerSelector(poller_name) as s:
        for events in (0, 4, -1, "r", None):
            with pytest.raises(ValueError, match="events must be"):
                s.register(a, events)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="fileobj must be"):
            s.register(object(), selectors.EVENT_READ)  # type: ignore[arg-type]
        s.register(a, selectors.EVENT_READ)
        with pytest.raises(ValueError, match="events must be"):
            s.modify(a, 8)
        assert s.get_key(a).events == selectors.EVENT_READ


def test_error_is_reported_as_the_registered_events(poller_name: str, pair: Any) -> None:
    # A poller's ERROR bit (a hang-up) comes out as readable and writable,
    # but only as far as the fd was registered for them.
    a, _ = pair
    with PollerSelector(poller_name) as s:
        s.register(a, selectors.EVENT_READ, "data")
        with mock.patch.object(s.poller, "poll", return_value=[(a.fileno(), ERROR)]):
            assert s.select(0) == [(s.get_key(a), selectors.EVENT_READ)]
        s.modify(a, selectors.EVENT_WRITE)
        with mock.patch.object(s.poller, "poll", return_value=[(a.fileno(), ERROR)]):
            assert s.select(0) == [(s.get_key(a), selectors.EVENT_WRITE)]
        s.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE)
        both = selectors.EVENT_READ | selectors.EVENT_WRITE
        with mock.patch.object(s.poller, "poll", return_value=[(a.fileno(), ERROR | READ)]):
            assert s.select(0) == [(s.get_key(a), both)]
        # An fd the selector does not know (unregistered meanwhile) and an
        # event the fd is not registered for are both dropped.
        s.modify(a, selectors.EVENT_READ)
        with mock.patch.object(s.poller, "poll", return_value=[(a.fileno(), WRITE), (999, READ)]):
            assert s.select(0) == []


def test_real_hangup_wakes_a_reader(poller_name: str, pair: Any) -> None:
    a, b = pair
    with PollerSelector(poller_name) as s:
        key = s.register(a, selectors.EVENT_READ)
        assert s.select(0) == []
        b.close()
        assert s.select(5) == [(key, selectors.EVENT_READ)]
        assert a.recv(1) == b""


def test_modify_data_only_keeps_the_poller_untouched(poller_name: str, pair: Any) -> None:
    a, _ = pair
    with PollerSelector(poller_name) as s:
        s.register(a, selectors.EVENT_READ, "one")
        with mock.patch.object(s.poller, "modify") as modify:
            key = s.modify(a, selectors.EVENT_READ, "two")
        assert not modify.called
        assert key.data == "two"
        assert s.get_key(a) is key


def test_refused_fd_leaves_nothing_registered(poller_name: str, pair: Any) -> None:
    a, _ = pair
    with PollerSelector(poller_name) as s:
        with (
            mock.patch.object(s.poller, "register", side_effect=ValueError("refused")),
            pytest.raises(ValueError, match="refused"),
        ):
            s.register(a, selectors.EVENT_READ)
        with pytest.raises(KeyError):
            s.get_key(a)
        # and it can be registered once the poller agrees
        s.register(a, selectors.EVENT_READ)
        assert len(s.get_map()) == 1


def test_close_closes_the_poller_and_is_idempotent(poller_name: str) -> None:
    s = PollerSelector(poller_name)
    s.close()
    s.close()
    assert "closed" in repr(s)
    assert s.get_map() is None
    with pytest.raises(ValueError):
        s.poller.poll(0)
