"""The server's shared vocabulary: settings (``config``), the contract's error shapes
(``errors``), identifiers and token hashing (``ids``) and the app's typed state keys
(``app_keys``: the shared keys whose values are not of a ``server`` type; every other key
lives beside its value's type, see its docstring).

May import: the standard library, pydantic, aiohttp's types, ``actors`` and
``cluster.state`` (types only). Everything else in ``server`` may import it; it imports no
other ``server`` package, not even for types.
"""
