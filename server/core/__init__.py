"""The server's shared vocabulary: settings (``config``), the contract's error shapes
(``errors``), identifiers and token hashing (``ids``) and the app's typed state keys
(``app_keys``).

May import: the standard library, pydantic, aiohttp's types, ``actors`` (types only).
Everything else in ``server`` may import it; it imports no other ``server`` package
(``app_keys`` names their types under ``TYPE_CHECKING`` only).
"""
