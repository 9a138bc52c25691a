"""Choosing a poller: available(), choose(), IOSTREAM_POLLER, unavailable_reasons().

The environment variable is read by a fresh interpreter in the tests that
matter most (``python -c``), so nothing leaks between tests; the rest use
``monkeypatch.setenv`` in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iostream import pollers
from iostream.pollers import ENV_VAR, PollerUnavailable

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("kqueue", "epoll", "devpoll", "poll", "select")
UNAVAILABLE = [name for name in ORDER if name not in pollers.available()]

_SCRIPT = """
from iostream import pollers
try:
    cls = pollers.choose()
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
else:
    print("chose " + cls.name)
"""


def choose_in_subprocess(value: str | None) -> str:
    """What a fresh interpreter's choose() says with IOSTREAM_POLLER=*value* (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if value is not None:
        env[ENV_VAR] = value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_available_is_in_best_first_order_and_ends_with_select() -> None:
    names = pollers.available()
    assert names == tuple(name for name in ORDER if name in names)
    assert names[-1] == "select"
    assert list(pollers.BACKENDS) == list(ORDER)
    for name, cls in pollers.BACKENDS.items():
        assert cls.name == name
        assert cls.available() == (name in names)


def test_poll_is_not_offered_on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pollers.PollPoller, "_macos", True)
    assert "poll" not in pollers.available()
    assert "macOS" in pollers.unavailable_reasons()["poll"]
    with pytest.raises(PollerUnavailable):
        pollers.choose("poll")


def test_unavailable_reasons_cover_exactly_the_unavailable() -> None:
    reasons = pollers.unavailable_reasons()
    assert set(reasons) == set(UNAVAILABLE)
    for reason in reasons.values():
        assert isinstance(reason, str)
        assert sys.platform in reason or "macOS" in reason


@pytest.mark.parametrize("name", pollers.available())
def test_choose_by_name_any_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "bogus")  # an argument wins over the environment
    assert pollers.choose(name) is pollers.BACKENDS[name]
    assert pollers.choose(name.upper()) is pollers.BACKENDS[name]
    assert pollers.choose(f"  {name.title()} ") is pollers.BACKENDS[name]


def test_choose_default_is_the_best(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    best = pollers.BACKENDS[pollers.available()[0]]
    assert pollers.choose() is best
    for empty in ("", "   ", ",", " , ,"):
        assert pollers.choose(empty) is best
        monkeypatch.setenv(ENV_VAR, empty)
        assert pollers.choose() is best


def test_preference_list_first_available_wins() -> None:
    assert pollers.choose("select,poll" if "poll" in pollers.available() else "select").name == (
        "select"
    )
    listed = ",".join([*UNAVAILABLE, "select"])
    assert pollers.choose(listed).name == "select"
    assert pollers.choose(" , ".join(reversed(pollers.available()))).name == "select"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="bogus") as info:
        pollers.choose("bogus")
    assert not isinstance(info.value, PollerUnavailable)
    for name in ORDER:
        assert name in str(info.value)
    # A typo anywhere in a list is reported, even after an available name.
    with pytest.raises(ValueError, match="epol"):
        pollers.choose("select,epol")


@pytest.mark.skipif(not UNAVAILABLE, reason="every backend is available here")
@pytest.mark.parametrize("name", UNAVAILABLE)
def test_unavailable_name_names_platform_and_alternatives(name: str) -> None:
    with pytest.raises(PollerUnavailable) as info:
        pollers.choose(name)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert name in message
    assert sys.platform in message
    for here in pollers.available():
        assert here in message
    with pytest.raises(PollerUnavailable):
        pollers.choose(",".join(UNAVAILABLE))


def test_choose_rejects_a_non_string() -> None:
    with pytest.raises(TypeError, match="name"):
        pollers.choose(3)  # type: ignore[arg-type]


# -- in a fresh interpreter ----------------------------------------------------


def test_env_unset_and_empty_give_the_best() -> None:
    best = pollers.available()[0]
    assert choose_in_subprocess(None) == f"chose {best}"
    assert choose_in_subprocess("") == f"chose {best}"


@pytest.mark.parametrize("name", pollers.available())
def test_env_upper_case(name: str) -> None:
    assert choose_in_subprocess(name.upper()) == f"chose {name}"


def test_env_list_skips_unavailable() -> None:
    expected = "poll" if "poll" in pollers.available() else "select"
    assert choose_in_subprocess("devpoll, poll ,select") == f"chose {expected}"


def test_env_unknown_name() -> None:
    out = choose_in_subprocess("nosuchpoller")
    assert out.startswith("ValueError: ")
    assert "nosuchpoller" in out
    assert ENV_VAR in out
    assert "epoll" in out and "kqueue" in out


@pytest.mark.skipif(not UNAVAILABLE, reason="every backend is available here")
def test_env_unavailable_name() -> None:
    out = choose_in_subprocess(UNAVAILABLE[0].upper())
    assert out.startswith("PollerUnavailable: ")
    assert sys.platform in out
    assert pollers.available()[0] in out


# -- the socket probe (automatic choice skips a backend that does not work) ----------


class _DeafPoller(pollers.SelectPoller):
    """A backend that exists but never reports anything (a broken emulation)."""

    name = "epoll"

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return []


class _RefusedPoller(pollers.SelectPoller):
    """A backend whose kernel object a sandbox refuses."""

    name = "epoll"

    def _kernel_open(self) -> None:
        raise PermissionError(1, "Operation not permitted (seccomp)")


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty probe cache, and a short probe timeout, for this test only."""
    monkeypatch.setattr(pollers, "_probe_results", {})
    monkeypatch.setattr(pollers, "_PROBE_TIMEOUT", 0.2)
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.usefixtures("fresh_probes")
@pytest.mark.parametrize("broken", [_DeafPoller, _RefusedPoller], ids=["deaf", "refused"])
def test_automatic_choice_skips_a_backend_failing_the_probe(
    monkeypatch: pytest.MonkeyPatch, broken: type[pollers.Poller]
) -> None:
    best = pollers.available()[0]
    monkeypatch.setitem(pollers.BACKENDS, best, broken)
    monkeypatch.setattr(broken, "available", classmethod(lambda cls: True))
    chosen = pollers.choose()
    assert chosen is not broken
    assert chosen.name == pollers.available()[1]
    reason = pollers.unavailable_reasons()[best]
    assert "socket probe" in reason and sys.platform in reason
    # Asked for by name, it is used as it is.
    assert pollers.choose(best) is broken


@pytest.mark.usefixtures("fresh_probes")
def test_the_probe_runs_once_per_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    real = pollers._run_probe

    def counting(cls: type[pollers.Poller]) -> str | None:
        runs.append(cls.name)
        return real(cls)

    monkeypatch.setattr(pollers, "_run_probe", counting)
    for _ in range(3):
        pollers.choose()
    assert runs == [pollers.available()[0]]
    pollers.unavailable_reasons()
    assert sorted(runs) == sorted(pollers.available())


@pytest.mark.usefixtures("fresh_probes")
def test_every_backend_here_passes_the_probe() -> None:
    for name in pollers.available():
        assert pollers._probe(name) is None, name
