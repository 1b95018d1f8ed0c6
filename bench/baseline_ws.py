"""The bare limit for WebSocket fan-out: aiohttp, no actor, no log, no database.

``GET /ws``: a client sends ``{"type": "subscribe", "conversationId": X}`` to join room X.
``POST /start {room, tokens, rate}`` streams tokens from the stand-in to room X, each
serialised once and sent with ``await ws.send_str`` to every member in turn (compression
off) -- the design that freezes for everyone when one client stops reading.
``POST /chat {message}``: the stand-in's answer as NDJSON (the floor for scenario 4).

Run: ``python -m bench.baseline_ws --port P --upstream http://127.0.0.1:S``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from bench.common import raise_nofile
from bench.source import stream_texts, token_json

ROOMS = web.AppKey("rooms", dict[str, list[web.WebSocketResponse]])
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("tasks")


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, heartbeat=20.0)
    await ws.prepare(request)
    rooms = request.app[ROOMS]
    joined: list[str] = []
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = orjson.loads(msg.data)
            if frame.get("type") == "subscribe":
                room = str(frame["conversationId"])
                rooms.setdefault(room, []).append(ws)
                joined.append(room)
                await ws.send_str(
                    orjson.dumps({"type": "subscribed", "conversationId": room}).decode()
                )
    finally:
        for room in joined:
            with contextlib.suppress(ValueError):
                rooms[room].remove(ws)
    return ws


async def pump(app: web.Application, room: str, tokens: int, rate: float) -> None:
    seq = 0
    async for text in stream_texts(app[SESSION], app[UPSTREAM], tokens, rate):
        seq += 1
        data = token_json(room, seq, text).decode()
        for ws in list(app[ROOMS].get(room, ())):
            try:
                await ws.send_str(data)
            except Exception:  # a closed peer: drop it
                with contextlib.suppress(ValueError):
                    app[ROOMS][room].remove(ws)


async def start(request: web.Request) -> web.Response:
    body = await request.json()
    task = asyncio.get_running_loop().create_task(
        pump(request.app, str(body["room"]), int(body["tokens"]), float(body["rate"]))
    )
    request.app[TASKS].add(task)
    task.add_done_callback(request.app[TASKS].discard)
    return web.json_response({"started": True})


async def stop(request: web.Request) -> web.Response:
    tasks: set[asyncio.Task[None]] = request.app[TASKS]
    for task in list(tasks):
        task.cancel()
    return web.json_response({"stopped": True})


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write(orjson.dumps({"topic": "init", "data": {"conversationId": "b"}}) + b"\n")
    parts: list[str] = []
    spec = str(body["message"])
    fields = dict(item.split("=", 1) for item in spec.split(":")[1:])
    async for text in stream_texts(
        request.app[SESSION],
        request.app[UPSTREAM],
        int(fields["tokens"]),
        float(fields["rate"]),
        fields["tag"],
    ):
        parts.append(text)
        await resp.write(orjson.dumps({"topic": "token", "data": text}) + b"\n")
    await resp.write(orjson.dumps({"topic": "done", "data": {"fullText": "".join(parts)}}) + b"\n")
    await resp.write_eof()
    return resp


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    # No connection bound (aiohttp's default is 100): scenario 2 streams 500 answers at once.
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
    )
    yield
    await app[SESSION].close()


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[ROOMS] = {}
    app[UPSTREAM] = upstream
    app[TASKS] = set()
    app.cleanup_ctx.append(_session)
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/start", start)
    app.router.add_post("/stop", stop)
    app.router.add_post("/chat", chat)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    await stop_event.wait()
    await runner.cleanup()


def run(app: web.Application, port: int) -> None:
    raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(app, port))
    else:
        uvloop.run(serve(app, port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    run(make_app(args.upstream), args.port)


if __name__ == "__main__":
    main()
