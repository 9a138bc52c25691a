"""A deliberately broken peer: the harness's self-test.

It is the asyncio Protocol peer with one byte flipped in the data it
receives (in its first chunk of payload) — the kind of bug a
buffer-handling mistake makes. A run with it must fail verification and post
no number; ``tests/test_bench.py`` checks that it does. It is never in the
default peer list.
"""

from __future__ import annotations

from typing import ClassVar

from iostream.bench._peers.asyncio_protocol import AsyncioProtocolPeer, EchoProtocol, PhaseProtocol


def _flip(data: bytes) -> bytes:
    """Return *data* with the bits of its middle byte inverted."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


class _CorruptPhaseProtocol(PhaseProtocol):
    _flipped = False

    def data_received(self, data: bytes) -> None:
        # The one-byte hello arrives alone (the sender waits for "go" before
        # the payload): spoil the first chunk of payload.
        if not self._flipped and len(data) > 1:
            self._flipped = True
            data = _flip(data)
        super().data_received(data)


class _CorruptEchoProtocol(EchoProtocol):
    def line_received(self, line: bytes) -> None:
        super().line_received(_flip(line) if line else line)


class CorruptPeer(AsyncioProtocolPeer):
    """asyncio Protocol with a corrupting receive path (self-test only)."""

    name: ClassVar[str] = "corrupt"
    read_protocol: ClassVar[type[PhaseProtocol]] = _CorruptPhaseProtocol
    echo_protocol: ClassVar[type[EchoProtocol]] = _CorruptEchoProtocol
