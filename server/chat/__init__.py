"""The chat use-cases shared by HTTP routes and the WebSocket: the body of a turn
(``request``), starting/cancelling/replaying turns (``service``) and what chat needs for
the app's lifetime (``runtime``: catalog, model providers, batch writer, registry).

May import: ``actors``, ``cluster``, ``server.core``, ``server.storage``,
``server.limits``, ``server.ops``, ``server.http`` (bodies and errors).
"""
