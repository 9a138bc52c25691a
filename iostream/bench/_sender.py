"""The sender of the one-way workloads: plain blocking sockets, the same for every peer.

It connects, sends the hello, then for each phase waits for the receiver's
``go`` bytes and sends the payload with ``sendall`` (bulk: one 64 KiB block
per call). Payloads other than bulk are built before the connection, so no
building is ever on the receiver's clock. It ends by waiting for the
receiver to close, and reports what it sent.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable

from iostream.bench import _jobs, _tls
from iostream.bench._config import Sizes


class SenderError(RuntimeError):
    """The receiver did not follow the protocol."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SenderError(f"receiver closed while {size - len(data)} bytes of 'go' were due")
        data += chunk
    return data


def _prepared(
    specs: list[_jobs.PhaseSpec], cache_dir: str | None
) -> list[Iterable[bytes | memoryview]]:
    """Materialise every payload except the bulk blocks (cheap, made as they go)."""
    ready: list[Iterable[bytes | memoryview]] = []
    for spec in specs:
        chunks = _jobs.payload(spec, cache_dir)
        ready.append(chunks if spec.label in ("bulk", "tls-bulk") else list(chunks))
    return ready


def send(
    port: int,
    workload: str,
    sizes: Sizes,
    cert: _tls.CertFiles | None,
    cache_dir: str | None,
    timeout: float,
) -> tuple[dict[str, int], dict[str, float]]:
    """Run the sender side of *workload*.

    Return the bytes sent per phase label, and the share of a core the
    sender used while sending each (near 1.0: the sender set the pace).
    """
    specs = _jobs.phases_for(workload, sizes)
    payloads = _prepared(specs, cache_dir)
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if cert is not None:
        sock = _tls.client_context(cert).wrap_socket(sock, server_hostname=_tls.HOSTNAME)
    # Blocking without a timeout from here: with one, CPython polls before
    # every send, which would slow the sender down. The harness bounds the
    # whole process instead.
    sock.settimeout(None)
    sent: dict[str, int] = {}
    busy: dict[str, float] = {}
    with sock:
        for spec, chunks in zip(specs, payloads, strict=True):
            if spec.go and _recv_exact(sock, len(spec.go)) != spec.go:
                raise SenderError(f"phase {spec.label!r}: wrong 'go' bytes")
            label = spec.label or "hello"
            started, cpu_started = time.perf_counter(), time.process_time()
            total = 0
            for chunk in chunks:
                sock.sendall(chunk)
                total += len(chunk)
            sent[label] = total
            busy[label] = (time.process_time() - cpu_started) / (time.perf_counter() - started)
        if _wait_close(sock):
            raise SenderError("receiver sent more than the 'go' bytes")
    return sent, busy


def _wait_close(sock: socket.socket) -> bytes:
    """Wait for the receiver to close; return any bytes it sent instead."""
    try:
        return sock.recv(1)
    except (ssl.SSLError, ConnectionResetError):
        # A TLS receiver may close without close_notify; that is still the end.
        return b""
