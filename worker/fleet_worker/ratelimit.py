"""A rate limit shared by every worker of the fleet: a token bucket kept in Redis.

Celery's own rate_limit counts per worker process; an API key's limit is shared by all of
them, on every host. Each call reserves the next free slot atomically (a Lua script, Redis's
own clock) and sleeps until it: callers queue in order instead of stampeding.
"""

from __future__ import annotations

import time

import redis

RESERVE = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens / rate)
"""


class FleetRateLimit:
    def __init__(self, client: redis.Redis, key: str, rate_per_s: float, burst: int = 1):
        self.key, self.rate_per_s, self.burst = key, rate_per_s, max(1, burst)
        self.reserve = client.register_script(RESERVE)

    def acquire(self, sleep=time.sleep) -> float:
        """Wait for this call's slot; returns the seconds waited."""
        wait_ms = int(self.reserve(keys=[self.key], args=[self.rate_per_s, self.burst]))
        if wait_ms > 0:
            sleep(wait_ms / 1000)
        return wait_ms / 1000
