"""Persistence: the database engines (``db``: SQLite embedded or PostgreSQL), the Piccolo
tables and app, the conversation store the actors use (``chat_store``), the batch writer
that group-commits the hot path, and the janitor that stores terminal states late.

May import: ``server.core``, ``actors`` (the store protocol it implements), aiohttp for
its app keys only (``ENGINE``, ``WRITER``). It imports no HTTP, limits, chat or cluster code.
"""
