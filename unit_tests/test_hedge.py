"""Hedged requests' policy (_hedge.py): the delay learned from recent latencies, the budget."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infinity_rag._hedge import HedgePolicy, LatencyWindow, make_hedge_policy

# --- the window ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=60),
    size=st.integers(1, 30),
    q=st.floats(0.0, 1.0),
)
def test_the_window_quantile_is_the_nearest_rank_of_the_last_size_values(
    values: list[float], size: int, q: float
) -> None:
    window = LatencyWindow(size)
    for i, value in enumerate(values):
        window.record(value, float(i))
    kept = sorted(values[-size:])
    assert len(window) == len(kept)
    assert window.quantile(q) == kept[max(math.ceil(q * len(kept)) - 1, 0)]


def test_the_window_forgets_values_older_than_max_age() -> None:
    window = LatencyWindow(100, max_age=10.0)
    window.record(5.0, 0.0)
    for t in range(1, 10):
        window.record(0.010, float(t))
    assert window.quantile(1.0, now=9.0) == 5.0
    assert window.quantile(1.0, now=10.5) == 0.010  # the 5 s outlier is 10.5 s old
    assert len(window) == 9
    assert window.quantile(0.5, now=100.0) is None  # all expired


def test_an_empty_window_has_no_quantile_and_bad_settings_are_refused() -> None:
    assert LatencyWindow().quantile(0.95) is None
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        LatencyWindow(0)
    with pytest.raises(ValueError, match="max_age must be a number in"):
        LatencyWindow(10, max_age=0.0)
    with pytest.raises(ValueError, match="q must be a number in"):
        LatencyWindow().quantile(1.5)


# --- the delay -------------------------------------------------------------------------------


def test_the_delay_is_none_until_enough_samples_then_follows_the_p95() -> None:
    policy = HedgePolicy(min_samples=20)
    rng = random.Random(0)
    for i in range(19):
        policy.record(0.010, i * 0.01)
        assert policy.delay(i * 0.01) is None
    policy.record(0.010, 0.2)
    assert policy.delay(0.2) == pytest.approx(0.010)
    # 1,000 answers: 10-20 ms, one in ten at 100 ms: the p95 is a 100 ms one.
    latencies = [0.100 if i % 10 == 0 else rng.uniform(0.010, 0.020) for i in range(1000)]
    for i, latency in enumerate(latencies):
        policy.record(latency, 1.0 + i * 0.01)
    assert policy.delay(20.0) == pytest.approx(0.100)
    # Then the slow ones stop: the window (1,000 long) forgets them and the delay follows.
    for i in range(1000):
        policy.record(0.015 if i % 10 else 0.030, 20.0 + i * 0.01)
    assert policy.delay(40.0) == pytest.approx(0.030)
    assert policy.delay(40.0) == sorted(policy._windows[""]._sorted)[949]


def test_the_first_latencies_are_a_warm_up_dropped_once_as_many_more_are_known() -> None:
    # A fresh client's first calls (imports, new connections, the servers' first requests)
    # took 200 ms; warm ones take 10-14 ms.
    policy = HedgePolicy(min_samples=20)
    for i in range(20):
        policy.record(0.200 if i < 8 else 0.010, i * 0.01)
    assert policy.delay(0.2) == pytest.approx(0.200)  # all there is to go by
    for i in range(19):
        policy.record(0.010 + i * 0.0002, 1.0 + i * 0.01)
        assert policy.delay(1.2) == pytest.approx(0.200)
    policy.record(0.014, 2.0)  # the 40th: the warm-up's 20 go
    assert len(policy._windows[""]) == 20
    assert policy.delay(2.0) == pytest.approx(0.0136)  # the 19th of 20: 10 + 18 x 0.2 ms
    for i in range(100):
        policy.record(0.300, 3.0 + i)  # later slow answers are kept, as any others
    assert policy.delay(200.0) == pytest.approx(0.300)


def test_the_delay_is_clamped_and_kept_per_kind_of_call() -> None:
    policy = HedgePolicy(min_delay=0.005, max_delay=0.5, min_samples=5)
    for i in range(10):
        policy.record(0.0001, float(i), key="embed")
        policy.record(3.0, float(i), key="rerank")
    assert policy.delay(10.0, key="embed") == 0.005
    assert policy.delay(10.0, key="rerank") == 0.5
    assert policy.delay(10.0, key="other") is None  # nothing known of it yet


def test_the_window_can_be_a_time_window() -> None:
    policy = HedgePolicy(min_samples=5, max_age=60.0)
    for i in range(10):
        policy.record(0.050, float(i))
    assert policy.delay(30.0) == pytest.approx(0.050)
    assert policy.delay(100.0) is None  # all older than a minute: back to no hedging


# --- the budget ------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2])
def test_the_budget_caps_hedges_over_a_long_run(budget: float) -> None:
    # A fleet slow everywhere: every call outlasts the delay and asks for a hedge.
    policy = HedgePolicy(budget=budget, min_samples=1)
    policy.record(0.010, 0.0)
    calls = 100_000
    hedges = 0
    for i in range(calls):
        assert policy.start(i * 0.001) is not None
        hedges += policy.try_spend()
    assert hedges <= budget * calls + policy.max_tokens
    assert hedges >= budget * calls - 1  # and it does spend what it has
    assert policy.hedges == hedges
    assert policy.calls == calls


def test_the_bucket_starts_full_and_allows_a_burst_of_max_tokens() -> None:
    policy = HedgePolicy(max_tokens=3.0, budget=0.05)
    assert [policy.try_spend() for _ in range(4)] == [True, True, True, False]
    for _ in range(19):
        policy.start(0.0)
    assert not policy.try_spend()  # 0.95 of a token
    policy.start(0.0)
    assert policy.try_spend()  # 20 calls x 0.05 = one hedge


def engine(policy: HedgePolicy, latency: Callable[[int], float], calls: int) -> list[bool]:
    """The engine's loop played by hand, one call every 10 ms: which calls were hedged.

    A hedge goes out when the first answer is later than the delay and the budget allows;
    the hedge answers in 10 ms. Recorded: each answered try, and a first try cancelled
    because the hedge won at the time it was cancelled (a lower bound of its latency).
    """
    hedged: list[bool] = []
    for i in range(calls):
        now = i * 0.01
        delay = policy.start(now)
        first = latency(i)
        if delay is not None and first > delay and policy.try_spend():
            policy.record(0.010, now)  # the hedge's answer
            policy.record(delay + 0.010, now)  # the first try, cancelled then
            hedged.append(True)
        else:
            policy.record(first, now)
            hedged.append(False)
    return hedged


def test_stalls_rarer_than_the_quantile_are_all_hedged_and_the_delay_does_not_creep() -> None:
    # 4% of first tries stall 250 ms: nearly each is hedged after the p95 (~12 ms), and
    # recording the cancelled tries' lower bounds does not push the p95 up call after call.
    # (By its definition about 5% of first tries outlast a p95: with a 5% budget the bucket
    # runs near empty, and a cluster of stalls can find it empty: 20 of 767 here.)
    policy = HedgePolicy()
    rng = random.Random(3)
    stalls = [rng.random() < 0.04 for _ in range(20_000)]
    hedged = engine(policy, lambda i: 0.250 if stalls[i] else rng.uniform(0.009, 0.012), 20_000)
    late = slice(1000, None)  # once the window has its samples
    stalled = [h for h, s in zip(hedged[late], stalls[late], strict=True) if s]
    assert sum(stalled) / len(stalled) > 0.95
    assert sum(hedged) <= 0.05 * len(hedged) + policy.max_tokens
    assert policy.delay(200.0) < 0.013  # type: ignore[operator]


def test_a_fleet_slow_everywhere_is_not_doubled() -> None:
    # 2,000 calls at 10 ms, then every replica answers in 100 ms: until the window learns
    # the new p95 every call is late, and the budget holds hedges to 5% (+ the bucket).
    policy = HedgePolicy()
    hedged = engine(policy, lambda i: 0.010 if i < 2000 else 0.100, 12_000)
    slow_phase = hedged[2000:]
    assert sum(slow_phase) <= 0.05 * len(slow_phase) + policy.max_tokens
    # ~50 calls were late before the window's p95 moved to 100 ms: the budget sent 13.
    assert sum(slow_phase) >= policy.max_tokens
    assert policy.delay(120.0) == pytest.approx(0.100)  # learned: no more hedging
    assert not any(hedged[-1000:])


def test_disabled_never_hedges() -> None:
    for policy in (HedgePolicy.disabled(), HedgePolicy(budget=0.0), make_hedge_policy(False)):
        for i in range(100):
            policy.record(0.010, float(i))
            assert policy.start(float(i)) is None
            assert policy.delay(float(i)) is None
            assert not policy.try_spend()
        assert not policy.enabled
    assert repr(HedgePolicy.disabled()) == "HedgePolicy.disabled()"


def test_make_hedge_policy_reads_the_clients_setting() -> None:
    own = HedgePolicy(budget=0.1)
    assert make_hedge_policy(own) is own
    assert make_hedge_policy(True).enabled
    assert make_hedge_policy(None).enabled
    assert make_hedge_policy(True).budget == 0.05
    assert make_hedge_policy(True).quantile == 0.95
    with pytest.raises(ValueError, match="hedge must be True, False or a HedgePolicy"):
        make_hedge_policy("yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantile": 0.0}, r"quantile must be a number in \(0, 1\)"),
        ({"quantile": 1.0}, r"quantile must be a number in \(0, 1\)"),
        ({"quantile": float("nan")}, "quantile must be a number"),
        ({"budget": -0.1}, r"budget must be a number in \[0, 1\]"),
        ({"budget": 1.5}, r"budget must be a number in \[0, 1\]"),
        ({"budget": True}, "budget must be a number"),
        ({"min_delay": -1.0}, "min_delay must be a number in"),
        ({"min_delay": 1.0, "max_delay": 0.5}, r"max_delay \(0.5\) must be >= min_delay"),
        ({"min_samples": 0}, "min_samples must be an integer >= 1"),
        ({"min_samples": 2.5}, "min_samples must be an integer"),
        ({"window": 10, "min_samples": 20}, r"min_samples \(20\) must be <= window \(10\)"),
        ({"max_age": 0.0}, "max_age must be a number in"),
        ({"max_tokens": 0.5}, "max_tokens must be a number in"),
        ({"enabled": "no"}, "enabled must be True or False"),
    ],
)
def test_bad_hedge_settings_are_refused_with_the_setting_named(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HedgePolicy(**kwargs)  # type: ignore[arg-type]
