"""The studio's ASGI app: piccolo-admin (MIT) over the tables an operator browses.

Shown: users, their provider accounts, sessions (the SHA-256 of each token: the tokens
themselves are never stored), conversations, messages and attachments' metadata. Left out:
device codes and sign-in links (short-lived sign-in secrets' state), attachments' bytes
and the join of messages to attachments, and the studio's own operators and sessions.
"""

from __future__ import annotations

from typing import Any

from piccolo.apps.user.tables import BaseUser
from piccolo.columns import Column
from piccolo.table import Table
from piccolo_admin.endpoints import TableConfig, create_admin
from piccolo_api.crud.endpoints import OrderBy
from piccolo_api.session_auth.tables import SessionsBase
from starlette.middleware.trustedhost import TrustedHostMiddleware

from server.storage.tables import Account, Attachment, Conversation, Message, Session, User

SITE_NAME = "Cero API studio"


def _newest_first(table: type[Table], *, group: str, columns: list[Column] | None = None) -> Any:
    return TableConfig(
        table_class=table,
        visible_columns=columns,
        order_by=[OrderBy(column=table.created_at, ascending=False)],  # type: ignore[attr-defined]
        menu_group=group,
    )


def studio_tables() -> list[Any]:
    """The tables shown, newest rows first, in two menu groups."""
    return [
        _newest_first(User, group="People"),
        _newest_first(Account, group="People"),
        _newest_first(
            Session,
            group="People",
            columns=[
                Session.id,
                Session.user_id,
                Session.created_at,
                Session.expires_at,
                Session.ip_address,
                Session.user_agent,
            ],
        ),
        _newest_first(Conversation, group="Chats"),
        _newest_first(
            Message,
            group="Chats",
            columns=[
                Message.id,
                Message.conversation_id,
                Message.role,
                Message.status,
                Message.content,
                Message.model,
                Message.created_at,
            ],
        ),
        _newest_first(Attachment, group="Chats"),
    ]


#: The names the studio answers to (``Host``, any port): its own address, and ``localhost``
#: for an SSH tunnel's. Any other is a DNS-rebinding page or a misdirected proxy: ``400``.
HOSTS = ["127.0.0.1", "localhost"]


def create_studio(*, read_only: bool) -> Any:
    """The ASGI app. Its sign-in takes operators only (``BaseUser`` rows with ``admin``);
    ``read_only`` answers every write to a table with ``405``."""
    admin = create_admin(
        tables=studio_tables(),
        auth_table=BaseUser,
        session_table=SessionsBase,
        read_only=read_only,
        site_name=SITE_NAME + ("" if read_only else " (WRITABLE)"),
        auto_include_related=False,
        # Plain HTTP on a loopback port: cookies without ``Secure``.
        production=False,
    )
    return TrustedHostMiddleware(admin, allowed_hosts=HOSTS)
