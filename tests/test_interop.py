"""Interoperation with real clients and servers, on every poller.

* curl (http and https) against a TCPServer speaking minimal HTTP/1.1;
* ``openssl s_client`` against a TLS TCPServer;
* an SSLIOStream client against ``openssl s_server -www`` and ``-rev``;
* an IOStream client against Python's ``http.server`` in a thread;
* CPython's blocking ``ssl`` client in a thread against a TLS TCPServer.

A missing binary skips its test with the reason. Every subprocess and thread
has a deadline; the loop runs (with :func:`support.run_until`) while they work.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import pathlib
import random
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    TLSFiles,
    Waiter,
    streams_fixture,
    tls_fixture,
)
from support import run_until

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer

#: Seconds any external program may take.
PROC_TIMEOUT = 20.0

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

BODY = random.Random(8080).randbytes(512 * 1024).hex().encode()  # 1 MiB of ASCII


def http_handler(stream: IOStream, address: Any) -> None:
    """A minimal HTTP/1.1 server: answer one request with BODY, then close."""

    def on_headers(head: bytes) -> None:
        request_line = head.split(b"\r\n", 1)[0]
        if not request_line.startswith(b"GET "):
            stream.close()
            return
        stream.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(BODY)
        )
        stream.write(BODY, stream.close)

    stream.read_until(b"\r\n\r\n", on_headers, max_bytes=64 * 1024)


def run_process(io_loop: IOLoop, proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Run the loop until *proc* exits (bounded), then return its stdout/stderr."""
    try:
        run_until(io_loop, lambda: proc.poll() is not None, timeout=PROC_TIMEOUT)
        out, err = proc.communicate(timeout=PROC_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=PROC_TIMEOUT)
    return out, err


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes to kill at the end of the test, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=PROC_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


# ---------------------------------------------------------------- curl


@needs_curl
def test_curl_get_http(
    io_loop: IOLoop,
    streams: StreamKit,
    procs: list[subprocess.Popen[bytes]],
    tmp_path: pathlib.Path,
) -> None:
    server = streams.track(TCPServer(http_handler, io_loop=io_loop))
    port = server.listen(0)
    assert CURL is not None
    # To a file: a pipe that nobody drains while the loop runs would block curl.
    out_path = tmp_path / "body"
    proc = subprocess.Popen(
        [
            CURL,
            "--silent",
            "--show-error",
            "--max-time",
            "15",
            "-o",
            str(out_path),
            f"http://127.0.0.1:{port}/x",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    _, err = run_process(io_loop, proc)
    assert proc.returncode == 0, err
    assert out_path.read_bytes() == BODY


@needs_curl
def test_curl_get_https(
    io_loop: IOLoop,
    streams: StreamKit,
    tls: TLSFiles,
    procs: list[subprocess.Popen[bytes]],
    tmp_path: pathlib.Path,
) -> None:
    server = streams.track(
        TCPServer(http_handler, io_loop=io_loop, ssl_options=tls.server_context())
    )
    port = server.listen(0)
    assert CURL is not None
    # To a file: a pipe that nobody drains while the loop runs would block curl.
    out_path = tmp_path / "body"
    proc = subprocess.Popen(
        [
            CURL,
            "--silent",
            "--show-error",
            "--max-time",
            "15",
            "-o",
            str(out_path),
            "--cacert",
            tls.ca_path,
            "--resolve",
            f"localhost:{port}:127.0.0.1",
            f"https://localhost:{port}/x",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    _, err = run_process(io_loop, proc)
    assert proc.returncode == 0, err
    assert out_path.read_bytes() == BODY


# ---------------------------------------------------------------- openssl s_client


@needs_openssl
def test_openssl_s_client_against_tls_tcpserver(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, procs: list[subprocess.Popen[bytes]]
) -> None:
    def handle(stream: IOStream, address: Any) -> None:
        stream.read_until(b"\n", lambda line: stream.write(b"pong " + line, stream.close))

    server = streams.track(TCPServer(handle, io_loop=io_loop, ssl_options=tls.server_context()))
    port = server.listen(0)
    assert OPENSSL is not None
    proc = subprocess.Popen(
        [
            OPENSSL,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-CAfile",
            tls.ca_path,
            "-verify_return_error",
            "-quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs.append(proc)
    assert proc.stdin is not None
    proc.stdin.write(b"ping\n")
    proc.stdin.flush()
    out, err = run_process(io_loop, proc)
    assert out == b"pong ping\n", (out, err)


# ---------------------------------------------------------------- openssl s_server


def start_s_server(
    tls: TLSFiles, mode: str, procs: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``openssl s_server`` on 127.0.0.1, port 0; return it and its port."""
    assert OPENSSL is not None
    proc = subprocess.Popen(
        [
            OPENSSL,
            "s_server",
            "-accept",
            "127.0.0.1:0",
            "-cert",
            tls.combined_path,
            mode,
            "-naccept",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    procs.append(proc)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + PROC_TIMEOUT
    seen = b""
    while b"ACCEPT" not in seen or not seen.split(b"ACCEPT", 1)[1].count(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise AssertionError(f"s_server did not start: {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"s_server exited: {seen!r}")
            seen += chunk
    line = seen.split(b"ACCEPT", 1)[1].split(b"\n", 1)[0]
    return proc, int(line.rsplit(b":", 1)[1])


@needs_openssl
def test_sslstream_against_openssl_s_server_www(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, procs: list[subprocess.Popen[bytes]]
) -> None:
    _, port = start_s_server(tls, "-www", procs)
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=io_loop)
    )
    connected = Waiter(io_loop)
    client.connect(("127.0.0.1", port), connected.done, server_hostname="localhost")
    client.write(b"GET / HTTP/1.0\r\n\r\n")
    got = Waiter(io_loop)
    client.read_until_close(got.callback)
    response = got.wait()
    assert connected.calls == 1
    assert response.startswith(b"HTTP/1.0 200 ok\r\n"), response[:100]
    assert b"s_server" in response


@needs_openssl
def test_sslstream_against_openssl_s_server_rev(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, procs: list[subprocess.Popen[bytes]]
) -> None:
    _, port = start_s_server(tls, "-rev", procs)
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=io_loop)
    )
    client.connect(("127.0.0.1", port), server_hostname="localhost")
    got = Waiter(io_loop)
    client.write(b"hello interop\n")
    client.read_until(b"\n", got.callback)
    assert got.wait() == b"poretni olleh\n"


# ---------------------------------------------------------------- Python http.server


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = BODY if self.path == "/big" else b"small body"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    """Python's ThreadingHTTPServer on 127.0.0.1, port 0, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=PROC_TIMEOUT)


@pytest.mark.parametrize("path", ["/small", "/big"])
def test_iostream_against_python_http_server(
    io_loop: IOLoop, streams: StreamKit, http_server: int, path: str
) -> None:
    client = streams.stream(streams.track(socket.socket()))
    client.connect(("127.0.0.1", http_server))
    client.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
    result = Waiter(io_loop)

    def on_headers(head: bytes) -> None:
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.")
        length = None
        for h in lines[1:]:
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":", 1)[1])
        assert length is not None
        client.read_bytes(length, lambda body: result.done((lines[0], body)))

    client.read_until(b"\r\n\r\n", on_headers)
    status, body = result.wait()
    assert status.split()[1] == b"200"
    assert body == (BODY if path == "/big" else b"small body")


def test_iostream_read_until_close_against_python_http_server(
    io_loop: IOLoop, streams: StreamKit, http_server: int
) -> None:
    client = streams.stream(streams.track(socket.socket()))
    client.connect(("127.0.0.1", http_server))
    client.write(b"GET /big HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    got = Waiter(io_loop)
    client.read_until_close(got.callback)
    response = got.wait()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"200", head[:100]
    assert body == BODY


# ---------------------------------------------------------------- CPython ssl client


def test_python_ssl_client_against_tls_tcpserver(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    def handle(stream: IOStream, address: Any) -> None:
        def on_len(line: bytes) -> None:
            n = int(line)
            stream.read_bytes(
                n, lambda data: stream.write(hashlib.sha256(data).hexdigest().encode())
            )

        stream.read_until(b"\n", on_len)

    server = streams.track(TCPServer(handle, io_loop=io_loop, ssl_options=tls.server_context()))
    port = server.listen(0)
    payload = random.Random(5).randbytes(3 * 1024 * 1024)
    result: list[Any] = []

    def client() -> None:
        try:
            ctx = tls.client_context()
            raw = socket.create_connection(("127.0.0.1", port), timeout=PROC_TIMEOUT)
            with raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"%d\n" % len(payload) + payload)
                answer = b""
                while len(answer) < 64:
                    chunk = s.recv(64 - len(answer))
                    if not chunk:
                        break
                    answer += chunk
                result.append(answer)
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        run_until(io_loop, lambda: bool(result), timeout=PROC_TIMEOUT)
    finally:
        thread.join(timeout=PROC_TIMEOUT)
    assert result[0] == hashlib.sha256(payload).hexdigest().encode()
