"""What an idle authenticated WebSocket keeps alive in the server (issue 21, bench scenario 3).

An idle socket costs what stays referenced while it waits: the coroutines suspended in its
handler task, the objects it holds, and how big their dicts are. These tests pin the shape
that took it from 23.6 to 18.0 KB per socket (bench/README.md, scenario 3): no middleware
or helper coroutine that merely passes a request on stays suspended, the pump and its
wake-up event come with the first subscription, and the WebSocket response keeps the
compact (shared-key) instance dict and no per-response copies of its header names.
"""

from __future__ import annotations

import asyncio
from types import CodeType
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import istr

from server.transports.ws import SOCKETS
from server.transports.ws_socket import CeroWebSocket
from tests.auth_helpers import make_user_session
from tests.conditions import until
from tests.conftest import Live
from tests.live_clients import new_conversation

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The coroutines of ours an idle socket's handler task may hold: each middleware that has
#: work to do after the handler (request id, metrics, errors, auth's log context) and the
#: handler itself. A new one here costs every idle socket its frame (~300 B).
ALLOWED = {
    "request_id_middleware",
    "metrics_middleware",
    "error_middleware",
    "auth_middleware",
    "websocket",
}


def _open(live: Live) -> list[Any]:
    """The server's open sockets (a closed one may wait a while for the collector)."""
    return [ws for ws in live.app[SOCKETS] if not ws.closed]


def _server_socket(live: Live) -> CeroWebSocket:
    sockets = _open(live)
    assert len(sockets) == 1
    ws = sockets[0]
    assert isinstance(ws, CeroWebSocket)
    return ws


def _chain(task: asyncio.Task[Any]) -> list[CodeType]:
    chain: list[CodeType] = []
    node: Any = task.get_coro()
    while node is not None:
        code = getattr(node, "cr_code", None) or getattr(node, "gi_code", None)
        if code is None:
            break  # a Future: the bottom of the chain
        chain.append(code)
        node = getattr(node, "cr_await", None) or getattr(node, "gi_yieldfrom", None)
    return chain


def _suspended() -> list[CodeType]:
    """The code of every coroutine (and generator) in the await chain of the one task that
    serves a WebSocket (aiohttp runs each request in a task of its own)."""
    chains = [_chain(task) for task in asyncio.all_tasks()]
    serving = [
        c for c in chains if any(code.co_name == "websocket" for code in c) and _receiving(c)
    ]
    assert len(serving) <= 1, [[code.co_name for code in c] for c in serving]
    return serving[0] if serving else []


def _ours(chain: list[CodeType]) -> list[str]:
    return [code.co_name for code in chain if "/server/" in code.co_filename]


def _receiving(chain: list[CodeType]) -> bool:
    return any(code.co_name == "receive" for code in chain)


async def _idle() -> None:
    """Wait until the handler sits in ``receive`` (the socket is idle)."""
    await until(lambda: _receiving(_suspended()), what="the socket's handler waiting")


async def test_idle_socket_holds_no_pass_through_coroutines(live: Live) -> None:
    token, _ = await make_user_session("Idle")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{live.url}/api/ws?token={token}"),
    ):
        await until(lambda: len(_open(live)) == 1, what="the server's socket")
        _server_socket(live)
        await _idle()
        ours = _ours(_suspended())
        assert set(ours) <= ALLOWED, ours
        assert "websocket" in ours
        # No context manager's generator rides along for the socket's life either.
        assert not [c for c in _suspended() if c.co_name in ("bound_contextvars", "watching")]


async def test_pump_and_wake_event_come_with_the_first_subscription(live: Live) -> None:
    token, _ = await make_user_session("Lazy")
    async with aiohttp.ClientSession() as http:
        conversation_id = await new_conversation(http, live.url, token)
        async with http.ws_connect(f"{live.url}/api/ws?token={token}") as client:
            await until(lambda: len(_open(live)) == 1, what="the server's socket")
            ws = _server_socket(live)
            await _idle()
            hook: Any = ws.before_close
            connection = hook.__self__
            assert connection.wake is None and connection.pump_task is None
            await client.send_str(
                orjson.dumps({"type": "subscribe", "conversationId": conversation_id}).decode()
            )
            frame = orjson.loads((await client.receive()).data)
            assert frame["type"] == "subscribed", frame
            assert connection.wake is not None and connection.pump_task is not None
            # Pinging still answers (the pump and the command path share the socket).
            await client.send_str('{"type": "ping"}')
            assert orjson.loads((await client.receive()).data) == {"type": "ack", "of": "ping"}


async def test_socket_keeps_a_compact_dict_and_interned_header_names(live: Live) -> None:
    token, _ = await make_user_session("Compact")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{live.url}/api/ws?token={token}") as client,
    ):
        await until(lambda: len(_open(live)) == 1, what="the server's socket")
        ws = _server_socket(live)
        await _idle()
        attributes = vars(ws)
        # CPython 3.11 shares one dict layout among a class's instances up to 30 keys; past
        # that every socket pays a full dict of its own (~1.3 KB).
        assert "before_close" not in attributes  # a slot
        assert "_content_type" not in attributes  # nothing parsed the 101's Content-Type
        assert len(attributes) <= 30, sorted(attributes)
        # A plain-str header name makes serialising the 101 cache a copy per response.
        assert all(isinstance(name, istr) for name in ws.headers), list(ws.headers)
        assert client.closed is False
