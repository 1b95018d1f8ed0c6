"""``CeroClient``: the one object a program holds — REST calls (it is a
:class:`~client.sdk.rest.RestClient`), SSE streams, the WebSocket and the live feed that
falls back from one to the other, all for one server and one token."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from client.sdk.events import EventStream, account_events, conversation_events
from client.sdk.fallback import LiveFeed, Transport, follow
from client.sdk.rest import RestClient
from client.sdk.socket import CeroSocket
from client.sdk.wire import AccountEvent, ConversationEvent


class CeroClient(RestClient):
    """An async client of Cero API.

    ``async with CeroClient("http://127.0.0.1:3001", token) as cero:`` then
    ``await cero.whoami()``, ``async for event in cero.chat("hi"): ...``,
    ``cero.conversation_events(id)``, ``cero.socket()``, ``await cero.follow([id])``."""

    async def __aenter__(self) -> CeroClient:
        await super().__aenter__()
        return self

    def conversation_events(
        self, conversation_id: str, *, after: str | None = None, max_attempts: int | None = None
    ) -> EventStream[ConversationEvent]:
        """A conversation's events over SSE, resumed and reconnected (:mod:`client.sdk.events`)."""
        return conversation_events(self, conversation_id, after=after, max_attempts=max_attempts)

    def account_events(
        self, *, after: str | None = None, max_attempts: int | None = None
    ) -> EventStream[AccountEvent]:
        """The account channel over SSE."""
        return account_events(self, after=after, max_attempts=max_attempts)

    def socket(self, *, reconnect: bool = True, max_attempts: int | None = None) -> CeroSocket:
        """A WebSocket (``async with cero.socket() as ws:``; :mod:`client.sdk.socket`)."""
        if not self.token:
            raise ValueError("the WebSocket needs a bearer token")
        return CeroSocket(self.base_url, self.token, reconnect=reconnect, max_attempts=max_attempts)

    async def follow(
        self,
        conversations: Iterable[str] = (),
        *,
        account: bool = False,
        after: Mapping[str, str] | None = None,
        prefer: Transport = "websocket",
    ) -> LiveFeed:
        """Live events over the WebSocket, or SSE where it is refused
        (:mod:`client.sdk.fallback`)."""
        return await follow(self, conversations, account=account, after=after, prefer=prefer)
