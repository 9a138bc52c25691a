"""What one echo round trip costs asyncio streams on each event loop, in counts.

    python bench/asyncio_loop_cost.py                       # calls per round trip
    python bench/asyncio_loop_cost.py --strace              # + system calls (strace -c -f)
    python bench/asyncio_loop_cost.py --callgrind           # + instructions (callgrind)
    python bench/asyncio_loop_cost.py --loops stock iostream:poll --conns 1

The same asyncio streams code (``readuntil``, ``write``, ``await drain()``
on one end, ``write``, ``drain``, ``readexactly`` on the other; 64-byte
lines, one in flight per connection) runs *conns* connected socket pairs,
both ends in one process, on each loop:

- ``stock``: ``asyncio.SelectorEventLoop(selectors.EpollSelector())``
  (asyncio's default loop on Linux), or ``DefaultSelector`` elsewhere;
- ``iostream:<poller>``: ``iostream.asyncio.new_event_loop(<poller>)``.

Everything runs in one process over socket pairs, so the sequence of events
is the same on every run and every machine load: the counts are exact where
wall-clock rates (``python -m iostream bench``) move with whatever else the
machine runs. Each count is taken at two sizes and the difference divided by
the difference in round trips, so start-up (imports, loop and connection
set-up) is excluded:

- selector calls (``select``, ``modify``, ``register``, ``unregister``) and
  the epoll object's own calls (``poll``, ``register``, ``modify``,
  ``unregister``: each one system call), counted by wrapping them;
- Python function calls (cProfile's count, C functions included);
- with ``--strace``: system calls of the whole process (``strace -c -f``);
- with ``--callgrind``: user-space instructions (``valgrind --tool=callgrind``).

The mmap/mremap/munmap rows are glibc's malloc, not the loop: asyncio's
transports read with ``recv(256 KiB)``, and glibc serves a 256 KiB request
with a fresh mmap (then mremap to shrink the bytes object, munmap to free
it: three system calls per read) until its dynamic mmap threshold has been
raised by freeing some large mmapped block (malloc(3), M_MMAP_THRESHOLD).
Whether that happened depends on what the process allocated before, not on
the selector: here, importing ``iostream.asyncio`` happens to raise it, so
a ``stock`` child that imports it too (or runs with
``MALLOC_MMAP_THRESHOLD_=1048576``) shows no such calls. It is one source of
run-to-run differences between asyncio-based peers in ``python -m iostream
bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: One echo line: 63 bytes and the delimiter.
LINE = b"x" * 63 + b"\n"


class _CountingEpoll:
    """A stand-in for a ``select.epoll`` object that counts the calls made on it."""

    def __init__(self, epoll: Any, counts: Counter[str]) -> None:
        self._epoll = epoll
        self._counts = counts

    def poll(self, *args: Any) -> Any:
        self._counts["epoll.poll"] += 1
        return self._epoll.poll(*args)

    def register(self, *args: Any) -> Any:
        self._counts["epoll.register"] += 1
        return self._epoll.register(*args)

    def modify(self, *args: Any) -> Any:
        self._counts["epoll.modify"] += 1
        return self._epoll.modify(*args)

    def unregister(self, *args: Any) -> Any:
        self._counts["epoll.unregister"] += 1
        return self._epoll.unregister(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._epoll, name)


def _count_selector(selector: selectors.BaseSelector, counts: Counter[str]) -> None:
    """Count *selector*'s select/modify/register/unregister calls, and its epoll's."""
    for name in ("select", "modify", "register", "unregister"):
        method = getattr(selector, name)

        def counted(*args: Any, _m: Any = method, _n: str = name, **kwargs: Any) -> Any:
            counts[f"selector.{_n}"] += 1
            return _m(*args, **kwargs)

        setattr(selector, name, counted)
    if isinstance(selector, selectors.EpollSelector):
        selector._selector = _CountingEpoll(selector._selector, counts)  # type: ignore[attr-defined]
        return
    poller = getattr(getattr(selector, "poller", None), "primary", None)
    if poller is not None and hasattr(poller, "_epoll"):
        poller._epoll = _CountingEpoll(poller._epoll, counts)


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    """``stock`` or ``iostream:<poller>`` (see the module docstring)."""
    if name == "stock":
        cls = getattr(selectors, "EpollSelector", selectors.DefaultSelector)
        return asyncio.SelectorEventLoop(cls())
    if name.startswith("iostream:"):
        from iostream.asyncio import new_event_loop

        return new_event_loop(name.split(":", 1)[1])
    raise SystemExit(f"--loops: unknown loop {name!r} (stock or iostream:<poller>)")


async def echo(rounds: int, conns: int) -> None:
    """*rounds* round trips in all, over *conns* socket pairs, with asyncio streams."""

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readuntil(b"\n")
                writer.write(line)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(n):
            writer.write(LINE)
            await writer.drain()
            if await reader.readexactly(len(LINE)) != LINE:
                raise RuntimeError("the echo is not the line sent")
        writer.close()

    if rounds % conns:
        raise SystemExit(f"rounds ({rounds}) must be a multiple of conns ({conns})")
    tasks = []
    for _ in range(conns):
        a, b = socket.socketpair()
        client_ends = await asyncio.open_connection(sock=a)
        server_ends = await asyncio.open_connection(sock=b)
        tasks.append(asyncio.ensure_future(server(*server_ends)))
        tasks.append(asyncio.ensure_future(client(*client_ends, rounds // conns)))
    await asyncio.gather(*tasks)


def run_counted(loop_name: str, rounds: int, conns: int, profile: bool) -> dict[str, int]:
    """Run one echo on a new loop; return the counts (see the module docstring)."""
    counts: Counter[str] = Counter()
    loop = make_loop(loop_name)
    try:
        _count_selector(loop._selector, counts)  # type: ignore[attr-defined]
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        loop.run_until_complete(echo(rounds, conns))
        if profiler is not None:
            profiler.disable()
            counts["python calls"] = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
    finally:
        loop.close()
    return dict(counts)


#: System calls shown one by one with ``--strace`` (the rest are in the total).
SYSCALLS = ("epoll_wait", "epoll_ctl", "recvfrom", "sendto", "mmap", "mremap", "munmap")


def _external(tool: str, loop_name: str, rounds: int, conns: int, workdir: str) -> dict[str, int]:
    """System calls (strace) or instructions (callgrind) of one run in a child process."""
    out = os.path.join(workdir, f"{tool}-{loop_name.replace(':', '-')}-{rounds}")
    child = [sys.executable, __file__, "--child", loop_name, str(rounds), str(conns)]
    if tool == "strace":
        cmd = ["strace", "-c", "-f", "-o", out, *child]
    else:
        cmd = ["valgrind", "--tool=callgrind", "-q", f"--callgrind-out-file={out}", *child]
    subprocess.run(cmd, check=True)
    counts: dict[str, int] = {}
    with open(out, encoding="utf-8") as result:
        for line in result:
            fields = line.split()
            if tool == "strace" and len(fields) >= 5 and fields[3].isdigit():
                # % time, seconds, usecs/call, calls, [errors,] syscall
                name = fields[-1]
                if name == "total":
                    counts["syscalls (total)"] = int(fields[3])
                elif name in SYSCALLS:
                    counts[f"syscall {name}"] = int(fields[3])
            if tool == "callgrind" and line.startswith("totals:"):
                counts["instructions"] = int(fields[1])
    if not counts:
        raise RuntimeError(f"{out}: no total in {tool}'s output")
    return counts


def main() -> None:
    """Print the counts per round trip for each loop (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--loops", nargs="+", default=["stock", "iostream:epoll"])
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--rounds", type=int, nargs=2, default=[2000, 6000], metavar=("N1", "N2"))
    parser.add_argument("--strace", action="store_true", help="count system calls too")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        loop_name, rounds, conns = args.child
        run_counted(loop_name, int(rounds), int(conns), profile=False)
        return
    n1, n2 = args.rounds
    tools = [t for t in ("strace", "callgrind") if getattr(args, t)]
    for tool in tools:
        if shutil.which("valgrind" if tool == "callgrind" else tool) is None:
            raise SystemExit(f"--{tool}: {tool} is not installed")
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for loop_name in args.loops:
            small = run_counted(loop_name, n1, args.conns, profile=True)
            large = run_counted(loop_name, n2, args.conns, profile=True)
            for tool in tools:
                small.update(_external(tool, loop_name, n1, args.conns, workdir))
                large.update(_external(tool, loop_name, n2, args.conns, workdir))
            table[loop_name] = {
                key: (large.get(key, 0) - small.get(key, 0)) / (n2 - n1)
                for key in sorted(set(small) | set(large))
            }
    if args.json:
        print(json.dumps(table, indent=2))
        return
    keys = sorted({key for row in table.values() for key in row})
    print(f"per round trip ({args.conns} conns, {n1} -> {n2} round trips)")
    print(f"{'':22}" + "".join(f"{name:>18}" for name in table))
    for key in keys:
        print(f"{key:22}" + "".join(f"{row.get(key, 0.0):18.2f}" for row in table.values()))


if __name__ == "__main__":
    main()
