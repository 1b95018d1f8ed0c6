"""What the server refuses and why: per-user chat limits (``user_limits``), live
connections per user and address (``stream_limits``), TCP connections and descriptors
(``connection_guard``) and admission control under overload (``admission``).

May import: ``server.core``, ``server.ops`` (metrics). Handlers and the chat use-cases
import it.
"""
