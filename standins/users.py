"""Users with a live session, written straight to the database, for tests and benchmarks
(``tests/auth_helpers.py`` re-exports them; ``bench/seed.py`` seeds a benchmark's users).

Sessions are made through the server's own :class:`SessionStore`, so a token made here is
exactly what the device flow or GitHub sign-in would have issued.
"""

from __future__ import annotations

from datetime import UTC, datetime

from server.auth.sessions import SessionStore
from server.core.ids import new_id
from server.storage.tables import User


async def make_user_session(name: str = "Ada", email: str | None = None) -> tuple[str, str]:
    """Create a user with a live 7-day session; return ``(bearer token, user id)``."""
    now = datetime.now(UTC)
    user_id = new_id()
    await User.insert(
        User(
            id=user_id,
            name=name,
            email=email or f"{user_id}@example.test",
            email_verified=True,
            created_at=now,
            updated_at=now,
        )
    ).run()
    token, _ = await SessionStore().start(user_id, ip_address="127.0.0.1", user_agent="tests")
    return token, user_id


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header for a bearer ``token``."""
    return {"Authorization": f"Bearer {token}"}
