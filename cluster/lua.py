"""Lua scripts in pipelines without a ``SCRIPT EXISTS`` round trip per pipeline.

redis-py's ``Script`` queued on a pipeline makes the pipeline ask ``SCRIPT EXISTS`` for
its scripts before every ``execute``: one more round trip each time, which for the log
writer (a pipeline per event-loop turn) was one extra round trip per token (issue 21).
:meth:`Lua.queue` sends ``EVALSHA`` only; a Redis that restarted empty answers
``NOSCRIPT``, and :func:`raise_unloaded` then loads the scripts and raises, so the
caller sends its round again (every round sent this way is idempotent: the appends skip
what the log holds, renewals and releases check the lease value).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError


class Lua:
    """One script, queued on pipelines (:meth:`queue`)."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.script = client.register_script(source)

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """``EVALSHA`` on ``pipe``; its answer is a :class:`NoScriptError` when Redis does
        not know the script (see :func:`raise_unloaded`)."""
        pipe.execute_command("EVALSHA", self.script.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        await self.client.script_load(self.script.script)


async def raise_unloaded(results: Iterable[Any], scripts: Iterable[Lua]) -> None:
    """A pipeline's answers (``raise_on_error=False``): when one is ``NOSCRIPT`` (Redis
    restarted empty), load ``scripts`` and raise :class:`NoScriptError`, a Redis fault the
    caller answers by sending its round again."""
    if any(isinstance(result, NoScriptError) for result in results):
        for script in scripts:
            await script.load()
        raise NoScriptError("scripts reloaded: send the round again")
