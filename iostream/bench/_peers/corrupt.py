"""A deliberately broken peer: the harness's self-test.

It is the asyncio Protocol peer with one byte flipped in the data it
receives (in its first chunk of payload) — the kind of bug a
buffer-handling mistake makes. A run with it must fail verification and post
no number; ``tests/test_bench.py`` checks that it does. ``corrupt-writer`` is
its twin for the ``own-*`` workloads: an honest receiver, and a client that
flips one byte in the middle of what it writes. Neither is ever in the
default peer list.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from iostream.bench._config import OWN_WORKLOADS
from iostream.bench._jobs import WritePhase
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


class CorruptWriterPeer(AsyncioProtocolPeer):
    """asyncio Protocol whose own client spoils one byte of its payload (self-test only)."""

    name: ClassVar[str] = "corrupt-writer"
    workloads: ClassVar[frozenset[str] | None] = OWN_WORKLOADS

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Write the phases with the middle chunk of the first payload phase corrupted."""
        spoilt = list(phases)
        for index, phase in enumerate(spoilt):
            if phase.go:  # the first phase after the hello
                chunks = list(phase.chunks)
                middle = len(chunks) // 2
                chunks[middle] = memoryview(_flip(bytes(chunks[middle])))
                spoilt[index] = dataclasses.replace(phase, chunks=chunks)
                break
        super().send(port, spoilt, timeout)
