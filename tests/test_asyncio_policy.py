"""iostream.asyncio's new_event_loop, EventLoopPolicy and run, beyond CPython's suites."""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import AsyncGenerator, Iterator

import pytest

from iostream import pollers
from iostream.asyncio import EventLoopPolicy, PollerSelector, new_event_loop, run


def _poller_of(loop: asyncio.AbstractEventLoop) -> str:
    selector = loop._selector  # type: ignore[attr-defined]
    assert isinstance(selector, PollerSelector)
    return selector.poller.name


@pytest.fixture
def restore_policy() -> Iterator[None]:
    previous = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


def test_new_event_loop_is_a_selector_loop_on_the_poller(poller_name: str) -> None:
    loop = new_event_loop(poller_name)
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert _poller_of(loop) == poller_name
        assert loop.run_until_complete(asyncio.sleep(0, "done")) == "done"
    finally:
        loop.close()


def test_new_event_loop_default_follows_env(
    monkeypatch: pytest.MonkeyPatch, poller_name: str
) -> None:
    monkeypatch.setenv(pollers.ENV_VAR, poller_name)
    loop = new_event_loop()
    try:
        assert _poller_of(loop) == poller_name
    finally:
        loop.close()


def test_run_returns_the_result_and_cleans_up(poller_name: str) -> None:
    seen: dict[str, object] = {}

    async def leftover() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["leftover cancelled"] = True
            raise

    async def agen() -> AsyncGenerator[int, None]:
        try:
            yield 1
        finally:
            seen["asyncgen closed"] = True

    async def main() -> int:
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        seen["poller"] = _poller_of(loop)
        seen["debug"] = loop.get_debug()
        asyncio.get_running_loop().create_task(leftover())
        gen = agen()
        await gen.__anext__()  # left suspended: shutdown_asyncgens closes it
        seen["gen"] = gen
        await asyncio.sleep(0)
        return 42

    assert run(main(), poller=poller_name, debug=True) == 42
    assert seen["poller"] == poller_name
    assert seen["debug"] is True
    assert seen["leftover cancelled"] is True
    assert seen["asyncgen closed"] is True
    loop = seen["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert loop.is_closed()


def test_run_propagates_the_exception(poller_name: str) -> None:
    async def main() -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run(main(), poller=poller_name)


def test_run_refuses_a_running_loop(poller_name: str) -> None:
    async def inner() -> None:
        pass

    async def outer() -> None:
        coro = inner()
        try:
            with pytest.raises(RuntimeError, match="running event loop"):
                run(coro, poller=poller_name)
        finally:
            coro.close()

    run(outer(), poller=poller_name)


def test_policy_makes_asyncio_run_use_the_poller(poller_name: str, restore_policy: None) -> None:
    asyncio.set_event_loop_policy(EventLoopPolicy(poller_name))

    async def main() -> str:
        return _poller_of(asyncio.get_running_loop())

    assert asyncio.run(main()) == poller_name
    loop = asyncio.new_event_loop()
    try:
        assert _poller_of(loop) == poller_name
    finally:
        loop.close()


def test_policy_accepts_a_poller_class(poller_name: str) -> None:
    cls = pollers.choose(poller_name)
    policy = EventLoopPolicy(cls)
    assert policy.poller is cls
    loop = policy.new_event_loop()
    try:
        assert _poller_of(loop) == poller_name
    finally:
        loop.close()


def test_policy_bad_arguments(poller_name: str) -> None:
    instance = pollers.choose(poller_name)()
    try:
        with pytest.raises(TypeError, match="each event loop needs a poller of its own"):
            EventLoopPolicy(instance)  # type: ignore[arg-type]
    finally:
        instance.close()
    with pytest.raises(ValueError, match="unknown poller 'nope'"):
        EventLoopPolicy("nope")
    with pytest.raises(TypeError, match="poller must be"):
        EventLoopPolicy(1.5)  # type: ignore[arg-type]
    unavailable = [name for name in pollers.BACKENDS if name not in pollers.available()]
    if unavailable:
        with pytest.raises(pollers.PollerUnavailable):
            EventLoopPolicy(unavailable[0])


def test_no_deprecation_warning_in_normal_use(poller_name: str, restore_policy: None) -> None:
    # 3.12 deprecates child watchers and 3.14 the policies: nothing of ours
    # may warn on 3.10-3.13 when a program uses the policy, run(), a
    # subprocess (child watcher) or new_event_loop().
    async def main() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.set_event_loop_policy(EventLoopPolicy(poller_name))
        assert asyncio.run(main()).strip() == b"child"
        assert run(main(), poller=poller_name).strip() == b"child"
        new_event_loop(poller_name).close()
