"""Pure-asyncio core of Cero API: conversation actors, their event logs and model providers.

Nothing in this package imports aiohttp: transports live in ``server/``.
"""
