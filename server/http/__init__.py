"""HTTP plumbing below and around the handlers: the connection layer (``protocol``: body
deadlines, connection caps), middlewares (request ids, error rendering, NUL guard),
security headers, request bodies and their validation, the response models and the
OpenAPI description built from them.

May import: ``server.core``, ``server.ops`` (metrics), ``server.storage.db`` (to class
database faults), ``server.limits`` (connection caps). Handlers (``routes``, ``auth``,
``transports``) import it; it imports no handler.
"""
