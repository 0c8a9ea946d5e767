"""Rate-limit buckets in Redis, so that a tenant's limits hold across every hub process on it.

One Lua script refills and takes from a tenant's and a principal's bucket at once,
on Redis's own clock: atomic, so concurrent requests on several processes never
spend the same token twice, and a refusal takes nothing. A bucket expires once it
would be full again. When Redis does not answer, :class:`hub.ratelimit.Limits`
counts in the process instead (see there).
"""

from __future__ import annotations

from typing import Final

from redis.commands.core import AsyncScript

from hub.redis_store import RedisStore

__all__ = ["SharedBuckets"]

_TAKE: Final = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local tokens = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('HMGET', key, 'tokens', 'stamp')
  local left = tonumber(held[1]) or cap
  local stamp = tonumber(held[2]) or t
  left = math.min(cap, left + math.max(0, t - stamp) * rate)
  if left < 1 then
    return {i, tostring((1 - left) / rate)}
  end
  tokens[i] = left
end
local ttl = math.ceil(cap / rate) + 1
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(tokens[i] - 1), 'stamp', tostring(t))
  redis.call('EXPIRE', key, ttl)
end
return {0, '0'}
"""


class SharedBuckets:
    """Token buckets kept in the Redis store."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._script: AsyncScript | None = None  # made on first use: the client exists once the store is open

    async def take(self, rule: str, scopes: list[tuple[str, str]], rate: float, capacity: float) -> tuple[int, float]:
        """Take one token from the bucket of each ``(scope, who)``, or none.

        Returns ``(0, 0.0)`` when taken, else the 1-based index of the scope whose bucket is
        empty and the seconds until it holds a token.

        Raises:
            StoreError: Redis did not answer within the deadline.
        """
        keys = [self.store.key("bucket", rule, scope, who) for scope, who in scopes]
        if self._script is None:
            self._script = self.store.client.register_script(_TAKE)
        script = self._script
        reply = await self.store.call("take a rate-limit token", lambda _: script(keys, [repr(rate), repr(capacity)]))
        index, wait = reply
        return int(index), float(wait)
