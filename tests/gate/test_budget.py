"""
The gate's rules on a fake clock: the pure :class:`Budget` with ``now`` passed in, so
every window, pause and probe is checked to the microsecond without waiting for one.
"""

from __future__ import annotations

import math

import pytest

from closefunnel._budget import COLD_START, RESUME_MARGIN, Budget
from closefunnel._ratelimit import RateLimitInfo


def info(remaining: float, reset: float, limit: float | None = 20.0) -> RateLimitInfo:
    return RateLimitInfo(limit=limit, remaining=remaining, reset=reset)


def test_cold_start_lets_only_a_few_requests_out_before_the_first_answer() -> None:
    budget = Budget()
    grants = []
    while not budget.blocked() and budget.ready_at(0.0) <= 0.0:
        grants.append(budget.grant())
    assert len(grants) == COLD_START
    seq, seen = grants[0]
    budget.observe(seq, seen, 200, info(remaining=19, reset=1.0), 0.0, now=0.1)
    assert not budget.blocked()


def test_a_spent_budget_holds_until_the_window_ends() -> None:
    budget = Budget()
    stamps = [budget.grant() for _ in range(3)]
    # The server had one left when it answered the first; two others were unanswered then.
    budget.observe(*stamps[0], 200, info(remaining=1, reset=0.5), 0.0, now=0.2)
    assert budget.window.budget == pytest.approx(1 - 2)
    assert budget.ready_at(0.2) == pytest.approx(0.7 + RESUME_MARGIN)
    after = 0.7 + RESUME_MARGIN
    assert budget.ready_at(after) <= after


def test_the_tighter_of_two_lower_bounds_wins_within_a_window() -> None:
    budget = Budget()
    a, b = budget.grant(), budget.grant()
    budget.observe(*a, 200, info(remaining=10, reset=0.9), 0.0, now=0.1)
    assert budget.window.budget == 9  # 10 minus b, which may not have been counted yet
    budget.observe(*b, 200, info(remaining=9, reset=0.8), 0.0, now=0.2)
    assert budget.window.budget == 9  # b's answer proves the same bound, not a lower one


def test_a_429_sets_one_pause_then_a_single_probe() -> None:
    budget = Budget()
    stamps = [budget.grant() for _ in range(3)]
    budget.observe(*stamps[0], 429, info(remaining=0, reset=2.0), 2.0, now=1.0, jitter=0.1)
    until = 1.0 + 2.0 + RESUME_MARGIN + 0.1
    assert budget.pause.until == pytest.approx(until)
    assert budget.ready_at(2.0) == pytest.approx(until)
    # The other two were sent before the pause: their answers do not end it.
    budget.observe(*stamps[1], 200, info(remaining=5, reset=0.1), 0.0, now=1.1)
    assert budget.pause.probe
    budget.release(stamps[0][0], refund=False, settled=False)
    budget.release(stamps[1][0], refund=False, settled=False)
    budget.release(stamps[2][0], refund=False, settled=True)
    probe = budget.grant()
    assert budget.blocked()  # one probe in flight: nothing else goes
    budget.observe(*probe, 200, info(remaining=19, reset=1.0), 0.0, now=until + 0.05)
    budget.release(probe[0], refund=False, settled=False)
    assert not budget.blocked()


def test_no_header_can_hold_the_gate_longer_than_max_hold() -> None:
    """remaining=0, reset=1e9 on a 200: callers are told at once, a probe goes at max_hold."""
    budget = Budget(max_hold=5.0)
    first = budget.grant()
    budget.observe(*first, 200, info(remaining=0, reset=1e9), 0.0, now=10.0)
    budget.release(first[0], refund=False, settled=False)
    assert budget.asked_wait(10.0) > 1e8  # longer than any caller's patience
    assert budget.ready_at(10.0) <= 15.0 + RESUME_MARGIN
    later = 15.0 + 2 * RESUME_MARGIN
    assert budget.ready_at(later) <= later
    assert budget.asked_wait(later) == 0.0
    assert budget.pause.probe  # one probe, not a guessed batch
    probe = budget.grant()
    assert budget.blocked()  # nothing else until the probe answers
    budget.observe(*probe, 200, info(remaining=19, reset=1.0), 0.0, now=later + 0.01)
    assert budget.window.budget == 19
    assert budget.ready_at(later + 0.01) <= later + 0.01


def test_a_429_asking_for_weeks_is_capped_at_max_hold() -> None:
    budget = Budget(max_hold=5.0)
    first = budget.grant()
    weeks = 21 * 86_400.0
    budget.observe(*first, 429, None, weeks, now=0.0)
    budget.release(first[0], refund=False, settled=False)
    assert budget.asked_wait(1.0) == pytest.approx(weeks + RESUME_MARGIN - 1.0)
    assert budget.pause.until == pytest.approx(5.0)
    assert budget.asked_wait(5.0) == 0.0
    probe = budget.grant()
    assert budget.blocked()
    budget.observe(*probe, 200, info(remaining=19, reset=1.0), 0.0, now=5.1)
    assert not budget.pause.probe


def test_an_idle_gap_rolls_whole_windows() -> None:
    budget = Budget()
    stamps = [budget.grant() for _ in range(2)]
    budget.observe(*stamps[0], 200, info(remaining=0, reset=1.0, limit=4), 0.0, now=0.0)
    for seq, _ in stamps:
        budget.release(seq, refund=False, settled=seq != stamps[0][0])
    assert budget.ready_at(3.5) <= 3.5  # rolled past three windows at once
    assert budget.window.end is not None
    assert 3.5 < budget.window.end <= 4.0 + 1e-9


def test_settled_requests_leave_the_estimate() -> None:
    """A request that failed without an answer no longer counts as possibly uncounted."""
    budget = Budget()
    lost = budget.grant()
    budget.release(lost[0], refund=False, settled=True)
    answered = budget.grant()
    budget.observe(*answered, 200, info(remaining=7, reset=1.0), 0.0, now=0.1)
    assert budget.window.budget == 7


def test_refunds_return_budget_and_cold_start_slots() -> None:
    budget = Budget()
    for _ in range(10):
        seq, _ = budget.grant()
        budget.release(seq, refund=True, settled=True)
    assert not budget.blocked()
    assert budget.in_flight == 0


def test_headerless_429s_teach_the_window() -> None:
    budget = Budget()
    answered = [budget.grant() for _ in range(3)]
    for stamp in answered:
        budget.observe(*stamp, 200, None, 0.0, now=0.1)
        budget.release(stamp[0], refund=False, settled=False)
    limited = budget.grant()
    budget.observe(*limited, 429, None, 1.0, now=0.2)
    assert budget.window.limit == 3
    assert budget.window.length == 1.0
    assert budget.window.end == pytest.approx(budget.pause.until + 1.0)
    assert math.isfinite(budget.ready_at(0.3))
