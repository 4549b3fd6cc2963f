import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from assets.sources.http import TokenBucket, backoff_delay, parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("header, expected", [
    ("5", 5.0), ("0", 0.0), (None, None), ("", None), ("soon", None),
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
    (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),  # a date in the past: now
])
def test_retry_after_seconds_or_http_date(header, expected):
    assert parse_retry_after(header, now=NOW) == expected


def test_backoff_is_exponential_with_full_jitter_and_capped():
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(4.0, 0.5 * 2 ** attempt)
        samples = [backoff_delay(attempt, 0.5, 4.0, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # jitter spreads over the whole range


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        assert s > 0, "never a zero-length sleep (that would be a busy loop)"
        self.t += s


def test_token_bucket_never_exceeds_rate_plus_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=2, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(50):
        bucket.acquire()
        stamps.append(clock.t)
    assert stamps[:2] == [0.0, 0.0]  # the burst
    for i, t in enumerate(stamps):
        in_window = [s for s in stamps[i:] if s < t + 1.0]
        assert len(in_window) <= 5 + 2
    assert stamps[-1] == pytest.approx((50 - 2) / 5)
    with pytest.raises(ValueError):
        TokenBucket(rate=0)
