"""The replica pool and the tries of one request, without I/O: a clock the tests move."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from infinity_rag._pool import Attempts, Outrun, Replica, ReplicaPool, RetryPolicy
from infinity_rag.errors import (
    InfinityConnectionError,
    InfinityError,
    InfinityTimeoutError,
    InvalidRequestError,
    OverloadedError,
    ServerError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_pool(n: int = 3, clock: Clock | None = None, **kwargs: float) -> ReplicaPool:
    replicas = [
        Replica(f"http://r{i}:7997", f"http://r{i}:7997", f"http://r{i}:7997") for i in range(n)
    ]
    return ReplicaPool(
        replicas,
        clock=clock or Clock(),
        wall_clock=lambda: 5000.0,
        rng=random.Random(0),
        **kwargs,
    )


def down(url: str = "http://r:7997") -> InfinityConnectionError:
    return InfinityConnectionError(f"cannot reach {url}", url=url)


def overloaded(retry_after: float | None) -> OverloadedError:
    error = OverloadedError("queue full", status_code=429)
    error.retry_after = retry_after
    return error


def names(pool: ReplicaPool, replicas: list[Replica]) -> list[int]:
    return [pool.replicas.index(r) for r in replicas]


# --- choosing ------------------------------------------------------------------------------


def test_least_busy_spreads_requests_in_flight() -> None:
    pool = make_pool(3)
    held = [pool.acquire() for _ in range(6)]
    assert sorted(Counter(names(pool, held)).values()) == [2, 2, 2]
    assert [r.in_flight for r in pool.replicas] == [2, 2, 2]
    pool.release(held[0])
    assert pool.acquire() is held[0]  # the one with a free slot is the least busy


def test_idle_replicas_take_turns() -> None:
    # One call after another: none in flight, so the one sent fewest requests gets the next.
    pool = make_pool(3)
    picks = Counter()
    for _ in range(300):
        replica = pool.acquire()
        picks[pool.replicas.index(replica)] += 1
        pool.release(replica)
    assert picks == {0: 100, 1: 100, 2: 100}


def test_a_first_request_sent_alone_does_not_unbalance_the_rest() -> None:
    # The client sends a call's first chunk alone when it must learn the model's vectors;
    # the next three, sent together, go to three different replicas, the first one last.
    pool = make_pool(3)
    first = pool.acquire()
    pool.release(first)
    together = [pool.acquire() for _ in range(3)]
    assert sorted(pool.replicas.index(r) for r in together) == [0, 1, 2]
    assert together[-1] is first


def test_full_ties_are_broken_at_random() -> None:
    firsts = Counter()
    for seed in range(60):
        pool = ReplicaPool(
            [Replica(f"http://r{i}:7997", f"http://r{i}:7997", f"r{i}") for i in range(3)],
            rng=random.Random(seed),
        )
        firsts[pool.replicas.index(pool.acquire())] += 1
    assert set(firsts) == {0, 1, 2}


def test_a_failed_replica_is_out_until_its_backoff_passes() -> None:
    clock = Clock()
    pool = make_pool(2, clock)
    first = pool.acquire()
    pool.release(first, down())
    assert first.consecutive_failures == 1
    assert all(pool.acquire() is not first for _ in range(10))
    clock.now += 1.01
    for replica in pool.replicas:
        replica.in_flight = 0
    assert pool.acquire() is first  # back, and the least busy


@pytest.mark.parametrize(
    "error",
    [down(), InfinityTimeoutError("slow", url="u"), ServerError("boom", status_code=502)],
)
def test_connection_errors_timeouts_and_5xx_take_a_replica_out(error: InfinityError) -> None:
    pool = make_pool(2)
    replica = pool.acquire()
    pool.release(replica, error)
    assert replica.out_until > 0
    assert replica.failures == 1


def test_backoff_doubles_up_to_the_maximum_and_resets_on_success() -> None:
    clock = Clock()
    pool = make_pool(1, clock, backoff=1.0, max_backoff=5.0)
    replica = pool.replicas[0]
    pauses = []
    for _ in range(5):
        pool.acquire()
        pool.release(replica, down())
        pauses.append(replica.out_until - clock.now)
    assert pauses == [1.0, 2.0, 4.0, 5.0, 5.0]
    pool.acquire()
    pool.release(replica)
    assert (replica.consecutive_failures, replica.out_until, replica.failures) == (0, 0.0, 5)


def test_a_400_is_an_answer_the_replica_stays_in() -> None:
    pool = make_pool(2)
    replica = pool.acquire()
    pool.release(replica, down())
    replica.out_until = 0.0
    pool.acquire()
    pool.release(replica, InvalidRequestError("bad", status_code=400))
    assert replica.consecutive_failures == 0


def test_429_spares_a_replica_for_its_retry_after_without_failing_it() -> None:
    clock = Clock()
    pool = make_pool(2, clock)
    replica = pool.acquire()
    pool.release(replica, overloaded(3.0))
    assert (replica.consecutive_failures, replica.failures) == (0, 0)
    assert all(pool.acquire() is not replica for _ in range(5))
    clock.now += 3.01
    for r in pool.replicas:
        r.in_flight = 0
    assert pool.acquire() is replica


def test_when_every_replica_is_out_the_one_back_soonest_is_tried() -> None:
    clock = Clock()
    pool = make_pool(3, clock)
    for replica, failures in zip(pool.replicas, (3, 1, 2), strict=True):
        for _ in range(failures):
            pool.acquire()
            pool.release(replica, down())
    assert not pool.has_ready()
    assert pool.acquire() is pool.replicas[1]  # out for 1 s, the others for 2 and 4


def test_when_all_are_out_an_untried_replica_comes_first() -> None:
    # Other requests took every replica out; this one failed on r0 alone so far: its retry
    # goes to a replica it has not tried, even if r0 is back sooner.
    clock = Clock()
    pool = make_pool(3, clock)
    for replica, failures in zip(pool.replicas, (1, 3, 2), strict=True):
        for _ in range(failures):
            pool.acquire()
            pool.release(replica, down())
    assert pool.acquire(avoid=[pool.replicas[0]]) is pool.replicas[2]


def test_avoid_prefers_replicas_this_request_has_not_tried() -> None:
    pool = make_pool(2)
    first = pool.replicas[0]
    assert all(pool.acquire(avoid=[first]) is pool.replicas[1] for _ in range(5))


def lose_a_race(pool: ReplicaPool, clock: Clock, replica: Replica, waited: float) -> None:
    """A try on ``replica``, sent ``waited`` seconds ago, cancelled: a copy answered first."""
    pool.take(replica)
    clock.now += waited
    pool.release(replica, Outrun(), waited)


def test_a_replica_answering_nothing_while_two_tries_lose_races_is_spared() -> None:
    clock = Clock()
    pool = make_pool(3, clock)
    stalled = pool.replicas[0]
    lose_a_race(pool, clock, stalled, 0.05)
    assert pool.has_ready(avoid=pool.replicas[1:])  # once may be bad luck
    lose_a_race(pool, clock, stalled, 0.05)
    assert stalled.resting_until() == pytest.approx(clock.now + 1.0)  # the backoff: 1 s
    assert not pool.has_ready(avoid=pool.replicas[1:])
    pool.release(pool.take(stalled), None, 0.01)  # it answers: back in rotation
    assert stalled.resting_until() == 0.0


def test_a_replica_answering_others_while_its_try_lost_a_race_is_not_spared() -> None:
    # 2% of answers stall: a replica loses a race now and then but answers the rest.
    clock = Clock()
    pool = make_pool(3, clock)
    replica = pool.replicas[0]
    for _ in range(5):
        pool.take(replica)  # the try that will lose
        clock.now += 0.02
        pool.release(pool.take(replica), None, 0.01)  # another request, answered meanwhile
        clock.now += 0.03
        pool.release(replica, Outrun(), 0.05)
    assert replica.resting_until() == 0.0


def test_a_hedged_copy_goes_to_a_replica_spared_for_lost_races_if_none_other_is_ready() -> None:
    clock = Clock()
    pool = make_pool(3, clock)
    first, unlucky, failed = pool.replicas
    for _ in range(2):
        lose_a_race(pool, clock, unlucky, 0.05)
    pool.release(pool.take(failed), down())
    assert not pool.has_ready(avoid=[first])
    # A copy of a slow try on `first`: not to the failed one, but to the spared one, rather
    # than no copy at all (a query waiting out a stall: the tail hedging is for).
    assert pool.hedge_target(avoid=[first]) is unlucky
    pool.release(pool.take(unlucky), None, 0.01)
    pool.release(pool.take(failed), overloaded(5.0))
    assert pool.hedge_target(avoid=[first]) is unlucky  # in rotation again: preferred anyway
    pool.release(pool.take(unlucky), overloaded(5.0))
    assert pool.hedge_target(avoid=[first]) is None  # a 429 spares a replica copies too


def test_cancelled_tries_only_release_their_slot() -> None:
    pool = make_pool(2)
    replica = pool.acquire()
    pool.release(replica, KeyboardInterrupt())
    assert (replica.in_flight, replica.failures, replica.out_until) == (0, 0, 0.0)


def test_states_snapshot_with_wall_clock_times() -> None:
    clock = Clock()
    pool = make_pool(2, clock)
    replica = pool.acquire()
    pool.release(replica, down())
    busy = pool.acquire()
    states = pool.states()
    out = states[pool.replicas.index(replica)]
    assert out.out_until == pytest.approx(5000.0 + 1.0)
    assert not out.available
    assert (out.consecutive_failures, out.failures, out.requests) == (1, 1, 1)
    live = states[pool.replicas.index(busy)]
    assert (live.in_flight, live.out_until, live.available) == (1, None, True)


def test_going_out_and_coming_back_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(2)
    replica = pool.replicas[0]
    with caplog.at_level(logging.INFO, logger="infinity_rag"):
        pool.acquire()
        pool.release(replica, down())
        pool.acquire()
        pool.release(replica)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == "WARNING"
    assert "http://r0:7997 is out of rotation for 1.0s" in levels[0][1]
    assert levels[1] == (
        "INFO",
        "Infinity replica http://r0:7997 is back in rotation after 1 failure(s)",
    )


def test_one_replica_logs_no_rotation_changes(caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(1)
    with caplog.at_level(logging.INFO, logger="infinity_rag"):
        pool.acquire()
        pool.release(pool.replicas[0], down())
    assert caplog.records == []


@pytest.mark.parametrize(
    ("backoff", "max_backoff", "message"),
    [(-1, 30, "replica_backoff"), (1, "x", "max_replica_backoff"), (5, 1, "must be >=")],
)
def test_bad_backoff_settings(backoff: object, max_backoff: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_pool(2, backoff=backoff, max_backoff=max_backoff)  # type: ignore[arg-type]


def test_a_pool_needs_a_replica() -> None:
    with pytest.raises(ValueError, match="at least one URL"):
        ReplicaPool([])


# --- the tries of one request ----------------------------------------------------------------

NO_WAIT = RetryPolicy(max_retries=2, initial_delay=0.2)


def log_nothing(error: InfinityError, retry: int, delay: float) -> None:
    return None


def test_a_retry_goes_to_another_replica_at_once() -> None:
    pool = make_pool(3)
    attempts = Attempts(pool, NO_WAIT)
    first = attempts.start()
    assert attempts.failed(down(), log_nothing) == 0.0  # another replica is in rotation
    second = attempts.start()
    assert second is not first
    attempts.succeeded()
    assert [r.in_flight for r in pool.replicas] == [0, 0, 0]


def test_a_single_replica_waits_the_retry_delay() -> None:
    pool = make_pool(1)
    attempts = Attempts(pool, NO_WAIT)
    attempts.start()
    delay = attempts.failed(down(), log_nothing)
    assert 0.1 <= delay <= 0.2
    assert attempts.start() is pool.replicas[0]


def test_spent_retries_raise_naming_every_url_tried() -> None:
    pool = make_pool(3)
    attempts = Attempts(pool, NO_WAIT)
    for _ in range(2):
        attempts.start()
        attempts.failed(down(), log_nothing)
    attempts.start()
    with pytest.raises(InfinityConnectionError) as caught:
        attempts.failed(down(), log_nothing)
    urls = ("http://r0:7997", "http://r1:7997", "http://r2:7997")
    assert sorted(caught.value.urls) == list(urls)
    assert "tried 3 URL(s)" in str(caught.value)
    assert all(url in str(caught.value) for url in urls)


def test_not_retryable_errors_raise_at_once() -> None:
    pool = make_pool(3)
    attempts = Attempts(pool, NO_WAIT)
    attempts.start()
    with pytest.raises(InvalidRequestError):
        attempts.failed(InvalidRequestError("bad", status_code=422), log_nothing)


def test_describe_is_told_each_retry() -> None:
    pool = make_pool(1)
    told: list[tuple[int, float]] = []
    attempts = Attempts(pool, RetryPolicy(max_retries=2, initial_delay=0.0))
    for _ in range(2):
        attempts.start()
        attempts.failed(down(), lambda e, n, d: told.append((n, d)))
    assert told == [(1, 0.0), (2, 0.0)]


def test_every_replica_once_tries_each_then_raises() -> None:
    pool = make_pool(3)
    attempts = Attempts(pool, NO_WAIT, every_replica_once=True)
    seen = []
    for _ in range(2):
        seen.append(attempts.start())
        assert attempts.failed(InvalidRequestError("?", status_code=400), log_nothing) == 0.0
    seen.append(attempts.start())
    with pytest.raises(InvalidRequestError):
        attempts.failed(InvalidRequestError("?", status_code=400), log_nothing)
    assert len(set(map(id, seen))) == 3


def test_an_outcome_needs_a_started_try() -> None:
    with pytest.raises(RuntimeError, match="without a started try"):
        Attempts(make_pool(1), NO_WAIT).succeeded()
