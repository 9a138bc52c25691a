"""The opt-in echo soak (issue 6, item 7): many clients, random sizes, random disconnects, TLS.

Run it alone::

    python -m tests.soak --seconds 60            # from the repository root
    python -m tests.soak --seconds 10 --poller poll --json

or through pytest: ``pytest -m slow -k soak`` (``SOAK_SECONDS``, default 30).

One IOLoop runs two echo servers (plain TCP and TLS, a trustme certificate)
and many client sessions at once (IOStream / SSLIOStream on the same loop).
Each session connects, then runs exchanges until the time is up: a message
of random size (log-uniform, 1 B to ``--max-size``), written in 1-4 random
pieces, and read back with ``read_bytes`` and a streaming callback that
compares every echoed byte as it arrives. At random:

* the client aborts mid-exchange — a plain ``close()`` or a reset (SO_LINGER
  0), just after writing or part-way through the echo — and starts a new
  session;
* the server drops a connection — ``close()`` or reset — at a random moment
  within 300 ms of accepting it; the client sees the end mid-exchange.

At the end, new sessions stop, the running ones finish (bounded), the
servers stop, and the report gives: connections (plain, TLS), exchanges,
bytes sent and verified, aborts and drops by kind, errors by class on each
side, the process's fd count, the loop's handler count and RSS before and
after. The soak fails (``ok`` False, exit status 1) on any echoed byte that
differs, any disconnect nobody asked for, any session that does not end,
or fds or handlers that do not come back to where they started.

Pure standard library plus trustme (for the TLS half; without it the soak
runs plain only and says so). Everything is bounded: the run by
``--seconds``, the wind-down by a 30-second deadline.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import math
import os
import random
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer

#: SO_LINGER {on, 0 s}: close() then sends RST instead of FIN.
_LINGER_ZERO = struct.pack("ii", 1, 0)

#: Seconds the wind-down (running sessions finishing) may take at most.
WIND_DOWN = 30.0


def _fd_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _reset(stream: IOStream) -> None:
    """Abort *stream*'s connection with RST (SO_LINGER 0), then close it."""
    if not stream.closed():
        try:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass
    stream.close()


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


class Stats:
    """Every count the report shows."""

    def __init__(self) -> None:
        self.connections: collections.Counter[str] = collections.Counter()
        self.sessions_done = 0
        self.exchanges = 0
        self.bytes_sent = 0
        self.bytes_verified = 0
        self.mismatches: list[str] = []
        self.unexpected: list[str] = []
        self.client_aborts: collections.Counter[str] = collections.Counter()
        self.server_drops: collections.Counter[str] = collections.Counter()
        self.client_errors: collections.Counter[str] = collections.Counter()
        self.server_errors: collections.Counter[str] = collections.Counter()
        self.server_open = 0


class EchoSide:
    """An echo TCPServer that, now and then, drops a connection on purpose."""

    def __init__(
        self,
        io_loop: IOLoop,
        rng: random.Random,
        stats: Stats,
        drop_rate: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.io_loop = io_loop
        self.rng = rng
        self.stats = stats
        self.drop_rate = drop_rate
        #: Client ports whose connection the server dropped on purpose.
        self.dropped_ports: set[int] = set()
        self.server = TCPServer(self._handle, io_loop=io_loop, ssl_options=ssl_context)
        self.port = self.server.listen(0)

    def _handle(self, stream: IOStream, address: Any) -> None:
        self.stats.server_open += 1

        def on_close() -> None:
            self.stats.server_open -= 1
            self.stats.server_errors[_name(stream.error)] += 1

        stream.set_close_callback(on_close)
        stream.read_until_close(_ignore, streaming_callback=stream.write)
        if self.rng.random() < self.drop_rate:
            kind = self.rng.choice(["close", "reset"])
            port = address[1]

            def drop() -> None:
                if stream.closed():
                    return
                self.dropped_ports.add(port)
                self.stats.server_drops[kind] += 1
                if kind == "reset":
                    _reset(stream)
                else:
                    stream.close()

            self.io_loop.call_later(self.rng.uniform(0.0, 0.3), drop)


def _ignore(data: bytes) -> None:
    """The final read_until_close callback of the echo: nothing left to echo."""


def _name(exc: BaseException | None) -> str:
    return "clean" if exc is None else type(exc).__name__


class Session:
    """One client connection running exchanges until told to stop."""

    def __init__(self, soak: Soak, secure: bool) -> None:
        self.soak = soak
        self.secure = secure
        self.rng = soak.rng
        stats = soak.stats
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        side = soak.tls_side if secure else soak.plain_side
        assert side is not None
        self.side = side
        if secure:
            assert soak.client_context is not None
            self.stream: IOStream = SSLIOStream(
                sock, ssl_options=soak.client_context, io_loop=soak.io_loop
            )
        else:
            self.stream = IOStream(sock, io_loop=soak.io_loop)
        stats.connections["tls" if secure else "plain"] += 1
        self.local_port = 0
        self.aborted = False
        self.ended = False
        # True from the start (connecting counts) until the session ends its
        # last exchange itself: a close while busy needs a reason.
        self.busy = True
        self.expected = b""
        self.received = 0
        self.abort_at: int | None = None
        self.stream.connect(("127.0.0.1", side.port), self._on_connect, server_hostname="localhost")
        if not self.stream.closed():
            # Bound by connect(): the port the server sees, known at once.
            self.local_port = self.stream.socket.getsockname()[1]
        self.stream.set_close_callback(self._on_close)

    def _on_connect(self) -> None:
        # The handshake may have finished in the same event as a reset from
        # the server: the connect callback then runs on a closed stream
        # (before the close callback). Nothing to do; _on_close accounts.
        if not self.stream.closed():
            self._exchange()

    def _exchange(self) -> None:
        soak = self.soak
        if soak.stopping or self.stream.closed():
            self.busy = False
            self.stream.close()
            return
        rng = self.rng
        size = max(1, int(math.exp(rng.uniform(0.0, math.log(soak.max_size)))))
        offset = rng.randrange(0, len(soak.block) - size + 1)
        self.expected = soak.block[offset : offset + size]
        self.received = 0
        self.abort_at = None
        abort = rng.random() < soak.abort_rate
        if abort and rng.random() < 0.5:
            self.abort_at = rng.randrange(0, size)  # part-way through the echo
        self.stream.read_bytes(size, self._on_done, streaming_callback=self._on_chunk)
        pieces = sorted(rng.sample(range(1, size), min(size - 1, rng.randrange(0, 4))))
        start = 0
        for end in [*pieces, size]:
            if self.stream.closed():
                return  # a send failed (the server dropped us): _on_close tells
            self.stream.write(self.expected[start:end])
            start = end
        soak.stats.bytes_sent += size
        if abort and self.abort_at is None:
            self._abort("after-write")

    def _on_chunk(self, data: bytes) -> None:
        expected = self.expected[self.received : self.received + len(data)]
        if data != expected:
            self.soak.stats.mismatches.append(
                f"port {self.local_port}: {len(data)} bytes at {self.received} differ"
            )
            self.stream.close()
            return
        self.received += len(data)
        self.soak.stats.bytes_verified += len(data)
        if self.abort_at is not None and self.received >= self.abort_at:
            self.abort_at = None
            self._abort("mid-echo")

    def _on_done(self, data: bytes) -> None:
        if data:  # everything went to the streaming callback
            self._on_chunk(data)
        if self.received == len(self.expected) and not self.stream.closed():
            self.soak.stats.exchanges += 1
            self._exchange()

    def _abort(self, when: str) -> None:
        kind = self.rng.choice(["close", "reset"])
        self.aborted = True
        self.soak.stats.client_aborts[f"{kind}-{when}"] += 1
        if kind == "reset":
            _reset(self.stream)
        else:
            self.stream.close()

    def _on_close(self) -> None:
        stats = self.soak.stats
        error = self.stream.error
        stats.client_errors[_name(error)] += 1
        if (
            self.busy
            and not self.aborted
            and not self.soak.stopping_hard
            and self.local_port not in self.side.dropped_ports
        ):
            stats.unexpected.append(f"port {self.local_port}: closed mid-exchange: {error!r}")
        if not self.busy and not self.aborted:
            stats.sessions_done += 1
        self.ended = True
        self.soak.session_ended(self)


class Soak:
    """The soak's state: loop, servers, sessions, stats."""

    def __init__(
        self,
        io_loop: IOLoop,
        rng: random.Random,
        plain_clients: int,
        tls_clients: int,
        max_size: int,
        abort_rate: float,
        drop_rate: float,
    ) -> None:
        self.io_loop = io_loop
        self.rng = rng
        self.stats = Stats()
        self.max_size = max_size
        self.abort_rate = abort_rate
        self.block = rng.randbytes(max(4 * max_size, 1 << 20))
        contexts = _tls_contexts() if tls_clients else None
        self.tls_note = "" if contexts or not tls_clients else "trustme missing: no TLS"
        self.client_context = contexts[1] if contexts else None
        self.plain_side = EchoSide(io_loop, rng, self.stats, drop_rate, None)
        self.tls_side = (
            EchoSide(io_loop, rng, self.stats, drop_rate, contexts[0]) if contexts else None
        )
        self.slots = [False] * plain_clients + ([True] * tls_clients if contexts else [])
        self.live: set[Session] = set()
        self.stopping = False
        self.stopping_hard = False
        self.on_idle: Callable[[], object] | None = None

    def start(self) -> None:
        """Start one session per slot."""
        for secure in self.slots:
            self.live.add(Session(self, secure))

    def session_ended(self, session: Session) -> None:
        """A session closed: replace it, unless the soak is winding down."""
        self.live.discard(session)
        if not self.stopping:
            self.live.add(Session(self, session.secure))
        elif not self.live and self.on_idle is not None:
            self.on_idle()

    def stop_servers(self) -> None:
        """Stop both listeners."""
        self.plain_side.server.stop()
        if self.tls_side is not None:
            self.tls_side.server.stop()


def _run_for(io_loop: IOLoop, seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Run the loop for *seconds*, or until *until()* holds (checked each 10 ms)."""
    deadline = io_loop.time() + seconds

    def tick() -> None:
        if io_loop.time() >= deadline or (until is not None and until()):
            io_loop.stop()
        else:
            io_loop.call_later(0.01, tick)

    io_loop.add_callback(tick)
    io_loop.start()


def run_soak(
    seconds: float = 60.0,
    poller: str | None = None,
    seed: int = 0,
    plain_clients: int = 48,
    tls_clients: int = 16,
    max_size: int = 256 * 1024,
    abort_rate: float = 0.03,
    drop_rate: float = 0.05,
) -> dict[str, Any]:
    """Run the soak; return the report (see the module docstring)."""
    rng = random.Random(seed)
    gc.collect()
    fds_before = _fd_count()
    rss_before = _rss()
    io_loop = IOLoop(poller)
    handlers_before = io_loop.handler_count()
    soak = Soak(io_loop, rng, plain_clients, tls_clients, max_size, abort_rate, drop_rate)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    io_loop.add_callback(soak.start)
    _run_for(io_loop, seconds)
    soak_seconds = time.monotonic() - t0
    # Wind down: no new sessions; the running ones finish their exchange.
    soak.stopping = True
    _run_for(io_loop, WIND_DOWN, until=lambda: not soak.live)
    stuck = len(soak.live)
    soak.stopping_hard = True
    for session in list(soak.live):
        session.stream.close()
    soak.stop_servers()
    _run_for(io_loop, WIND_DOWN, until=lambda: soak.stats.server_open == 0)
    cpu = time.process_time() - cpu0
    handlers_after = io_loop.handler_count()
    stats = soak.stats
    tls_note = soak.tls_note
    poller_name = io_loop.poller.name
    io_loop.close(all_fds=True)
    gc.collect()
    fds_after = _fd_count()
    rss_after = _rss()
    fd_ok = fds_before is None or fds_after == fds_before
    report: dict[str, Any] = {
        "poller": poller_name,
        "seconds": round(soak_seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "seed": seed,
        "clients": {"plain": plain_clients, "tls": tls_clients if not tls_note else 0},
        "note": tls_note,
        "connections": dict(stats.connections),
        "sessions_completed": stats.sessions_done,
        "exchanges": stats.exchanges,
        "bytes_sent": stats.bytes_sent,
        "bytes_verified": stats.bytes_verified,
        "mismatches": len(stats.mismatches),
        "mismatch_samples": stats.mismatches[:5],
        "unexpected_disconnects": len(stats.unexpected),
        "unexpected_samples": stats.unexpected[:5],
        "stuck_sessions": stuck,
        "client_aborts": dict(stats.client_aborts),
        "server_drops": dict(stats.server_drops),
        "client_errors": dict(stats.client_errors),
        "server_errors": dict(stats.server_errors),
        "server_streams_left_open": stats.server_open,
        "fds": {"before": fds_before, "after": fds_after},
        "handlers": {"before": handlers_before, "after": handlers_after},
        "rss_mib": {
            "before": None if rss_before is None else round(rss_before / 2**20, 1),
            "after": None if rss_after is None else round(rss_after / 2**20, 1),
        },
    }
    report["ok"] = (
        not stats.mismatches
        and not stats.unexpected
        and stuck == 0
        and stats.server_open == 0
        and handlers_after == handlers_before
        and fd_ok
        and stats.exchanges > 0
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned ``key: value`` lines."""
    lines = ["iostream soak: " + ("OK" if report["ok"] else "FAILED")]
    for key, value in report.items():
        if key == "ok":
            continue
        if (
            key != "seed"
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value >= 10_000
        ):
            value = f"{value:,}"
        lines.append(f"  {key:24} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the soak, print the report, exit 0 if it passed."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description="iostream echo soak (issue 6)"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--poller", default=None, help="default: IOSTREAM_POLLER or the best")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=48, help="plain-TCP sessions at once")
    parser.add_argument("--tls-clients", type=int, default=16, help="TLS sessions at once")
    parser.add_argument("--max-size", type=int, default=256 * 1024)
    parser.add_argument("--abort-rate", type=float, default=0.03)
    parser.add_argument("--drop-rate", type=float, default=0.05)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    report = run_soak(
        seconds=args.seconds,
        poller=args.poller,
        seed=seed,
        plain_clients=args.clients,
        tls_clients=args.tls_clients,
        max_size=args.max_size,
        abort_rate=args.abort_rate,
        drop_rate=args.drop_rate,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
