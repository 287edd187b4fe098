"""How long to wait before trying an API call again (pure)."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone

BACKOFF_BASE_S = 1.0  # first retry after ~0.5-1 s ...
BACKOFF_CAP_S = 60.0  # ... doubling up to a minute
RETRY_AFTER_JITTER = 0.1  # spread clients told the same Retry-After by up to 10 %
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_s(headers) -> float | None:
    """What the server asked for: retry-after-ms (OpenAI), else Retry-After (seconds or date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def retry_delay(attempt: int, headers=None, rand=random.random) -> float:
    """Seconds before retry number attempt+1: the server's word if it gave one, plus jitter;
    else exponential backoff with equal jitter (half fixed, half random)."""
    asked = retry_after_s(headers or {})
    if asked is not None:
        return asked * (1 + RETRY_AFTER_JITTER * rand())
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt)
    return ceiling / 2 + rand() * ceiling / 2
