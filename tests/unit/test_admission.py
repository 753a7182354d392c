"""The per-source INVITE admission: token buckets, caps on calls being set up, idle sources forgotten,
all on an injected clock."""

from __future__ import annotations

import pytest

from tonebridge.sip import admission as admission_module
from tonebridge.sip.admission import REFUSAL_MEMORY, AdmissionLimits, InviteAdmission


def limiter(rate: float = 10, burst: int = 5, per_source: int = 100, total: int = 1000) -> InviteAdmission:
    return InviteAdmission(AdmissionLimits(rate, burst, per_source, total))


def test_a_burst_is_admitted_then_the_rate_applies() -> None:
    admission = limiter(rate=16, burst=4)
    assert [admission.admit("a", n, 0.0) for n in range(4)] == [None] * 4
    refusal = admission.admit("a", 4, 0.0)
    assert refusal is not None and refusal.reason == "rate" and refusal.retry_after == 1
    # A token back every 1/16 s, and no more.
    assert admission.admit("a", 5, 0.0625) is None
    assert admission.admit("a", 6, 0.0625) is not None
    # 64 INVITEs over the next second (binary fractions, so the sums are exact): the rate's 16 get in.
    admitted = sum(admission.admit("a", 100 + n, 0.0625 + (n + 1) / 64) is None for n in range(64))
    assert admitted == 16


def test_a_bucket_never_holds_more_than_the_burst() -> None:
    admission = limiter(rate=10, burst=5)
    admission.admit("a", 0, 0.0)
    assert [admission.admit("a", n, 100.0) is None for n in range(1, 8)] == [True] * 5 + [False] * 2


def test_retry_after_is_the_wait_for_a_token() -> None:
    admission = limiter(rate=0.25, burst=1)
    assert admission.admit("a", 0, 0.0) is None
    refusal = admission.admit("a", 1, 0.0)
    assert refusal is not None and refusal.retry_after == 4


def test_sources_have_buckets_of_their_own() -> None:
    admission = limiter(rate=1, burst=2)
    assert [admission.admit("flood", n, 0.0) is None for n in range(4)] == [True, True, False, False]
    assert admission.admit("other", 10, 0.0) is None


def test_calls_being_set_up_are_capped_per_source_and_in_total() -> None:
    admission = limiter(rate=1000, burst=1000, per_source=2, total=3)
    assert admission.admit("a", "a1", 0.0) is None
    assert admission.admit("a", "a2", 0.0) is None
    refusal = admission.admit("a", "a3", 0.0)
    assert refusal is not None and refusal.reason == "source_setting_up"
    assert admission.admit("b", "b1", 0.0) is None
    refusal = admission.admit("c", "c1", 0.0)
    assert refusal is not None and refusal.reason == "setting_up"
    assert admission.setting_up == 3
    # A final response frees the place; finishing twice, or an unknown key, changes nothing.
    admission.finished("a1")
    admission.finished("a1")
    admission.finished("unknown")
    assert admission.setting_up == 2
    assert admission.admit("a", "a4", 0.0) is None


def test_a_refusal_for_a_cap_costs_no_token() -> None:
    admission = limiter(rate=1, burst=1, per_source=1)
    assert admission.admit("a", 1, 0.0) is None
    admission2 = limiter(rate=1, burst=2, per_source=1)
    assert admission2.admit("a", 1, 0.0) is None
    assert admission2.admit("a", 2, 0.0) is not None  # capped
    admission2.finished(1)
    assert admission2.admit("a", 3, 0.0) is None  # the capped INVITE did not spend the second token


def test_the_same_transaction_is_counted_once() -> None:
    admission = limiter()
    assert admission.admit("a", "k", 0.0) is None
    assert admission.admit("a", "k", 0.0) is None
    assert admission.setting_up == 1


def test_a_refused_invite_retransmitted_is_refused_again_until_its_caller_gave_up() -> None:
    admission = limiter(rate=1, burst=1)
    assert admission.admit("a", "first", 0.0) is None
    refusal = admission.admit("a", "second", 0.0)
    assert refusal is not None
    # A token is back, but "second" was answered 503: admitting its retransmission would make a call its
    # caller never acknowledges.
    assert admission.admit("a", "second", 2.0) == refusal
    assert admission.admit("a", "third", 2.0) is None
    # Past Timer B (64*T1) the caller has given up; the key is forgotten.
    assert admission.admit("a", "second", 2.0 + REFUSAL_MEMORY + 1) is None


def test_remembered_refusals_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_module, "MAX_REFUSALS_REMEMBERED", 3)
    admission = limiter(rate=1, burst=1)
    admission.admit("a", "admitted", 0.0)
    for n in range(4):
        assert admission.admit("a", n, 0.0) is not None
    admission.finished("admitted")
    assert admission.admit("a", 0, 1.0) is None  # the oldest refusal went first
    assert admission.admit("a", 3, 1.0) is not None


def test_idle_sources_are_forgotten_and_busy_ones_kept() -> None:
    admission = limiter(rate=10, burst=5)  # a bucket refills in 0.5 s
    for n in range(1000):
        admission.admit(f"10.0.{n // 256}.{n % 256}", ("idle", n), 0.0)
        admission.finished(("idle", n))
    admission.admit("busy", "call", 0.0)
    assert admission.sources == 1001
    admission.admit("late", "x", 0.6)
    assert admission.sources == 2  # "busy" has a call being set up; "late" just came
    admission.finished("call")
    admission.finished("x")
    admission.admit("later", "y", 1.2)
    assert admission.sources == 1


def test_a_forgotten_source_starts_with_a_full_bucket_as_it_would_have_had() -> None:
    admission = limiter(rate=10, burst=5)
    for n in range(5):
        admission.admit("a", n, 0.0)
    admission.admit("b", "sweep", 10.0)
    assert [admission.admit("a", 10 + n, 10.0) is None for n in range(6)] == [True] * 5 + [False]


@pytest.mark.parametrize("limits", [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0), (-1, 1, 1, 1)])
def test_limits_must_be_positive(limits: tuple[float, int, int, int]) -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(*limits)
