"""Cluster mode (``CERO_REDIS_URL``): N server processes behave like one, on Redis.

- :mod:`cluster.keys` — the Redis key names, under ``CERO_REDIS_PREFIX``.
- :mod:`cluster.scripts` — the Lua scripts: lease acquire / check-and-extend / release, and
  the fenced append to a conversation's log.
- :mod:`cluster.mirror` — :class:`~cluster.mirror.ClusterEventLog`, the sans-I/O hub of
  :mod:`actors.event_log` either owning the log (each event also goes to Redis) or mirroring it
  (fed from the Redis stream, in order, deduplicated).
- :mod:`cluster.process` — one per process: leases held, the batched log writer, the relay
  (``XREAD BLOCK`` over every watched stream and the epoch notices), forwarded commands,
  the owner-death watcher and the start-up sweep; it implements
  :class:`actors.cluster_hooks.ClusterHooks`.
- :mod:`cluster.state` — the Redis client and its health, and the shared limits and state
  (``Redis<Thing>``, the twins of :mod:`state`'s ``Memory<Thing>``) the server installs.
"""
