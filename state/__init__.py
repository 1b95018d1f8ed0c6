"""Limits and shared state, as interfaces both backends implement.

Each limit or piece of state shared by the processes of a cluster has one interface here (a
``Protocol``), the constants both implementations share, and its in-memory implementation
(``Memory<Thing>``, one process); cluster mode's ``Redis<Thing>`` lives in
:mod:`cluster.state`. A refusal is :class:`state.errors.Refused` and a store that did not
answer is :class:`state.errors.Unavailable`: the server maps them to its HTTP errors.

- :mod:`state.window`: events per key in a moving window (``Window``).
- :mod:`state.wrong_codes`: wrong device user codes per address (``WrongCodes``).
- :mod:`state.oauth_states`: single-use GitHub sign-in states (``OAuthStates``).
- :mod:`state.revocations`: revoked sessions seen by every process (``Revocations``).
- :mod:`state.user_limits`: concurrent generations, sends and new conversations per user
  (``UserLimits``).
- :mod:`state.stream_limits`: open live connections per user and per address
  (``StreamLimits``).

May import: ``actors`` (nothing else of ours); imported by ``cluster`` and ``server``.
"""
