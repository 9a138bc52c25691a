"""asyncio's helpers inside coroutines on the native IOLoop, with no asyncio loop.

``IOLoop.run_sync`` runs a coroutine on iostream's own loop and poller;
``asyncio.sleep``, ``gather``, ``wait_for``, ``create_task`` and ``Event``
work inside it. A ``PeriodicCallback`` ticks on the same loop.
"""

from __future__ import annotations

import asyncio

from iostream import IOLoop
from iostream.periodic import PeriodicCallback

ticks: list[int] = []


async def worker(name: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return name


async def main() -> list[str]:
    ready = asyncio.Event()
    ticker = PeriodicCallback(lambda: ticks.append(1), 10)  # every 10 ms
    ticker.start()
    asyncio.get_running_loop().call_later(0.05, ready.set)
    await asyncio.wait_for(ready.wait(), timeout=10)
    names = list(await asyncio.gather(worker("b", 0.02), worker("a", 0.01)))
    task = asyncio.create_task(worker("c", 0))
    names.append(await task)
    ticker.stop()
    return names


loop = IOLoop()
print(loop.run_sync(main, timeout=30))
print("the periodic callback ran:", len(ticks) > 0)
loop.close()

# expected output:
# ['b', 'a', 'c']
# the periodic callback ran: True
