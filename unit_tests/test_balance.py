"""The replica-choice policies (_balance.py): sans-I/O, a fake clock moved by hand."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infinity_rag._balance import (
    BALANCERS,
    UNMEASURED_PENALTY,
    Balancer,
    LatencyEstimates,
    LeastBusy,
    PeakEwma,
    SlowChange,
    make_balancer,
)

TAU = 10.0


@dataclass
class Rep:
    """What the pool's Replica offers a balancer (it is not hashable either)."""

    base_url: str
    in_flight: int = 0
    requests: int = 0

    __hash__ = None  # type: ignore[assignment]


def replicas(n: int) -> list[Rep]:
    return [Rep(f"http://r{i}") for i in range(n)]


def simulate(
    balancer: Balancer,
    latency: Callable[[int, float], float],
    *,
    n_replicas: int = 3,
    workers: int = 8,
    until: float,
    start: float = 0.0,
    reps: list[Rep] | None = None,
) -> list[tuple[float, int]]:
    """Workers sending requests back to back; ``latency(replica_index, now)`` seconds each.

    Returns (time sent, replica index) of every request: the pool's part played by hand.
    """
    reps = reps if reps is not None else replicas(n_replicas)
    index = {r.base_url: i for i, r in enumerate(reps)}
    sent: list[tuple[float, int]] = []
    events: list[tuple[float, int, int, float]] = []  # (done at, seq, replica, latency)
    seq = 0

    def send(now: float) -> None:
        nonlocal seq
        choice = balancer.pick(reps, now)
        choice.in_flight += 1
        choice.requests += 1
        i = index[choice.base_url]
        sent.append((now, i))
        seconds = latency(i, now)
        heapq.heappush(events, (now + seconds, seq, i, seconds))
        seq += 1

    for _ in range(workers):
        send(start)
    while events:
        done, _, i, seconds = heapq.heappop(events)
        rep = reps[i]
        rep.in_flight -= 1
        balancer.record(rep, seconds, done)
        if done < until:
            send(done)
    return sent


def share(
    sent: list[tuple[float, int]], replica: int, since: float = 0.0, to: float = 1e18
) -> float:
    window = [i for t, i in sent if since <= t < to]
    return sum(1 for i in window if i == replica) / len(window)


# --- peak-EWMA estimates -------------------------------------------------------------------


def test_an_estimate_starts_with_the_first_answer_and_a_peak_replaces_it_at_once() -> None:
    est = LatencyEstimates(TAU)
    assert est.get("a", 0.0) is None
    est.observe("a", 0.010, 0.0)
    assert est.get("a", 0.0) == pytest.approx(0.010)
    est.observe("a", 0.200, 0.001)  # a spike: no smoothing
    assert est.get("a", 0.001) == pytest.approx(0.200)


def test_a_lower_answer_is_blended_in_by_the_time_since_the_last_one() -> None:
    est = LatencyEstimates(TAU, answer_weight=0.0)  # Finagle's rule: time alone
    est.observe("a", 0.100, 0.0)
    est.observe("a", 0.010, TAU)  # one tau later: weight exp(-1) on the old value
    expected = 0.100 * math.exp(-1) + 0.010 * (1 - math.exp(-1))
    assert est.get("a", TAU) == pytest.approx(expected, rel=1e-3)
    est.observe("a", 0.010, TAU)  # no time since: the estimate does not move
    assert est.get("a", TAU) == pytest.approx(expected, rel=1e-3)


def test_an_unobserved_estimate_decays_toward_the_fastest_replicas_not_below() -> None:
    est = LatencyEstimates(TAU)
    est.observe("fast", 0.010, 0.0)
    est.observe("slow", 0.100, 0.0)
    assert est.get("slow", 0.0) == pytest.approx(0.100)
    # After tau: 10 ms + 90 ms * e^-1; after 10 tau: within 0.01% of the floor.
    assert est.get("slow", TAU) == pytest.approx(0.010 + 0.090 * 0.367879, rel=1e-4)
    assert est.get("slow", 10 * TAU) == pytest.approx(0.010, rel=1e-3)
    assert est.get("slow", 1000 * TAU) >= 0.010  # type: ignore[operator]
    assert est.floor() == pytest.approx(0.010)


def test_a_failure_never_lowers_an_estimate_but_a_long_timeout_raises_it() -> None:
    est = LatencyEstimates(TAU)
    est.observe_failure("a", 0.001, 0.0)  # refused before any answer: no estimate made up
    assert est.get("a", 0.0) is None
    est.observe("a", 0.050, 0.0)
    est.observe_failure("a", 0.001, 1.0)  # refused in 1 ms: must not look fast
    assert est.get("a", 1.0) == pytest.approx(0.050)
    est.observe_failure("a", 30.0, 2.0)  # a 30 s timeout is a 30 s peak
    assert est.get("a", 2.0) == pytest.approx(30.0)


def test_each_lower_answer_pulls_the_estimate_at_least_answer_weight() -> None:
    est = LatencyEstimates(TAU, answer_weight=0.1)
    est.observe("a", 0.010, 0.0)
    est.observe("a", 0.260, 0.001)  # one stalled answer: the peak
    for i in range(30):  # then normal answers 1 ms apart: time alone would barely move it
        est.observe("a", 0.010, 0.002 + i * 0.001)
    assert est.get("a", 0.032) == pytest.approx(0.010 + 0.250 * 0.9**30, rel=0.01)
    assert est.get("a", 0.032) < 0.03  # type: ignore[operator]
    est.observe("a", 0.100, 1.0)  # the peak rule is unchanged
    assert est.get("a", 1.0) == pytest.approx(0.100)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0.0, 2.0), st.floats(0.0, 30.0)),
        min_size=1,
        max_size=40,
    )
)
def test_estimates_stay_between_the_old_value_and_the_answer_and_only_fall_when_idle(
    steps: list[tuple[str, float, float]],
) -> None:
    est = LatencyEstimates(TAU)
    now = 0.0
    for url, seconds, gap in steps:
        now += gap
        before = est.get(url, now)
        est.observe(url, seconds, now)
        after = est.get(url, now)
        assert after is not None
        if before is None or seconds >= before:
            assert after == pytest.approx(seconds)  # first answer, or a peak
        else:
            assert seconds <= after <= before
        # Idle, it never rises and never drops below the floor.
        later = [est.get(url, now + dt) for dt in (1.0, 10.0, 100.0)]
        assert all(a >= b for a, b in zip([after, *later], later, strict=False))  # type: ignore[operator]
        assert min(later) >= est.floor() - 1e-12  # type: ignore[operator]


@pytest.mark.parametrize("weight", [-0.1, 1.0, float("nan")])
def test_a_bad_answer_weight_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="answer_weight must be"):
        LatencyEstimates(TAU, answer_weight=weight)


@pytest.mark.parametrize("decay", [0, -1.0, float("nan"), True, "10"])
def test_a_bad_decay_is_refused_with_its_name(decay: object) -> None:
    with pytest.raises(ValueError, match="decay must be a number of seconds > 0"):
        LatencyEstimates(decay)  # type: ignore[arg-type]


# --- PeakEwma.pick ---------------------------------------------------------------------------


def test_peak_ewma_sends_most_requests_to_the_fast_replicas_with_one_10x_slower() -> None:
    # Three replicas, one answering in 100 ms and two in 10 ms; 8 workers back to back for
    # 60 simulated seconds (about 48,000 requests).
    balancer = PeakEwma(decay=TAU, rng=random.Random(1))
    sent = simulate(balancer, lambda i, now: 0.100 if i == 0 else 0.010, until=60.0)
    assert len(sent) > 30_000
    slow = share(sent, 0)
    assert slow < 0.005, slow  # 0.04% here; least-busy gives it 5.7% (next test)
    assert share(sent, 1) > 0.4
    assert share(sent, 2) > 0.4
    # The slow replica is still probed now and then (its estimate decays), not abandoned.
    assert sum(1 for _, i in sent if i == 0) > 0


def test_least_busy_keeps_sending_the_slow_replica_a_large_share() -> None:
    # The same run under the old rule: what peak-EWMA is for.
    balancer = LeastBusy(rng=random.Random(1))
    sent = simulate(balancer, lambda i, now: 0.100 if i == 0 else 0.010, until=20.0)
    assert share(sent, 0) > 0.04  # 5.7% with this seed; 0.04% under peak-EWMA


def test_rare_stalls_on_fast_replicas_do_not_make_a_slow_one_look_best() -> None:
    # Replica 0 answers in 100 ms; replicas 1 and 2 in 10 ms, but 2% of their answers stall
    # 250 ms more. With Finagle's rule alone (answer_weight=0) every stall keeps a fast
    # replica's estimate near 250 ms for seconds and the slow one gets a fifth of the
    # requests, more than under least-busy; each answer's minimum weight fixes that.
    def run(balancer: Balancer) -> float:
        rng = random.Random(5)
        sent = simulate(
            balancer,
            lambda i, now: 0.100 if i == 0 else 0.010 + (0.250 if rng.random() < 0.02 else 0),
            until=30.0,
        )
        return share(sent, 0)

    finagle = run(PeakEwma(decay=TAU, answer_weight=0.0, rng=random.Random(1)))
    least_busy = run(LeastBusy(rng=random.Random(1)))
    ours = run(PeakEwma(decay=TAU, rng=random.Random(1)))
    assert finagle > 0.15
    assert ours < 0.08
    assert ours < least_busy < finagle


def test_a_slow_replica_that_recovers_earns_traffic_again_within_a_few_tau() -> None:
    # Replica 0 answers in 100 ms for the first 60 s, then in 10 ms like the others.
    balancer = PeakEwma(decay=TAU, rng=random.Random(2))
    recover_at = 60.0
    sent = simulate(
        balancer,
        lambda i, now: 0.100 if i == 0 and now < recover_at else 0.010,
        until=recover_at + 4 * TAU,
    )
    assert share(sent, 0, 40.0, recover_at) < 0.01  # while slow: skipped
    # Within a few tau it carries its third again.
    late = share(sent, 0, recover_at + 3 * TAU)
    assert 0.25 < late < 0.42, late


def test_a_latency_spike_moves_the_next_pick_away_at_once() -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(0))
    a, b = replicas(2)
    balancer.record(a, 0.010, 0.0)
    balancer.record(b, 0.012, 0.0)
    assert balancer.pick([a, b], 0.0) is a
    balancer.record(a, 0.250, 0.001)  # one stalled answer
    assert balancer.estimate(a, 0.001) == pytest.approx(0.250)
    assert balancer.pick([a, b], 0.001) is b


def test_requests_in_flight_count_in_the_cost() -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(0))
    a, b = replicas(2)
    balancer.record(a, 0.010, 0.0)
    balancer.record(b, 0.010, 0.0)
    a.in_flight = 3
    assert balancer.pick([a, b], 0.0) is b
    # 10 ms x 6 in flight costs more than 20 ms x 1: the faster one is busier.
    balancer.record(b, 0.020, 0.0)
    a.in_flight, b.in_flight = 5, 0
    assert balancer.cost(a, 0.0) == pytest.approx(0.060)
    assert balancer.cost(b, 0.0) == pytest.approx(0.020)
    assert balancer.pick([a, b], 0.0) is b


def test_an_unmeasured_replica_is_tried_first_then_gets_one_probe_at_a_time() -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(0))
    known, new = replicas(2)
    balancer.record(known, 0.010, 0.0)
    assert balancer.cost(new, 0.0) == 0.0
    assert balancer.pick([known, new], 0.0) is new
    new.in_flight = 1  # its first request is out: Finagle's penalty until it answers
    assert balancer.cost(new, 0.0) == pytest.approx(UNMEASURED_PENALTY + 1)
    known.in_flight = 50
    assert balancer.pick([known, new], 0.0) is known


def test_ties_go_to_the_replica_sent_fewer_requests_then_at_random() -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(0))
    a, b = replicas(2)
    a.requests = 5
    assert balancer.pick([a, b], 0.0) is b  # both unmeasured and idle: cost 0 each
    b.requests = 5
    picks = Counter(balancer.pick([a, b], 0.0).base_url for _ in range(200))
    assert set(picks) == {a.base_url, b.base_url}


def test_one_candidate_is_returned_and_none_is_an_error() -> None:
    balancer = PeakEwma()
    (a,) = replicas(1)
    assert balancer.pick([a], 0.0) is a
    with pytest.raises(ValueError, match="at least one candidate"):
        balancer.pick([], 0.0)


costs = st.lists(st.floats(0.001, 5.0), min_size=2, max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(latencies=costs, in_flight=st.data(), seed=st.integers(0, 2**32 - 1))
def test_p2c_never_picks_the_costliest_replica(
    latencies: list[float], in_flight: st.DataObject, seed: int
) -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(seed))
    reps = replicas(len(latencies))
    for rep, latency in zip(reps, latencies, strict=True):
        balancer.record(rep, latency, 0.0)
        rep.in_flight = in_flight.draw(st.integers(0, 5))
    cost = {r.base_url: balancer.cost(r, 0.0) for r in reps}
    choice = balancer.pick(reps, 0.0)
    assert choice in reps
    worst = max(cost.values())
    if sum(1 for c in cost.values() if c == worst) == 1:
        assert cost[choice.base_url] < worst
    if len(reps) == 2:  # two candidates: the cheaper outright, no draw
        assert cost[choice.base_url] == min(cost.values())


# --- LeastBusy -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    loads=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_least_busy_is_the_pools_rule(loads: list[tuple[int, int]], seed: int) -> None:
    # Fewest in flight, then fewest sent so far, then at random among those: the rule of
    # ReplicaPool._least_busy before balancers, with the same draws from the same rng.
    reps = replicas(len(loads))
    for rep, (flying, sent) in zip(reps, loads, strict=True):
        rep.in_flight, rep.requests = flying, sent
    fewest = min(loads)
    tied = [r for r in reps if (r.in_flight, r.requests) == fewest]
    expected = tied[0] if len(tied) == 1 else random.Random(seed).choice(tied)
    assert LeastBusy(rng=random.Random(seed)).pick(reps, 0.0) is expected


def test_least_busy_ignores_latency_but_still_shows_an_estimate() -> None:
    balancer = LeastBusy(rng=random.Random(0))
    slow, fast = replicas(2)
    balancer.record(slow, 0.500, 0.0)
    balancer.record(fast, 0.010, 0.0)
    fast.requests = 1
    assert balancer.pick([slow, fast], 0.0) is slow  # fewer sent: its turn, however slow
    assert balancer.estimate(slow, 0.0) == pytest.approx(0.500)


# --- logged once -----------------------------------------------------------------------------


def test_a_slow_replica_is_reported_once_and_its_recovery_once() -> None:
    balancer = PeakEwma(decay=TAU, rng=random.Random(0))
    a, b, c = replicas(3)
    for rep in (a, b, c):
        balancer.record(rep, 0.010, 0.0)
    assert balancer.slow_changes(0.0) == []
    balancer.record(c, 0.100, 0.1)
    changes = balancer.slow_changes(0.1)
    assert changes == [SlowChange(c.base_url, True, pytest.approx(0.100), pytest.approx(0.010))]
    assert balancer.slow_replicas() == {c.base_url}
    for step in range(1, 50):  # slow answer after slow answer: nothing new to log
        balancer.record(c, 0.100, 0.1 + step * 0.01)
        balancer.record(a, 0.010, 0.1 + step * 0.01)
        assert balancer.slow_changes(0.1 + step * 0.01) == []
    # It gets no more traffic; its estimate decays; below 2x the best it is back, once.
    recovered = [(t, balancer.slow_changes(t)) for t in (5.0, 10.0, 20.0, 30.0, 40.0)]
    reported = [(t, ch) for t, ch in recovered if ch]
    assert len(reported) == 1
    _, (change,) = reported[0]
    assert change.base_url == c.base_url
    assert not change.slow
    assert change.estimate < 2 * change.best
    assert balancer.slow_replicas() == frozenset()


def test_a_replica_hovering_between_the_two_factors_is_not_reported_again() -> None:
    balancer = LeastBusy(slow_factor=3.0, recover_factor=2.0)
    a, b = replicas(2)
    balancer.record(a, 0.010, 0.0)
    balancer.record(b, 0.040, 0.0)
    assert [ch.slow for ch in balancer.slow_changes(0.0)] == [True]
    for t, latency in enumerate([0.025, 0.035, 0.022, 0.031, 0.029], start=1):
        balancer.record(b, latency, t * 100.0)  # a long gap: the value is mostly the new one
        balancer.record(a, 0.010, t * 100.0)
        assert balancer.slow_changes(t * 100.0) == []


def test_one_replica_or_none_measured_is_never_slow() -> None:
    balancer = PeakEwma()
    a, _ = replicas(2)
    balancer.record(a, 5.0, 0.0)
    assert balancer.slow_changes(0.0) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slow_factor": 1.0}, "slow_factor must be a number > 1"),
        ({"recover_factor": 0.5}, "recover_factor must be a number >= 1"),
        ({"slow_factor": 2.0, "recover_factor": 2.5}, r"recover_factor \(2.5\) must be <="),
        ({"decay": 0.0}, "decay must be"),
    ],
)
def test_bad_balancer_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    for name in BALANCERS:
        with pytest.raises(ValueError, match=message):
            make_balancer(name, **kwargs)


# --- the registry ----------------------------------------------------------------------------


def test_make_balancer_by_name_and_an_unknown_name_lists_the_allowed_ones() -> None:
    assert isinstance(make_balancer("least-busy"), LeastBusy)
    assert isinstance(make_balancer("peak-ewma", decay=2.0), PeakEwma)
    assert make_balancer("peak-ewma", decay=2.0).estimates.decay == 2.0  # type: ignore[attr-defined]
    assert isinstance(make_balancer(), PeakEwma)
    own = LeastBusy()
    assert make_balancer(own) is own
    with pytest.raises(ValueError, match=r"'least-busy', 'peak-ewma'.*got 'round-robin'"):
        make_balancer("round-robin")
    assert {b.name for b in (LeastBusy(), PeakEwma())} == set(BALANCERS)


def test_the_pools_replica_works_with_both_balancers() -> None:
    from infinity_rag._pool import Replica

    reps = [Replica(f"http://r{i}/v1", f"http://r{i}", f"http://r{i}/v1") for i in range(3)]
    for name in BALANCERS:
        balancer = make_balancer(name, rng=random.Random(0))
        choice = balancer.pick(reps, 0.0)
        balancer.record(choice, 0.01, 0.0)
        assert balancer.estimate(choice, 0.0) == pytest.approx(0.01)


def test_a_few_milliseconds_between_fast_replicas_is_not_slow() -> None:
    # 4 ms against 1 ms is 4x, but on one busy host that is noise: no warning.
    balancer = PeakEwma()
    a, b = replicas(2)
    balancer.record(a, 0.001, 0.0)
    balancer.record(b, 0.004, 0.0)
    assert balancer.slow_changes(0.0) == []
    balancer.record(b, 0.050, 1.0)  # 50 ms against 1 ms: slow
    assert [(ch.base_url, ch.slow) for ch in balancer.slow_changes(1.0)] == [(b.base_url, True)]
