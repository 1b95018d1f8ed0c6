"""Pure-asyncio core of Cero API: conversation actors, their event logs and model providers.

Nothing in this package imports aiohttp: transports live in ``server/``. Code outside it
uses the actors through :mod:`actors.api` (besides it only ``clock``, ``error_text`` and
``models``); every other module here is internal (an import-linter contract checks it).
"""
