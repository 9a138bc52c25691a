"""The worked example of docs/testing.md (examples/lineproto) behaves as the page says.

Its own test suite runs in a subprocess, as a user would run it (its own
rootdir and pytest configuration, the ``iostream`` plugin loaded from the
entry point): the careful implementation passes every test on every poller
given; the naive one passes on plain sockets only, and fails under the
Windows-like socket (WSAENOBUFS) and the chaos socket, with the fault record
and a shrunk Hypothesis schedule in the report.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import iostream
from iostream import pollers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "lineproto"
PACKAGE_PARENT = Path(iostream.__file__).resolve().parent.parent

#: Tests in examples/lineproto/tests per poller: plain, windows, 8 seeds,
#: any schedule, short-only schedules.
TESTS_PER_POLLER = 12

pytestmark = pytest.mark.skipif(
    not EXAMPLE.is_dir(), reason=f"{EXAMPLE} is not in this copy (sdist without examples/)"
)


def _pollers() -> list[str]:
    if os.environ.get(pollers.ENV_VAR, "").strip():
        return [pollers.choose().name]
    return list(pollers.available())


def _plugin_args() -> list[str]:
    """``-p`` for the plugin unless its entry point already loads it."""
    for entry in importlib.metadata.entry_points(group="pytest11"):
        if entry.value == "iostream.testing.pytest_plugin":
            return []
    return ["-p", "iostream.testing.pytest_plugin"]


def run_example(impl: str, names: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["LINEPROTO_IMPL"] = impl
    env.pop(pollers.ENV_VAR, None)  # the option below decides
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_PARENT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *_plugin_args(),
            f"--iostream-pollers={','.join(names)}",
            "-o",
            "console_output_style=classic",
        ],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(output: str) -> dict[str, int]:
    line = output.strip().splitlines()[-1]
    return {word: int(count) for count, word in re.findall(r"(\d+) (passed|failed|error)", line)}


def test_careful_passes_on_every_poller() -> None:
    names = _pollers()
    result = run_example("careful", names)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert _summary(result.stdout) == {"passed": TESTS_PER_POLLER * len(names)}, result.stdout


def test_naive_fails_under_windows_and_chaos_with_a_readable_schedule() -> None:
    names = _pollers()[:1]  # it fails alike on every poller; one is enough
    result = run_example("naive", names)
    out = result.stdout
    assert result.returncode == 1, out[-4000:] + result.stderr[-2000:]
    # Plain sockets hide both bugs; every fault socket shows one.
    assert _summary(out) == {"passed": 1, "failed": TESTS_PER_POLLER - 1}, out[-3000:]
    failed = set(re.findall(r"^FAILED tests/test_echo.py::(\w+)", out, re.MULTILINE))
    assert failed == {
        "test_windows_send_rules",
        "test_chaos_seeded",
        "test_chaos_schedules",
        "test_short_sends_and_reads",
    }
    # Winsock's refusal of a large send, as Python on Windows reports it.
    assert "[WinError 10055] No buffer space available" in out
    # The seeded failures come with the fault record and a replay line.
    assert "iostream fault record" in out
    assert re.search(r"ChaosSocket seed=\d+: \d+ send calls, \d+ recv calls", out)
    assert 'replay: ChaosSocket.wrap(sock, send_faults=parse_schedule("[' in out
    # Hypothesis shrinks its schedule to a single fault on one side.
    # ("Falsifying example:" in older Hypothesis, "Failing test case:" in newer.)
    case = re.search(
        r"(?:Falsifying example|Failing test case): test_chaos_schedules\((.*?)\n[E ]*\)",
        out,
        re.DOTALL,
    )
    assert case is not None, out[-4000:]
    schedules = dict(re.findall(r"(send_faults|recv_faults)=(\[[^\]]*\])", case.group(1)))
    tokens = [t for s in schedules.values() for t in s.strip("[]").split(",") if t.strip()]
    assert len(tokens) == 1, case.group(0)
    # Without any error, a short send or read alone breaks the naive framing:
    # the reply list shows a message cut in two.
    case = re.search(
        r"(?:Falsifying example|Failing test case): test_short_sends_and_reads\((.*?)\n[E ]*\)",
        out,
        re.DOTALL,
    )
    assert case is not None, out[-4000:]
    assert re.search(r"(send|recv)_faults=\[short\(1\)\]", case.group(1)), case.group(0)
    assert "AssertionError: assert [b'H', b'ELLO" in out
