"""The Python client library of Cero API (docs/client-library.md): typed, async, on
aiohttp (REST, Server-Sent Events) and websockets (the WebSocket).

It speaks only the public wire contract (docs/api.md) and imports nothing of the server.
"""

from client.sdk.client import CeroClient
from client.sdk.cursors import Cursor
from client.sdk.errors import (
    ApiError,
    CeroError,
    ConnectionLost,
    NotFound,
    ProtocolViolation,
    RateLimited,
    SessionEnded,
    Unauthorized,
    Unavailable,
    UpgradeRefused,
)
from client.sdk.events import EventStream
from client.sdk.fallback import LiveFeed
from client.sdk.rest import RestClient
from client.sdk.socket import CeroSocket
from client.sdk.sse_parser import SSEEvent, SSEParser

__all__ = [
    "ApiError",
    "CeroClient",
    "CeroError",
    "CeroSocket",
    "ConnectionLost",
    "Cursor",
    "EventStream",
    "LiveFeed",
    "NotFound",
    "ProtocolViolation",
    "RateLimited",
    "RestClient",
    "SSEEvent",
    "SSEParser",
    "SessionEnded",
    "Unauthorized",
    "Unavailable",
    "UpgradeRefused",
]
