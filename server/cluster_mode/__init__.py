"""The server's side of cluster mode (``CERO_REDIS_URL``), started and stopped with the app:
the process's Redis client and its health monitor (``redis_client``), and the Redis twins
of the limits, OAuth states, wrong-code counts and session revocations installed in place
of the in-memory ones (``shared_state``). Without ``CERO_REDIS_URL`` both leave the
single-process state as it is. What is shared and how is in :mod:`cluster.state`.

May import: every ``server`` package below it (``routes`` and down: it replaces state that
``auth`` and ``limits`` own), :mod:`cluster`, :mod:`state`. Only the app factory
(``server.app``) imports it; the rest of the server sees cluster mode through ``app[REDIS]``
and ``app[REDIS_HEALTH]`` (:mod:`server.core.app_keys`) and
:func:`server.limits.refusals.require_redis`.
"""
