"""Putting the fault sockets under streams, and running a loop until something happens."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from iostream.ioloop import IOLoop, app_log
from iostream.stream import IOStream, SSLIOStream
from iostream.testing._sockets import ChaosSocket, Fault, WindowsSocket
from iostream.testing._tls import ChaosSSLIOStream, TLSChaos

__all__ = [
    "DEFAULT_TIMEOUT",
    "KINDS",
    "LoopTimeout",
    "StreamKind",
    "Waiter",
    "catch_escaped",
    "run_sync",
    "run_until",
    "socket_pair",
    "stream_pair",
    "tls_contexts",
    "wait_with_progress",
]

#: Default deadline, seconds, of :func:`run_until`, :func:`run_sync` and
#: :meth:`Waiter.wait`. Generous: a passing test never waits this long.
DEFAULT_TIMEOUT = 20.0

StreamKind = Literal["plain", "tls", "windows", "chaos", "tls-chaos"]

#: The kinds :func:`stream_pair` makes.
KINDS: tuple[StreamKind, ...] = ("plain", "tls", "windows", "chaos", "tls-chaos")


class LoopTimeout(AssertionError):
    """The loop did not reach the awaited event before the deadline.

    An ``AssertionError``, so pytest reports it as a failed test, not an error.
    """


#: Exceptions that escaped a callback or handler of a loop under
#: :func:`catch_escaped`, not yet re-raised.
_escaped: weakref.WeakKeyDictionary[IOLoop, list[BaseException]] = weakref.WeakKeyDictionary()


class _EscapeCatcher(logging.Handler):
    """Takes the exceptions the loop logs (``app_log.exception``) while it runs."""

    def __init__(self, io_loop: IOLoop) -> None:
        super().__init__(logging.ERROR)
        self.io_loop = io_loop

    def emit(self, record: logging.LogRecord) -> None:
        exc_info = record.exc_info
        loop = self.io_loop
        if not exc_info or exc_info[1] is None or not loop.running():
            return
        _escaped.setdefault(loop, []).append(exc_info[1])
        loop.stop()


@contextlib.contextmanager
def catch_escaped(io_loop: IOLoop) -> Iterator[list[BaseException]]:
    """Turn exceptions that escape *io_loop*'s callbacks and handlers into test failures.

    The loop logs such an exception and goes on (as Tornado's does), which
    in a test usually means a hang until the deadline. Inside this block the
    loop is stopped instead, and :func:`run_until`, :meth:`Waiter.wait`
    and :func:`run_sync` raise the exception at once (Tornado's
    ``AsyncTestCase`` does the same). Yields the list of those not yet
    raised (the pytest ``io_loop`` fixture fails the test at teardown if it
    is not empty).
    """
    catcher = _EscapeCatcher(io_loop)
    found = _escaped.setdefault(io_loop, [])
    app_log.addHandler(catcher)
    try:
        yield found
    finally:
        app_log.removeHandler(catcher)


def _raise_escaped(io_loop: IOLoop) -> None:
    found = _escaped.get(io_loop)
    if found:
        raise found.pop(0)


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not timeout > 0 or not math.isfinite(timeout):
        raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
    return float(timeout)


def run_until(
    io_loop: IOLoop,
    predicate: Callable[[], object],
    timeout: float = DEFAULT_TIMEOUT,
    message: str | Callable[[], str] = "",
) -> None:
    """Run *io_loop* until ``predicate()`` is true; raise :class:`LoopTimeout` after *timeout*.

    The predicate is checked before the loop starts, then after every loop
    callback round (re-armed with ``add_callback`` ... at most once per
    millisecond), so it may look at any state. *message* (or ``message()``,
    called only on failure) is added to the error, for example a
    :meth:`ChaosSocket.describe`. The loop must not be running.
    """
    if not callable(predicate):
        raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")
    limit = _check_timeout(timeout)
    if predicate():
        return
    state = {"expired": False}

    def check() -> None:
        if predicate():
            io_loop.stop()
        elif not state["expired"]:
            io_loop.call_later(0.001, check)

    def expire() -> None:
        state["expired"] = True
        io_loop.stop()

    handle = io_loop.call_later(limit, expire)
    io_loop.add_callback(check)
    try:
        io_loop.start()
    finally:
        io_loop.remove_timeout(handle)
    _raise_escaped(io_loop)
    if not predicate():
        detail = message() if callable(message) else message
        raise LoopTimeout(f"condition not met within {limit}s" + (f"\n{detail}" if detail else ""))


def run_sync(io_loop: IOLoop, func: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Run the coroutine function (or awaitable factory) *func* on *io_loop*; return its result.

    ``IOLoop.run_sync`` with a mandatory deadline: a test must not hang.
    A timeout raises :class:`LoopTimeout` (chained to the loop's
    ``TimeoutError``) so pytest reports a failure.
    """
    limit = _check_timeout(timeout)
    try:
        result = io_loop.run_sync(func, timeout=limit)
    except TimeoutError as exc:
        _raise_escaped(io_loop)
        raise LoopTimeout(f"run_sync: {func!r} did not finish within {limit}s") from exc
    except RuntimeError:
        # Stopped early: by catch_escaped, when a callback raised.
        _raise_escaped(io_loop)
        raise
    _raise_escaped(io_loop)
    return result


class Waiter:
    """Run a loop until :meth:`done` has been called *expected* times (Tornado's stop/wait).

    Arrange callbacks that call :meth:`done` (or pass :meth:`callback`
    anywhere a callback goes); :meth:`wait` runs the loop until the count
    is reached or fails with :class:`LoopTimeout`. No sleeping, no polling.
    """

    def __init__(self, io_loop: IOLoop, expected: int = 1) -> None:
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 1:
            raise ValueError(f"expected must be an int >= 1, got {expected!r}")
        self.io_loop = io_loop
        self.expected = expected
        self.calls = 0
        self.values: list[Any] = []

    def done(self, value: Any = None) -> None:
        """Record *value*; stop the loop once the expected count is reached."""
        self.calls += 1
        self.values.append(value)
        if self.calls >= self.expected:
            self.io_loop.stop()

    def callback(self, *args: Any) -> None:
        """Like :meth:`done`, with any arguments (one is recorded bare, more as a tuple)."""
        self.done(args[0] if len(args) == 1 else args)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run the loop until done; return the last value, or raise :class:`LoopTimeout`.

        If something else stops the loop first, it is started again, within
        the same overall deadline.
        """
        limit = _check_timeout(timeout)
        deadline = time.monotonic() + limit
        while self.calls < self.expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoopTimeout(
                    f"timed out after {limit}s: {self.calls} of {self.expected} events"
                )
            handle = self.io_loop.call_later(remaining, self.io_loop.stop)
            try:
                self.io_loop.start()
            finally:
                self.io_loop.remove_timeout(handle)
            _raise_escaped(self.io_loop)
        return self.values[-1] if self.values else None


def wait_with_progress(
    waiter: Any,
    progress: Callable[[], int],
    stall: float = 10.0,
    limit: float = 120.0,
) -> Any:
    """``waiter.wait()``, failing as soon as ``progress()`` stops moving.

    For big transfers under a fault socket: they may take a while, but a
    stuck one shows at once. No change in ``progress()`` (a byte count, say)
    for *stall* seconds fails with :class:`LoopTimeout`, as does *limit*
    seconds in all. *waiter* is a :class:`Waiter` or any object with
    ``calls``, ``expected``, ``values`` and a ``wait(timeout)`` that raises
    an ``AssertionError`` on timeout (as :class:`LoopTimeout` is). Returns
    what ``waiter.wait`` returns.
    """
    deadline = time.monotonic() + limit
    last = progress()
    while waiter.calls < waiter.expected:
        try:
            return waiter.wait(timeout=stall)
        except AssertionError:
            now = progress()
            if now == last:
                raise LoopTimeout(
                    f"no progress for {stall}s (stuck at {now}): "
                    f"{waiter.calls} of {waiter.expected} events"
                ) from None
            if time.monotonic() > deadline:
                raise
            last = now
    return waiter.values[-1] if waiter.values else None


# ---------------------------------------------------------------- sockets


def _loopback_host(family: int) -> str:
    if family == socket.AF_INET6:
        return "::1"
    if family == socket.AF_INET:
        return "127.0.0.1"
    raise ValueError(f"family must be socket.AF_INET or socket.AF_INET6, got {family!r}")


def socket_pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket]:
    """A connected pair of non-blocking TCP sockets on loopback (``127.0.0.1`` or ``::1``).

    Real TCP, not ``socket.socketpair()``: on Linux that is an AF_UNIX pair,
    whose buffers and short-write behaviour differ from TCP's.
    """
    host = _loopback_host(family)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.socket(family, socket.SOCK_STREAM)
        try:
            client.settimeout(DEFAULT_TIMEOUT)
            client.connect(listener.getsockname()[:2])
            listener.settimeout(DEFAULT_TIMEOUT)
            server, _ = listener.accept()
        except BaseException:
            client.close()
            raise
    client.setblocking(False)
    server.setblocking(False)
    return client, server


def _make_trustme_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "stream_pair(kind='tls') needs TLS contexts: pass server_context= and "
            "client_context=, or install trustme (python -m pip install 'trustme>=1.1') "
            "to have a throwaway CA made for you"
        ) from None
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


_trustme_contexts = functools.lru_cache(maxsize=1)(_make_trustme_contexts)


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server_context, client_context)`` from a throwaway trustme CA (made once).

    The server presents a certificate for ``localhost``, ``127.0.0.1`` and
    ``::1``; the client verifies it (``CERT_REQUIRED``, host name checked)
    and trusts that CA only. Needs ``trustme``; without it raises
    ``RuntimeError`` naming the package. :func:`stream_pair` with
    ``kind="tls-chaos"`` changes the contexts it is given (their
    ``sslsocket_class``), so these cached ones are copied for it.
    """
    return _trustme_contexts()


def stream_pair(
    kind: StreamKind = "plain",
    io_loop: IOLoop | None = None,
    *,
    seed: int | str | None = None,
    send_faults: Iterable[Fault] = (),
    recv_faults: Iterable[Fault] = (),
    chaos_options: dict[str, Any] | None = None,
    tls_chaos: TLSChaos | None = None,
    server_context: ssl.SSLContext | None = None,
    client_context: ssl.SSLContext | None = None,
    family: int = socket.AF_INET,
    **stream_kwargs: Any,
) -> tuple[IOStream, IOStream]:
    """Two connected streams over loopback TCP: ``(client, server)``.

    *kind*:

    ``"plain"``
        two :class:`~iostream.IOStream` on ordinary sockets;
    ``"windows"``
        both sockets are :class:`WindowsSocket` (Winsock's send limit and
        error codes);
    ``"chaos"``
        both sockets are :class:`ChaosSocket`: the client with *seed*, the
        server with ``f"{seed}/server"`` (each a reproducible stream of
        faults; no seed: only the explicit schedules apply). *send_faults* and
        *recv_faults* are the client's explicit schedule, played before the
        seeded draws; *chaos_options* are more ChaosSocket keyword arguments
        (rates, ``windows=True``) for both. Reach a socket, and its
        :meth:`~ChaosSocket.describe`, as ``stream.socket``;
    ``"tls"``
        a client :class:`~iostream.SSLIOStream` connected to a server-side
        one. The handshake is still under way when this returns: reads and
        writes wait for it. Contexts: *server_context* and *client_context*,
        or (both omitted) :func:`tls_contexts` from trustme;
    ``"tls-chaos"``
        as ``"tls"``, the client a :class:`ChaosSSLIOStream` whose TLS
        socket follows *tls_chaos* (a :class:`TLSChaos`), or
        ``TLSChaos(seed=seed)``; neither: an empty plan, which still checks
        the retries after OpenSSL's own want-writes.
        The client context's ``sslsocket_class`` is changed, so pass one
        made for this pair (the trustme default is made fresh).

    *io_loop* defaults to ``IOLoop.current()``. *stream_kwargs* go to both
    streams (``max_buffer_size``, ``write_chunk_size``, ...). The caller
    closes the streams. The pytest fixture of the same name closes them
    for you.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if io_loop is None:
        io_loop = IOLoop.current()
    if (server_context is None) != (client_context is None):
        raise ValueError("pass both server_context and client_context, or neither")
    if kind in ("plain", "windows", "chaos"):
        a, b = socket_pair(family)
        if kind == "windows":
            a, b = WindowsSocket.wrap(a), WindowsSocket.wrap(b)
        elif kind == "chaos":
            options = dict(chaos_options or {})
            server_seed = None if seed is None else f"{seed}/server"
            a = ChaosSocket.wrap(a, send_faults, recv_faults, seed=seed, **options)
            b = ChaosSocket.wrap(b, seed=server_seed, **options)
        elif seed is not None or send_faults or recv_faults or chaos_options:
            raise ValueError("seed, send_faults, recv_faults, chaos_options need kind='chaos'")
        if tls_chaos is not None:
            raise ValueError("tls_chaos needs kind='tls-chaos'")
        return (
            IOStream(a, io_loop=io_loop, **stream_kwargs),
            IOStream(b, io_loop=io_loop, **stream_kwargs),
        )
    if send_faults or recv_faults or chaos_options:
        raise ValueError(
            "send_faults, recv_faults, chaos_options need kind='chaos' "
            "(for TLS faults: kind='tls-chaos' with tls_chaos=TLSChaos(...) or seed=)"
        )
    if kind == "tls" and (seed is not None or tls_chaos is not None):
        raise ValueError("seed and tls_chaos need kind='tls-chaos'")
    if seed is not None:
        if tls_chaos is not None:
            raise ValueError("pass seed or tls_chaos (which has its own seed), not both")
        tls_chaos = TLSChaos(seed=seed)
    if server_context is None or client_context is None:
        if kind == "tls":
            server_context, client_context = tls_contexts()
        else:
            server_context, client_context = _make_trustme_contexts()
    host = _loopback_host(family)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        listener.settimeout(DEFAULT_TIMEOUT)
        client: SSLIOStream
        raw = socket.socket(family, socket.SOCK_STREAM)
        if kind == "tls-chaos":
            client = ChaosSSLIOStream(
                raw, ssl_options=client_context, io_loop=io_loop, chaos=tls_chaos, **stream_kwargs
            )
        else:
            client = SSLIOStream(raw, ssl_options=client_context, io_loop=io_loop, **stream_kwargs)
        # Loopback: the kernel completes the TCP handshake without the
        # client's loop running, so a blocking accept returns at once.
        client.connect(listener.getsockname()[:2], server_hostname="localhost")
        try:
            conn, _ = listener.accept()
        except BaseException:
            client.close()
            raise
    server = SSLIOStream(
        conn, ssl_options=server_context, server_side=True, io_loop=io_loop, **stream_kwargs
    )
    return client, server
