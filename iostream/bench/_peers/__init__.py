"""The peer adapters, one per library under test, and the registry ``--peers`` reads.

Third-party libraries are imported only inside the adapter that uses them,
so a missing optional peer costs nothing but its column.
"""

from __future__ import annotations

from iostream.bench._peers.asyncio_protocol import AsyncioProtocolPeer
from iostream.bench._peers.asyncio_streams import (
    AsyncioOnIostreamPeer,
    AsyncioStreamsPeer,
    UvloopStreamsPeer,
)
from iostream.bench._peers.base import BenchError, Peer, ServerStats
from iostream.bench._peers.corrupt import CorruptPeer, CorruptWriterPeer
from iostream.bench._peers.iostream_peer import IostreamAwaitPeer, IostreamPeer
from iostream.bench._peers.tornado_peer import TornadoPeer
from iostream.bench._peers.trio_peer import TrioPeer

__all__ = ["DEFAULT_PEERS", "PEERS", "BenchError", "Peer", "ServerStats", "make_peer"]

#: Every peer by name, the self-test peer included.
PEERS: dict[str, type[Peer]] = {
    cls.name: cls
    for cls in (
        IostreamPeer,
        IostreamAwaitPeer,
        AsyncioStreamsPeer,
        AsyncioProtocolPeer,
        TornadoPeer,
        UvloopStreamsPeer,
        TrioPeer,
        AsyncioOnIostreamPeer,
        CorruptPeer,
        CorruptWriterPeer,
    )
}

#: The peers a run measures unless ``--peers`` says otherwise.
DEFAULT_PEERS: tuple[str, ...] = (
    "iostream",
    "iostream-await",
    "asyncio-streams",
    "asyncio-protocol",
    "tornado",
    "uvloop-streams",
    "trio",
    "asyncio-on-iostream",
)


def make_peer(name: str, poller: str | None = None) -> Peer:
    """Return the adapter called *name* (``poller`` only matters for iostream)."""
    try:
        cls = PEERS[name]
    except KeyError:
        raise ValueError(f"peer: expected one of {', '.join(PEERS)}, got {name!r}") from None
    return cls(poller)
