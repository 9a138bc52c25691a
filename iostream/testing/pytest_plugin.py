"""The ``iostream`` pytest plugin: loops on every poller, stream pairs, chaos records.

Installed with the package as the ``pytest11`` entry point named
``iostream.testing.pytest_plugin`` (its module path), so it is always
loaded, and inert until a test asks for one of its fixtures: it adds one
command-line option, and its hooks return at once for any test that uses
none of its fixtures (collection of other projects is unchanged). Because
the entry point has the module's name, listing the plugin again
(``-p iostream.testing.pytest_plugin``, or ``pytest_plugins =
["iostream.testing.pytest_plugin"]`` in a ``conftest.py``) is harmless:
pytest sees it is already loaded. ``-p no:iostream.testing.pytest_plugin``
disables it.

Fixtures
    ``io_loop``
        a fresh :class:`~iostream.IOLoop`, made current, closed with its
        fds after the test. A test that uses it (directly or through
        ``stream_pair``) runs once per poller: every poller available here,
        or the one ``IOSTREAM_POLLER`` names, or those of
        ``--iostream-pollers=epoll,select`` (names that are known but not
        available here are skipped, with the reason; an ``IOSTREAM_POLLER``
        this OS cannot use stops the run at collection instead, as every
        ``IOLoop()`` of the run would fail with it). A ``conftest.py``
        ``io_loop`` fixture overrides this one, as usual in pytest.
    ``iostream_poller``
        the name of the poller of this run (the parameter).
    ``stream_pair``
        a factory: ``stream_pair(kind="plain", **options)`` returns two
        connected streams on ``io_loop`` (:func:`iostream.testing.stream_pair`;
        kinds ``plain``, ``tls``, ``windows``, ``chaos``, ``tls-chaos``),
        closed after the test. Parametrize it indirectly to set the default
        kind: ``@pytest.mark.parametrize("stream_pair", ["plain", "chaos"],
        indirect=True)``.

When a test that used these fixtures fails, the report gets a section
"iostream fault record" with :meth:`~iostream.testing.ChaosSocket.describe`
of every ChaosSocket (and TLS plan) made during the test that injected a
fault: the seed, the schedule actually applied, and how to replay it.

Helpers (plain functions, import them): :func:`iostream.testing.run_until`,
:func:`iostream.testing.run_sync`.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any, Protocol

import pytest

from iostream import pollers
from iostream.ioloop import IOLoop
from iostream.stream import IOStream
from iostream.testing._helpers import StreamKind, catch_escaped
from iostream.testing._helpers import stream_pair as _make_stream_pair
from iostream.testing._sockets import OK, ChaosSocket, recording
from iostream.testing._tls import TLSChaos

__all__ = [
    "StreamPairFactory",
    "io_loop",
    "iostream_poller",
    "poller_names",
    "pytest_addoption",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
    "stream_pair",
]

_OPTION = "--iostream-pollers"
_RECORD = pytest.StashKey[list[Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--iostream-pollers``."""
    group = parser.getgroup("iostream", "iostream fixtures (io_loop, stream_pair)")
    group.addoption(
        _OPTION,
        dest="iostream_pollers",
        default=None,
        metavar="NAMES",
        help=(
            "comma-separated pollers the io_loop fixture runs each test on "
            "(e.g. epoll,select); default: all available here, or the one "
            f"${pollers.ENV_VAR} names"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check ``--iostream-pollers`` when it is given (a bad name is a usage error)."""
    if config.getoption("iostream_pollers", None) is not None:
        poller_names(config)


def poller_names(config: pytest.Config) -> list[tuple[str, str | None]]:
    """The pollers to run on, each with a reason to skip it (None: runs).

    From ``--iostream-pollers``; else ``IOSTREAM_POLLER`` (its choice);
    else every poller available here. An unknown name is a usage error.
    """
    value = config.getoption("iostream_pollers", None)
    if value is None:
        if os.environ.get(pollers.ENV_VAR, "").strip():
            try:
                return [(pollers.choose().name, None)]
            except (ValueError, pollers.PollerUnavailable) as exc:
                raise pytest.UsageError(f"iostream plugin: {exc}") from None
        return [(name, None) for name in pollers.available()]
    names = [item.strip().lower() for item in str(value).split(",") if item.strip()]
    if not names:
        raise pytest.UsageError(f"{_OPTION} needs at least one poller name")
    unknown = [name for name in names if name not in pollers.BACKENDS]
    if unknown:
        raise pytest.UsageError(
            f"{_OPTION}: unknown poller(s) {', '.join(unknown)}; "
            f"known: {', '.join(pollers.BACKENDS)}"
        )
    reasons = pollers.unavailable_reasons()
    return [(name, reasons.get(name)) for name in dict.fromkeys(names)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses ``iostream_poller`` (``io_loop`` does) once per poller."""
    if "iostream_poller" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(argnames, str):
            argnames = [name.strip() for name in argnames.split(",")]
        if "iostream_poller" in argnames:
            return  # the test picks its pollers itself
    params = [
        pytest.param(name, id=name, marks=pytest.mark.skip(reason=reason) if reason else ())
        for name, reason in poller_names(metafunc.config)
    ]
    metafunc.parametrize("iostream_poller", params, indirect=True)


@pytest.fixture
def iostream_poller(request: pytest.FixtureRequest) -> str:
    """The name of the poller this test runs on (see ``--iostream-pollers``)."""
    name = getattr(request, "param", None)
    if name is None:  # not parametrized (a direct request outside collection)
        name = poller_names(request.config)[0][0]
    return str(name)


@pytest.fixture
def _iostream_record(request: pytest.FixtureRequest) -> Iterator[list[Any]]:
    """Collect the fault sockets made during the test (for the failure report)."""
    with recording() as found:
        request.node.stash[_RECORD] = found
        yield found


@pytest.fixture
def io_loop(iostream_poller: str, _iostream_record: list[Any]) -> Iterator[IOLoop]:
    """A fresh IOLoop on ``iostream_poller``, current while the test runs, closed after it.

    An exception escaping one of its callbacks or handlers stops it and is
    raised by the helper running it (:func:`iostream.testing.catch_escaped`).
    """
    loop = IOLoop(iostream_poller)
    loop.make_current()
    try:
        with catch_escaped(loop) as escaped:
            yield loop
    finally:
        if IOLoop.current(instance=False) is loop:
            IOLoop.clear_current()
        loop.close(all_fds=True)
    if escaped:
        raise AssertionError(
            f"{len(escaped)} exception(s) escaped a loop callback or handler and were "
            f"not raised by run_until/run_sync/Waiter.wait; the first: {escaped[0]!r}"
        ) from escaped[0]


class StreamPairFactory(Protocol):
    """The ``stream_pair`` fixture: ``stream_pair(kind=None, **options) -> (client, server)``."""

    def __call__(self, kind: StreamKind | None = None, **options: Any) -> tuple[IOStream, IOStream]:
        """Two connected streams on the test's loop (see :func:`iostream.testing.stream_pair`)."""
        ...


@pytest.fixture
def stream_pair(
    request: pytest.FixtureRequest, io_loop: IOLoop, _iostream_record: list[Any]
) -> Iterator[StreamPairFactory]:
    """A factory of connected stream pairs on ``io_loop``; every stream is closed after the test.

    ``kind`` defaults to the indirect parameter, else ``"plain"``.
    """
    default: StreamKind = getattr(request, "param", "plain")
    made: list[IOStream] = []

    def factory(kind: StreamKind | None = None, **options: Any) -> tuple[IOStream, IOStream]:
        pair = _make_stream_pair(kind or default, io_loop, **options)
        made.extend(pair)
        return pair

    try:
        yield factory
    finally:
        for stream in made:
            stream.close()


def _interesting(obj: Any) -> bool:
    if isinstance(obj, ChaosSocket):
        return any(f != OK for f in obj.send_record) or any(f != OK for f in obj.recv_record)
    if isinstance(obj, TLSChaos):
        return bool(obj.log or obj.violations)
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Add the fault record of a failing test that used the plugin's fixtures."""
    outcome = yield
    found = item.stash.get(_RECORD, None)
    if not found:
        return
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
        # Hypothesis ran many examples (every one made sockets); it prints
        # the shrunk failing one itself.
        return
    described = [obj.describe() for obj in found if _interesting(obj)]
    if described:
        report.sections.append(("iostream fault record", "\n".join(described)))
