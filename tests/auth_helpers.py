"""Users and sessions for tests that are not about sign-in.

They are made through the same session store the server uses, so a token made here is
exactly what the device flow or GitHub sign-in would have issued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.ids import new_id, new_token, token_hash
from server.tables import Session, User


async def make_user_session(name: str = "Ada", email: str | None = None) -> tuple[str, str]:
    """Create a user with a live 7-day session; return ``(bearer token, user id)``."""
    now = datetime.now(UTC)
    user_id = new_id()
    await User.insert(
        User(id=user_id, name=name, email=email or f"{user_id}@example.test",
             email_verified=True, created_at=now, updated_at=now)
    ).run()
    token = new_token()
    await Session.insert(
        Session(id=new_id(), user_id=user_id, token_hash=token_hash(token),
                expires_at=now + timedelta(days=7), created_at=now, updated_at=now,
                ip_address="127.0.0.1", user_agent="tests")
    ).run()
    return token, user_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
