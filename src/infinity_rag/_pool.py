"""Which replica gets the next request, and when a failed one is tried again. No I/O.

A client given several URLs (one Infinity replica per GPU, say) keeps a :class:`ReplicaPool`:

- each request goes to the replica its balancer (``infinity_rag._balance``) picks among those
  in rotation: peak-EWMA latency x load with power of two choices, or the fewest requests in
  flight (LiteLLM's Router calls this ``least-busy``); the balancer learns each try's latency;
- a replica that fails (connection error, timeout, 5xx) is taken out of rotation for
  ``replica_backoff`` seconds, doubled with each consecutive failure up to
  ``max_replica_backoff`` (elastic-transport's dead-node backoff); a success resets it;
- a replica that answers 429 is spared for its ``Retry-After`` without being counted as
  failed;
- when every replica is out, the one whose time out ends first is tried rather than none;
- a replica whose tries lose two hedge races in a row (no answer between) is spared like
  after a 429, ``replica_backoff`` seconds doubled with each further loss.

:class:`Attempts` decides, for one request, where each try goes and how long to wait before
it, with the client's :class:`RetryPolicy`: a retry goes to another
replica that is in rotation when there is one, at once; otherwise it waits the policy's
delay. The client only sends. Time comes from ``clock`` (monotonic) so tests can move it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from infinity_rag._balance import Balancer, make_balancer
from infinity_rag._config import DEFAULT_MAX_RETRIES
from infinity_rag.errors import (
    EncodingRefusedError,
    InfinityConnectionError,
    InfinityError,
    OverloadedError,
    ServerError,
)
from infinity_rag.types import ReplicaState

__all__ = ["Attempts", "Outrun", "Replica", "ReplicaPool", "RetryPolicy"]

logger = logging.getLogger("infinity_rag")

DEFAULT_REPLICA_BACKOFF = 1.0
DEFAULT_MAX_REPLICA_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for errors that may pass (connection, 429, 5xx)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, retries_done: int, error: InfinityError) -> float | None:
        """Seconds to wait before the next try, or ``None`` to give up and raise ``error``."""
        if not error.retryable or retries_done >= self.max_retries:
            return None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:  # the server said how long (429 / 503)
            return float(retry_after)
        ceiling = min(self.max_delay, self.initial_delay * 2.0**retries_done)
        # "Equal jitter": at least half the backoff, so a flood of clients spreads out
        # without any of them retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(slots=True)
class Replica:
    """One server: its URLs and what the pool knows of it (guarded by the pool's lock)."""

    base_url: str  # with the --url-prefix
    root_url: str  # without it: /health lives there
    shown: str  # base_url with any password masked: for messages, logs and states
    in_flight: int = 0
    consecutive_failures: int = 0
    out_until: float = 0.0  # clock() time until which it is out of rotation (failed)
    spared_until: float = 0.0  # clock() time until which it is spared (429 Retry-After)
    #: clock() time until which it is spared for losing hedge races (see ReplicaPool._outrun):
    #: a hedged copy may still go there when no other replica is in rotation.
    stalled_until: float = 0.0
    answered_at: float = -math.inf  # clock() time of its last answer
    requests: int = 0
    failures: int = 0
    outrun_in_a_row: int = 0  # tries in a row that lost a hedge race (no answer since)

    def resting_until(self) -> float:
        return max(self.out_until, self.spared_until, self.stalled_until)


class Outrun(Exception):
    """How a try that lost a hedge race ends: cancelled, the other copy having answered
    first. It only tells the balancer that this replica took at least that long."""


class ReplicaPool:
    """The replicas of one client, their load and their health.

    Thread-safe: one lock guards every change, held only for a few assignments, so it is
    shared by the client's threads and event loops alike.
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        *,
        backoff: float = DEFAULT_REPLICA_BACKOFF,
        max_backoff: float = DEFAULT_MAX_REPLICA_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        balancer: str | Balancer = "least-busy",
    ) -> None:
        if not replicas:
            raise ValueError("a replica pool needs at least one URL")
        check_backoff(backoff, max_backoff)
        self.replicas = list(replicas)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self.balancer = (
            make_balancer(balancer, rng=self._rng) if isinstance(balancer, str) else balancer
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.replicas)

    # --- choosing ------------------------------------------------------------------------

    def acquire(self, avoid: Sequence[Replica] = ()) -> Replica:
        """The replica for the next try, counted as in flight until :meth:`release`.

        In rotation and not in ``avoid`` (those that just failed this request) first, then in
        rotation, then the one whose time out ends first (among those not in ``avoid``, if
        any); among equals, the fewest requests in flight, then the fewest sent so far, then
        at random.
        """
        with self._lock:
            now = self._clock()
            ready = [r for r in self.replicas if r.resting_until() <= now]
            fresh = [r for r in ready if r not in avoid]
            if fresh or ready:
                choice = self.balancer.pick(fresh or ready, now)
            else:  # every replica is out: the one back soonest, untried ones first
                untried = [r for r in self.replicas if r not in avoid] or self.replicas
                soonest = min(r.resting_until() for r in untried)
                choice = self.balancer.pick(
                    [r for r in untried if r.resting_until() == soonest], now
                )
            choice.in_flight += 1
            choice.requests += 1
            return choice

    def has_ready(self, avoid: Sequence[Replica] = ()) -> bool:
        """Whether a replica outside ``avoid`` is in rotation right now."""
        with self._lock:
            now = self._clock()
            return any(r.resting_until() <= now and r not in avoid for r in self.replicas)

    def hedge_target(self, avoid: Sequence[Replica]) -> Replica | None:
        """Where a hedged copy of a try on ``avoid`` would go (not yet counted: see
        :meth:`take`), or ``None``: a replica in rotation, else one only spared for losing
        hedge races. Such a replica may be stalled, or may have been unlucky twice; when it
        is the only other one, a copy there still beats waiting (the budget bounds the
        cost). A replica out after failures, or spared after a 429, gets no copy."""
        with self._lock:
            now = self._clock()
            up = [
                r
                for r in self.replicas
                if r not in avoid and r.out_until <= now and r.spared_until <= now
            ]
            ready = [r for r in up if r.stalled_until <= now]
            return self.balancer.pick(ready or up, now) if up else None

    def take(self, replica: Replica) -> Replica:
        """Count a try on ``replica`` (from :meth:`hedge_target`) in flight."""
        with self._lock:
            replica.in_flight += 1
            replica.requests += 1
            return replica

    # --- outcomes ------------------------------------------------------------------------

    def release(
        self, replica: Replica, error: BaseException | None = None, seconds: float | None = None
    ) -> None:
        """Record how a try on ``replica`` ended: ``None`` for an answer, or its error, and
        how long it took (``seconds``: the balancer's latency estimate learns from it).

        A connection error, a timeout or a 5xx takes the replica out of rotation; a 429
        spares it for its ``Retry-After``; any other answer (a 400 included: the server is
        up) counts as a success. An error that is not the server's (a cancelled task, an
        interrupt) changes nothing but the count in flight.
        """
        with self._lock:
            replica.in_flight -= 1
            now = self._clock()
            if seconds is not None:
                if isinstance(error, InfinityConnectionError | Outrun):
                    self.balancer.record_failure(replica, seconds, now)
                elif error is None or isinstance(error, InfinityError):
                    self.balancer.record(replica, seconds, now)
                self._log_slowness(now)
            if isinstance(error, Outrun):
                self._outrun(replica, now, seconds)
            elif isinstance(error, EncodingRefusedError):
                self._answered(replica, now)  # the model's answer, not the server's failure
            elif isinstance(error, InfinityConnectionError | ServerError):
                self._failed(replica, now, error)
            elif isinstance(error, OverloadedError):
                wait = error.retry_after if error.retry_after is not None else self.backoff
                replica.spared_until = max(replica.spared_until, now + wait)
            elif error is None or isinstance(error, InfinityError):
                self._answered(replica, now)

    def _outrun(self, replica: Replica, now: float, seconds: float | None) -> None:
        """A replica whose tries lose hedge races twice in a row, answering nothing while
        they waited, is stalled rather than slow (a GC pause, a throttled GPU, a stopped
        process): it is spared, ``backoff`` seconds doubled with each further loss, until it
        answers again (Envoy's outlier ejection, for latency). A replica that answered other
        requests meanwhile is alive: that one request was slow (a stall of one answer), and
        sparing it would only leave the others' stalls with nowhere to hedge to."""
        started = now - (seconds or 0.0)
        if replica.answered_at >= started:
            replica.outrun_in_a_row = 0
            return
        replica.outrun_in_a_row += 1
        if replica.outrun_in_a_row < 2 or len(self.replicas) < 2:
            return
        pause = min(self.max_backoff, self.backoff * 2.0 ** (replica.outrun_in_a_row - 2))
        replica.stalled_until = max(replica.stalled_until, now + pause)
        logger.warning(
            "Infinity replica %s lost %d hedge races in a row (no answer since): spared for %.1fs",
            replica.shown,
            replica.outrun_in_a_row,
            pause,
        )

    def _log_slowness(self, now: float) -> None:
        """A replica becoming much slower than the best, or recovering: logged once each."""
        for change in self.balancer.slow_changes(now):
            shown = next((r.shown for r in self.replicas if r.base_url == change.base_url), "?")
            if change.slow:
                logger.warning(
                    "Infinity replica %s is slow (latency estimate %.0f ms, %.1fx the fastest):"
                    " it gets less traffic until it recovers",
                    shown,
                    change.estimate * 1000,
                    change.estimate / change.best if change.best > 0 else float("inf"),
                )
            else:
                logger.info("Infinity replica %s is no longer slow", shown)

    def _failed(self, replica: Replica, now: float, error: BaseException) -> None:
        replica.failures += 1
        replica.consecutive_failures += 1
        pause = min(self.max_backoff, self.backoff * 2.0 ** (replica.consecutive_failures - 1))
        replica.out_until = now + pause
        if len(self.replicas) > 1:
            logger.warning(
                "Infinity replica %s is out of rotation for %.1fs after %d consecutive "
                "failure(s): %s",
                replica.shown,
                pause,
                replica.consecutive_failures,
                error,
            )

    def _answered(self, replica: Replica, now: float) -> None:
        if replica.consecutive_failures and len(self.replicas) > 1:
            logger.info(
                "Infinity replica %s is back in rotation after %d failure(s)",
                replica.shown,
                replica.consecutive_failures,
            )
        replica.consecutive_failures = 0
        replica.out_until = 0.0
        replica.stalled_until = 0.0
        replica.outrun_in_a_row = 0
        replica.answered_at = now

    # --- for logs and dashboards ---------------------------------------------------------

    def states(self) -> list[ReplicaState]:
        """A snapshot of every replica, in the order the URLs were given."""
        with self._lock:
            now = self._clock()
            offset = self._wall_clock() - now
            return [
                ReplicaState(
                    url=r.shown,
                    in_flight=r.in_flight,
                    consecutive_failures=r.consecutive_failures,
                    out_until=r.resting_until() + offset if r.resting_until() > now else None,
                    requests=r.requests,
                    failures=r.failures,
                    latency=self.balancer.estimate(r, now),
                )
                for r in self.replicas
            ]


def check_backoff(backoff: float, max_backoff: float) -> None:
    for name, value in (("replica_backoff", backoff), ("max_replica_backoff", max_backoff)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if max_backoff < backoff:
        raise ValueError(
            f"max_replica_backoff ({max_backoff!r}) must be >= replica_backoff ({backoff!r})"
        )


class Attempts:
    """The tries of one request: which replica each goes to, and the pause before it.

    ``every_replica_once`` (for ``/health``) tries each replica once, without pauses, on
    any error; otherwise the client's retry policy decides what is retried and how often.
    """

    def __init__(
        self, pool: ReplicaPool, policy: RetryPolicy, *, every_replica_once: bool = False
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._every_replica_once = every_replica_once
        self._tried: list[Replica] = []
        self._current: Replica | None = None
        self._retries = 0

    @property
    def retries(self) -> int:
        """How many retries were made so far."""
        return self._retries

    def start(self) -> Replica:
        """The replica for the next try (counted in flight until its outcome is recorded)."""
        self._current = self._pool.acquire(self._tried)
        return self._current

    def succeeded(self, seconds: float | None = None) -> None:
        self._pool.release(self._take(), None, seconds)

    def outrun(self, seconds: float) -> None:
        """The try was cancelled after ``seconds``: a hedged copy on another replica answered
        first (not a failure; its replica took at least that long)."""
        self._pool.release(self._take(), Outrun(), seconds)

    def abandoned(self) -> None:
        """The try ended by something that is not the server's doing (cancelled, interrupted)."""
        if self._current is not None:
            self._pool.release(self._take(), KeyboardInterrupt())

    def failed(
        self,
        error: InfinityError,
        describe: Callable[[InfinityError, int, float], None],
        seconds: float | None = None,
    ) -> float:
        """The pause before the next try; raises ``error`` when there is none to make.

        ``describe(error, retry_number, delay)`` is called before a retry (the client logs
        it). The raised error
        names every URL that was tried (``error.urls``; in the message with several
        replicas).
        """
        replica = self._take()
        self._pool.release(replica, error, seconds)
        if replica not in self._tried:
            self._tried.append(replica)
        if self._every_replica_once:
            if len(self._tried) >= len(self._pool):
                raise self._with_urls(error)
            return 0.0
        delay = self._policy.delay(self._retries, error)
        self._retries += 1
        if delay is None:
            raise self._with_urls(error)
        if self._pool.has_ready(avoid=[replica]):
            delay = 0.0  # another replica can take it now: no reason to wait
        describe(error, self._retries, delay)
        return delay

    def _take(self) -> Replica:
        replica, self._current = self._current, None
        if replica is None:
            raise RuntimeError("Attempts: an outcome without a started try")
        return replica

    def _with_urls(self, error: InfinityError) -> InfinityError:
        urls = tuple(dict.fromkeys(replica.shown for replica in self._tried))
        error.add_urls(urls, mention=len(self._pool) > 1)
        return error
