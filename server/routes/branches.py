"""Branches of a conversation (docs/api.md, Branches): regenerate, edit and continue stream
like ``POST /api/chat``; switch moves the active path; the tree lists every branch."""

from __future__ import annotations

from aiohttp import web

from actors.api import Action
from server.auth.current import require_user
from server.chat.request import BranchRequest, EditRequest
from server.chat.service import owned_conversation, switch_branch
from server.http import api_models as wire
from server.http.bodies import read_model
from server.ops.metrics import METRICS
from server.routes.chat import stream_turn
from server.routes.messages_view import conversation_messages

routes = web.RouteTableDef()

_TURN = "/api/conversations/{id}/messages/{messageId}"


async def _branch_turn(
    request: web.Request, action: Action, body: BranchRequest, message: str = ""
) -> web.StreamResponse:
    timing = request.app[METRICS].turn_timing(request)
    user = require_user(request)
    turn = body.as_chat(request.match_info["id"], message)
    return await stream_turn(
        request, user, turn, timing, action=action, target=request.match_info["messageId"]
    )


@routes.post(_TURN + "/regenerate")
async def regenerate(request: web.Request) -> web.StreamResponse:
    require_user(request)
    body = await read_model(request, BranchRequest)
    return await _branch_turn(request, "regenerate", body)


@routes.post(_TURN + "/edit")
async def edit(request: web.Request) -> web.StreamResponse:
    require_user(request)
    body = await read_model(request, EditRequest)
    return await _branch_turn(request, "edit", body, body.message)


@routes.post(_TURN + "/continue")
async def continue_(request: web.Request) -> web.StreamResponse:
    require_user(request)
    body = await read_model(request, BranchRequest)
    return await _branch_turn(request, "continue", body)


@routes.post(_TURN + "/switch")
async def switch(request: web.Request) -> web.Response:
    user = require_user(request)
    message_id = request.match_info["messageId"]
    leaf = await switch_branch(request.app, request.match_info["id"], user.id, message_id)
    return wire.reply(wire.Switched, {"activeLeafId": leaf, "messageId": message_id})


@routes.get("/api/conversations/{id}/tree")
async def tree(request: web.Request) -> web.Response:
    user = require_user(request)
    conversation = await owned_conversation(request.match_info["id"], user.id)
    body = await conversation_messages(request, user.id, conversation, whole_tree=True)
    return wire.reply(wire.Messages, body)
