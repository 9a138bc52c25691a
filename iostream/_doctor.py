"""``python -m iostream doctor``: probe every poller with every fd kind; recommend one.

For each poller available here and each kind of fd this OS has — a TCP
socket pair, a UNIX socket pair, a pipe, a FIFO, a pty, ``/dev/tty`` (when
this process has a controlling terminal), a regular file and
``/dev/null`` — the probe checks, on a fresh poller and fresh fds:

- that ``register`` accepts the fd (else: *refused*; then the same probe
  runs again through :class:`~iostream.pollers.fallback.FallbackPoller`,
  and if that passes the cell says *fallback*: the library watches that fd
  another way, see docs/pollers.md, "Per-fd fallback");
- that WRITE is reported on a writable fd, and READ on a readable one (and
  not before there is data);
- that a hang-up (the other end closed) is reported: ERROR, or READ
  followed by a read that sees the end (as select reports it, and the contract
  allows);
- that no fd is reported twice in one ``poll``, and no unregistered fd at
  all (*wrong event*).

An event that does not come within ``--timeout`` (1 s) is a *hang*; so is a
``poll`` that does not return within its timeout (each probe runs in a
worker thread, abandoned if it is stuck). A last column checks that a
forked child (POSIX) gets a working poller, and that the child's changes
do not reach the parent's.

The table (poller x fd kind: ok / refused / fallback / wrong event / hang /
error / n/a) is followed by the details of every cell that is not plainly
ok, the pollers not available here and why, and the recommended
``IOSTREAM_POLLER``: the best poller (in :func:`iostream.pollers.available`
order) that fails no probe. ``--json`` prints the same as one JSON object.

Exit status: 1 when the default poller (``IOSTREAM_POLLER``, else the best
available) fails a probe that another poller passes (*fallback* counts as
passing: the library handles it); else 0. 2 for a bad argument.

The automatic choice's own quick check (one socket pair, READ) is
``iostream.pollers``' socket probe, run once per backend per process; the
doctor is the thorough one, run on demand.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import platform
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iostream import pollers
from iostream._version import __version__
from iostream.pollers import ERROR, READ, WRITE, Poller
from iostream.pollers.fallback import FallbackPoller

__all__ = [
    "DEFAULT_TIMEOUT",
    "FAILED",
    "FALLBACK",
    "FD_KINDS",
    "FORK",
    "HANG",
    "NOT_HERE",
    "OK",
    "REFUSED",
    "RESULTS",
    "WRONG",
    "Cell",
    "Report",
    "build_parser",
    "fork_cell",
    "format_report",
    "main",
    "probe_cell",
    "run_doctor",
]

#: The results a cell can have, from best to worst.
OK = "ok"
FALLBACK = "fallback"
NOT_HERE = "n/a"
REFUSED = "refused"
WRONG = "wrong event"
HANG = "hang"
FAILED = "error"
RESULTS = (OK, FALLBACK, NOT_HERE, REFUSED, WRONG, HANG, FAILED)

#: Results that count as passing a probe (fallback: the library copes).
_PASSING = frozenset({OK, FALLBACK})
#: Results that count as failing it (n/a is neither).
_FAILING = frozenset({REFUSED, WRONG, HANG, FAILED})

#: The fork column's name in the table.
FORK = "fork"

#: Default seconds to wait for an event that should come at once.
DEFAULT_TIMEOUT = 1.0


@dataclass
class Cell:
    """One probe's outcome: a result from :data:`RESULTS` and what it saw."""

    result: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        """The cell as a JSON object."""
        return {"result": self.result, "detail": self.detail}


class _NotHere(Exception):
    """This fd kind does not exist here (the message says why)."""


# -- fd kinds ------------------------------------------------------------------


@dataclass
class _Subject:
    """The fds of one kind, made fresh for one probe.

    ``write_fd`` is probed for WRITE, ``read_fd`` for READ (after ``feed``
    makes it readable, unless ``always_ready``) and for a hang-up (after
    ``drain`` and ``hang_up``; ``saw_eof`` then says whether a read sees the
    end). ``register_only`` fds are only registered for READ and
    unregistered (a terminal we must not read from).
    """

    write_fd: int | None = None
    read_fd: int | None = None
    feed: Callable[[], None] | None = None
    drain: Callable[[], None] | None = None
    hang_up: Callable[[], None] | None = None
    saw_eof: Callable[[], bool] | None = None
    always_ready: bool = False
    register_only: int | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in self.closers:
            with contextlib.suppress(OSError):
                closer()


def _closer(fd: int) -> Callable[[], None]:
    """Closes *fd* once (a hang-up may have closed it already)."""
    done = False

    def close() -> None:
        nonlocal done
        if not done:
            done = True
            os.close(fd)

    return close


def _read_eof(fd: int) -> bool:
    """True if reading *fd* now sees the end (b"", or EIO as a pty's slave gives)."""
    try:
        return os.read(fd, 1024) == b""
    except OSError as exc:
        # Linux: reading a pty's slave after the master closed fails with EIO.
        return exc.errno in (errno.EIO, errno.ECONNRESET)


def _writer(fd: int, data: bytes) -> Callable[[], None]:
    """Writes *data* to *fd* (a socket's fd included: POSIX write() works on it)."""

    def write() -> None:
        os.write(fd, data)

    return write


def _drain_fd(fd: int) -> None:
    for _ in range(100):
        try:
            if not os.read(fd, 65536):
                return
        except (BlockingIOError, InterruptedError):
            return


def _socket_subject(a: socket.socket, b: socket.socket) -> _Subject:
    a.setblocking(False)
    b.setblocking(False)
    subject = _Subject(write_fd=b.fileno(), read_fd=b.fileno())

    def feed() -> None:
        a.send(b"ping")

    subject.feed = feed
    subject.drain = lambda: _drain_fd(b.fileno())
    subject.hang_up = a.close
    subject.saw_eof = lambda: _read_eof(b.fileno())
    subject.closers = [a.close, b.close]
    return subject


def _tcp() -> _Subject:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return _socket_subject(a, b)


def _unix() -> _Subject:
    if not hasattr(socket, "AF_UNIX"):
        raise _NotHere("no AF_UNIX sockets on this platform")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return _socket_subject(a, b)


def _pipe_subject(r: int, w: int) -> _Subject:
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    close_w = _closer(w)
    subject = _Subject(write_fd=w, read_fd=r)
    subject.feed = _writer(w, b"ping")
    subject.drain = lambda: _drain_fd(r)
    subject.hang_up = close_w
    subject.saw_eof = lambda: _read_eof(r)
    subject.closers = [_closer(r), close_w]
    return subject


def _pipe() -> _Subject:
    if sys.platform == "win32":
        raise _NotHere("select() on Windows watches sockets only")
    return _pipe_subject(*os.pipe())


def _fifo() -> _Subject:
    if not hasattr(os, "mkfifo"):
        raise _NotHere("no FIFOs (os.mkfifo) on this platform")
    tmp = tempfile.TemporaryDirectory(prefix="iostream-doctor-")
    try:
        path = os.path.join(tmp.name, "fifo")
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except BaseException:
        tmp.cleanup()
        raise
    subject = _pipe_subject(r, w)
    subject.closers.append(tmp.cleanup)
    return subject


def _pty() -> _Subject:
    if not hasattr(os, "openpty"):
        raise _NotHere("no ptys (os.openpty) on this platform")
    master, slave = os.openpty()
    os.set_blocking(slave, False)
    close_master = _closer(master)
    subject = _Subject(write_fd=slave, read_fd=slave)
    # A whole line: the terminal is in canonical mode, so the slave is
    # readable only once the line ends.
    subject.feed = _writer(master, b"ping\n")
    subject.drain = lambda: _drain_fd(slave)
    subject.hang_up = close_master
    subject.saw_eof = lambda: _read_eof(slave)
    subject.closers = [_closer(slave), close_master]
    return subject


def _tty() -> _Subject:
    if sys.platform == "win32" or not hasattr(os, "O_NOCTTY"):
        raise _NotHere("no /dev/tty on this platform")
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise _NotHere(f"cannot open /dev/tty ({exc.strerror}): no controlling terminal") from None
    # The user's terminal: writable (probed), registered for READ (that is
    # where macOS kqueue says EINVAL), but never read, fed or hung up.
    return _Subject(write_fd=fd, register_only=fd, closers=[_closer(fd)])


def _regular_file() -> _Subject:
    if sys.platform == "win32":
        raise _NotHere("select() on Windows watches sockets only")
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the subject
    fd = handle.fileno()
    return _Subject(write_fd=fd, read_fd=fd, always_ready=True, closers=[handle.close])


def _dev_null() -> _Subject:
    if sys.platform == "win32":
        raise _NotHere("select() on Windows watches sockets only")
    fd = os.open(os.devnull, os.O_RDWR)
    if not stat.S_ISCHR(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotHere(f"{os.devnull} is not a character device here")
    return _Subject(write_fd=fd, read_fd=fd, always_ready=True, closers=[_closer(fd)])


#: Each fd kind the doctor probes: column name -> a maker of fresh fds.
FD_KINDS: dict[str, Callable[[], _Subject]] = {
    "tcp": _tcp,
    "unix": _unix,
    "pipe": _pipe,
    "fifo": _fifo,
    "pty": _pty,
    "tty": _tty,
    "file": _regular_file,
    "devnull": _dev_null,
}


# -- probing -------------------------------------------------------------------


class _Refused(Exception):
    """``register`` refused the fd (the message says how)."""


def _bits(events: int) -> str:
    names = [name for name, bit in (("READ", READ), ("WRITE", WRITE)) if events & bit]
    if events & ERROR:
        names.append("ERROR")
    if events & ~(READ | WRITE | ERROR):
        names.append(f"{events & ~(READ | WRITE | ERROR):#x}")
    return "|".join(names) or "nothing"


class _Prober:
    """Runs the checks of one cell on one poller, collecting problems."""

    def __init__(self, poller: Poller, timeout: float) -> None:
        self.poller = poller
        self.timeout = timeout
        self.registered: set[int] = set()
        self.problems: list[tuple[str, str]] = []
        #: Why fds fell back, when the poller is a FallbackPoller.
        self.fallbacks: list[str] = []

    def register(self, fd: int, events: int, what: str) -> None:
        try:
            self.poller.register(fd, events)
        except (ValueError, OSError) as exc:
            raise _Refused(f"register for {what}: {exc}") from None
        self.registered.add(fd)
        if isinstance(self.poller, FallbackPoller):
            reason = self.poller.fallbacks.get(fd)
            if reason is not None and reason not in self.fallbacks:
                self.fallbacks.append(reason)

    def unregister(self, fd: int) -> None:
        self.registered.discard(fd)
        self.poller.unregister(fd)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        result = self.poller.poll(timeout)
        fds = [fd for fd, _ in result]
        if len(fds) != len(set(fds)):
            self.problems.append((WRONG, f"an fd reported twice in one poll: {result}"))
        stray = [fd for fd in fds if fd not in self.registered]
        if stray:
            self.problems.append((WRONG, f"reported fds that are not registered: {stray}"))
        return result

    def wait(self, fd: int) -> int | None:
        """The first events reported for *fd* within the timeout, or None.

        At least one poll is made, and one more (not waiting) after the
        deadline: a probe thread that the OS did not run for a while must
        not call an event that is there a hang.
        """
        deadline = time.monotonic() + self.timeout
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            for got, events in self.poll(min(max(remaining, 0.0), 0.25)):
                if got == fd:
                    return events
            if remaining <= 0:
                break
        return None

    def expect(self, fd: int, bit: int, what: str) -> int | None:
        events = self.wait(fd)
        if events is None:
            self.problems.append((HANG, f"{what}: not reported within {self.timeout:g} s"))
        elif not events & bit:
            self.problems.append((WRONG, f"{what}: got {_bits(events)}, not {_bits(bit)}"))
        return events

    def run(self, subject: _Subject) -> None:
        if subject.write_fd is not None:
            fd = subject.write_fd
            self.register(fd, WRITE, "WRITE")
            self.expect(fd, WRITE, "WRITE on a writable fd")
            self.unregister(fd)
        if subject.register_only is not None:
            fd = subject.register_only
            self.register(fd, READ, "READ")
            self.poll(0)
            self.unregister(fd)
        if subject.read_fd is None:
            return
        fd = subject.read_fd
        self.register(fd, READ, "READ")
        if not subject.always_ready:
            early = dict(self.poll(0)).get(fd, 0)
            if early & READ:
                self.problems.append((WRONG, "READ reported before there was any data"))
            assert subject.feed is not None
            subject.feed()
        self.expect(fd, READ, "READ on a readable fd")
        if subject.hang_up is not None and subject.drain and subject.saw_eof:
            subject.drain()
            subject.hang_up()
            events = self.wait(fd)
            if events is None:
                self.problems.append((HANG, f"hang-up: not reported within {self.timeout:g} s"))
            elif not events & (READ | ERROR):
                self.problems.append((WRONG, f"hang-up: got {_bits(events)}"))
            elif not events & ERROR and not subject.saw_eof():
                self.problems.append(
                    (WRONG, "hang-up: READ reported, but a read did not see the end")
                )
        self.unregister(fd)

    def verdict(self) -> Cell:
        if not self.problems:
            return Cell(OK)
        return Cell(self.problems[0][0], "; ".join(text for _, text in self.problems))


def _probe_once(make: Callable[[], Poller], kind: Callable[[], _Subject], timeout: float) -> Cell:
    """One cell on a fresh poller and fresh fds (no fallback)."""
    try:
        subject = kind()
    except _NotHere as exc:
        return Cell(NOT_HERE, str(exc))
    except OSError as exc:
        # Not the poller's doing (and the same for every poller): say why.
        return Cell(NOT_HERE, f"could not make one here: {exc}")
    try:
        poller = make()
        try:
            prober = _Prober(poller, timeout)
            prober.run(subject)
            cell = prober.verdict()
            if prober.fallbacks and cell.result == OK:
                more = len(prober.fallbacks) - 1
                also = (
                    f" (and {more} more fd{'s' if more > 1 else ''} of this kind)" if more else ""
                )
                cell = Cell(FALLBACK, prober.fallbacks[0] + also)
            return cell
        finally:
            poller.close()
    except _Refused as exc:
        return Cell(REFUSED, str(exc))
    except Exception as exc:
        return Cell(FAILED, f"{type(exc).__name__}: {exc}")
    finally:
        subject.close()


def _bounded(func: Callable[[], Cell], limit: float) -> Cell:
    """``func()`` in a worker thread; a HANG cell if it has not returned in *limit* s.

    Why a thread: a poller whose ``poll`` ignores its timeout would hang the
    doctor itself. A stuck thread is abandoned (a daemon), with its fds.
    """
    box: list[Cell] = []

    def target() -> None:
        try:
            box.append(func())
        except BaseException as exc:
            box.append(Cell(FAILED, f"{type(exc).__name__}: {exc}"))

    thread = threading.Thread(target=target, name="iostream-doctor-probe", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive() or not box:
        return Cell(HANG, f"poll() did not return within its timeout ({limit:g} s in all)")
    return box[0]


def probe_cell(cls: type[Poller], kind: str, timeout: float = DEFAULT_TIMEOUT) -> Cell:
    """Probe poller class *cls* with fd kind *kind* (a key of :data:`FD_KINDS`).

    A refused fd is probed again through :class:`FallbackPoller`: *fallback*
    if that passes, else *refused* with both reasons.
    """
    make_kind = FD_KINDS[kind]
    limit = 6 * timeout + 2.0
    cell = _bounded(lambda: _probe_once(cls, make_kind, timeout), limit)
    if cell.result != REFUSED:
        return cell
    through = _bounded(
        lambda: _probe_once(lambda: FallbackPoller(cls()), make_kind, timeout), limit
    )
    if through.result in (FALLBACK, OK):
        return Cell(FALLBACK, through.detail or cell.detail)
    return Cell(REFUSED, f"{cell.detail}; the fallback: {through.result} ({through.detail})")


# -- fork ----------------------------------------------------------------------


def _fork_probe(cls: Callable[[], Poller], timeout: float) -> Cell:
    """A forked child gets a working poller, and its changes stay its own."""
    if not hasattr(os, "fork") or sys.platform == "win32":
        return Cell(NOT_HERE, "no fork() on this platform")
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    rfd, wfd = os.pipe()
    try:
        poller = cls()
    except Exception as exc:
        for closer in (a.close, b.close, lambda: os.close(rfd), lambda: os.close(wfd)):
            closer()
        return Cell(FAILED, f"{type(exc).__name__}: {exc}")
    try:
        try:
            poller.register(b, READ)
        except (ValueError, OSError) as exc:
            return Cell(REFUSED, f"register for READ: {exc}")
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork() in a process with threads; the
            # child only polls, writes one message and _exit()s.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (reports through the pipe)
            _fork_child(poller, b, wfd, timeout)
        os.close(wfd)
        wfd = -1
        # Generous: the child only has to start and make one probe, but a
        # loaded machine may take a while to run it.
        answer_within = 3 * timeout + 5.0
        ready, _, _ = select.select([rfd], [], [], answer_within)
        message = os.read(rfd, 4000).decode(errors="replace") if ready else ""
        if not ready:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not ready:
            return Cell(HANG, f"the forked child did not answer within {answer_within:g} s")
        if message != "ok":
            result, _, detail = message.partition(":")
            return Cell(result if result in RESULTS else FAILED, f"in the child: {detail.strip()}")
        # The parent: the child unregistered b in its own set, not in ours.
        a.send(b"x")
        prober = _Prober(poller, timeout)
        prober.registered.add(b.fileno())
        prober.expect(b.fileno(), READ, "in the parent, READ on an fd the child unregistered")
        return prober.verdict()
    except Exception as exc:
        return Cell(FAILED, f"{type(exc).__name__}: {exc}")
    finally:
        poller.close()
        a.close()
        b.close()
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


def _fork_child(poller: Poller, b: socket.socket, wfd: int, timeout: float) -> None:
    """In the forked child: use the inherited poller; report; never return."""
    message = "error: no report"
    try:
        c, d = socket.socketpair()
        d.setblocking(False)
        poller.unregister(b)
        poller.register(d, READ)
        c.send(b"child")
        prober = _Prober(poller, timeout)
        prober.registered.add(d.fileno())
        prober.expect(d.fileno(), READ, "READ on a new fd in the child")
        if prober.problems:
            cell = prober.verdict()
            message = f"{cell.result}: {cell.detail}"
        else:
            message = "ok"
    except BaseException as exc:
        message = f"error: {type(exc).__name__}: {exc}"
    finally:
        try:
            os.write(wfd, message.encode()[:4000])
        finally:
            os._exit(0)


def fork_cell(cls: type[Poller], timeout: float = DEFAULT_TIMEOUT) -> Cell:
    """The fork column for poller class *cls* (through the fallback if it refuses a socket)."""
    cell = _fork_probe(cls, timeout)
    if cell.result != REFUSED:
        return cell
    through = _fork_probe(lambda: FallbackPoller(cls()), timeout)
    if through.result == OK:
        return Cell(FALLBACK, f"{cell.detail}; the fallback watched it")
    return Cell(REFUSED, f"{cell.detail}; the fallback: {through.result} ({through.detail})")


# -- the report ----------------------------------------------------------------


@dataclass
class Report:
    """What the doctor found (see :func:`run_doctor`)."""

    columns: list[str]
    cells: dict[str, dict[str, Cell]]
    default: str | None
    default_source: str
    recommended: str | None
    unavailable: dict[str, str]
    #: Pollers probed here that the automatic choice skips, with why.
    skipped: dict[str, str]
    problems: list[str]
    exit_status: int

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready object."""
        return {
            "iostream": __version__,
            "python": platform.python_version(),
            "platform": sys.platform,
            "columns": self.columns,
            "default": self.default,
            "default_source": self.default_source,
            "recommended": self.recommended,
            "env_var": pollers.ENV_VAR,
            "pollers": {
                name: {column: cell.to_json() for column, cell in row.items()}
                for name, row in self.cells.items()
            },
            "unavailable": self.unavailable,
            "skipped_by_automatic_choice": self.skipped,
            "problems": self.problems,
            "exit_status": self.exit_status,
        }


def _default_poller(backends: Mapping[str, type[Poller]]) -> tuple[str | None, str]:
    """The poller the library would use here, and why (or None and the error)."""
    value = os.environ.get(pollers.ENV_VAR, "")
    source = f"{pollers.ENV_VAR}={value}" if value.strip() else "default: best available"
    try:
        name = pollers.choose().name
    except (ValueError, RuntimeError) as exc:
        return None, f"{pollers.ENV_VAR}={value!r} is not usable: {exc}"
    if name not in backends:
        return None, f"{source} selects {name!r}, which was not probed"
    return name, source


def _failures(row: Mapping[str, Cell]) -> int:
    return sum(cell.result in _FAILING for cell in row.values())


def run_doctor(
    backends: Mapping[str, type[Poller]] | None = None,
    *,
    default: str | None = None,
    kinds: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    fork: bool = True,
) -> Report:
    """Probe *backends* (name -> class; default: every poller available here).

    *default* is the name of the poller the library would use (default:
    :func:`iostream.pollers.choose`, so ``IOSTREAM_POLLER`` applies); *kinds*
    the fd kinds to probe (default: all of :data:`FD_KINDS`); *fork* adds
    the fork column. Probes run one after another, each bounded in time.
    """
    if backends is None:
        backends = {name: pollers.BACKENDS[name] for name in pollers.available()}
    kinds = list(FD_KINDS) if kinds is None else list(kinds)
    for kind in kinds:
        if kind not in FD_KINDS:
            raise ValueError(f"unknown fd kind {kind!r}; known: {', '.join(FD_KINDS)}")
    if default is None:
        default_name, default_source = _default_poller(backends)
    else:
        default_name, default_source = default, "given"
    columns = [*kinds, FORK] if fork else list(kinds)
    cells: dict[str, dict[str, Cell]] = {}
    for name, cls in backends.items():
        row = {kind: probe_cell(cls, kind, timeout) for kind in kinds}
        if fork:
            if any(
                cell.result == HANG and "did not return" in cell.detail for cell in row.values()
            ):
                row[FORK] = Cell(HANG, "not probed: poll() ignored its timeout above")
            else:
                row[FORK] = fork_cell(cls, timeout)
        cells[name] = row

    problems: list[str] = []
    if default_name is None:
        problems.append(default_source)
    else:
        for column in columns:
            mine = cells[default_name][column]
            if mine.result not in _FAILING:
                continue
            passing = [
                name
                for name, row in cells.items()
                if name != default_name and row[column].result in _PASSING
            ]
            if passing:
                problems.append(
                    f"the default poller {default_name!r} fails {column} ({mine.result}), "
                    f"which {', '.join(passing)} pass{'es' if len(passing) == 1 else ''}"
                )
    passing_all = [name for name, row in cells.items() if _failures(row) == 0]
    if passing_all:
        recommended: str | None = passing_all[0]
    elif cells:
        recommended = min(cells, key=lambda name: _failures(cells[name]))
    else:
        recommended = None
    reasons = pollers.unavailable_reasons()
    unavailable = {name: reason for name, reason in reasons.items() if name not in backends}
    # Probed here, yet not offered by the automatic choice (it failed the
    # library's own socket probe): say so next to the table.
    skipped = {
        name: reason
        for name, reason in reasons.items()
        if name in backends and backends[name] is pollers.BACKENDS.get(name)
    }
    return Report(
        columns=columns,
        cells=cells,
        default=default_name,
        default_source=default_source,
        recommended=recommended,
        unavailable=unavailable,
        skipped=skipped,
        problems=problems,
        exit_status=1 if problems else 0,
    )


def format_report(report: Report) -> str:
    """The report as the table and notes the command prints."""
    lines = [
        f"iostream {__version__} doctor on {sys.platform} "
        f"(Python {platform.python_version()}): each poller x each fd kind",
        "",
    ]
    names = list(report.cells)
    labels = {name: name + ("*" if name == report.default else "") for name in names}
    first = max([len("poller"), *(len(label) for label in labels.values())])
    widths = {
        column: max([len(column), *(len(report.cells[n][column].result) for n in names)])
        for column in report.columns
    }
    header = ["poller".ljust(first), *(column.ljust(widths[column]) for column in report.columns)]
    lines.append("  ".join(header).rstrip())
    for name in names:
        row = report.cells[name]
        cells = [row[column].result.ljust(widths[column]) for column in report.columns]
        lines.append("  ".join([labels[name].ljust(first), *cells]).rstrip())
    lines.append("")
    if report.default is not None:
        lines.append(f"* the default poller here ({report.default_source})")
    notes: list[str] = []
    absent = set()
    for column in report.columns:
        column_cells = [report.cells[name][column] for name in names]
        if len(names) > 1 and all(cell.result == NOT_HERE for cell in column_cells):
            absent.add(column)
            details = sorted({cell.detail for cell in column_cells})
            notes.append(f"  {column}: n/a everywhere: {'; '.join(details)}")
    for name in names:
        notes += [
            f"  {name} x {column}: {cell.result}: {cell.detail}"
            for column, cell in report.cells[name].items()
            if cell.result != OK and cell.detail and column not in absent
        ]
    if notes:
        lines += ["", "Details:", *notes]
    if report.skipped:
        lines += ["", "Skipped by the automatic choice:"]
        lines += [f"  {name}: {reason}" for name, reason in report.skipped.items()]
    if report.unavailable:
        lines += ["", "Not available here:"]
        lines += [f"  {name}: {reason}" for name, reason in report.unavailable.items()]
    lines.append("")
    if report.problems:
        lines += ["Problems:", *(f"  {problem}" for problem in report.problems), ""]
    if report.recommended is None:
        lines.append("No poller could be probed.")
    else:
        verdict = (
            "fails no probe"
            if _failures(report.cells[report.recommended]) == 0
            else ("fails the fewest probes")
        )
        same = " (the default already)" if report.recommended == report.default else ""
        lines.append(
            f"Recommended: {pollers.ENV_VAR}={report.recommended}{same}: "
            f"the best poller here that {verdict}."
        )
    return "\n".join(lines) + "\n"


# -- the command -----------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The ``doctor`` command's argument parser."""
    from iostream._cli import command_parser

    parser = command_parser(
        prog or _prog(),
        description="Probe every poller available here with every kind of fd this OS has "
        "(TCP and UNIX socket pairs, pipe, FIFO, pty, /dev/tty, regular file, /dev/null) "
        "and a forked child; print the table and the IOSTREAM_POLLER to use.",
        epilog="exit status: 0 fine; 1 the default poller fails a probe another poller "
        "passes; 2 bad argument.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for an event that should come at once "
        f"(default: {DEFAULT_TIMEOUT:g})",
    )
    return parser


def _prog() -> str:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0 in ("_doctor.py",):
        return f"{os.path.basename(sys.executable) or 'python'} -m iostream._doctor"
    from iostream._cli import prog_name

    return f"{prog_name()} doctor"


def main(
    argv: Sequence[str] | None = None,
    *,
    backends: Mapping[str, type[Poller]] | None = None,
    default: str | None = None,
) -> int:
    """Run ``doctor`` with *argv* (the arguments after ``doctor``); return the exit status.

    *backends* and *default* replace the pollers probed and the default's
    name (for tests: a deliberately broken poller class).
    """
    from iostream._cli import CLIError, parse_command_args, write_stdout

    args = parse_command_args(build_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args  # --help, or a usage error (reported)
    report = run_doctor(backends, default=default, timeout=args.timeout)
    try:
        if args.json:
            write_stdout(json.dumps(report.to_json(), indent=2) + "\n")
        else:
            write_stdout(format_report(report))
    except CLIError as exc:
        print(f"iostream: error: {exc}", file=sys.stderr)
        return exc.code
    return report.exit_status


@contextlib.contextmanager
def _exit_on_interrupt() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    with _exit_on_interrupt():
        raise SystemExit(main())
