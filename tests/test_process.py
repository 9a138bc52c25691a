"""iostream.process: fork_processes, task_id, cpu_count (Tornado's process module).

fork_processes turns its caller into a supervisor, so every case runs in a
fresh interpreter (no pytest threads to fork, no supervisor inside pytest):
a short script forks, its workers print one line each, the test reads the
lines and the exit status. Each script runs in its own session, so a
failing test kills the whole process group it started, and every run is
bounded in time.

Covered: task ids 0..n-1 and ``None`` in the supervisor, which exits 0 once
every worker did; a worker exiting with an error or killed by a signal is
restarted with its task id; ``max_restarts`` exceeded raises in the
supervisor, which terminates and reaps the others; SIGTERM to the supervisor
reaches every worker, restarts nothing, and every worker is reaped before
the supervisor exits (128 + 15); ``num_processes`` 0/None is cpu_count();
fork_processes in a worker and bad arguments raise.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import iostream
from iostream.process import cpu_count, fork_processes, task_id

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: The directory holding the iostream package under test (checkout or install).
PACKAGE_PARENT = str(Path(iostream.__file__).resolve().parent.parent)

#: Seconds any one script may run.
SCRIPT_DEADLINE = 60.0

#: What every script starts with: logging to stderr, a watchdog for the
#: whole process tree (SIGALRM ends a process stuck past the deadline).
PRELUDE = """\
import logging, os, signal, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
signal.alarm(60)
from iostream.process import fork_processes, task_id, cpu_count
def say(text):
    # One write(2) per line: lines from several processes never interleave.
    os.write(1, (text + "\\n").encode())
"""


def script_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a script: imports the iostream under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


@dataclass
class Script:
    """A running script (its own session) with line-by-line stdout.

    Lines are read from the pipe's fd with ``os.read`` into our own buffer,
    never through the text wrapper: a buffered ``readline`` could take two
    lines at once and leave the next wait on the fd blocked until EOF.
    """

    proc: subprocess.Popen[str]
    pending: bytes = b""

    def line(self, deadline: float) -> str:
        """The next stdout line; fails the test past *deadline* (a monotonic time)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line from the script before its deadline: {self.finish()!r}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"the script closed its stdout: {self.finish()!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode() + "\n"

    def finish(self, timeout: float = SCRIPT_DEADLINE) -> tuple[int, str, str]:
        """Wait for the exit; return (status, rest of stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"script overran {timeout}s; stderr: {err}")
        rest, self.pending = self.pending.decode(), b""
        return self.proc.returncode, rest + out, err

    def kill(self) -> None:
        """SIGKILL the script's whole process group (it is its own session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def start_script() -> Iterator[Any]:
    """start_script(code, env=None) -> Script; every script's group is killed at teardown."""
    started: list[Script] = []

    def start(code: str, env: Mapping[str, str] | None = None) -> Script:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "error::DeprecationWarning",
                "-c",
                PRELUDE + textwrap.dedent(code),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=script_env(env),
            start_new_session=True,
        )
        script = Script(proc)
        started.append(script)
        return script

    yield start
    for script in started:
        if script.proc.poll() is None:
            script.kill()
            script.proc.communicate()
        else:
            # The supervisor is gone; a worker it failed to reap would be
            # left in the group: make sure none outlives the test.
            script.kill()


def run_script(start_script: Any, code: str) -> tuple[int, str, str]:
    script: Script = start_script(code)
    return script.finish()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- in this process


def test_task_id_is_none_outside_workers() -> None:
    assert task_id() is None


def test_cpu_count() -> None:
    count = cpu_count()
    assert isinstance(count, int) and count >= 1
    assert count <= (os.cpu_count() or 1)


def test_bad_arguments_raise_before_forking() -> None:
    with pytest.raises(TypeError, match="num_processes"):
        fork_processes("2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_processes"):
        fork_processes(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_restarts"):
        fork_processes(2, max_restarts=-1)
    with pytest.raises(ValueError, match="max_restarts"):
        fork_processes(2, max_restarts="3")  # type: ignore[arg-type]


# ---------------------------------------------------------------- scripts


def test_workers_get_task_ids_and_supervisor_exits_0(start_script: Any) -> None:
    status, out, err = run_script(
        start_script,
        """
        try:
            i = fork_processes(3)
        except SystemExit as exc:
            say(f"supervisor {exc.code} {task_id()}")
            raise
        say(f"worker {i} {task_id()}")
        sys.exit(0)
        """,
    )
    assert status == 0, err
    lines = sorted(out.splitlines())
    assert lines == ["supervisor 0 None", "worker 0 0", "worker 1 1", "worker 2 2"], out
    assert "Starting 3 processes" in err


@pytest.mark.parametrize("how", ["exit", "signal"])
def test_failed_worker_is_restarted_with_its_task_id(
    start_script: Any, tmp_path: Path, how: str
) -> None:
    status, out, err = run_script(
        start_script,
        f"""
        i = fork_processes(2)
        marker = os.path.join({str(tmp_path)!r}, f"started-{{i}}")
        first = not os.path.exists(marker)
        open(marker, "a").close()
        say(f"worker {{i}} {{os.getpid()}} {{'first' if first else 'again'}}")
        if first:
            if {how!r} == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(0)
        """,
    )
    assert status == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert sorted((w[1], w[3]) for w in lines) == [
        ("0", "again"),
        ("0", "first"),
        ("1", "again"),
        ("1", "first"),
    ], out
    assert len({w[2] for w in lines}) == 4  # four processes
    expected = "exited with status 3" if how == "exit" else f"killed by signal {signal.SIGKILL}"
    assert len(re.findall(expected + ", restarting", err)) == 2, err


def test_too_many_restarts_raises_and_reaps_every_worker(start_script: Any) -> None:
    status, out, err = run_script(
        start_script,
        """
        try:
            i = fork_processes(3, max_restarts=2)
        except RuntimeError as exc:
            try:
                os.waitpid(-1, os.WNOHANG)
                left = "children left"
            except ChildProcessError:
                left = "no children left"
            say(f"supervisor {exc}; {left}")
            sys.exit(7)
        say(f"worker {i} {os.getpid()}")
        if i == 0:
            os._exit(1)   # fails again and again
        time.sleep(50)    # the others wait to be terminated
        """,
    )
    assert status == 7, err
    lines = out.splitlines()
    supervisor = [line for line in lines if line.startswith("supervisor")]
    assert len(supervisor) == 1, out
    assert "Too many child restarts" in supervisor[0]
    assert supervisor[0].endswith("; no children left"), out
    workers = [line.split() for line in lines if line.startswith("worker")]
    # 3 started, then worker 0 three more times (2 restarts allowed, the 3rd refused).
    assert sorted(w[1] for w in workers) == ["0", "0", "0", "1", "2"], out
    for w in workers:
        assert not pid_alive(int(w[2])), f"worker {w} outlived the supervisor"


def test_sigterm_to_supervisor_stops_and_reaps_every_worker(start_script: Any) -> None:
    script = start_script(
        """
        i = fork_processes(2)
        say(f"worker {i} {os.getpid()}")
        time.sleep(50)
        """
    )
    deadline = time.monotonic() + SCRIPT_DEADLINE
    pids = [int(script.line(deadline).split()[2]) for _ in range(2)]
    os.kill(script.proc.pid, signal.SIGTERM)
    status, out, err = script.finish()
    assert status == 128 + signal.SIGTERM, err
    assert out == "", "no worker restarted after SIGTERM"
    assert "restarting" not in err
    for pid in pids:
        assert not pid_alive(pid), f"worker {pid} outlived the supervisor"


def test_zero_or_none_means_one_worker_per_cpu(start_script: Any) -> None:
    for arg in ("0", "None"):
        status, out, err = run_script(
            start_script,
            f"""
            try:
                i = fork_processes({arg})
            except SystemExit:
                say(f"cpus {{cpu_count()}}")
                raise
            say(f"worker {{i}}")
            sys.exit(0)
            """,
        )
        assert status == 0, err
        lines = out.splitlines()
        cpus = int(next(line for line in lines if line.startswith("cpus")).split()[1])
        assert sorted(line for line in lines if line.startswith("worker")) == sorted(
            f"worker {i}" for i in range(cpus)
        )


def test_fork_processes_in_a_worker_raises(start_script: Any) -> None:
    status, out, err = run_script(
        start_script,
        """
        i = fork_processes(1)
        try:
            fork_processes(1)
        except RuntimeError as exc:
            say(f"worker {i}: {exc}")
        sys.exit(0)
        """,
    )
    assert status == 0, err
    assert out.startswith("worker 0: fork_processes was already called"), out


def test_script_helper_reads_lines_that_arrive_together(start_script: Any) -> None:
    """The helper's own check: two lines in one write are two lines at once, not at EOF."""
    script = start_script(
        """
        os.write(1, b"one\\ntwo\\n")
        time.sleep(30)
        """
    )
    deadline = time.monotonic() + 10
    assert script.line(deadline) == "one\n"
    assert script.line(deadline) == "two\n"
    assert time.monotonic() < deadline
