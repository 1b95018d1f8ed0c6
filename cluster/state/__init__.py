"""Cluster mode's shared state: what one process keeps in memory (:mod:`state`), kept in
Redis instead, so that N processes behind a load balancer enforce one set of limits and
revocations. Each ``Redis<Thing>`` here implements the interface of :mod:`state` that its
``Memory<Thing>`` twin implements, and passes the same conformance suite
(``tests/state/``).

- :mod:`.connection`: the Redis client (a blocking pool) and :class:`RedisHealth`.
- :mod:`.shared`: what every part holds (client, health, key prefix), the fault policy and
  the slot leases generations and streams share.
- :mod:`.revocations`, :mod:`.oauth_states`, :mod:`.wrong_codes`, :mod:`.window`,
  :mod:`.user_limits`, :mod:`.stream_limits`: one ``Redis<Thing>`` each, with its Lua.

Times inside scripts are Redis's ``TIME``: one clock for every process. When Redis fails,
what admits work raises :class:`state.errors.Unavailable` (closed: the server answers
``503 not_ready``), what only relaxes a check (a cookie cache hit) falls back to the
database (also for a cache's lifetime after the fault: a restarted Redis has forgotten its
revocations), and what gives something back (a slot, a pending lookup) expires by itself.

May import: :mod:`state`, :mod:`cluster.faults`; never :mod:`server` (the server installs
these: ``server.cluster_mode.shared_state``).
"""
