"""Sync/async twins written once: a method's body as a *flow*.

The client and the framework classes offer each operation twice, sync and async (``run`` /
``run_async``, ``embed_documents`` / ``aembed_documents``, ``wait_until_ready`` /
``await_until_ready``, ...), and the two bodies are the same but for the calls that wait. A
flow is that body written once, as a generator (the shape of httpx's ``auth_flow``): it
yields each such call as a :class:`Call`, the sync function and its async twin with their
arguments (:func:`call`: ``call(client.rerank, client.arerank)(query, texts)``), and
receives the answer, or the call's error raised at the ``yield`` (so the flow's ``with`` and
``try`` blocks see errors, cancellation included, as they did). :func:`drive` runs a flow
with the sync functions, :func:`adrive` with the async ones::

    def _flow(self, query: str) -> Flow[RerankResult, list[Document]]:
        texts = self._texts(query)
        with self._events():
            result = yield call(client.rerank, client.arerank)(query, texts)
        return self._ranked(result)

    def run(self, query: str) -> list[Document]:
        return drive(self._flow(query))

    async def run_async(self, query: str) -> list[Document]:
        return await adrive(self._flow(query))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Generic, ParamSpec, TypeAlias, TypeVar

__all__ = ["Call", "Flow", "adrive", "call", "drive"]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call(Generic[T_co]):
    """One call that waits, ready to be made sync or async (see :func:`call`)."""

    sync: Callable[[], T_co]
    async_: Callable[[], Awaitable[T_co]]


def call(sync: Callable[P, T], async_: Callable[P, Awaitable[T]], /) -> Callable[P, Call[T]]:
    """``call(client.embed, client.aembed)(texts, **options)``: the :class:`Call` of ``sync``
    (or ``async_``, its async twin) with those arguments, as mypy checks them against
    ``sync`` (an overloaded method: its first overload)."""

    def with_arguments(*args: P.args, **kwargs: P.kwargs) -> Call[T]:
        return Call(partial(sync, *args, **kwargs), partial(async_, *args, **kwargs))

    return with_arguments


#: A flow: yields :class:`Call` s, receives each one's answer, returns the method's result.
Flow: TypeAlias = Generator[Call[T], T, R]


def drive(flow: Flow[T, R]) -> R:
    """Run ``flow``, making its calls with the sync functions."""
    steps = _Steps(flow)
    while (step := steps.next()) is not None:
        try:
            steps.answered(step.sync())
        except BaseException as error:
            steps.failed(error)
    return steps.result


async def adrive(flow: Flow[T, R]) -> R:
    """Run ``flow``, making its calls with the async functions."""
    steps = _Steps(flow)
    while (step := steps.next()) is not None:
        try:
            steps.answered(await step.async_())
        except BaseException as error:  # cancellation too: the flow's with blocks see it
            steps.failed(error)
    return steps.result


class _Steps(Generic[T, R]):
    """A flow between two calls: what resumes it (the last call's answer or error) and, once
    it has returned, its result."""

    def __init__(self, flow: Flow[T, R]) -> None:
        self._flow = flow
        self._resume: Callable[[], Call[T]] = flow.__next__
        self.result: R

    def next(self) -> Call[T] | None:
        """Resume the flow: its next call, or ``None`` once it has returned ``result``."""
        try:
            return self._resume()
        except StopIteration as done:
            self.result = done.value
            return None

    def answered(self, answer: T) -> None:
        self._resume = partial(self._flow.send, answer)

    def failed(self, error: BaseException) -> None:
        self._resume = partial(self._flow.throw, error)
