"""Hypothesis strategies for fault schedules (importing this module imports Hypothesis).

A property test draws a schedule, plays it under a :class:`ChaosSocket`,
and checks that the protocol still works; when it does not, Hypothesis
shrinks the schedule and prints the minimal failing one, which reads like
``send_faults=[short(1)]`` (:class:`~iostream.testing.Fault`'s ``repr``)::

    from hypothesis import given
    from iostream.testing import ChaosSocket, socket_pair
    from iostream.testing.strategies import send_schedules, recv_schedules

    @given(send_faults=send_schedules(), recv_faults=recv_schedules())
    def test_lines_arrive(send_faults, recv_faults): ...

The seeded alternative needs no Hypothesis: ``ChaosSocket(seed=n)`` in a
``pytest.mark.parametrize("seed", range(20))``; its
:meth:`~iostream.testing.ChaosSocket.describe` shows what a failing seed
did (but nothing shrinks it).
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import strategies as st

from iostream.testing._sockets import Fault, short

__all__ = [
    "PLAIN_RECV_KINDS",
    "PLAIN_SEND_KINDS",
    "TLS_KINDS",
    "WINDOWS_SEND_KINDS",
    "fault_schedules",
    "faults",
    "recv_schedules",
    "send_schedules",
]

#: What a POSIX kernel may do to a non-blocking ``send``.
PLAIN_SEND_KINDS: tuple[str, ...] = ("ok", "short", "block", "eintr")
#: What it may do to a ``recv``.
PLAIN_RECV_KINDS: tuple[str, ...] = ("ok", "short", "block", "eintr")
#: Winsock's send answers (would-block and no-buffer-space with WSA codes).
WINDOWS_SEND_KINDS: tuple[str, ...] = ("ok", "short", "wsa_block", "wsa_nobufs")
#: What OpenSSL may answer a non-blocking read or write with.
TLS_KINDS: tuple[str, ...] = ("ok", "short", "want_read", "want_write", "eintr")


def faults(
    kinds: Iterable[str] = PLAIN_SEND_KINDS, max_short: int = 64
) -> st.SearchStrategy[Fault]:
    """One :class:`Fault` of one of *kinds*; ``short(n)`` has ``1 <= n <= max_short``.

    Shrinks towards the first kind listed (``ok`` by default) and towards
    ``short(1)``.
    """
    names = list(kinds)
    if not names:
        raise ValueError("kinds must name at least one fault kind")
    unknown = sorted(set(names) - Fault.KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown fault kind(s) {unknown}; known: {sorted(Fault.KINDS)}")
    if isinstance(max_short, bool) or not isinstance(max_short, int) or max_short < 1:
        raise ValueError(f"max_short must be an int >= 1, got {max_short!r}")
    options: list[st.SearchStrategy[Fault]] = []
    for name in names:
        if name == "short":
            options.append(st.integers(1, max_short).map(short))
        else:
            options.append(st.just(Fault(name)))
    return st.one_of(options)


def fault_schedules(
    kinds: Iterable[str] = PLAIN_SEND_KINDS, max_size: int = 30, max_short: int = 64
) -> st.SearchStrategy[list[Fault]]:
    """A list of up to *max_size* faults of *kinds*: one schedule.

    Shrinks towards the empty list (a socket that behaves), then fewer
    and milder faults.
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise ValueError(f"max_size must be an int >= 0, got {max_size!r}")
    return st.lists(faults(kinds, max_short), max_size=max_size)


def send_schedules(
    windows: bool = False, max_size: int = 30, max_short: int = 64
) -> st.SearchStrategy[list[Fault]]:
    """Schedules for ``send``: POSIX kinds, or Winsock's with ``windows=True``."""
    kinds = WINDOWS_SEND_KINDS if windows else PLAIN_SEND_KINDS
    return fault_schedules(kinds, max_size, max_short)


def recv_schedules(max_size: int = 30, max_short: int = 64) -> st.SearchStrategy[list[Fault]]:
    """Schedules for ``recv`` / ``recv_into``: short reads, would-block, EINTR."""
    return fault_schedules(PLAIN_RECV_KINDS, max_size, max_short)
