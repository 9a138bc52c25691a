"""SSLIOStream against its contract (docs/guarantees.md, "SSLIOStream"), on every poller,
with trustme certificates.

Covers the non-blocking handshake in both roles, the connect callback after
the handshake, SNI and host name checks (default: the host of the address),
untrusted CAs, plaintext clients on a TLS port, ``ssl_options`` as an
``SSLContext`` and as a dict (verification stays on unless ``cert_reqs``
turns it off), writes issued before the handshake ends, several MiB each way
and close after buffered data.
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    KiB,
    MiB,
    StreamKit,
    TLSFiles,
    Waiter,
    accept_on_loop,
    closed_port,
    collect_close,
    settle,
    spin,
    streams_fixture,
    tls_fixture,
)

from iostream import IOLoop, IOStream, SSLIOStream, StreamClosedError


def echo_once(server: IOStream, n: int) -> None:
    """Make *server* read *n* bytes and write them back reversed."""
    server.read_bytes(n, lambda data: server.write(data[::-1]))


# ---------------------------------------------------------------- handshake


def test_handshake_then_connect_callback_then_data(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    events: list[Any] = []
    connected = Waiter(io_loop)
    holder: list[SSLIOStream] = []

    def on_connect(*args: Any) -> None:
        events.append(("connect", args))
        client = holder[0]
        sock = getattr(client, "socket", None)
        if isinstance(sock, ssl.SSLSocket):
            # The handshake is over: the peer certificate is known.
            events.append(("peercert", bool(sock.getpeercert())))
        connected.done()

    client, server = streams.ssl_pair(tls, connect_callback=on_connect)
    holder.append(client)
    echo_once(server, 5)
    connected.wait()
    got = Waiter(io_loop)
    client.write(b"hello")
    client.read_bytes(5, got.callback)
    assert got.wait() == b"olleh"
    settle(io_loop)
    assert events[0] == ("connect", ())
    assert [e for e in events if e[0] == "connect"] == [("connect", ())]
    if len(events) > 1:
        assert events[1] == ("peercert", True)
    assert client.error is None and server.error is None
    assert not client.closed() and not server.closed()


def test_sni_is_sent(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    seen: list[str | None] = []
    ctx = tls.server_context()

    def sni(sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        seen.append(name)

    ctx.sni_callback = sni
    connected = Waiter(io_loop)
    _client, server = streams.ssl_pair(
        tls, server_options=ctx, server_hostname="localhost", connect_callback=connected.done
    )
    server.read_bytes(1, lambda d: None)
    connected.wait()
    assert seen == ["localhost"]


def test_default_server_hostname_is_the_address_host(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    """No server_hostname: the certificate must match 127.0.0.1 (it has that IP SAN)."""
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(tls, server_hostname=None, connect_callback=connected.done)
    echo_once(server, 2)
    connected.wait()
    got = Waiter(io_loop)
    client.write(b"ab")
    client.read_bytes(2, got.callback)
    assert got.wait() == b"ba"


def test_default_server_hostname_checks_the_address_host(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    """A certificate for "localhost" only does not match a connect to 127.0.0.1."""
    calls: list[str] = []
    closed = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        server_options=tls.server_context(tls.localhost_only),
        server_hostname=None,
        connect_callback=lambda: calls.append("connect"),
    )
    collect_close(client, closed)
    server.read_bytes(1, lambda d: None)
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ssl.SSLCertVerificationError), repr(client.error)


def test_wrong_host_name(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    calls: list[str] = []
    closed = Waiter(io_loop)
    server_closed = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls, server_hostname="wrong.example", connect_callback=lambda: calls.append("connect")
    )
    events = collect_close(client, closed)
    client.write(b"never sent", lambda: calls.append("write"))
    collect_close(server, server_closed)
    server.read_bytes(1, lambda d: None)
    closed.wait()
    server_closed.wait()
    settle(io_loop)
    assert calls == [], "neither connect nor write callback may run after a failed handshake"
    assert events == ["close"]
    assert client.closed()
    assert isinstance(client.error, ssl.SSLCertVerificationError), repr(client.error)
    assert isinstance(client.error, ssl.SSLError)
    with pytest.raises(StreamClosedError):
        client.write(b"x")
    # The server's handshake failed too (the client's alert): an SSLError as well.
    assert server.closed()
    assert isinstance(server.error, ssl.SSLError), repr(server.error)


def test_untrusted_ca(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    calls: list[str] = []
    closed = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        client_options=tls.client_context(trust=tls.other_ca),
        connect_callback=lambda: calls.append("connect"),
    )
    collect_close(client, closed)
    server.read_bytes(1, lambda d: None)
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ssl.SSLError), repr(client.error)


def test_default_context_does_not_trust_a_private_ca(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    """ssl_options=None on a client: ssl.create_default_context(), so verification on."""
    listener = streams.listener()
    client = streams.track(SSLIOStream(socket.socket(), io_loop=io_loop))
    calls: list[str] = []
    closed = Waiter(io_loop)
    collect_close(client, closed)
    client.connect(
        listener.getsockname(), lambda: calls.append("connect"), server_hostname="localhost"
    )
    conn = streams.track(accept_on_loop(io_loop, listener))
    server = streams.track(
        SSLIOStream(conn, ssl_options=tls.server_context(), server_side=True, io_loop=io_loop)
    )
    server.read_bytes(1, lambda d: None)
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ssl.SSLCertVerificationError), repr(client.error)


def test_plaintext_client_on_tls_port(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    listener = streams.listener()
    peer = streams.track(socket.create_connection(listener.getsockname(), timeout=10))
    conn = streams.track(accept_on_loop(io_loop, listener))
    server = streams.track(
        SSLIOStream(conn, ssl_options=tls.server_context(), server_side=True, io_loop=io_loop)
    )
    closed = Waiter(io_loop)
    events = collect_close(server, closed)
    server.read_bytes(10, lambda d: events.append("read"))
    peer.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
    closed.wait()
    settle(io_loop)
    assert events == ["close"]
    assert isinstance(server.error, ssl.SSLError), repr(server.error)


def test_refused_connect(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=io_loop)
    )
    calls: list[str] = []
    closed = Waiter(io_loop)
    events = collect_close(client, closed)
    client.connect(
        ("127.0.0.1", closed_port()), lambda: calls.append("connect"), server_hostname="localhost"
    )
    closed.wait()
    settle(io_loop)
    assert calls == [] and events == ["close"]
    assert isinstance(client.error, ConnectionRefusedError)


# ---------------------------------------------------------------- ssl_options


def test_ssl_options_dicts(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        server_options={"certfile": tls.cert_path, "keyfile": tls.key_path},
        client_options={"ca_certs": tls.ca_path, "cert_reqs": ssl.CERT_REQUIRED},
        connect_callback=connected.done,
    )
    echo_once(server, 3)
    connected.wait()
    got = Waiter(io_loop)
    client.write(b"abc")
    client.read_bytes(3, got.callback)
    assert got.wait() == b"cba"


def test_ssl_options_dict_combined_certfile(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        server_options={"certfile": tls.combined_path},
        client_options={"ca_certs": tls.ca_path},
        connect_callback=connected.done,
    )
    server.read_bytes(1, lambda d: None)
    connected.wait()
    assert not client.closed()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="empty-dict"),
        pytest.param({"ca_certs": "OTHER"}, id="other-ca"),
        pytest.param({"ca_certs": "OTHER", "ciphers": "HIGH"}, id="other-ca-ciphers"),
    ],
)
def test_client_dict_keeps_verification_on(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, options: dict[str, Any]
) -> None:
    options = {k: (tls.other_ca_path if v == "OTHER" else v) for k, v in options.items()}
    calls: list[str] = []
    closed = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls, client_options=options, connect_callback=lambda: calls.append("connect")
    )
    collect_close(client, closed)
    server.read_bytes(1, lambda d: None)
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ssl.SSLError), repr(client.error)


def test_client_dict_checks_host_name(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    calls: list[str] = []
    closed = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        client_options={"ca_certs": tls.ca_path},
        server_hostname="wrong.example",
        connect_callback=lambda: calls.append("connect"),
    )
    collect_close(client, closed)
    server.read_bytes(1, lambda d: None)
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ssl.SSLCertVerificationError), repr(client.error)


def test_client_dict_cert_none_turns_verification_off(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(
        tls,
        client_options={"cert_reqs": ssl.CERT_NONE},
        server_hostname="wrong.example",
        connect_callback=connected.done,
    )
    echo_once(server, 4)
    connected.wait()
    got = Waiter(io_loop)
    client.write(b"abcd")
    client.read_bytes(4, got.callback)
    assert got.wait() == b"dcba"


def test_mutual_tls_with_dicts(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    client_pem = tls.client_cert.private_key_and_cert_chain_pem
    path = tls.cert_path + ".client.pem"
    client_pem.write_to_path(path)
    connected = Waiter(io_loop)
    seen: list[Any] = []
    client, server = streams.ssl_pair(
        tls,
        server_options={
            "certfile": tls.cert_path,
            "keyfile": tls.key_path,
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": tls.ca_path,
        },
        client_options={"ca_certs": tls.ca_path, "certfile": path},
        connect_callback=connected.done,
    )

    def on_data(data: bytes) -> None:
        sock = getattr(server, "socket", None)
        if isinstance(sock, ssl.SSLSocket):
            seen.append(sock.getpeercert())
        server.write(data)

    server.read_bytes(2, on_data)
    connected.wait()
    got = Waiter(io_loop)
    client.write(b"mt")
    client.read_bytes(2, got.callback)
    assert got.wait() == b"mt"
    if seen:
        assert seen[0], "the server must have the client's certificate"


# ---------------------------------------------------------------- data


def test_writes_issued_before_handshake_completes(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    listener = streams.listener()
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=io_loop)
    )
    order: list[str] = []
    client.connect(
        listener.getsockname(), lambda: order.append("connect"), server_hostname="localhost"
    )
    client.write(b"early client data;")
    w = Waiter(io_loop, 2)

    def on_read(data: bytes) -> None:
        order.append("read")
        w.done(data)

    client.read_bytes(len(b"early server data;"), on_read)
    conn = streams.track(accept_on_loop(io_loop, listener))
    server = streams.track(
        SSLIOStream(conn, ssl_options=tls.server_context(), server_side=True, io_loop=io_loop)
    )
    server.write(b"early server data;")
    server.read_bytes(len(b"early client data;"), w.done)
    w.wait()
    assert sorted(w.values) == [b"early client data;", b"early server data;"]
    assert order == ["connect", "read"]


def test_several_mib_both_ways(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    size = 6 * MiB
    rng = random.Random(4242)
    up, down = rng.randbytes(size), rng.randbytes(size)
    client, server = streams.ssl_pair(tls)
    w = Waiter(io_loop, 2)
    digests: dict[str, bytes] = {}

    def receive(stream: IOStream, key: str, seed: int) -> None:
        r = random.Random(seed)
        h = hashlib.sha256()
        got = [0]

        def on_data(chunk: bytes) -> None:
            h.update(chunk)
            got[0] += len(chunk)
            if got[0] >= size:
                digests[key] = h.digest()
                w.done()
            else:
                stream.read_bytes(min(r.randint(1, 200 * KiB), size - got[0]), on_data)

        stream.read_bytes(r.randint(1, 200 * KiB), on_data)

    def send(stream: IOStream, data: bytes, seed: int) -> None:
        r = random.Random(seed)
        view = memoryview(data)
        off = 0
        while off < size:
            n = min(r.randint(1, 300 * KiB), size - off)
            stream.write(view[off : off + n])
            off += n

    receive(server, "up", 1)
    receive(client, "down", 2)
    send(client, up, 3)
    send(server, down, 4)
    w.wait(timeout=60)
    assert digests == {
        "up": hashlib.sha256(up).digest(),
        "down": hashlib.sha256(down).digest(),
    }


def test_close_after_buffered_data(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    """The server writes 2 MiB and closes; the client gets all of it, then the close."""
    data = random.Random(11).randbytes(2 * MiB + 1)
    client, server = streams.ssl_pair(tls)
    events: list[Any] = []
    closed = Waiter(io_loop)

    def on_close() -> None:
        events.append("close")
        closed.done()

    client.set_close_callback(on_close)
    client.read_until_close(events.append)
    server.write(data, server.close)
    closed.wait()
    settle(io_loop)
    assert len(events) == 2 and events[1] == "close"
    assert events[0] == data
    assert client.error is None


def test_many_small_messages(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    client, server = streams.ssl_pair(tls)
    lines = [b"message %05d\n" % i for i in range(5000)]
    got: list[bytes] = []
    w = Waiter(io_loop)

    def on_line(line: bytes) -> None:
        got.append(line)
        if len(got) == len(lines):
            w.done()
        else:
            server.read_until(b"\n", on_line)

    server.read_until(b"\n", on_line)
    for line in lines:
        client.write(line)
    w.wait()
    assert got == lines


def test_peer_close_is_noticed(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(tls, connect_callback=connected.done)
    server.read_bytes(1, lambda d: None)
    connected.wait()
    closed = Waiter(io_loop)
    events = collect_close(server, closed)
    client.close()
    closed.wait()
    settle(io_loop)
    assert events == ["close"]
    assert server.closed()


@pytest.mark.parametrize(
    "reader",
    [
        "read_bytes",
        "read_until",
        "streaming",
        "chained_read_bytes",
        "chained_read_bytes_1",
        "chained_read_until",
    ],
)
def test_plaintext_held_inside_the_tls_layer_is_read(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, reader: str
) -> None:
    """Small read chunks leave decrypted bytes inside OpenSSL, where no poller sees them.

    The socket is then not readable again (the peer sends nothing more and
    stays open), so a stream that waits for the poller instead of draining
    the TLS layer stalls here.
    """
    data = random.Random(21).randbytes(200 * KiB).replace(b"\n", b"_") + b"\n"
    # One byte per recv for the "_1" variant: one TLS record takes thousands.
    chunk = 1 if reader == "chained_read_bytes_1" else 1024
    client, server = streams.ssl_pair(tls, client_kwargs={"read_chunk_size": chunk})
    got = Waiter(io_loop)
    if reader == "read_bytes":
        client.read_bytes(len(data), got.callback)
    elif reader == "read_until":
        client.read_until(b"\n", got.callback)
    elif reader == "streaming":
        parts: list[bytes] = []
        client.read_bytes(
            len(data),
            lambda last: got.done(b"".join(parts) + last),
            streaming_callback=parts.append,
        )
    else:
        # Many small reads, each issued from the previous one's callback.
        received = bytearray()
        if reader == "chained_read_until":
            data = b"".join(b"%05d:%s\n" % (i, b"x" * (i % 300)) for i in range(2000))
        step = 1 if reader == "chained_read_bytes_1" else 1000
        if step == 1:
            data = data[: 8 * KiB]  # one byte per read: a record is thousands of reads

        def on_piece(piece: bytes) -> None:
            received.extend(piece)
            if len(received) >= len(data):
                got.done(bytes(received))
            elif reader != "chained_read_until":
                client.read_bytes(min(step, len(data) - len(received)), on_piece)
            else:
                client.read_until(b"\n", on_piece)

        if reader != "chained_read_until":
            client.read_bytes(step, on_piece)
        else:
            client.read_until(b"\n", on_piece)
    server.write(data)
    assert got.wait() == data
    assert not client.closed()


def test_tls_writer_blocked_by_a_slow_reader(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    """want-write in the middle of a TLS write, with more writes queued behind it."""
    size = 24 * MiB
    data = random.Random(77).randbytes(size)
    connected = Waiter(io_loop)
    client, server = streams.ssl_pair(tls, connect_callback=connected.done)
    server.read_bytes(1, lambda d: None)
    client.write(b"!")
    connected.wait()
    rng = random.Random(78)
    view = memoryview(data)
    off = 0
    written = Waiter(io_loop)
    while off < size // 2:
        n = rng.randint(1, 256 * KiB)
        client.write(view[off : off + n])
        off += n
    # Let the writer fill every buffer and block on want-write.
    for _ in range(20):
        spin(io_loop, 5)
    assert client.writing(), "the writer should be blocked: the reader does not read"
    while off < size:  # more writes queued behind the blocked one
        n = min(rng.randint(1, 256 * KiB), size - off)
        client.write(view[off : off + n])
        off += n
    client.write(b"", written.done)
    got = Waiter(io_loop)
    server.read_bytes(size, got.callback)
    assert hashlib.sha256(got.wait(timeout=60)).digest() == hashlib.sha256(data).digest()
    written.wait()
    assert client.error is None and server.error is None
