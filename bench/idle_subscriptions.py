"""Memory per idle subscribed conversation (issue 15, item 12).

One WebSocket subscribed to N conversations, one demo turn each, then left idle for three
actor idle timeouts. Server and client share this process; from a checkout's root:

    .venv/bin/python bench/idle_subscriptions.py 500          # tracemalloc
    .venv/bin/python bench/idle_subscriptions.py 500 --rss    # RSS only (no tracing cost)

tracemalloc counts what was allocated from this checkout's ``actors/`` and ``server/`` and
is still alive (the client side of the process is excluded); RSS is the whole process.
The per-user limits are lifted so that one user can hold every conversation.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import tracemalloc

import aiohttp
import orjson

sys.path.insert(0, os.getcwd())
TRACE = "--rss" not in sys.argv

from server.core.app_keys import REGISTRY  # noqa: E402
from server.storage.chat_store import create_conversation  # noqa: E402
from standins.live_app import in_process_settings, start_live  # noqa: E402
from standins.users import bearer, make_user_session  # noqa: E402

ROOT = os.getcwd()
IDLE = 1.0


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ours(snapshot: tracemalloc.Snapshot) -> int:
    filt = [
        tracemalloc.Filter(True, os.path.join(ROOT, "actors", "*")),
        tracemalloc.Filter(True, os.path.join(ROOT, "server", "*")),
    ]
    return sum(s.size for s in snapshot.filter_traces(filt).statistics("filename"))


async def main(n: int) -> None:
    tmp = tempfile.mkdtemp()
    live = await start_live(
        lambda port: in_process_settings(
            f"sqlite:///{tmp}/cero.db",
            port=port,
            actor_idle_timeout=IDLE,
            demo_token_delay=0.0,
            sends_per_minute=100_000,
            ws_max_subscriptions=100_000,
            max_generations_per_user=100_000,
            new_conversations_per_hour=100_000,
            log_level="warning",
        )
    )
    token, user_id = await make_user_session("Measure")
    ids = [str((await create_conversation(user_id, f"c{i}"))["id"]) for i in range(n)]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(live.url + "/api/ws", headers=bearer(token), max_msg_size=0)
        received = 0

        async def reader() -> None:
            nonlocal received
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    received += 1

        task = asyncio.create_task(reader())
        # warm up code paths, then baseline
        await asyncio.sleep(0.2)
        gc.collect()
        if TRACE:
            tracemalloc.start(1)
        base_traced = ours(tracemalloc.take_snapshot()) if TRACE else 0
        base_rss = rss_kb()
        for conversation_id in ids:
            await ws.send_str(
                orjson.dumps({"type": "subscribe", "conversationId": conversation_id}).decode()
            )
        gate = asyncio.Semaphore(8)

        async def one(conversation_id: str) -> None:
            async with (
                gate,
                http.post(
                    live.url + "/api/chat",
                    json={
                        "message": "Tell me about idle actors and their memory",
                        "aiModel": "demo",
                        "conversationId": conversation_id,
                    },
                    headers=bearer(token),
                ) as resp,
            ):
                assert resp.status == 200, await resp.text()
                await resp.read()

        await asyncio.gather(*(one(c) for c in ids))
        registry = live.app[REGISTRY]
        busy_actors = len(registry)
        await asyncio.sleep(IDLE * 3)
        gc.collect()
        after_traced = ours(tracemalloc.take_snapshot()) if TRACE else 0
        after_rss = rss_kb()
        live_actors = len(registry)
        dormant = getattr(registry, "dormant_count", 0)
        print(
            f"N={n} actors_right_after_turns={busy_actors} actors_after_idle={live_actors} "
            f"dormant={dormant} frames_received={received}"
        )
        if TRACE:
            print(
                f"traced (actors/ + server/): {(after_traced - base_traced) / 1024:.0f} KiB, "
                f"{(after_traced - base_traced) / n / 1024:.1f} KiB per conversation"
            )
        print(
            f"RSS: {base_rss / 1024:.0f} -> {after_rss / 1024:.0f} MiB, "
            f"{(after_rss - base_rss) / n:.1f} KiB per conversation"
            + (" (tracemalloc on)" if TRACE else "")
        )
        await ws.close()
        task.cancel()
    await live.server.close()


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    asyncio.run(main(int(numbers[0]) if numbers else 500))
