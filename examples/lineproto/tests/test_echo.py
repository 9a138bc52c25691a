"""An upper-casing echo, one message at a time: on plain sockets, Winsock rules, chaos.

``io_loop`` (from the iostream pytest plugin) runs every test once per
poller available here.
"""

from __future__ import annotations

import socket
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from iostream import IOLoop
from iostream.testing import ChaosSocket, Fault, WindowsSocket, run_until, socket_pair
from iostream.testing.strategies import fault_schedules, recv_schedules, send_schedules

MESSAGES = [b"hello", b"world", b"x" * 3000, b"bye"]


def echo(
    io_loop: IOLoop,
    impl: ModuleType,
    client_sock: socket.socket,
    server_sock: socket.socket,
    messages: list[bytes],
) -> list[bytes]:
    """Send each message after the reply to the previous one; return the replies."""
    replies: list[bytes] = []
    pending = list(messages)
    client: Any
    server: Any
    server = impl.LineConnection(server_sock, io_loop, lambda line: server.send_line(line.upper()))

    def on_reply(line: bytes) -> None:
        replies.append(line)
        if pending:
            client.send_line(pending.pop(0))

    client = impl.LineConnection(client_sock, io_loop, on_reply)
    try:
        client.send_line(pending.pop(0))
        run_until(io_loop, lambda: len(replies) >= len(messages), timeout=10)
    finally:
        client.close()
        server.close()
    return replies


def test_plain(io_loop: IOLoop, impl: ModuleType) -> None:
    """Ordinary loopback sockets: both versions pass (that is the trap)."""
    a, b = socket_pair()
    assert echo(io_loop, impl, a, b, MESSAGES) == [m.upper() for m in MESSAGES]


def test_windows_send_rules(io_loop: IOLoop, impl: ModuleType) -> None:
    """The Windows stand-in: a non-blocking send over 128 KiB fails with WSAENOBUFS."""
    a, b = socket_pair()
    messages = [b"small", b"y" * (200 * 1024)]
    replies = echo(io_loop, impl, WindowsSocket.wrap(a), WindowsSocket.wrap(b), messages)
    assert replies == [m.upper() for m in messages]


@pytest.mark.parametrize("seed", range(8))
def test_chaos_seeded(io_loop: IOLoop, impl: ModuleType, seed: int) -> None:
    """Short sends and reads, would-block and EINTR, drawn from a seed, on both ends."""
    a, b = socket_pair()
    client = ChaosSocket.wrap(a, seed=seed)
    server = ChaosSocket.wrap(b, seed=f"{seed}/server")
    assert echo(io_loop, impl, client, server, MESSAGES) == [m.upper() for m in MESSAGES]


# io_loop is function-scoped and shared by the examples of one test: fine
# here, each example opens and closes its own sockets.
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(send_faults=send_schedules(), recv_faults=recv_schedules())
def test_chaos_schedules(
    io_loop: IOLoop, impl: ModuleType, send_faults: list[Fault], recv_faults: list[Fault]
) -> None:
    """Any schedule of faults on the client socket; Hypothesis shrinks a failing one."""
    a, b = socket_pair()
    client = ChaosSocket.wrap(a, send_faults, recv_faults)
    assert echo(io_loop, impl, client, b, MESSAGES) == [m.upper() for m in MESSAGES]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    send_faults=fault_schedules(["ok", "short"]),
    recv_faults=fault_schedules(["ok", "short"]),
)
def test_short_sends_and_reads(
    io_loop: IOLoop, impl: ModuleType, send_faults: list[Fault], recv_faults: list[Fault]
) -> None:
    """Only what POSIX allows without any error: fewer bytes than asked, each way."""
    a, b = socket_pair()
    client = ChaosSocket.wrap(a, send_faults, recv_faults)
    assert echo(io_loop, impl, client, b, MESSAGES) == [m.upper() for m in MESSAGES]
