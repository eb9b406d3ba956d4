"""Flows: a sync/async method pair's body written once (``infinity_rag._flows``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from infinity_rag._flows import Flow, adrive, call, drive


class Service:
    """A sync method and its async twin, which fail on a negative number."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def double(self, value: int, *, plus: int = 0) -> int:
        self.calls.append(("sync", value))
        if value < 0:
            raise ValueError(f"negative: {value}")
        return 2 * value + plus

    async def adouble(self, value: int, *, plus: int = 0) -> int:
        self.calls.append(("async", value))
        await asyncio.sleep(0)
        if value < 0:
            raise ValueError(f"negative: {value}")
        return 2 * value + plus


@contextmanager
def recorded(log: list[str]) -> Iterator[None]:
    log.append("enter")
    try:
        yield
    except BaseException as error:
        log.append(f"error: {type(error).__name__}")
        raise
    log.append("exit")


def doubled_flow(service: Service, values: list[int], log: list[str]) -> Flow[int, list[int]]:
    results = []
    with recorded(log):
        for value in values:
            results.append((yield call(service.double, service.adouble)(value, plus=1)))
    return results


def both(flow: Callable[[], Flow[int, list[int]]]) -> tuple[list[int], list[int]]:
    return drive(flow()), asyncio.run(adrive(flow()))


def test_both_drivers_make_the_calls_and_return_the_result() -> None:
    service, log = Service(), list[str]()
    assert both(lambda: doubled_flow(service, [1, 2, 3], log)) == ([3, 5, 7], [3, 5, 7])
    assert [kind for kind, _ in service.calls] == ["sync"] * 3 + ["async"] * 3
    assert log == ["enter", "exit"] * 2


def test_a_flow_without_calls_returns_at_once() -> None:
    service, log = Service(), list[str]()
    assert both(lambda: doubled_flow(service, [], log)) == ([], [])
    assert service.calls == []


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_calls_error_is_raised_in_the_flow(driver: str) -> None:
    service, log = Service(), list[str]()
    flow = doubled_flow(service, [1, -2, 3], log)
    with pytest.raises(ValueError, match="negative: -2"):
        drive(flow) if driver == "sync" else asyncio.run(adrive(flow))
    assert log == ["enter", "error: ValueError"]
    assert [value for _, value in service.calls] == [1, -2]  # nothing after the failure


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_flow_may_handle_an_error(driver: str) -> None:
    service = Service()

    def flow() -> Flow[int, int]:
        try:
            return (yield call(service.double, service.adouble)(-1))
        except ValueError:
            return (yield call(service.double, service.adouble)(1))

    assert (drive(flow()) if driver == "sync" else asyncio.run(adrive(flow()))) == 2


def test_an_error_before_the_first_call_is_raised_as_it_is() -> None:
    def flow() -> Flow[int, int]:
        raise TypeError("bad input")
        yield  # pragma: no cover - a generator

    with pytest.raises(TypeError, match="bad input"):
        drive(flow())
    with pytest.raises(TypeError, match="bad input"):
        asyncio.run(adrive(flow()))


async def test_cancellation_reaches_the_flow() -> None:
    log: list[str] = []
    started = asyncio.Event()

    async def forever(value: int) -> int:
        started.set()
        await asyncio.Event().wait()
        return value

    def flow() -> Flow[int, int]:
        with recorded(log):
            return (yield call(lambda value: value, forever)(1))

    task = asyncio.create_task(adrive(flow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["enter", "error: CancelledError"]
