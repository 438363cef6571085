"""The Redis online store: the latest values per entity, for when one SQL table is not enough.

One string per (group version, entity): ``<event time in microseconds>|<values as a JSON
object>``. Writes go through a small Lua script that keeps the newer event time, so late or
replayed batches never overwrite newer values; one call stores ``WRITE_CHUNK`` entities (all
keys of a call must live on one node: a single Redis, not a cluster). Reads are one ``MGET`` for any number of entities: one command, not
one per entity. The TTL is checked on read by the feature store, like the SQL store's; keys also get a
Redis expiry at event time + TTL (``expire=True``) so that memory does not grow forever. A TTL
raised later therefore applies to values written after the change.

Redis is written after the offline store's transaction commits; if Redis fails then, the call
raises :class:`OnlineStoreUnavailableError` and re-ingesting the same batch is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from autotune.projects import current_project, qualify
from serving.features.definitions import FeatureGroup
from serving.features.errors import OnlineStoreUnavailableError

__all__ = ["RedisOnlineStore", "DEFAULT_PREFIX", "WRITE_CHUNK"]

DEFAULT_PREFIX = "autotune:features:"
# Entities per script call when writing (Redis runs a script without serving others: keep
# each call to a few milliseconds).
WRITE_CHUNK = 1000
# KEYS: the entities' keys; ARGV: (event time us, values JSON, expire-at ms or "") per key.
# One call stores a whole chunk: one command to parse instead of one per entity.
_SET_IF_NEWER = """
local written = 0
for i, key in ipairs(KEYS) do
  local t, v, at = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local cur = redis.call('GET', key)
  if not cur or tonumber(string.match(cur, '^(-?%d+)|')) <= tonumber(t) then
    redis.call('SET', key, t .. '|' .. v)
    if at ~= '' then redis.call('PEXPIREAT', key, at) end
    written = written + 1
  end
end
return written
"""


class RedisOnlineStore:
    """Latest feature values in Redis.

    Args:
        url: ``redis://host:port/db``.
        prefix: prepended to every key; give each deployment (and each test run) its own.
        expire: set a Redis expiry at event time + TTL on each key.
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = DEFAULT_PREFIX,
        expire: bool = True,
    ) -> None:  # fmt: skip
        import redis

        self._redis_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self.client = redis.Redis.from_url(url, socket_timeout=5.0)
        self.url = url
        self.prefix = prefix
        self.expire = expire
        self._script = self.client.register_script(_SET_IF_NEWER)

    def _key(self, group: FeatureGroup, key: Sequence[Any]) -> str:
        # Group names are unique per project only (default project: the keys of old).
        name = qualify(current_project.get(), group.name)
        return f"{self.prefix}{name}@{group.version}:{json.dumps(list(key))}"

    def write(
        self,
        group: FeatureGroup,
        keys: Sequence[Sequence[Any]],
        event_us: Sequence[int],
        values: Sequence[dict[str, Any]],
    ) -> None:
        """Store each entity's row unless Redis holds a newer one."""
        ttl_ms = int(group.ttl_s * 1000) if group.ttl_s is not None and self.expire else None
        try:
            for start in range(0, len(keys), WRITE_CHUNK):
                chunk = slice(start, start + WRITE_CHUNK)
                args: list[Any] = []
                for t, vals in zip(event_us[chunk], values[chunk], strict=True):
                    args += (int(t), json.dumps(vals), "" if ttl_ms is None else t // 1000 + ttl_ms)
                self._script(keys=[self._key(group, k) for k in keys[chunk]], args=args)
        except self._redis_errors as e:
            raise OnlineStoreUnavailableError(
                f"the Redis online store at {self.url} did not answer: {e}; the offline store "
                "has the rows, re-ingest the batch to retry",
                details={"url": self.url},
            ) from e

    def read(
        self, group: FeatureGroup, keys: Sequence[Sequence[Any]]
    ) -> list[tuple[int, dict[str, Any]] | None]:
        """(event time us, values) per entity, ``None`` where Redis has none."""
        try:
            found = self.client.mget([self._key(group, key) for key in keys])
        except self._redis_errors as e:
            raise OnlineStoreUnavailableError(
                f"the Redis online store at {self.url} did not answer: {e}",
                details={"url": self.url},
            ) from e
        out: list[tuple[int, dict[str, Any]] | None] = []
        for raw in found:
            if raw is None:
                out.append(None)
                continue
            t, _, values = raw.partition(b"|")
            out.append((int(t), json.loads(values)))
        return out

    def delete_all(self) -> int:
        """Delete every key under this store's prefix (tests, teardown). Returns the count."""
        n = 0
        batch = []
        for k in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(k)
            if len(batch) >= 1000:
                n += self.client.delete(*batch)
                batch = []
        if batch:
            n += self.client.delete(*batch)
        return n

    def close(self) -> None:
        self.client.close()
