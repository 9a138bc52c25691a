"""Pre-forked worker processes, with Tornado's ``tornado.process`` semantics.

:func:`fork_processes` turns the calling process into a supervisor of
*num_processes* workers. Each worker returns from the call with its task id
(0 .. n-1) and goes on to serve, typically on listening sockets made before
the fork (:func:`iostream.netutil.bind_sockets`) so that the kernel spreads
connections over the workers. The supervisor never returns:

- a worker that dies by a signal or exits with a non-zero status is
  restarted with the same task id (at most *max_restarts* times in all,
  default 100; past that, the other workers are sent SIGTERM — SIGKILL
  after :data:`STOP_GRACE_PERIOD` seconds — and reaped, and the
  supervisor raises ``RuntimeError``; Tornado's leaves them running);
- a worker that exits with status 0 is not restarted; once every worker has
  exited, the supervisor calls ``sys.exit(0)``;
- SIGTERM or SIGINT sent to the supervisor is passed on to every worker,
  nothing is restarted from then on, and once all have exited the
  supervisor exits with status 128 + the signal number (Tornado's
  supervisor simply dies and leaves its workers running).

Every worker is reaped: the supervisor waits for each before it leaves.
POSIX only (``os.fork``); on Windows :func:`fork_processes` raises
``OSError``. Make no IOLoop and start no thread before forking: a forked
child has only the calling thread. (The pollers and IOLoops of this
package do re-create their kernel objects in a child, so an IOLoop made
earlier keeps working, but threads and their locks do not survive a fork.)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from iostream.ioloop import app_log

__all__ = ["DEFAULT_MAX_RESTARTS", "STOP_GRACE_PERIOD", "cpu_count", "fork_processes", "task_id"]

#: Worker restarts allowed over the supervisor's life when none is given.
DEFAULT_MAX_RESTARTS = 100

#: Seconds the supervisor gives its workers to leave after SIGTERM, when it
#: gives up on restarting them, before it sends SIGKILL.
STOP_GRACE_PERIOD = 5.0

#: Signals the supervisor passes on to its workers before it stops.
_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_task_id: int | None = None


def cpu_count() -> int:
    """The number of CPUs this process may run on (at least 1).

    Like Tornado's, but the CPUs this process is allowed to use where the
    OS says (``os.process_cpu_count`` on 3.13+, the scheduler affinity
    mask on Linux) rather than every CPU in the machine: in a container
    limited to 2 of 64 cores, 2 workers, not 64.
    """
    counter = getattr(os, "process_cpu_count", None)
    count: int | None = counter() if counter is not None else None
    if count is None and hasattr(os, "sched_getaffinity"):
        try:
            count = len(os.sched_getaffinity(0))
        except OSError:
            count = None
    if count is None:
        count = os.cpu_count()
    if not count:
        app_log.error("Could not detect the number of processors; assuming 1")
        return 1
    return count


def task_id() -> int | None:
    """The task id of this worker, or ``None`` if :func:`fork_processes` did not make it."""
    return _task_id


def fork_processes(num_processes: int | None, max_restarts: int | None = None) -> int:
    """Fork *num_processes* workers; in each, return its task id. See the module docstring.

    *num_processes* ``None`` or ``<= 0`` means :func:`cpu_count`. In the
    supervisor this function does not return: it ends with ``SystemExit``
    (0 when every worker exited normally) or ``RuntimeError`` (too many
    restarts). Calling it again in a worker raises ``RuntimeError``.
    """
    if num_processes is not None and (
        not isinstance(num_processes, int) or isinstance(num_processes, bool)
    ):
        raise TypeError(f"num_processes must be an int or None, not {type(num_processes).__name__}")
    if max_restarts is None:
        max_restarts = DEFAULT_MAX_RESTARTS
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0 or None, got {max_restarts!r}")
    if not hasattr(os, "fork"):
        raise OSError("fork_processes: os.fork is not available on this platform")
    if _task_id is not None:
        raise RuntimeError("fork_processes was already called: this process is a worker")
    if num_processes is None or num_processes <= 0:
        num_processes = cpu_count()
    app_log.info("Starting %d processes", num_processes)
    return _Supervisor(num_processes, max_restarts).run()


class _Supervisor:
    """The parent side of :func:`fork_processes`: fork, wait, restart, reap."""

    def __init__(self, num_processes: int, max_restarts: int) -> None:
        self.num_processes = num_processes
        self.max_restarts = max_restarts
        self.children: dict[int, int] = {}  # pid -> task id
        self.stop_signal: int | None = None
        self.previous_handlers: dict[int, Any] = {}

    def run(self) -> int:
        # Install the forwarding handlers before the first fork, so that a
        # signal arriving while workers start is not lost; the workers put
        # the previous handlers back. Only the main thread may set signal
        # handlers: called from another thread, the supervisor forwards
        # nothing (Tornado's behaviour).
        if threading.current_thread() is threading.main_thread():
            for signum in _SHUTDOWN_SIGNALS:
                self.previous_handlers[signum] = signal.signal(signum, self.on_signal)
        try:
            for i in range(self.num_processes):
                if self.stop_signal is not None:
                    break
                worker_id = self.start_child(i)
                if worker_id is not None:
                    return worker_id
            return self.supervise()
        finally:
            if _task_id is None:  # the supervisor (a worker restored them already)
                self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)

    def start_child(self, i: int) -> int | None:
        # Shutdown signals wait until the new worker is in self.children
        # (else a SIGTERM right after fork would miss it) and, in the
        # worker, until its own handlers are back.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                global _task_id
                _task_id = i
                self.restore_handlers()
                # The random module reseeds itself in a forked child
                # (os.register_at_fork), so workers do not share a sequence.
                return i
            self.children[pid] = i
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        for pid in list(self.children):
            _kill(pid, signum)

    def supervise(self) -> int:
        restarts = 0
        while self.children:
            pid, status = self.wait()
            if pid not in self.children:
                continue  # some other child of this process
            i = self.children.pop(pid)
            if os.WIFSIGNALED(status):
                how = f"killed by signal {os.WTERMSIG(status)}"
            elif os.WEXITSTATUS(status) != 0:
                how = f"exited with status {os.WEXITSTATUS(status)}"
            else:
                app_log.info("child %d (pid %d) exited normally", i, pid)
                continue
            if self.stop_signal is not None:
                app_log.info("child %d (pid %d) %s while stopping", i, pid, how)
                continue
            restarts += 1
            if restarts > self.max_restarts:
                app_log.error("child %d (pid %d) %s; too many restarts", i, pid, how)
                self.stop_all()
                raise RuntimeError(
                    f"Too many child restarts ({restarts - 1} allowed by max_restarts), giving up"
                )
            app_log.warning("child %d (pid %d) %s, restarting", i, pid, how)
            worker_id = self.start_child(i)
            if worker_id is not None:
                return worker_id
        if self.stop_signal is not None:
            sys.exit(128 + self.stop_signal)
        # Every worker exited normally: leave rather than return into code
        # that would start serving in the supervisor.
        sys.exit(0)

    def wait(self) -> tuple[int, int]:
        """``os.wait()``; (0, 0) once this process has no child left at all."""
        try:
            return os.wait()
        except ChildProcessError:
            # Someone else reaped them (SIGCHLD ignored): none left to wait for.
            self.children.clear()
            return 0, 0

    def stop_all(self) -> None:
        """Terminate the remaining workers (SIGKILL after a grace period) and reap them."""
        self.stop_signal = signal.SIGTERM
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_PERIOD
        while self.children and time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.01)
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
        while self.children:
            pid, _status = self.wait()
            self.children.pop(pid, None)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
