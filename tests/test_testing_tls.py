"""``ChaosSSLSocket`` driven by hand, as TLS code written without ``IOStream`` drives it.

The TLS fault socket must treat every way of reading and writing the same:
``recv``, ``recv_into`` and ``read`` take the receive schedule, ``send`` and
``write`` the send schedule, all recorded in the same ``TLSChaos.log``. And
it must not raise what OpenSSL never raises: a want-read while decrypted
bytes are waiting inside OpenSSL (``pending() > 0``) would strand code that
reads until want-read and then waits for the fd to become readable (the
pattern the ``ssl`` documentation recommends for non-blocking sockets).

Everything runs on one thread over a loopback pair of non-blocking sockets:
the handshake is stepped by hand, and a wait for data is a ``select`` with a
deadline (an event, never a sleep).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from typing import cast

import pytest
from _stream_helpers import TLSFiles, tls_fixture  # noqa: F401  (fixture)

from iostream.testing import (
    ChaosSSLSocket,
    Fault,
    TLSChaos,
    chaos_context,
    short,
    socket_pair,
)

WANT_READ = Fault("want_read")
WANT_WRITE = Fault("want_write")
EINTR = Fault("eintr")

#: Deadline of one wait for the peer's bytes (a hang fails here, not at a CI timeout).
WAIT = 10.0


def wait_readable(sock: socket.socket, what: str) -> None:
    """Return once *sock* polls readable; fail after :data:`WAIT` seconds."""
    readable, _, _ = select.select([sock], [], [], WAIT)
    assert readable, f"{what}: the socket never became readable"


@pytest.fixture
def tls_pair(tls: TLSFiles) -> Iterator[tuple[ChaosSSLSocket, ssl.SSLSocket]]:
    """``(client, server)``: a non-blocking :class:`ChaosSSLSocket` (no plan yet) and its peer."""
    server_ctx = tls.server_context()
    server_ctx.num_tickets = 0  # no session tickets: only the test's bytes cross after
    client_ctx = chaos_context(tls.client_context())
    a, b = socket_pair()
    client = client_ctx.wrap_socket(a, server_hostname="localhost", do_handshake_on_connect=False)
    server = server_ctx.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    assert isinstance(client, ChaosSSLSocket)
    with client, server:
        unfinished: list[ssl.SSLSocket] = [client, server]
        for _ in range(100):  # a TLS 1.3 handshake takes three or four steps
            for sock in list(unfinished):
                try:
                    sock.do_handshake()
                except ssl.SSLWantReadError:
                    continue
                unfinished.remove(sock)
            if not unfinished:
                break
            readable, _, _ = select.select(unfinished, [], [], WAIT)
            assert readable, "the handshake stalled"
        assert not unfinished, "the handshake did not finish in 100 steps"
        yield client, server


# ------------------------------------------------------------------ every call, one path


def test_recv_and_read_take_the_receive_schedule(
    tls_pair: tuple[ChaosSSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls_pair
    plan = TLSChaos(recv_faults=deque([WANT_READ, WANT_READ, EINTR, short(2)]))
    client.chaos = plan
    with pytest.raises(ssl.SSLWantReadError):
        client.recv(100)
    with pytest.raises(ssl.SSLWantReadError):
        client.read(100)
    with pytest.raises(InterruptedError):
        client.recv(100)
    server.sendall(b"hello")
    wait_readable(client, "hello")
    assert client.recv(100) == b"he"  # short(2)
    assert client.read(100) == b"llo"  # the schedule is used up: behaves
    assert not plan.recv_faults
    assert plan.log == [
        "<tls recv [want_read]>",
        "<tls read [want_read]>",
        "<tls recv [eintr]>",
        "<tls recv [short(2)]>",
    ]
    assert plan.bytes_received == 5


def test_recv_into_and_read_into_a_buffer_count_once(
    tls_pair: tuple[ChaosSSLSocket, ssl.SSLSocket],
) -> None:
    """``recv_into`` calls ``read`` inside the stdlib: one fault, one log line, one count."""
    client, server = tls_pair
    plan = TLSChaos(recv_faults=deque([short(3), short(1)]))
    client.chaos = plan
    server.sendall(b"abcdef")
    wait_readable(client, "abcdef")
    buf = bytearray(16)
    assert client.recv_into(buf) == 3
    # (With a buffer, SSLSocket.read returns the count; typeshed says bytes.)
    assert cast(object, client.read(10, buf)) == 1
    assert buf[:1] == b"d"
    assert plan.log == ["<tls recv [short(3)]>", "<tls read [short(1)]>"]
    assert plan.bytes_received == 4


def test_write_takes_the_send_schedule_and_its_retry_rule(
    tls_pair: tuple[ChaosSSLSocket, ssl.SSLSocket],
) -> None:
    client, server = tls_pair
    plan = TLSChaos(send_faults=deque([WANT_WRITE, Fault("ok"), WANT_WRITE]), keep_sent=True)
    client.chaos = plan
    with pytest.raises(ssl.SSLWantWriteError):
        client.write(b"ping")
    assert client.write(b"ping") == 4, "injected want-write is not a real failure"
    with pytest.raises(ssl.SSLWantWriteError):
        client.write(b"pong")
    assert client.send(b"PONG") == 4  # a different retry: OpenSSL's rule broken
    assert plan.send_sizes == [4, 4, 4, 4]
    assert plan.injected_send_wants == 2
    assert plan.violations == [
        "send retried after want-*: different bytes at offset 0: b'PONG'..., "
        "the failed send had b'pong'..."
    ]
    assert plan.log == [
        "<tls write 4 B [want_write]>",
        "<tls write 4 B -> 4>",  # the token `ok`
        "<tls write 4 B [want_write]>",
        "<tls send 4 B -> 4>",
    ]
    assert bytes(plan.sent) == b"pingPONG"
    got = b""
    for _ in range(10):  # one TLS record per write
        if got == b"pingPONG":
            break
        wait_readable(server, "pingPONG")
        try:
            got += server.recv(100)
        except ssl.SSLWantReadError:  # part of a record so far
            pass
    assert got == b"pingPONG"


# ------------------------------------------------------------------ no want-read over pending bytes


def read_until_want_read(
    client: ChaosSSLSocket, total: int, recv: Callable[[], bytes]
) -> tuple[bytes, int]:
    """The ``ssl`` documentation's pattern: read until want-read, then wait for readability.

    Returns the bytes and the number of want-reads seen. Bounded: 1000 calls.
    """
    got = b""
    wants = 0
    for _ in range(1000):
        if len(got) >= total:
            return got, wants
        try:
            got += recv()
        except ssl.SSLWantReadError:
            wants += 1
            assert client.pending() == 0, "want-read raised with decrypted bytes waiting"
            wait_readable(client, f"{len(got)} of {total} bytes, pending()={client.pending()}")
    raise AssertionError(f"no progress: {len(got)} of {total} bytes in 1000 calls")


def recv_bytes(client: ChaosSSLSocket) -> bytes:
    return client.recv(4096)


def recv_into_bytes(client: ChaosSSLSocket) -> bytes:
    buf = bytearray(4096)
    return bytes(buf[: client.recv_into(buf)])


@pytest.mark.parametrize("recv", [recv_bytes, recv_into_bytes], ids=["recv", "recv_into"])
def test_no_want_read_while_openssl_holds_decrypted_bytes(
    tls_pair: tuple[ChaosSSLSocket, ssl.SSLSocket], recv: Callable[[ChaosSSLSocket], bytes]
) -> None:
    """One 100-byte record, read 1 byte, then a scheduled want-read: it becomes ``ok``."""
    client, server = tls_pair
    plan = TLSChaos(recv_faults=deque([short(1), WANT_READ, WANT_READ]))
    client.chaos = plan
    server.sendall(b"x" * 100)  # one TLS record
    wait_readable(client, "the record")
    assert recv(client) == b"x"
    assert client.pending() == 99
    assert recv(client) == b"x" * 99, "the want-read was not skipped"
    verb = "recv"
    assert plan.log == [
        f"<tls {verb} [short(1)]>",
        f"<tls {verb} [want_read -> ok: 99 B pending]>",
    ]
    # The next want-read, with nothing pending, is injected as scheduled.
    with pytest.raises(ssl.SSLWantReadError):
        recv(client)
    assert not plan.recv_faults
    assert "want_read -> ok" in plan.describe()


@pytest.mark.parametrize("seed", range(20))
def test_seeded_receive_faults_never_strand_a_reader(
    tls_pair: tuple[ChaosSSLSocket, ssl.SSLSocket], seed: int
) -> None:
    """The audit's reproduction: seed 9 stranded 99 bytes inside OpenSSL."""
    client, server = tls_pair
    plan = TLSChaos(seed=seed, want_rate=0.5)
    client.chaos = plan
    payload = bytes(range(100))
    server.sendall(payload)
    got, _ = read_until_want_read(client, len(payload), lambda: recv_into_bytes(client))
    assert got == payload, plan.describe()
