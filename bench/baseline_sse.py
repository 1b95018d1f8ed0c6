"""The bare limit for SSE fan-out: aiohttp, no actor, no log, no database.

``GET /events?room=X`` joins room X (after ``retry: 2000``); ``POST /start {room, tokens,
rate}`` streams tokens from the stand-in, each frame built once and written with a raw
``await StreamResponse.write`` to every member in turn.

Run: ``python -m bench.baseline_sse --port P --upstream http://127.0.0.1:S``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

from bench.baseline_ws import ROOMS as WS_ROOMS
from bench.baseline_ws import SESSION, TASKS, UPSTREAM, _session, healthz, run, stop
from bench.source import stream_texts, token_json

SSE_ROOMS = web.AppKey("sse_rooms", dict[str, list[web.StreamResponse]])


async def events(request: web.Request) -> web.StreamResponse:
    room = request.query["room"]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n\n")
    members = request.app[SSE_ROOMS].setdefault(room, [])
    members.append(resp)
    try:
        await asyncio.get_running_loop().create_future()  # until the server stops
    finally:
        with contextlib.suppress(ValueError):
            members.remove(resp)
    return resp


async def pump(app: web.Application, room: str, tokens: int, rate: float) -> None:
    seq = 0
    async for text in stream_texts(app[SESSION], app[UPSTREAM], tokens, rate):
        seq += 1
        frame = b"id: e:%d\nevent: token\ndata: %b\n\n" % (seq, token_json(room, seq, text))
        for resp in list(app[SSE_ROOMS].get(room, ())):
            try:
                await resp.write(frame)
            except Exception:
                with contextlib.suppress(ValueError):
                    app[SSE_ROOMS][room].remove(resp)


async def start(request: web.Request) -> web.Response:
    body = await request.json()
    task = asyncio.get_running_loop().create_task(
        pump(request.app, str(body["room"]), int(body["tokens"]), float(body["rate"]))
    )
    request.app[TASKS].add(task)
    task.add_done_callback(request.app[TASKS].discard)
    return web.json_response({"started": True})


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[SSE_ROOMS] = {}
    app[WS_ROOMS] = {}
    app[UPSTREAM] = upstream
    app[TASKS] = set()
    app.cleanup_ctx.append(_session)
    app.router.add_get("/events", events)
    app.router.add_post("/start", start)
    app.router.add_post("/stop", stop)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    run(make_app(args.upstream), args.port)


if __name__ == "__main__":
    main()
