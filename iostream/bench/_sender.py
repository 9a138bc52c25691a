"""The sender of the one-way workloads: plain blocking sockets, the same for every peer.

It connects, sends the hello, then for each phase waits for the receiver's
``go`` bytes and sends the payload (bulk: 16 blocks of 64 KiB per
``sendmsg``, see :data:`~iostream.bench._jobs.BLOCKS_PER_WRITE`).
Payloads other than bulk are built before the connection, so no building
is ever on the receiver's clock. It ends by waiting for the
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


def _prepared(specs: list[_jobs.PhaseSpec], cache_dir: str | None) -> list[Iterable[_jobs.Write]]:
    """Materialise every payload except the bulk blocks (cheap, made as they go)."""
    ready: list[Iterable[_jobs.Write]] = []
    for spec in specs:
        writes = _jobs.payload(spec, cache_dir)
        ready.append(writes if spec.label in ("bulk", "tls-bulk") else list(writes))
    return ready


def _write(sock: socket.socket, parts: _jobs.Write) -> int:
    """Send *parts* as one write: ``sendmsg`` (no copy) where it exists, else one ``sendall``.

    TLS sockets and Windows have no ``sendmsg``. A blocking ``sendmsg`` can
    still stop short (a signal); the rest is sent by the loop.
    """
    total = sum(len(part) for part in parts)
    if isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
        sock.sendall(b"".join(parts) if len(parts) > 1 else parts[0])
        return total
    views = [memoryview(part) for part in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if views and sent:
            views[0] = views[0][sent:]
    return total


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
        for spec, writes in zip(specs, payloads, strict=True):
            if spec.go and _recv_exact(sock, len(spec.go)) != spec.go:
                raise SenderError(f"phase {spec.label!r}: wrong 'go' bytes")
            label = spec.label or "hello"
            started, cpu_started = time.perf_counter(), time.process_time()
            total = 0
            for parts in writes:
                total += _write(sock, parts)
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
