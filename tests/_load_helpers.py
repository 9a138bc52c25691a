"""Helpers for the load, leak, hostile-peer, TLS-policy and fork suites (issue 6).

What is here:

* process gauges: :func:`fd_count` (``/proc/self/fd``), :func:`rss_bytes`,
  :func:`ensure_nofile` (raise ``RLIMIT_NOFILE``'s soft limit, or say why not);
* :func:`suite_pollers`: the pollers this run covers (``IOSTREAM_POLLER`` if
  set, else every available one), as ``tests/conftest.py`` decides;
* :class:`EchoServer`: a :class:`~iostream.TCPServer` that echoes every byte
  back, counts its streams (open, peak, closed, errors by class) and keeps
  only weak references to them;
* :class:`EchoClients`: *total* IOStream (or SSLIOStream) clients, at most
  *concurrency* at a time, each sending a payload unique to it and checking
  every echoed byte; with ``hold=True`` all stay open until every one has
  been echoed (N concurrent connections), else each closes once verified and
  the next one starts (connect / exchange / close cycles);
* :class:`RawPeer`: a raw non-blocking socket driven by the loop, the
  hostile side of a connection (floods, resets, reads a little, says nothing);
* run as a program (``python tests/_load_helpers.py --port P --total N ...``),
  it is the client side of the 10,000-connection test in a process of its
  own: one process may not hold both ends of 10,000 connections under this
  machine's ``RLIMIT_NOFILE`` hard limit. It prints one JSON line.

Everything is bounded: the callers wait with a deadline (``support.Waiter`` /
``run_until`` in the tests, ``--timeout`` in the program).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import socket
import ssl
import struct
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

from support import LoopTimeout

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer, pollers

#: Every payload is a slice of this block, after a 4-byte client index: each
#: client's bytes differ, and a byte echoed to the wrong client shows.
PAYLOAD_BLOCK = random.Random(20240601).randbytes(1 << 20)


def payload_for(index: int, size: int) -> bytes:
    """The *size*-byte payload of client *index* (at least 4 bytes)."""
    size = max(size, 4)
    body = size - 4
    span = len(PAYLOAD_BLOCK) - body
    offset = (index * 7919) % span if span > 0 else 0
    return index.to_bytes(4, "big") + PAYLOAD_BLOCK[offset : offset + body]


# ---------------------------------------------------------------- gauges


def fd_count() -> int | None:
    """Open fds of this process (``/proc/self/fd``), or None where /proc is absent."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def rss_bytes() -> int | None:
    """Resident set size of this process now, or None where /proc is absent."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def ensure_nofile(needed: int) -> str | None:
    """Raise the soft ``RLIMIT_NOFILE`` to at least *needed* fds.

    Returns None on success, else the reason it cannot (for ``pytest.skip``).
    The hard limit can only be raised with CAP_SYS_RESOURCE; the soft one
    up to the hard one always.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            except (ValueError, OSError) as exc:
                return (
                    f"needs {needed} fds, RLIMIT_NOFILE hard limit is {hard} "
                    f"and cannot be raised here ({exc})"
                )
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return None


def suite_pollers() -> list[str]:
    """The pollers this run covers: ``IOSTREAM_POLLER``'s if set, else all available."""
    if os.environ.get(pollers.ENV_VAR, "").strip():
        return [pollers.choose().name]
    return list(pollers.available())


def error_name(exc: BaseException | None) -> str:
    """A short class name for an error count (``None`` -> ``"clean"``)."""
    if exc is None:
        return "clean"
    return type(exc).__name__


# ---------------------------------------------------------------- waiting


def wait_for(
    io_loop: IOLoop,
    condition: Callable[[], bool],
    timeout: float,
    notifiers: tuple[Any, ...] = (),
) -> None:
    """Run *io_loop* until *condition()* holds; fail (:class:`LoopTimeout`) after *timeout* s.

    *notifiers* are objects with an ``on_change`` attribute (an
    :class:`EchoServer`, :class:`EchoClients`): the condition is checked each
    time one of them changes, and the loop stops at once when it holds. For
    states no notifier reports (a list a callback appends to), the condition
    is also re-checked every 5 ms, as ``support.run_until`` does. Bounded in
    time, and in count (a stop by someone else re-enters at most 10,000 times).
    """
    deadline = time.monotonic() + timeout
    active = [True]

    def check() -> None:
        if active[0] and condition():
            io_loop.stop()

    def tick() -> None:
        if active[0]:
            check()
            io_loop.call_later(0.005, tick)

    for notifier in notifiers:
        notifier.on_change = check
    try:
        io_loop.add_callback(tick)
        for _ in range(10_000):
            if condition():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            handle = io_loop.call_later(remaining, io_loop.stop)
            io_loop.start()
            io_loop.remove_timeout(handle)
    finally:
        active[0] = False
        for notifier in notifiers:
            notifier.on_change = None
    if not condition():
        raise LoopTimeout(f"condition not met within {timeout}s")


# ---------------------------------------------------------------- echo server


class EchoServer:
    """A TCPServer that writes back every byte it receives, until the peer closes.

    Keeps counts (``opened``, ``closed``, ``peak`` open at once, ``errors``
    by class of ``stream.error``) and weak references to its streams
    (``refs``), never strong ones: a leak test can check that closed streams
    are freed. ``on_change`` is called after every open and close.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        keep_refs: bool = False,
        **stream_kwargs: Any,
    ) -> None:
        self.io_loop = io_loop
        self.server = TCPServer(
            self._handle, io_loop=io_loop, ssl_options=ssl_options, **stream_kwargs
        )
        self.opened = 0
        self.closed = 0
        self.peak = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.keep_refs = keep_refs
        self.refs: list[weakref.ref[IOStream]] = []
        self.on_change: Callable[[], object] | None = None

    def listen(self) -> int:
        """Listen on 127.0.0.1, port 0; return the port."""
        return self.server.listen(0, "127.0.0.1")

    def stop(self) -> None:
        """Stop listening (open streams stay open)."""
        self.server.stop()

    @property
    def open_now(self) -> int:
        """Streams accepted and not yet closed."""
        return self.opened - self.closed

    def _handle(self, stream: IOStream, address: Any) -> None:
        self.opened += 1
        self.peak = max(self.peak, self.open_now)
        if self.keep_refs:
            self.refs.append(weakref.ref(stream))
        ref = weakref.ref(stream)
        stream.set_close_callback(lambda: self._on_close(ref))
        stream.read_until_close(_ignore, streaming_callback=stream.write)
        if self.on_change is not None:
            self.on_change()

    def _on_close(self, ref: weakref.ref[IOStream]) -> None:
        stream = ref()
        self.closed += 1
        self.errors[error_name(stream.error if stream is not None else None)] += 1
        if self.on_change is not None:
            self.on_change()


def _ignore(data: bytes) -> None:
    """A read callback that wants nothing (the echo went to the streaming callback)."""


# ---------------------------------------------------------------- echo clients


class EchoClients:
    """*total* clients of an echo server, at most *concurrency* in flight.

    Each client connects, writes its own payload (:func:`payload_for`) and
    reads exactly as many bytes back, comparing every byte. With
    ``hold=True`` every verified client stays open until all *total* are
    verified (then all close: *total* concurrent connections; with
    ``release=False`` they stay open, in ``held``); else each
    closes at once and the next one starts (connect / exchange / close
    cycles). ``done()`` is True once every client has closed.

    ``verified`` counts exact echoes; ``failures`` lists ``(index, reason)``
    for every other end (mismatch, or closed before the echo, with the
    error); ``errors`` counts client ``stream.error`` classes at close.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        port: int,
        total: int,
        concurrency: int,
        size: int,
        hold: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
        keep_refs: bool = False,
        release: bool = True,
    ) -> None:
        self.io_loop = io_loop
        self.port = port
        self.total = total
        self.concurrency = max(1, concurrency)
        self.size = size
        self.hold = hold
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.keep_refs = keep_refs
        self.release = release
        self.refs: list[weakref.ref[IOStream]] = []
        self.started = 0
        self.connected = 0
        self.verified = 0
        self.closed = 0
        self.bytes_verified = 0
        self.failures: list[tuple[int, str]] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.on_change: Callable[[], object] | None = None
        #: With ``hold=True, release=False``: the verified streams, left open.
        self.held: list[IOStream] = []
        self._finished: set[int] = set()

    def start(self) -> None:
        """Start the first *concurrency* clients."""
        for _ in range(min(self.concurrency, self.total)):
            self._launch()

    def done(self) -> bool:
        """True once every client has closed."""
        return self.closed >= self.total

    def finished(self) -> bool:
        """True once every client has been echoed or has failed."""
        return len(self._finished) >= self.total

    def _launch(self) -> None:
        index = self.started
        self.started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stream: IOStream
        if self.ssl_context is not None:
            stream = SSLIOStream(sock, ssl_options=self.ssl_context, io_loop=self.io_loop)
        else:
            stream = IOStream(sock, io_loop=self.io_loop)
        if self.keep_refs:
            self.refs.append(weakref.ref(stream))
        payload = payload_for(index, self.size)
        ref = weakref.ref(stream)
        stream.connect(
            ("127.0.0.1", self.port), self._on_connect, server_hostname=self.server_hostname
        )
        # After connect: set on a socket not yet connecting, the close
        # callback would already watch it (and a poller that refuses the fd
        # closes the stream there, before connect()).
        stream.set_close_callback(lambda: self._on_close(index, ref))
        if stream.closed():
            return  # failed at once (the close callback counts it)
        stream.write(payload)
        stream.read_bytes(len(payload), lambda data: self._on_echo(index, ref, payload, data))

    def _on_connect(self) -> None:
        self.connected += 1

    def _on_echo(self, index: int, ref: weakref.ref[IOStream], payload: bytes, data: bytes) -> None:
        stream = ref()
        self._finished.add(index)
        if data == payload:
            self.verified += 1
            self.bytes_verified += len(data)
        else:
            self.failures.append((index, _mismatch(payload, data)))
        if stream is not None:
            if self.hold:
                self.held.append(stream)
            else:
                stream.close()
        self._next()
        if self.on_change is not None:
            self.on_change()

    def _on_close(self, index: int, ref: weakref.ref[IOStream]) -> None:
        stream = ref()
        error = stream.error if stream is not None else None
        self.closed += 1
        self.errors[error_name(error)] += 1
        if index not in self._finished:
            self._finished.add(index)
            self.failures.append((index, f"closed before the echo: {error!r}"))
            self._next()
        if self.on_change is not None:
            self.on_change()

    def _next(self) -> None:
        """One client finished its exchange: start the next, or release the held."""
        if self.started < self.total:
            self._launch()
        elif self.hold and self.release and len(self._finished) >= self.total:
            held, self.held = self.held, []
            for stream in held:
                stream.close()

    def summary(self) -> dict[str, Any]:
        """The counts as a JSON-able dict."""
        return {
            "started": self.started,
            "connected": self.connected,
            "verified": self.verified,
            "closed": self.closed,
            "bytes_verified": self.bytes_verified,
            "failures": self.failures[:20],
            "failure_count": len(self.failures),
            "errors": dict(self.errors),
        }


def _mismatch(expected: bytes, got: bytes) -> str:
    if len(expected) != len(got):
        return f"echo length {len(got)} != {len(expected)}"
    first = next(i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b)
    return f"echo differs at byte {first} of {len(expected)}"


# ---------------------------------------------------------------- raw peer


class RawPeer:
    """A raw non-blocking socket on the loop: the hostile end of a connection.

    It can flood (``flood(total, chunk)``: send up to *total* bytes as fast
    as the socket takes them), read (``read(limit)``: receive up to *limit*
    bytes, then stop reading; ``on_received`` after each recv, ``on_read_end``
    at EOF or error), reset (``reset()``: SO_LINGER 0 then close,
    which sends RST), or do nothing at all. ``sent``, ``received`` and
    ``error`` (the OSError that ended a send or recv) record what happened.
    """

    def __init__(self, io_loop: IOLoop, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.io_loop = io_loop
        self.sock = sock
        self.sent = 0
        self.received = bytearray()
        self.error: OSError | None = None
        self.eof = False
        self._flood_left = 0
        self._flood_chunk = b""
        self._read_limit = 0
        self._events = 0
        self._registered = False
        self.on_received: Callable[[RawPeer], object] | None = None
        self.on_read_end: Callable[[RawPeer], object] | None = None
        self.on_flood_end: Callable[[RawPeer], object] | None = None

    @classmethod
    def connect(cls, io_loop: IOLoop, port: int) -> RawPeer:
        """A peer connected (blocking, on loopback) to *port*."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        return cls(io_loop, sock)

    def local_port(self) -> int:
        """The peer's own port (what the server sees as the address)."""
        port: int = self.sock.getsockname()[1]
        return port

    def flood(self, total: int, chunk: int = 65536) -> None:
        """Send up to *total* bytes of b"x" (never a newline), as fast as accepted."""
        self._flood_left = total
        self._flood_chunk = b"x" * chunk
        self._watch()

    def read(self, limit: int) -> None:
        """Receive up to *limit* bytes in all (then stop reading: the peer stalls)."""
        self._read_limit = limit
        self._watch()

    def send_now(self, data: bytes) -> None:
        """Send *data* at once (small: it must fit in the socket buffer)."""
        self.sock.sendall(data)

    def reset(self) -> None:
        """Abort the connection: SO_LINGER (on, 0 s) then close sends RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        self.close()

    def close(self) -> None:
        """Stop watching and close the socket."""
        if self._registered:
            self.io_loop.remove_handler(self.sock)
            self._registered = False
        self.sock.close()

    def _watch(self) -> None:
        events = 0
        if self._flood_left > 0:
            events |= IOLoop.WRITE
        if len(self.received) < self._read_limit:
            events |= IOLoop.READ
        if not self._registered:
            if events:
                self.io_loop.add_handler(self.sock, self._on_events, events)
                self._registered = True
        elif events != self._events:
            self.io_loop.update_handler(self.sock, events)
        self._events = events

    def _on_events(self, fd: Any, events: int) -> None:
        if events & IOLoop.READ or (events & IOLoop.ERROR and self._read_limit):
            self._do_read()
        if events & IOLoop.WRITE or (events & IOLoop.ERROR and self._flood_left):
            self._do_flood()
        if self.sock.fileno() >= 0:
            self._watch()

    def _do_read(self) -> None:
        while len(self.received) < self._read_limit:
            try:
                data = self.sock.recv(self._read_limit - len(self.received))
            except BlockingIOError:
                return
            except OSError as exc:
                self._read_limit = 0
                self.error = exc
                self._read_ended()
                return
            if not data:
                self.eof = True
                self._read_limit = 0
                self._read_ended()
                return
            self.received += data
            if self.on_received is not None:
                self.on_received(self)

    def _read_ended(self) -> None:
        if self.on_read_end is not None:
            self.on_read_end(self)

    def _do_flood(self) -> None:
        while self._flood_left > 0:
            chunk = self._flood_chunk[: self._flood_left]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return
            except OSError as exc:
                self.error = exc
                self._flood_left = 0
                break
            self.sent += sent
            self._flood_left -= sent
        if self.on_flood_end is not None:
            self.on_flood_end(self)


#: ``struct linger {l_onoff = 1, l_linger = 0}``: close() then sends RST.
LINGER_ZERO = struct.pack("ii", 1, 0)


# ---------------------------------------------------------------- client program


def _main(argv: list[str] | None = None) -> int:
    """Run EchoClients in this process against an echo server's port; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--poller", default=None)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    reason = ensure_nofile(args.total + 64)
    if reason is not None:
        print(json.dumps({"error": reason}))
        return 2
    io_loop = IOLoop(args.poller)
    clients = EchoClients(
        io_loop, args.port, args.total, args.concurrency, args.size, hold=args.hold
    )
    timed_out: list[bool] = []

    def check() -> None:
        if clients.done():
            io_loop.stop()

    def on_deadline() -> None:
        timed_out.append(True)
        io_loop.stop()

    clients.on_change = check
    t0 = time.monotonic()
    io_loop.call_later(args.timeout, on_deadline)
    io_loop.add_callback(clients.start)
    io_loop.start()
    result = clients.summary()
    result["seconds"] = round(time.monotonic() - t0, 3)
    result["timed_out"] = bool(timed_out)
    result["poller"] = io_loop.poller.name
    io_loop.close(all_fds=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
