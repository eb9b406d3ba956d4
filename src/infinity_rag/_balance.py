"""Which replica among those in rotation gets the next request. No I/O, no threads, no clock.

The pool (:class:`~infinity_rag._pool.ReplicaPool`) filters the replicas that may take a try
(in rotation, not already tried by this request) and asks its balancer to choose among
them; it then tells the balancer how long each try took. Every method takes ``now`` (the
pool's monotonic clock) so that tests move time by hand. The pool holds its lock around
these calls: nothing here locks, sleeps or logs.

- :class:`LeastBusy` (``"least-busy"``): the fewest requests in flight, then the fewest
  sent so far, then at random (the client's rule before latency-aware choice, LiteLLM
  Router's ``least-busy``).
- :class:`PeakEwma` (``"peak-ewma"``): power of two choices over each replica's peak-EWMA
  latency x (requests in flight + 1), as Finagle's ``PeakEwma``, tower's ``peak_ewma``
  (Linkerd2-proxy's balancer) and Envoy's ``peak_ewma`` load-balancing policy do.

Both keep a :class:`LatencyEstimates` (one peak-EWMA per replica) so that
``client.replicas()`` shows each replica's latency estimate whichever balancer is used,
and both report a replica that becomes much slower than the best one, and its recovery,
once per change (:meth:`Balancer.slow_changes`) for the pool to log.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

__all__ = [
    "BALANCERS",
    "DEFAULT_ANSWER_WEIGHT",
    "DEFAULT_BALANCER",
    "DEFAULT_DECAY",
    "Balancer",
    "LatencyEstimates",
    "LeastBusy",
    "PeakEwma",
    "ReplicaLike",
    "SlowChange",
    "make_balancer",
]

DEFAULT_DECAY = 10.0  # seconds: Finagle's default decayTime, Linkerd's default decay
# Each answer below the estimate pulls it at least this far toward it (Finagle: 0, time only).
DEFAULT_ANSWER_WEIGHT = 0.1
DEFAULT_SLOW_FACTOR = 3.0  # "slow": an estimate above 3x the best replica's
DEFAULT_RECOVER_FACTOR = 2.0  # "recovered": back below 2x (hysteresis: no flapping logs)
# ... and "slow" only when also this many seconds slower: a few ms between replicas on one
# busy host (4 ms against 1 ms) is noise, not a replica to warn about.
SLOW_MARGIN = 0.020
# Finagle's penalty for a replica with no latency yet but a request in flight (its
# ``Long.MaxValue >> 16`` nanoseconds, here in seconds): one probe at a time until it answers.
UNMEASURED_PENALTY = float(2**47) / 1e9


class ReplicaLike(Protocol):
    """What a balancer reads of a replica (``_pool.Replica`` has these and more)."""

    @property
    def base_url(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def requests(self) -> int: ...


R = TypeVar("R", bound=ReplicaLike)


class SlowChange(NamedTuple):
    """A replica became slow (``slow=True``) or recovered, for the pool to log once."""

    base_url: str
    slow: bool
    estimate: float  # its latency estimate now, seconds
    best: float  # the best replica's estimate now, seconds


@dataclass(slots=True)
class _Estimate:
    value: float  # the peak-EWMA at ``stamp``, seconds
    stamp: float  # clock time of the last observation


class LatencyEstimates:
    """One peak-EWMA latency estimate per replica (keyed by ``base_url``).

    Finagle's ``PeakEwma`` metric (``finagle-core/.../loadbalancer/PeakEwma.scala``), which
    tower's ``load/peak_ewma.rs`` (Linkerd2-proxy's) copies:

    - an observation above the current estimate replaces it at once (the peak);
    - one below is blended in with weight ``1 - exp(-dt / decay)``, ``dt`` the time since
      the previous observation (an unevenly spaced series: a long gap trusts the new value
      more), and here at least ``answer_weight`` (0.1; Finagle has none). Without it one
      stalled answer keeps a busy replica's estimate up for ~``decay`` x ln(stall/normal)
      seconds whatever it answers next: with 2% of answers stalling 250 ms on two 10 ms
      replicas, every estimate sat near 250 ms and a steady 100 ms replica looked best (a
      simulation sent it 20% of the requests, least-busy 8%; with 0.1, 6.5%). With it a
      replica back to normal recovers within a few dozen answers, while one whose answers
      stay slow keeps its peak;
    - between observations the estimate decays with time constant ``decay`` even when the
      replica gets no traffic, so a replica that was slow and recovered earns traffic
      again. Finagle and tower decay it toward 0; here it decays toward the *floor*, the
      lowest estimate of any replica, so that an idle replica looks at best as fast as the
      fastest one (not free): it then gets a probe when the others are busy, instead of
      every request at once.

    A replica never observed has no estimate (``None``).
    """

    def __init__(
        self, decay: float = DEFAULT_DECAY, answer_weight: float = DEFAULT_ANSWER_WEIGHT
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not decay > 0:
            raise ValueError(f"decay must be a number of seconds > 0, got {decay!r}")
        _check_number(answer_weight, "answer_weight", minimum=0.0)
        if answer_weight >= 1:
            raise ValueError(f"answer_weight must be < 1, got {answer_weight!r}")
        self.decay = float(decay)
        self.answer_weight = float(answer_weight)
        self._estimates: dict[str, _Estimate] = {}

    def floor(self) -> float | None:
        """The lowest stored estimate of any replica (what idle estimates decay toward)."""
        if not self._estimates:
            return None
        return min(e.value for e in self._estimates.values())

    def get(self, base_url: str, now: float) -> float | None:
        """The replica's estimate at ``now`` (seconds), ``None`` before any observation."""
        entry = self._estimates.get(base_url)
        if entry is None:
            return None
        return self._decayed(entry, now, self.floor())

    def _decayed(self, entry: _Estimate, now: float, floor: float | None) -> float:
        if floor is None or entry.value <= floor:
            return entry.value
        weight = math.exp(-max(now - entry.stamp, 0.0) / self.decay)
        return floor + (entry.value - floor) * weight

    def observe(self, base_url: str, seconds: float, now: float) -> None:
        """An answer came after ``seconds``."""
        seconds = max(float(seconds), 0.0)
        entry = self._estimates.get(base_url)
        if entry is None:
            self._estimates[base_url] = _Estimate(seconds, now)
            return
        current = self._decayed(entry, now, self.floor())
        if seconds >= current:
            entry.value = seconds  # the peak: at once
        else:
            weight = math.exp(-max(now - entry.stamp, 0.0) / self.decay)
            weight = min(weight, 1.0 - self.answer_weight)
            entry.value = current * weight + seconds * (1.0 - weight)
        entry.stamp = now

    def observe_failure(self, base_url: str, seconds: float, now: float) -> None:
        """A try ended without an answer after ``seconds`` (refused, reset, timed out).

        A failure only ever raises an estimate (a timeout after 30 s is a 30 s peak); a
        connection refused in a millisecond must not make a dead replica look fast (the
        pool's backoff takes it out of rotation). A replica with no estimate keeps none.
        """
        entry = self._estimates.get(base_url)
        if entry is None:
            return
        current = self._decayed(entry, now, self.floor())
        if seconds > current:
            entry.value = float(seconds)
            entry.stamp = now

    def known(self) -> list[str]:
        """The ``base_url`` of every replica with an estimate."""
        return list(self._estimates)

    def forget(self, base_url: str) -> None:
        self._estimates.pop(base_url, None)


class _SlowWatch:
    """Which replicas are "slow" (estimate > ``slow_factor`` x the best), reporting changes.

    A replica becomes slow above ``slow_factor`` x the best estimate (and at least
    :data:`SLOW_MARGIN` above it) and recovers below ``recover_factor`` x (or within half the
    margin): hysteresis, so one that hovers near the line is reported once.
    """

    def __init__(self, slow_factor: float, recover_factor: float) -> None:
        _check_number(slow_factor, "slow_factor", minimum=1.0, strict=True)
        _check_number(recover_factor, "recover_factor", minimum=1.0)
        if recover_factor > slow_factor:
            raise ValueError(
                f"recover_factor ({recover_factor!r}) must be <= slow_factor ({slow_factor!r})"
            )
        self.slow_factor = float(slow_factor)
        self.recover_factor = float(recover_factor)
        self.slow: set[str] = set()

    def changes(self, estimates: LatencyEstimates, now: float) -> list[SlowChange]:
        current = {
            url: value
            for url in estimates.known()
            if (value := estimates.get(url, now)) is not None
        }
        if len(current) < 2:
            return []
        best = min(current.values())
        found: list[SlowChange] = []
        for url, value in current.items():
            slower = value - best
            if url not in self.slow and value > self.slow_factor * best and slower > SLOW_MARGIN:
                self.slow.add(url)
                found.append(SlowChange(url, True, value, best))
            elif url in self.slow and (
                value < self.recover_factor * best or slower < SLOW_MARGIN / 2
            ):
                self.slow.discard(url)
                found.append(SlowChange(url, False, value, best))
        return found


class Balancer(Protocol):
    """What the pool calls. ``name`` is the balancer's setting (``"peak-ewma"``...)."""

    name: str

    def pick(self, candidates: Sequence[R], now: float) -> R: ...
    def record(self, replica: ReplicaLike, seconds: float, now: float) -> None: ...
    def record_failure(self, replica: ReplicaLike, seconds: float, now: float) -> None: ...
    def estimate(self, replica: ReplicaLike, now: float) -> float | None: ...
    def slow_changes(self, now: float) -> list[SlowChange]: ...
    def slow_replicas(self) -> frozenset[str]: ...


class _Tracking:
    """What both balancers share: latency estimates and slow-replica reports."""

    name = ""

    def __init__(
        self,
        *,
        decay: float = DEFAULT_DECAY,
        answer_weight: float = DEFAULT_ANSWER_WEIGHT,
        slow_factor: float = DEFAULT_SLOW_FACTOR,
        recover_factor: float = DEFAULT_RECOVER_FACTOR,
        rng: random.Random | None = None,
    ) -> None:
        self.estimates = LatencyEstimates(decay, answer_weight)
        self._watch = _SlowWatch(slow_factor, recover_factor)
        self._rng = rng or random.Random()

    def record(self, replica: ReplicaLike, seconds: float, now: float) -> None:
        """A try on ``replica`` got an HTTP answer (any status) after ``seconds``."""
        self.estimates.observe(replica.base_url, seconds, now)

    def record_failure(self, replica: ReplicaLike, seconds: float, now: float) -> None:
        """A try on ``replica`` got no answer (connection error, timeout) after ``seconds``."""
        self.estimates.observe_failure(replica.base_url, seconds, now)

    def estimate(self, replica: ReplicaLike, now: float) -> float | None:
        """The replica's latency estimate in seconds (``None`` before its first answer)."""
        return self.estimates.get(replica.base_url, now)

    def slow_changes(self, now: float) -> list[SlowChange]:
        """Replicas that became slow or recovered since the last call: log each once."""
        return self._watch.changes(self.estimates, now)

    def slow_replicas(self) -> frozenset[str]:
        """The ``base_url`` of each replica slow at the last :meth:`slow_changes`."""
        return frozenset(self._watch.slow)

    def _tie_break(self, tied: Sequence[R]) -> R:
        fewest = min(r.requests for r in tied)
        tied = [r for r in tied if r.requests == fewest]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


class LeastBusy(_Tracking):
    """The fewest requests in flight; then the fewest sent so far; then at random.

    The client's rule before latency-aware choice (``ReplicaPool._least_busy``), unchanged:
    calls made one after another, or a first chunk sent alone, still take turns. Latency is
    tracked (for ``replicas()`` and the slow-replica log) but not used.
    """

    name = "least-busy"

    def pick(self, candidates: Sequence[R], now: float) -> R:
        if not candidates:
            raise ValueError("pick() needs at least one candidate")
        fewest = min((r.in_flight, r.requests) for r in candidates)
        tied = [r for r in candidates if (r.in_flight, r.requests) == fewest]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


class PeakEwma(_Tracking):
    """Power of two choices over peak-EWMA latency x (requests in flight + 1).

    Follows Finagle's ``PeakEwma`` + ``P2C`` balancer (``finagle-core/.../loadbalancer/
    PeakEwma.scala``; tower's ``load/peak_ewma.rs``, used by Linkerd2-proxy, is a port of
    it, and Envoy's ``peak_ewma`` policy uses the same cost):

    - a replica's cost is its latency estimate (:class:`LatencyEstimates`, time constant
      ``decay``, 10 s by default as Finagle's ``decayTime``) x (its requests in flight + 1);
    - a replica with no estimate yet costs 0 while nothing is in flight to it (it is tried
      first) and Finagle's penalty (~140 s) plus its in-flight count once a probe is
      out, so a new replica gets one request until it answers, not a burst (tower instead
      starts from a ``default_rtt``);
    - with more than two candidates, two distinct ones are drawn at random and the cheaper
      wins (Mitzenmacher's power of two choices: the worst replica is never chosen while
      the other candidate is cheaper); with two or one, the cheapest outright;
    - ties: the fewer requests sent so far, then at random.

    Where Finagle and tower let an idle estimate decay toward 0, here it decays toward the
    lowest estimate of any replica: a replica that was slow and then skipped sees its cost
    fall back to the fastest one's within a few ``decay``, gets a probe when the others have
    requests in flight, and is chosen again if it has recovered (its estimate jumps back if
    it has not).
    """

    name = "peak-ewma"

    def cost(self, replica: ReplicaLike, now: float) -> float:
        """Seconds of queued work the next request would wait behind, as estimated."""
        value = self.estimates.get(replica.base_url, now)
        if value is None:
            return 0.0 if replica.in_flight == 0 else UNMEASURED_PENALTY + replica.in_flight
        return value * (replica.in_flight + 1)

    def pick(self, candidates: Sequence[R], now: float) -> R:
        if not candidates:
            raise ValueError("pick() needs at least one candidate")
        if len(candidates) == 1:
            return candidates[0]
        # Replicas never measured and idle cost 0: each is tried once before the random pairs
        # (a draw of two could otherwise leave one untried while the others queue up).
        untried = [
            r
            for r in candidates
            if r.in_flight == 0 and self.estimates.get(r.base_url, now) is None
        ]
        if untried:
            return self._tie_break(untried)
        pair = candidates if len(candidates) == 2 else self._rng.sample(list(candidates), 2)
        costs = [self.cost(r, now) for r in pair]
        lowest = min(costs)
        return self._tie_break([r for r, c in zip(pair, costs, strict=True) if c == lowest])


BALANCERS: dict[str, Callable[..., Balancer]] = {
    LeastBusy.name: LeastBusy,
    PeakEwma.name: PeakEwma,
}
DEFAULT_BALANCER = PeakEwma.name


def make_balancer(name: str | Balancer = DEFAULT_BALANCER, **settings: object) -> Balancer:
    """The balancer named ``name`` (a key of :data:`BALANCERS`), built with ``settings``.

    A balancer object is returned as it is (a user's own policy).
    """
    if not isinstance(name, str):
        return name
    factory = BALANCERS.get(name)
    if factory is None:
        allowed = ", ".join(repr(n) for n in BALANCERS)
        raise ValueError(f"balancer must be one of {allowed}, got {name!r}")
    return factory(**settings)


def _check_number(value: object, name: str, *, minimum: float, strict: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        sign = ">" if strict else ">="
        raise ValueError(f"{name} must be a number {sign} {minimum:g}, got {value!r}")
