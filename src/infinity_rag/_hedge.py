"""When to send a second copy of a one-request call to another replica. No I/O, no clock.

Hedged requests, as in Dean and Barroso's "The Tail at Scale" (CACM 2013: "defer sending a
secondary request until the first request has been outstanding for more than the
95th-percentile expected latency ... limiting the additional load to approximately 5%") and
gRPC's hedging policy (gRFC A6: ``hedgingDelay``, and a token bucket that throttles retries
and hedges so that a struggling fleet is not sent more): the engine sends a call that is one
request (a query's embedding, one rerank request) to replica A, waits :meth:`HedgePolicy.
delay`, and if no answer has come and :meth:`HedgePolicy.try_spend` agrees, sends the same
request to another replica, takes the first answer and cancels the other. Embeddings and
reranks are idempotent, so a duplicate is safe.

- :class:`LatencyWindow`: the latencies of the last ``size`` tries (optionally no older than
  ``max_age`` seconds), kept sorted, so a quantile costs O(1).
- :class:`HedgePolicy`: the delay (a quantile of the window, clamped; ``None`` until enough
  samples), one window per kind of call (``key``: an embedding of one text and a rerank of
  100 documents do not share a p95), and the budget: a token bucket where each call deposits
  ``budget`` tokens (up to ``max_tokens``) and each hedge spends one, so hedges are at most
  ``budget`` of the calls over a long run, plus the bucket's ``max_tokens``.

Not thread-safe: call it from the engine's event loop, or under the pool's lock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_QUANTILE",
    "HedgePolicy",
    "LatencyWindow",
    "make_hedge_policy",
]

DEFAULT_QUANTILE = 0.95
DEFAULT_BUDGET = 0.05
DEFAULT_MIN_DELAY = 0.001  # seconds: never hedge sooner (a p95 of 0.2 ms is noise)
DEFAULT_MAX_DELAY = 2.0  # seconds: never wait longer than this before hedging
DEFAULT_MIN_SAMPLES = 20  # no hedging until this many latencies of the call's kind are known
DEFAULT_WINDOW = 1000  # latencies kept per kind of call
DEFAULT_MAX_TOKENS = 10.0  # the bucket's capacity: the most hedges in a burst


class LatencyWindow:
    """The last ``size`` latencies (seconds), dropping any older than ``max_age`` seconds."""

    def __init__(self, size: int = DEFAULT_WINDOW, max_age: float | None = None) -> None:
        _check_int(size, "size", minimum=1)
        if max_age is not None:
            _check_float(max_age, "max_age", low=0.0, low_open=True)
        self.size = size
        self.max_age = max_age
        self._arrivals: deque[tuple[float, float]] = deque()  # (time, seconds), oldest first
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def record(self, seconds: float, now: float) -> None:
        seconds = max(float(seconds), 0.0)
        self.expire(now)
        if len(self._arrivals) >= self.size:
            self._drop_oldest()
        self._arrivals.append((now, seconds))
        bisect.insort(self._sorted, seconds)

    def expire(self, now: float) -> None:
        """Drop the latencies older than ``max_age`` at ``now``."""
        if self.max_age is None:
            return
        while self._arrivals and self._arrivals[0][0] < now - self.max_age:
            self._drop_oldest()

    def drop_until(self, when: float) -> None:
        """Drop the latencies recorded at or before ``when``."""
        while self._arrivals and self._arrivals[0][0] <= when:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, seconds = self._arrivals.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, seconds)]

    def quantile(self, q: float, now: float | None = None) -> float | None:
        """The ``q``-quantile (nearest rank) of the window, ``None`` when it is empty.

        With ``now``, latencies older than ``max_age`` are dropped first.
        """
        _check_float(q, "q", low=0.0, high=1.0)
        if now is not None:
            self.expire(now)
        if not self._sorted:
            return None
        rank = max(math.ceil(q * len(self._sorted)) - 1, 0)
        return self._sorted[rank]


class HedgePolicy:
    """When to hedge a one-request call, and whether the budget allows it.

    ``quantile`` (0.95): hedge after this quantile of recent latencies of the same kind of
    call, clamped to [``min_delay``, ``max_delay``] seconds; ``None`` (no hedge) until
    ``min_samples`` are known. Those first ``min_samples`` are a warm-up, dropped once as
    many more are known: a fresh client's first calls pay for imports, new connections and
    the servers' own first requests (10-20x a warm call, measured), and kept in a window of
    1,000 they would hold the delay up for its next hundreds of calls. ``budget`` (0.05):
    hedges allowed per call over a long run (0 never hedges); ``max_tokens``: the bucket's
    capacity, the most hedges in a burst (it starts full). ``window``/``max_age``: the
    latencies kept per kind of call.

    The engine, per call: ``delay = policy.start(now, key)``; send; if no answer after
    ``delay`` and ``policy.try_spend()``: send the copy to another replica. It records the
    latency of each try that got an answer (``policy.record(seconds, now, key)``) and, for a
    try cancelled because the other answered first, the time it had been waiting (a lower
    bound: leaving it out would hide the very tail the delay is learned from).
    """

    def __init__(
        self,
        *,
        quantile: float = DEFAULT_QUANTILE,
        budget: float = DEFAULT_BUDGET,
        min_delay: float = DEFAULT_MIN_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        window: int = DEFAULT_WINDOW,
        max_age: float | None = None,
        max_tokens: float = DEFAULT_MAX_TOKENS,
        enabled: bool = True,
    ) -> None:
        _check_float(quantile, "quantile", low=0.0, high=1.0, low_open=True, high_open=True)
        _check_float(budget, "budget", low=0.0, high=1.0)
        _check_float(min_delay, "min_delay", low=0.0)
        _check_float(max_delay, "max_delay", low=0.0)
        if max_delay < min_delay:
            raise ValueError(f"max_delay ({max_delay!r}) must be >= min_delay ({min_delay!r})")
        _check_int(min_samples, "min_samples", minimum=1)
        _check_int(window, "window", minimum=1)
        if min_samples > window:
            raise ValueError(f"min_samples ({min_samples}) must be <= window ({window})")
        if max_age is not None:
            _check_float(max_age, "max_age", low=0.0, low_open=True)
        _check_float(max_tokens, "max_tokens", low=1.0)
        if not isinstance(enabled, bool):
            raise ValueError(f"enabled must be True or False, got {enabled!r}")
        self.quantile = float(quantile)
        self.budget = float(budget)
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.min_samples = min_samples
        self.window = window
        self.max_age = max_age
        self.max_tokens = float(max_tokens)
        self.enabled = enabled and budget > 0
        self.tokens = self.max_tokens
        self.calls = 0  # calls started (start())
        self.hedges = 0  # hedges allowed (try_spend() == True)
        self._windows: dict[str, LatencyWindow] = {}
        #: Per kind of call: latencies recorded, and when the warm-up's last one was.
        self._recorded: dict[str, int] = {}
        self._warmup_end: dict[str, float] = {}

    @classmethod
    def disabled(cls) -> HedgePolicy:
        """A policy that never hedges (``hedge=False``)."""
        return cls(enabled=False)

    def __repr__(self) -> str:
        if not self.enabled:
            return "HedgePolicy.disabled()"
        return (
            f"HedgePolicy(quantile={self.quantile!r}, budget={self.budget!r}, "
            f"min_delay={self.min_delay!r}, max_delay={self.max_delay!r}, "
            f"min_samples={self.min_samples!r})"
        )

    def _window(self, key: str) -> LatencyWindow:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = LatencyWindow(self.window, self.max_age)
        return window

    def record(self, seconds: float, now: float, key: str = "") -> None:
        """A try of a one-request call of kind ``key`` took ``seconds`` (see the class doc)."""
        if not self.enabled:
            return
        window = self._window(key)
        window.record(seconds, now)
        count = self._recorded[key] = self._recorded.get(key, 0) + 1
        if count == self.min_samples:
            self._warmup_end[key] = now
        elif count == 2 * self.min_samples:
            window.drop_until(self._warmup_end.pop(key))

    def delay(self, now: float, key: str = "") -> float | None:
        """Seconds to wait for the first answer before hedging; ``None``: do not hedge."""
        if not self.enabled:
            return None
        window = self._windows.get(key)
        if window is None:
            return None
        window.expire(now)
        if len(window) < self.min_samples:
            return None
        value = window.quantile(self.quantile)
        if value is None:  # pragma: no cover - min_samples >= 1 rules it out
            return None
        return min(max(value, self.min_delay), self.max_delay)

    def start(self, now: float, key: str = "") -> float | None:
        """A one-request call of kind ``key`` starts: deposit its share of the budget and
        return :meth:`delay` (``None``: send it once, no hedge)."""
        if not self.enabled:
            return None
        self.calls += 1
        self.tokens = min(self.tokens + self.budget, self.max_tokens)
        return self.delay(now, key)

    def try_spend(self) -> bool:
        """Whether a hedge may be sent now (the budget holds a whole token: it spends it)."""
        if not self.enabled or self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        self.hedges += 1
        return True


def make_hedge_policy(hedge: bool | HedgePolicy | None) -> HedgePolicy:
    """The client's ``hedge`` setting as a policy: ``True``/``None`` the default one,
    ``False`` :meth:`HedgePolicy.disabled`, a :class:`HedgePolicy` itself (not copied: its
    latencies and budget are shared by every client given it)."""
    if isinstance(hedge, HedgePolicy):
        return hedge
    if hedge is None or hedge is True:
        return HedgePolicy()
    if hedge is False:
        return HedgePolicy.disabled()
    raise ValueError(f"hedge must be True, False or a HedgePolicy, got {hedge!r}")


def _check_float(
    value: object,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = False
    if not isinstance(value, bool) and isinstance(value, int | float) and not math.isnan(value):
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        top = "inf" if high == math.inf else f"{high:g}"
        raise ValueError(f"{name} must be a number in {left}{low:g}, {top}{right}, got {value!r}")


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
