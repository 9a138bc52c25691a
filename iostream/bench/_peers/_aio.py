"""Running a coroutine on a fresh event loop, shared by the asyncio-based peers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from iostream.bench._peers.base import BenchError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def run(new_loop: LoopFactory, coroutine: Coroutine[Any, Any, None], timeout: float | None) -> None:
    """Run *coroutine* on a loop from *new_loop*; a timeout becomes :class:`BenchError`."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(coroutine, timeout))
    except asyncio.TimeoutError:
        raise BenchError(f"timed out after {timeout} s") from None
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def stream_limit(phases_until_sizes: list[int]) -> int:
    """Return a StreamReader limit: asyncio's default, or enough for the largest line."""
    default: int = 2**16
    return max([default] + [2 * size for size in phases_until_sizes])
