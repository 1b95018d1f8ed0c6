"""What the server refuses and why: per-user chat limits (``user_limits``), live
connections per user and address (``stream_limits``), TCP connections and descriptors
(``connection_guard``), admission control under overload (``admission``), and the HTTP
answer to a refusal of the limits in :mod:`state`, and to a request that needs cluster
mode's Redis while it is down (``refusals``).

May import: ``server.core``, ``server.ops`` (metrics), :mod:`state`.
Handlers and the chat use-cases import it.
"""
