"""Backoff delays and retry policies: typed values, deterministic given the random fraction."""

from __future__ import annotations

import pytest

import squid_mesh as sm


@pytest.mark.parametrize(
    ("backoff", "failed_attempt", "delay"),
    [
        (sm.Backoff.fixed(2.0), 1, 2.0),
        (sm.Backoff.fixed(2.0), 7, 2.0),
        (sm.Backoff.fixed(0), 3, 0.0),
        (sm.Backoff.exponential(min=0.1, max=5.0), 1, 0.1),
        (sm.Backoff.exponential(min=0.1, max=5.0), 2, 0.2),
        (sm.Backoff.exponential(min=0.1, max=5.0), 3, 0.4),
        (sm.Backoff.exponential(min=0.1, max=5.0), 6, 3.2),
        (sm.Backoff.exponential(min=0.1, max=5.0), 7, 5.0),
        (sm.Backoff.exponential(min=0.1, max=5.0), 64, 5.0),
        (sm.Backoff.exponential(min=0.1, max=5.0), 65, 5.0),
        (sm.Backoff.exponential(min=0.1, max=5.0), 10_000, 5.0),
        (sm.Backoff.exponential(min=1, max=1), 5, 1.0),
    ],
)
def test_delays_without_jitter(backoff: sm.Backoff, failed_attempt: int, delay: float) -> None:
    assert backoff.delay(failed_attempt, 0.0) == pytest.approx(delay)
    assert backoff.delay(failed_attempt, 0.999) == pytest.approx(delay), "no jitter, no change"


@pytest.mark.parametrize(
    "backoff",
    [
        sm.Backoff.fixed(4.0, jitter=0.25),
        sm.Backoff.exponential(min=1.0, max=16.0, jitter=0.5),
        sm.Backoff.exponential(min=1.0, max=16.0, jitter=1.0),
    ],
)
@pytest.mark.parametrize("failed_attempt", [1, 3, 9])
def test_jitter_takes_off_at_most_its_fraction(backoff: sm.Backoff, failed_attempt: int) -> None:
    full = sm.Backoff(backoff.kind, backoff.min, backoff.max).delay(failed_attempt, 0.0)
    assert backoff.delay(failed_attempt, 0.0) == pytest.approx(full)
    low = backoff.delay(failed_attempt, 0.999)
    assert low == pytest.approx(full * (1 - backoff.jitter * 0.999))
    assert full * (1 - backoff.jitter) <= low < full
    mid = backoff.delay(failed_attempt, 0.5)
    assert low < mid < full


def test_numbers_are_kept_as_floats() -> None:
    backoff = sm.Backoff.exponential(min=1, max=8, jitter=0)
    assert backoff.describe() == {"kind": "exponential", "min": 1.0, "max": 8.0, "jitter": 0.0}
    assert isinstance(backoff.min, float) and isinstance(backoff.jitter, float)


def test_default_policy_is_one_attempt_without_delay() -> None:
    policy = sm.RetryPolicy()
    assert policy.max_attempts == 1
    assert policy.next_delay(1, 0.0) is None


def test_next_delay_until_exhausted() -> None:
    policy = sm.RetryPolicy(max_attempts=3, backoff=sm.Backoff.exponential(min=0.5, max=10.0))
    assert policy.next_delay(1, 0.0) == pytest.approx(0.5)
    assert policy.next_delay(2, 0.0) == pytest.approx(1.0)
    assert policy.next_delay(3, 0.0) is None
    assert policy.next_delay(4, 0.0) is None


def test_override_replaces_the_backoff_but_not_the_limit() -> None:
    policy = sm.RetryPolicy(max_attempts=2, backoff=sm.Backoff.fixed(30.0, jitter=1.0))
    assert policy.next_delay(1, 0.9, override=2.5) == 2.5
    assert policy.next_delay(1, 0.9, override=0.0) == 0.0
    assert policy.next_delay(2, 0.0, override=2.5) is None


def test_describe_is_json_shaped() -> None:
    policy = sm.RetryPolicy(max_attempts=4, backoff=sm.Backoff.fixed(1.5, jitter=0.1))
    assert policy.describe() == {
        "max_attempts": 4,
        "backoff": {"kind": "fixed", "min": 1.5, "max": 1.5, "jitter": 0.1},
    }


@pytest.mark.parametrize("after", [-1, float("nan"), float("inf"), True, "1"])
def test_retry_after_must_be_seconds(after: object) -> None:
    with pytest.raises(ValueError, match=r"Retry after must be a number of seconds >= 0"):
        sm.Retry("later", after=after)  # type: ignore[arg-type]


def test_retry_and_fail_keep_their_reason() -> None:
    retry = sm.Retry("busy", after=3)
    assert (retry.reason, retry.after, str(retry)) == ("busy", 3.0, "busy")
    fail = sm.Fail("declined", code="card_declined", details={"card": "4242"})
    assert (fail.reason, fail.code, fail.details) == ("declined", "card_declined", {"card": "4242"})


@pytest.mark.parametrize("code", ["", "Upper", "1st", "has space", "x" * 65, "dash-ed"])
def test_fail_code_is_checked(code: str) -> None:
    with pytest.raises(ValueError, match=r"Fail code must be 1-64 chars"):
        sm.Fail("nope", code=code)
