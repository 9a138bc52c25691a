"""``python -m iostream doctor`` (docs/pollers.md, "`python -m iostream doctor`"):
iostream/_doctor.py.

The doctor runs for real on this machine (in-process and as a subprocess,
table and ``--json``); the exit-status logic and each kind of failure are
shown with deliberately broken poller classes handed to it (stand-ins, no
patching of kernel calls).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from test_fallback import TtyRefusingKqueuePoller

from iostream import pollers
from iostream._doctor import (
    FALLBACK,
    FD_KINDS,
    HANG,
    OK,
    REFUSED,
    RESULTS,
    WRONG,
    format_report,
    main,
    probe_cell,
    run_doctor,
)
from iostream.pollers import ERROR, READ, WRITE, Poller
from iostream.pollers.base import FileDescriptorLike
from iostream.pollers.select_ import SelectPoller

#: Short waits for the broken stand-ins (a working poller answers at once).
FAST = 0.2


# -- broken pollers ---------------------------------------------------------------


class NeverReadsPoller(SelectPoller):
    """Never reports READ (as a poller that loses read events would)."""

    name = "neverreads"

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        result = [(fd, ev & ~READ) for fd, ev in super().poll(timeout)]
        return [(fd, ev) for fd, ev in result if ev]


class ReadAsErrorPoller(SelectPoller):
    """Reports READ as ERROR: a wrong event."""

    name = "readaserror"

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return [(fd, ERROR if ev & READ else ev) for fd, ev in super().poll(timeout)]


class RefusesEverythingPoller(SelectPoller):
    """Refuses every fd at register (the fallback then watches it with poll)."""

    name = "refuser"

    def _kernel_register(self, fd: int, events: int) -> None:
        raise ValueError(f"refuser will not watch fd {fd}")


class ForgetsAfterForkPoller(SelectPoller):
    """Works in the process that made it; in a forked child reports nothing."""

    name = "forkless"

    def _kernel_open(self) -> None:
        super()._kernel_open()
        self._pid = os.getpid()

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        result = super().poll(timeout)
        return result if os.getpid() == self._pid else []


class StuckPoller(SelectPoller):
    """poll() ignores its timeout and blocks until the test releases it."""

    name = "stuck"
    release = threading.Event()

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        self.release.wait(30)
        return []


@pytest.fixture
def released() -> Iterator[None]:
    """Release StuckPoller's abandoned probe threads after the test."""
    StuckPoller.release.clear()
    try:
        yield
    finally:
        StuckPoller.release.set()


# -- this machine ---------------------------------------------------------------------


def test_doctor_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    status = main([])
    out = capsys.readouterr().out
    assert status == 0, out
    header = out.splitlines()[2].split()
    assert header == ["poller", *FD_KINDS, "fork"]
    default = pollers.choose().name
    rows = out.splitlines()[3 : 3 + len(pollers.available())]
    for name, row in zip(pollers.available(), rows, strict=True):
        assert row.split()[0] == name + ("*" if name == default else "")
        assert len(row.split()) == len(header)  # one result per column ("n/a", "ok", ...)
    assert "Recommended: IOSTREAM_POLLER=" in out


def test_doctor_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == report["exit_status"] == 0
    assert report["columns"] == [*FD_KINDS, "fork"]
    assert list(report["pollers"]) == list(pollers.available())
    assert report["default"] == pollers.choose().name
    assert report["recommended"] in pollers.available()
    assert report["problems"] == []
    for row in report["pollers"].values():
        assert list(row) == report["columns"]
        for cell in row.values():
            assert cell["result"] in RESULTS
            # On this machine nothing is broken: each cell passes or is absent.
            assert cell["result"] in (OK, FALLBACK, "n/a"), cell
    for name in pollers.available():
        assert report["pollers"][name]["tcp"]["result"] == OK
        assert report["pollers"][name]["fork"]["result"] == OK
    if "epoll" in report["pollers"]:
        # epoll refuses regular files (EPERM): always ready through the fallback.
        cell = report["pollers"]["epoll"]["file"]
        assert cell["result"] == FALLBACK
        assert "always ready" in cell["detail"]
    assert set(report["unavailable"]) == set(pollers.BACKENDS) - set(pollers.available())


@pytest.mark.parametrize(
    "command",
    [["-m", "iostream._doctor"], ["-m", "iostream", "doctor"]],
    ids=["module", "cli"],
)
def test_doctor_as_a_subprocess(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != pollers.ENV_VAR}
    proc = subprocess.run(
        [sys.executable, *command, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["default"] == pollers.choose("").name
    assert report["exit_status"] == 0
    table = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=120, env=env
    )
    assert table.returncode == 0, table.stderr
    assert "Recommended: IOSTREAM_POLLER=" in table.stdout
    assert table.stderr == ""


def test_doctor_honours_the_environment_variable() -> None:
    env = {**os.environ, pollers.ENV_VAR: "select"}
    proc = subprocess.run(
        [sys.executable, "-m", "iostream._doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["default"] == "select"
    assert report["default_source"] == f"{pollers.ENV_VAR}=select"


def test_bad_environment_variable_is_a_problem() -> None:
    env = {**os.environ, pollers.ENV_VAR: "nosuchpoller"}
    proc = subprocess.run(
        [sys.executable, "-m", "iostream._doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["default"] is None
    assert "nosuchpoller" in report["problems"][0]


@pytest.mark.parametrize("argv", [["--timeout", "0"], ["--timeout", "x"], ["--nope"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """One ``iostream: error:`` line pointing at doctor's --help; exit 2, returned."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("iostream: error: ")
    assert lines[0].endswith("doctor --help)")


def test_closed_stdout_is_one_line() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m iostream._doctor | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout == "iostream 0"
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) <= 1


# -- the exit status, with broken pollers -------------------------------------------------


def test_default_failing_a_probe_another_passes_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    backends = {"neverreads": NeverReadsPoller, "select": SelectPoller}
    status = main(["--json", "--timeout", str(FAST)], backends=backends, default="neverreads")
    report = json.loads(capsys.readouterr().out)
    assert status == report["exit_status"] == 1
    broken = report["pollers"]["neverreads"]
    assert broken["tcp"]["result"] == HANG
    assert "READ on a readable fd: not reported" in broken["tcp"]["detail"]
    assert report["pollers"]["select"]["tcp"]["result"] == OK
    assert any(
        "'neverreads' fails tcp (hang), which select passes" in p for p in report["problems"]
    )
    assert report["recommended"] == "select"


def test_another_poller_failing_does_not_fail_the_doctor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    backends = {"select": SelectPoller, "neverreads": NeverReadsPoller}
    status = main(["--timeout", str(FAST)], backends=backends, default="select")
    out = capsys.readouterr().out
    assert status == 0
    assert "Recommended: IOSTREAM_POLLER=select (the default already)" in out
    assert "neverreads x tcp: hang" in out


def test_default_failing_where_nobody_passes_exits_0() -> None:
    backends = {"neverreads": NeverReadsPoller, "readaserror": ReadAsErrorPoller}
    report = run_doctor(backends, default="neverreads", kinds=["tcp"], timeout=FAST, fork=False)
    assert report.exit_status == 0
    assert report.cells["neverreads"]["tcp"].result == HANG
    assert report.cells["readaserror"]["tcp"].result == WRONG
    assert "got ERROR, not READ" in report.cells["readaserror"]["tcp"].detail


def test_refused_fd_watched_through_the_fallback_counts_as_passing() -> None:
    backends = {"refuser": RefusesEverythingPoller, "select": SelectPoller}
    report = run_doctor(
        backends, default="refuser", kinds=["tcp", "pipe"], timeout=FAST, fork=False
    )
    for kind in ("tcp", "pipe"):
        cell = report.cells["refuser"][kind]
        assert cell.result == FALLBACK, cell
        assert "refuser will not watch" in cell.detail and "watched by poll" in cell.detail
    assert report.exit_status == 0


class OpaqueRefuser(Poller):
    """Refuses every fd, and shows the fallback no kernel fd nor fd table to combine with."""

    name = "opaque"

    @classmethod
    def available(cls) -> bool:
        return True

    def register(self, fd: FileDescriptorLike, events: int) -> None:
        raise ValueError("opaque will not watch it")

    def modify(self, fd: FileDescriptorLike, events: int) -> None:
        raise FileNotFoundError(fd)

    def unregister(self, fd: FileDescriptorLike) -> None:
        raise FileNotFoundError(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return []

    def close(self) -> None:
        pass


def test_refused_everywhere_is_refused() -> None:
    cell = probe_cell(OpaqueRefuser, "tcp", FAST)
    assert cell.result == REFUSED
    assert "opaque will not watch it" in cell.detail
    assert "neither a kernel fd nor an fd table" in cell.detail
    report = run_doctor(
        {"opaque": OpaqueRefuser, "select": SelectPoller},
        default="opaque",
        kinds=["tcp"],
        timeout=FAST,
        fork=False,
    )
    assert report.exit_status == 1


def test_fork_breakage_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    backends = {"forkless": ForgetsAfterForkPoller, "select": SelectPoller}
    status = main(["--json", "--timeout", str(FAST)], backends=backends, default="forkless")
    report = json.loads(capsys.readouterr().out)
    fork = report["pollers"]["forkless"]["fork"]
    assert fork["result"] == HANG
    assert "in the child" in fork["detail"]
    assert report["pollers"]["forkless"]["tcp"]["result"] == OK
    assert report["pollers"]["select"]["fork"]["result"] == OK
    assert status == 1


def test_a_poll_that_ignores_its_timeout_is_a_hang_not_a_hung_doctor(released: None) -> None:
    start = time.monotonic()
    cell = probe_cell(StuckPoller, "tcp", FAST)
    assert cell.result == HANG
    assert "did not return within its timeout" in cell.detail
    assert time.monotonic() - start < 6 * FAST + 2.0 + 5.0


def test_kqueue_refusing_a_tty_shows_as_fallback() -> None:
    """The kqueue stand-in refuses ttys (EINVAL) as macOS does: the pty cell says fallback."""
    if not hasattr(os, "openpty"):
        pytest.skip("needs a pty")
    backends = {"kqueue": TtyRefusingKqueuePoller, "select": SelectPoller}
    report = run_doctor(backends, default="kqueue", kinds=["tcp", "pty"], timeout=1.0, fork=False)
    assert report.cells["kqueue"]["tcp"].result == OK
    cell = report.cells["kqueue"]["pty"]
    assert cell.result == FALLBACK, cell
    assert "Invalid argument" in cell.detail
    assert report.exit_status == 0


def test_unregistered_fd_reported_is_a_wrong_event() -> None:
    class Stray(SelectPoller):
        name = "stray"

        def poll(self, timeout: float | None) -> list[tuple[int, int]]:
            return [*super().poll(timeout), (9999, READ)]

    cell = probe_cell(Stray, "tcp", FAST)
    assert cell.result == WRONG, cell
    assert "not registered: [9999]" in cell.detail


def test_fd_reported_twice_is_a_wrong_event() -> None:
    class Twice(SelectPoller):
        name = "twice"

        def poll(self, timeout: float | None) -> list[tuple[int, int]]:
            result = super().poll(timeout)
            return result + [(fd, WRITE) for fd, ev in result if ev & WRITE]

    cell = probe_cell(Twice, "tcp", FAST)
    assert cell.result == WRONG, cell
    assert "reported twice" in cell.detail


def test_socket_kinds_really_are_sockets() -> None:
    """The probe fds are what the column says (a sanity check of the fixtures)."""
    subject = FD_KINDS["unix"]()
    try:
        assert subject.read_fd is not None
        sock = socket.socket(fileno=os.dup(subject.read_fd))
        try:
            assert sock.family == socket.AF_UNIX
        finally:
            sock.close()
    finally:
        subject.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork() and ptys")
def test_tty_column_with_a_controlling_terminal() -> None:
    """Under a terminal (a pty made the controlling one) /dev/tty is probed, not n/a."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child: become the doctor
        try:
            os.execv(sys.executable, [sys.executable, "-m", "iostream._doctor", "--json"])
        finally:
            os._exit(127)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([master], [], [], max(remaining, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (Linux)
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The terminal turned each "\n" into "\r\n".
    report = json.loads(b"".join(chunks).decode().replace("\r\n", "\n"))
    for name in pollers.available():
        cell = report["pollers"][name]["tty"]
        assert cell["result"] in (OK, FALLBACK), (name, cell)


def test_an_fd_kind_that_cannot_be_made_is_not_here() -> None:
    """A kind whose fds cannot be made (the OS's doing, the same for every poller) is n/a."""
    from iostream._doctor import NOT_HERE, _probe_once, _Subject

    def broken_kind() -> _Subject:
        raise OSError(24, "Too many open files")

    cell = _probe_once(SelectPoller, broken_kind, FAST)
    assert cell.result == NOT_HERE
    assert "Too many open files" in cell.detail


def test_fork_column_goes_through_the_fallback_for_a_refusing_poller() -> None:
    from iostream._doctor import fork_cell

    cell = fork_cell(RefusesEverythingPoller, FAST)
    assert cell.result == FALLBACK, cell
    assert "refuser will not watch" in cell.detail
    assert fork_cell(OpaqueRefuser, FAST).result == REFUSED


def test_a_backend_the_automatic_choice_skips_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend failing the library's own socket probe is probed, and said to be skipped."""
    # pollers._probe is where choose() and unavailable_reasons() both ask (as test_cli does).
    monkeypatch.setattr(
        pollers, "_probe", lambda name: "failed a socket probe: test" if name == "select" else None
    )
    report = run_doctor(kinds=["tcp"], timeout=FAST, fork=False)
    assert report.skipped == {"select": "failed a socket probe: test"}
    assert "select" in report.cells  # still probed: the table shows what works
    assert "Skipped by the automatic choice:\n  select: failed a socket probe: test" in (
        format_report(report)
    )
    assert report.to_json()["skipped_by_automatic_choice"] == report.skipped


def test_epoll_devnull_cell_names_the_file_type_it_probed() -> None:
    """epoll refuses /dev/null (a character device without poll support) as it refuses
    regular files; the cell must not call it "a regular file or directory"."""
    import stat

    if "epoll" not in pollers.available():
        pytest.skip("no epoll here")
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            pytest.skip(f"{os.devnull} is not a character device here")
    finally:
        os.close(fd)
    cell = probe_cell(pollers.EpollPoller, "devnull")
    if cell.result == OK:
        pytest.skip("this kernel's epoll accepts /dev/null")
    assert cell.result == FALLBACK, cell
    assert "regular file" not in cell.detail and "directory" not in cell.detail, cell.detail
    assert "a character device" in cell.detail, cell.detail
    # The regular file's cell keeps its (true) wording.
    assert "a regular file or directory" in probe_cell(pollers.EpollPoller, "file").detail
