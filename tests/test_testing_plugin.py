"""The ``iostream`` pytest plugin, run in isolated pytest sessions (``pytester``).

Each test writes a small test module into a fresh directory and runs pytest
on it in a subprocess, as a user's project would be run: the plugin comes
from the ``pytest11`` entry point (or ``-p`` when this copy is not installed).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from iostream import pollers

pytest_plugins = ["pytester"]

AVAILABLE = list(pollers.available())


def _plugin_args() -> list[str]:
    for entry in importlib.metadata.entry_points(group="pytest11"):
        if entry.value == "iostream.testing.pytest_plugin":
            return []
    return ["-p", "iostream.testing.pytest_plugin"]


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester with IOSTREAM_POLLER unset (tests that need it set it)."""
    monkeypatch.delenv(pollers.ENV_VAR, raising=False)
    return pytester


def runpytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", *_plugin_args(), *args, timeout=300
    )


def test_inert_for_tests_that_use_none_of_its_fixtures(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        import pytest

        def test_one():
            pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_two(n):
            pass
        """
    )
    result = runpytest(run, "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "test_inert_for_tests_that_use_none_of_its_fixtures.py::test_one",
        "test_inert_for_tests_that_use_none_of_its_fixtures.py::test_two[1]",
        "test_inert_for_tests_that_use_none_of_its_fixtures.py::test_two[2]",
    ]
    result = runpytest(run, "--help")
    result.stdout.fnmatch_lines(["*--iostream-pollers=NAMES*"])


def test_io_loop_runs_each_test_on_every_available_poller(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        from iostream import IOLoop

        def test_loop(io_loop, iostream_poller):
            assert io_loop.poller.name == iostream_poller
            assert IOLoop.current() is io_loop
            ran = []
            io_loop.add_callback(lambda: (ran.append(1), io_loop.stop()))
            io_loop.start()
            assert ran == [1]
        """
    )
    result = runpytest(run, "-v")
    result.assert_outcomes(passed=len(AVAILABLE))
    for name in AVAILABLE:
        result.stdout.fnmatch_lines([f"*test_loop[[]{name}[]] PASSED*"])


def test_option_picks_pollers_skips_unavailable_and_rejects_unknown(
    run: pytest.Pytester,
) -> None:
    run.makepyfile(
        """
        def test_loop(io_loop, iostream_poller):
            assert io_loop.poller.name == iostream_poller
        """
    )
    result = runpytest(run, "-v", "-rs", "--iostream-pollers=select,poll")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_loop[[]select[]] PASSED*", "*test_loop[[]poll[]] PASSED*"])
    missing = [name for name in pollers.BACKENDS if name not in AVAILABLE]
    if missing:
        result = runpytest(run, "-rs", f"--iostream-pollers=select,{missing[0]}")
        result.assert_outcomes(passed=1, skipped=1)
        reason = pollers.unavailable_reasons()[missing[0]]
        assert any(reason in line for line in result.outlines), result.outlines
    result = runpytest(run, "--iostream-pollers=select,nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--iostream-pollers: unknown poller(s) nosuch; known: *"])


def test_environment_variable_picks_the_poller(
    run: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    run.makepyfile(
        """
        def test_loop(io_loop):
            assert io_loop.poller.name == "select"
        """
    )
    monkeypatch.setenv(pollers.ENV_VAR, "select")
    result = runpytest(run, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_loop[[]select[]] PASSED*"])


def test_an_unusable_environment_poller_is_a_usage_error(
    run: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/testing.md: IOSTREAM_POLLER naming a poller this OS lacks stops the run
    at collection with the library's own reason (every IOLoop() would fail),
    where --iostream-pollers would skip it."""
    missing = next(iter(pollers.unavailable_reasons()), None)
    if missing is None:
        pytest.skip("every poller is available here")
    run.makepyfile(
        """
        def test_loop(io_loop):
            pass
        """
    )
    monkeypatch.setenv(pollers.ENV_VAR, missing)
    result = runpytest(run)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error
    result.stdout.fnmatch_lines([f"*iostream plugin:*{missing}*"])
    monkeypatch.delenv(pollers.ENV_VAR)
    skipped = runpytest(run, f"--iostream-pollers={missing}")
    skipped.assert_outcomes(skipped=1)


def test_a_conftest_io_loop_wins_and_stream_pair_uses_it(run: pytest.Pytester) -> None:
    run.makeconftest(
        """
        import pytest
        from iostream import IOLoop

        @pytest.fixture
        def io_loop():
            loop = IOLoop("select")
            loop.mine = True
            yield loop
            loop.close(all_fds=True)
        """
    )
    run.makepyfile(
        """
        from iostream.testing import Waiter

        def test_own_loop(io_loop, stream_pair):
            assert io_loop.mine
            a, b = stream_pair()
            assert a.io_loop is io_loop
            w = Waiter(io_loop)
            b.read_bytes(5, w.done)
            a.write(b"hello")
            assert w.wait(timeout=20) == b"hello"
        """
    )
    result = runpytest(run, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_own_loop PASSED*"])


def test_stream_pair_every_kind_and_indirect_parametrization(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        import pytest
        from iostream.testing import ChaosSocket, WindowsSocket, Waiter
        from iostream import SSLIOStream

        PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: over the Windows send limit

        def exchange(io_loop, a, b):
            w = Waiter(io_loop)
            b.read_bytes(len(PAYLOAD), w.done)
            a.write(PAYLOAD)
            assert w.wait(timeout=30) == PAYLOAD

        @pytest.mark.parametrize("kind", ["plain", "tls", "windows", "chaos", "tls-chaos"])
        def test_kind(io_loop, stream_pair, kind):
            a, b = stream_pair(kind, **({"seed": 3} if kind == "chaos" else {}))
            exchange(io_loop, a, b)
            exchange(io_loop, b, a)
            if kind == "windows":
                assert isinstance(a.socket, WindowsSocket)
            if kind == "chaos":
                assert isinstance(a.socket, ChaosSocket) and a.socket.seed == 3
            if kind.startswith("tls"):
                assert isinstance(a, SSLIOStream) and isinstance(b, SSLIOStream)
            if kind == "tls-chaos":
                assert a.chaos.violations == []

        @pytest.mark.parametrize("stream_pair", ["windows"], indirect=True)
        def test_indirect(io_loop, stream_pair):
            a, b = stream_pair()
            assert isinstance(a.socket, WindowsSocket)
            exchange(io_loop, a, b)
        """
    )
    result = runpytest(run, "--iostream-pollers=select")
    result.assert_outcomes(passed=6)


def test_a_failing_test_reports_its_fault_record(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        from hypothesis import HealthCheck, given, settings, strategies as st
        from iostream.testing import Waiter

        def test_fails(io_loop, stream_pair):
            a, b = stream_pair("chaos", seed=7)
            w = Waiter(io_loop)
            b.read_bytes(100000, w.done)
            a.write(b"z" * 100000)
            w.wait(timeout=30)
            assert False, "the protocol was wrong"

        def test_passes(io_loop, stream_pair):
            a, b = stream_pair("chaos", seed=7)
            w = Waiter(io_loop)
            b.read_bytes(100000, w.done)
            a.write(b"z" * 100000)
            w.wait(timeout=30)

        # Hypothesis prints its own shrunk example: no record of every run.
        @settings(max_examples=5, database=None, suppress_health_check=list(HealthCheck))
        @given(st.integers(0, 3))
        def test_hypothesis_fails(io_loop, stream_pair, n):
            a, b = stream_pair("chaos", seed=n)
            w = Waiter(io_loop)
            b.read_bytes(100000, w.done)
            a.write(b"z" * 100000)
            w.wait(timeout=30)
            assert False
        """
    )
    result = runpytest(run, "--iostream-pollers=select", "-rA")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*- iostream fault record -*",
            "ChaosSocket seed=7: * send calls, * recv calls",
            "  send_faults: [[]*",
            '  replay: ChaosSocket.wrap(sock, send_faults=parse_schedule("[[]*',
        ]
    )
    assert sum("iostream fault record" in line for line in result.outlines) == 1


def test_an_exception_escaping_a_callback_fails_the_test(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        import pytest
        from iostream.testing import run_until

        def test_raised_by_run_until(io_loop):
            io_loop.add_callback(lambda: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                run_until(io_loop, lambda: False, timeout=20)

        def test_reported_at_teardown(io_loop):
            io_loop.add_callback(lambda: {}["missing"])
            io_loop.add_callback(io_loop.stop)
            io_loop.start()
        """
    )
    result = runpytest(run, "--iostream-pollers=select")
    result.assert_outcomes(passed=2, errors=1)  # the call passed, its teardown failed
    result.stdout.fnmatch_lines(
        ["*1 exception(s) escaped a loop callback or handler*KeyError('missing')*"]
    )


def test_helpers_run_until_and_run_sync(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        import asyncio
        import pytest
        from iostream.testing import LoopTimeout, run_sync, run_until

        def test_run_until(io_loop):
            box = []
            io_loop.call_later(0.01, box.append, 1)
            run_until(io_loop, lambda: box, timeout=20)
            with pytest.raises(LoopTimeout, match="condition not met within 0.05s\\nstate: 1"):
                run_until(io_loop, lambda: False, timeout=0.05, message=lambda: "state: 1")

        def test_run_sync(io_loop):
            async def answer():
                await asyncio.sleep(0)
                return 42
            assert run_sync(io_loop, answer) == 42

            async def never():
                await io_loop.create_future()
            with pytest.raises(LoopTimeout, match="did not finish within 0.05s"):
                run_sync(io_loop, never, timeout=0.05)
        """
    )
    result = runpytest(run, "--iostream-pollers=select")
    result.assert_outcomes(passed=2)


def test_importing_the_plugin_imports_neither_hypothesis_nor_trustme() -> None:
    code = textwrap.dedent(
        """
        import sys
        import iostream.testing, iostream.testing.pytest_plugin
        print(sorted(m for m in ("hypothesis", "trustme") if m in sys.modules))
        import iostream.testing.strategies
        print("hypothesis" in sys.modules)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


PLUGIN = "iostream.testing.pytest_plugin"


def _installed_entry_point_names() -> list[str]:
    """Names of the installed ``pytest11`` entry points that load the plugin."""
    return [
        entry.name
        for entry in importlib.metadata.entry_points(group="pytest11")
        if entry.value == PLUGIN
    ]


def test_the_entry_point_is_named_by_the_module_path() -> None:
    """Named ``iostream.testing.pytest_plugin``, pytest sees a second listing is the same plugin."""
    names = _installed_entry_point_names()
    if not names:
        pytest.skip("this copy of iostream is not installed: it has no pytest11 entry point")
    assert names == [PLUGIN]


@pytest.mark.parametrize("how", ["-p", "conftest"])
def test_listing_the_plugin_again_is_harmless(run: pytest.Pytester, how: str) -> None:
    """``-p iostream.testing.pytest_plugin`` or ``pytest_plugins = [...]`` with the entry point."""
    run.makepyfile(
        """
        def test_loop(io_loop, iostream_poller):
            assert io_loop.poller.name == iostream_poller
        """
    )
    args: list[str] = []
    if how == "-p":
        args = ["-p", PLUGIN]
    else:
        run.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    result = run.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", *args, "--iostream-pollers=select",
        timeout=300,
    )  # fmt: skip
    assert "already registered" not in result.stderr.str(), result.stderr.str()
    result.assert_outcomes(passed=1)


def test_the_plugin_can_be_disabled_by_its_name(run: pytest.Pytester) -> None:
    """``-p no:iostream.testing.pytest_plugin`` switches the entry point off."""
    if not _installed_entry_point_names():
        pytest.skip("this copy of iostream is not installed: it has no pytest11 entry point")
    run.makepyfile(
        """
        def test_loop(io_loop):
            pass
        """
    )
    result = run.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-p", f"no:{PLUGIN}", timeout=300
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'io_loop' not found*"])
