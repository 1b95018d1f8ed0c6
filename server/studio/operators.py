"""The studio's operators: accounts in Piccolo's own ``piccolo_user`` table (``BaseUser``),
signed in through piccolo_api's ``sessions`` table (``SessionsBase``). They are not the
app's users (``cero_user``): nothing of the app reads these tables, and only the command
line makes an operator (``cero-api studio add-operator NAME``).

Both tables come from Piccolo's own migrations (its ``user`` app and piccolo_api's
``session_auth`` app, registered in piccolo_conf.py), applied by the studio's commands
only: a server that never runs the studio never has them. Their names are apart from the
app's (``session`` is the app's; ``sessions`` the studio's) on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any

import structlog
from piccolo.apps.user.tables import BaseUser
from piccolo.table import Table
from piccolo_api.session_auth.tables import SessionsBase

from server.storage import db
from server.storage.tables import User
from server.studio import MIN_PASSWORD_LENGTH

log = structlog.get_logger(__name__)

#: The Piccolo apps of the studio's tables, in the order they migrate.
STUDIO_APPS = ("user", "session_auth")
STUDIO_TABLES: tuple[type[Table], ...] = (BaseUser, SessionsBase)

MAX_NAME_LENGTH = 100  # ``piccolo_user.username`` is a ``varchar(100)``


class OperatorError(Exception):
    """One line for the operator at the terminal."""


class AppTablesMissing(OperatorError):
    """The server's own tables are not there: the studio would show nothing."""


def bind_studio_tables(engine: db.Engine) -> None:
    """Point the studio's tables at ``engine`` (the app's are bound by :func:`db.bind`)."""
    for table in STUDIO_TABLES:
        table._meta.db = engine


async def prepare(engine: db.Engine) -> list[str]:
    """Check the server's tables exist, then create or upgrade the studio's (Piccolo's
    migrations of ``user`` and ``session_auth``); return the migrations applied."""
    bind_studio_tables(engine)
    if not await User.table_exists().run():
        raise AppTablesMissing(
            "the database has no Cero API tables (run `cero-api migrate`, or start the "
            "server, with the same DATABASE_URL first)"
        )
    return await db.migrate(engine, STUDIO_APPS)


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or any(c.isspace() for c in name):
        raise OperatorError(
            f"an operator's name is 1 to {MAX_NAME_LENGTH} characters without spaces"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise OperatorError(f"the password is too short (at least {MIN_PASSWORD_LENGTH})")
    if len(password) > BaseUser._max_password_length:
        raise OperatorError(f"the password is too long (at most {BaseUser._max_password_length})")
    return password


async def add_operator(name: str, password: str) -> bool:
    """Create the operator ``name`` (active, admin: piccolo-admin signs in admins only), or
    set a new password for an existing one, which also ends its studio sign-ins. Return
    whether it was created."""
    name = check_name(name)
    check_password(password)
    rows: list[dict[str, Any]] = (
        await BaseUser.select(BaseUser.id).where(BaseUser.username == name).run()
    )
    if rows:
        operator_id = rows[0]["id"]
        await BaseUser.update_password(operator_id, password)
        await (
            BaseUser.update({BaseUser.active: True, BaseUser.admin: True})
            .where(BaseUser.id == operator_id)
            .run()
        )
        await SessionsBase.delete().where(SessionsBase.user_id == operator_id).run()
        log.info("studio_operator_password_changed", operator=name)
        return False
    # ``piccolo_user.email`` is unique and not null: a placeholder of a reserved domain.
    await BaseUser.create_user(
        username=name, password=password, email=f"{name}@studio.invalid", active=True, admin=True
    )
    log.info("studio_operator_added", operator=name)
    return True


async def operator_names() -> list[str]:
    rows: list[dict[str, Any]] = (
        await BaseUser.select(BaseUser.username).order_by(BaseUser.username).run()
    )
    return [str(row["username"]) for row in rows]
