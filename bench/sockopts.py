"""Loopback throughput and sender CPU of plain non-blocking sockets, per sender socket option.

    python bench/sockopts.py                      # 512 MiB, 3 runs of each option set
    python bench/sockopts.py --mib 128 --runs 5 --no-pin

No library is involved: a sender process writes ``--mib`` MiB in 64 KiB
``send()`` calls on a non-blocking socket (epoll for writability, as an
event loop does), and a receiver process reads with ``recv_into`` a 256 KiB
buffer (epoll for readability). Only the sender's options change:

- ``default``: what a fresh socket has;
- ``nodelay``: ``TCP_NODELAY`` (Nagle off);
- ``lowat``: ``TCP_NOTSENT_LOWAT`` = 16 KiB, or ``--lowat`` bytes (the
  socket is writable only while less than that is queued and not yet sent);
- ``both``: the two together (what trio's ``SocketStream`` sets on every
  TCP stream).

Each run reports MiB/s (the sender's first ``send`` to the receiver's last
byte), the CPU seconds of each side (``getrusage``), what the sender did:
``send`` calls, ``EAGAIN``s, ``epoll_wait`` sleeps and context switches, and
the cores other processes used meanwhile (the benchmark's foreign load, see
``iostream/bench/_load.py``; above ~0.25 the run was disturbed). By default
the two processes are pinned to different cores (the receiver to core 0,
the sender to core 1) so the scheduler cannot put them on one core for some
runs and on two for others. The kernel's
``tcp_autocorking`` and ``tcp_notsent_lowat`` sysctls are printed, as they
change the picture (see bench/README.md, "The write path").
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iostream.bench._load import LoadMeter

CHUNK = 64 * 1024
RECV = 256 * 1024
LOWAT = 16 * 1024

#: TCP_NOTSENT_LOWAT: Linux 3.12+; the socket module has no name for it before Python 3.12
#: (Linux's value is 25).
_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)

OPTIONS: dict[str, tuple[bool, bool]] = {
    "default": (False, False),
    "nodelay": (True, False),
    "lowat": (False, True),
    "both": (True, True),
}


@dataclass
class Run:
    """One transfer's measurements."""

    option: str
    mib_s: float
    sender_cpu: float
    receiver_cpu: float
    sends: int
    eagain: int
    sleeps: int
    switches: int
    foreign: float | None


def _cpu() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


def _pin(core: int | None) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})


def _receive(listener: socket.socket, total: int, report: int, core: int | None) -> None:
    """Child: accept, read *total* bytes, write ``end_time cpu`` to the *report* fd."""
    _pin(core)
    conn, _ = listener.accept()
    listener.close()
    conn.setblocking(False)
    buffer = bytearray(RECV)
    view = memoryview(buffer)
    epoll = select.epoll()
    epoll.register(conn.fileno(), select.EPOLLIN)
    cpu0, _ = _cpu()
    got = 0
    while got < total:
        try:
            n = conn.recv_into(view)
        except BlockingIOError:
            epoll.poll()
            continue
        if not n:
            break
        got += n
    ended = time.perf_counter()
    cpu1, _ = _cpu()
    os.write(report, f"{ended} {cpu1 - cpu0} {got}\n".encode())
    conn.close()


def _send(
    sock: socket.socket, data: memoryview, total: int
) -> tuple[float, float, int, int, int, int]:
    """Send *total* bytes of *data* in CHUNK sends; return start time, CPU and counters."""
    epoll = select.epoll()
    epoll.register(sock.fileno(), select.EPOLLOUT)
    send = sock.send
    sends = eagain = sleeps = 0
    cpu0, switches0 = _cpu()
    started = time.perf_counter()
    offset = 0
    while offset < total:
        sends += 1
        try:
            offset += send(data[offset : offset + CHUNK])
        except BlockingIOError:
            eagain += 1
            sleeps += 1
            epoll.poll()
    cpu1, switches1 = _cpu()
    epoll.close()
    return started, cpu1 - cpu0, sends, eagain, sleeps, switches1 - switches0


def one_run(option: str, total: int, data: memoryview, pin: bool, lowat_bytes: int = LOWAT) -> Run:
    """Transfer *total* bytes once with the sender options named *option*."""
    nodelay, lowat = OPTIONS[option]
    meter = LoadMeter()
    meter.start()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the receiver
        os.close(read_end)
        try:
            _receive(listener, total, write_end, 0 if pin else None)
        finally:
            os._exit(0)
    os.close(write_end)
    listener.close()
    _pin(1 if pin else None)
    sock = socket.create_connection(("127.0.0.1", port))
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if lowat:
        sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, lowat_bytes)
    sock.setblocking(False)
    started, cpu, sends, eagain, sleeps, switches = _send(sock, data, total)
    with os.fdopen(read_end) as report:
        ended_s, receiver_cpu_s, got_s = report.readline().split()
    sock.close()
    os.waitpid(pid, 0)
    foreign = meter.foreign()
    if int(got_s) != total:
        raise RuntimeError(f"receiver got {got_s} of {total} bytes")
    seconds = float(ended_s) - started
    return Run(
        option,
        total / (1 << 20) / seconds,
        cpu,
        float(receiver_cpu_s),
        sends,
        eagain,
        sleeps,
        switches,
        foreign,
    )


def _sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/net/ipv4/{name}", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    """Run every option set ``--runs`` times, interleaved; print each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB per transfer (default 512)")
    parser.add_argument("--runs", type=int, default=3, help="runs per option set (default 3)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    parser.add_argument(
        "--lowat", type=int, default=LOWAT, help=f"TCP_NOTSENT_LOWAT bytes (default {LOWAT})"
    )
    parser.add_argument(
        "--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS), metavar="SET"
    )
    args = parser.parse_args(argv)
    if args.mib < 1 or args.runs < 1 or args.lowat < 1:
        parser.error("--mib, --runs and --lowat must be positive")
    if not hasattr(select, "epoll") or not hasattr(os, "fork"):
        print("sockopts: needs Linux (epoll, fork)", file=sys.stderr)
        return 2
    total = args.mib << 20
    data = memoryview(os.urandom(CHUNK) * (total // CHUNK))
    print(
        f"{args.mib} MiB per run, {CHUNK // 1024} KiB sends, lowat={args.lowat}, "
        f"pinned={not args.no_pin}, "
        f"tcp_autocorking={_sysctl('tcp_autocorking')}, "
        f"tcp_notsent_lowat={_sysctl('tcp_notsent_lowat')}, "
        f"loadavg={os.getloadavg()[0]:.2f}"
    )
    header = (
        "option   MiB/s  send-CPU-s  recv-CPU-s   sends  EAGAIN  sleeps  ctx-switches"
        "  foreign-cores"
    )
    print(header)
    runs: list[Run] = []
    for _ in range(args.runs):
        for option in args.options:
            run = one_run(option, total, data, not args.no_pin, args.lowat)
            runs.append(run)
            print(
                f"{run.option:8} {run.mib_s:6.0f}  {run.sender_cpu:10.3f}  "
                f"{run.receiver_cpu:10.3f}  {run.sends:6}  {run.eagain:6}  {run.sleeps:6}  "
                f"{run.switches:12}  {run.foreign if run.foreign is not None else '?':>13}",
                flush=True,
            )
    print("\nmedians:")
    print(header)
    for option in args.options:
        mine = [run for run in runs if run.option == option]

        def med(attr: str, mine: list[Run] = mine) -> float:
            return float(statistics.median(getattr(run, attr) for run in mine))

        print(
            f"{option:8} {med('mib_s'):6.0f}  {med('sender_cpu'):10.3f}  "
            f"{med('receiver_cpu'):10.3f}  {med('sends'):6.0f}  {med('eagain'):6.0f}  "
            f"{med('sleeps'):6.0f}  {med('switches'):12.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
