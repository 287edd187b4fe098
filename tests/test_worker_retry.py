"""The reference application's retry delays (pure)."""

import pytest

from fleet_worker.retry import BACKOFF_CAP_S, is_retryable, retry_after_s, retry_delay


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after-ms": "120", "retry-after": "1"}, 0.12),  # the finer one wins
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_headers(headers, seconds):
    assert retry_after_s(headers) == seconds


def test_the_servers_word_wins_with_a_little_jitter():
    assert retry_delay(5, {"retry-after": "2"}, rand=lambda: 0.0) == 2.0
    assert retry_delay(5, {"retry-after": "2"}, rand=lambda: 1.0) == pytest.approx(2.2)


def test_backoff_doubles_with_equal_jitter_up_to_a_cap():
    lows = [retry_delay(n, rand=lambda: 0.0) for n in range(10)]
    highs = [retry_delay(n, rand=lambda: 1.0) for n in range(10)]
    assert lows[:4] == [0.5, 1.0, 2.0, 4.0] and highs[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(highs) == BACKOFF_CAP_S and min(lows[6:]) == BACKOFF_CAP_S / 2


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (503, True), (408, True),
                                           (400, False), (401, False), (404, False),
                                           (200, False)])
def test_which_answers_are_retried(status, retry):
    assert is_retryable(status) is retry
