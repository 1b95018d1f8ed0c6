"""Users and their provider accounts: create, or link by (provider, provider account id)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from actors.clock import utcnow
from server.core.ids import new_id
from server.storage.db import write_transaction
from server.storage.tables import Account, User

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Profile:
    """What an identity provider says about the person signing in."""

    provider: str
    account_id: str
    name: str
    # What a provider may not say (the local sign-in says none of it).
    email: str | None = None
    email_verified: bool = False
    image: str | None = None


async def _linked(provider: str, account_id: str) -> str | None:
    rows = (
        await Account.select(Account.user_id)
        .where((Account.provider == provider) & (Account.provider_account_id == account_id))
        .run()
    )
    return str(rows[0]["user_id"]) if rows else None


async def link_or_create(profile: Profile) -> tuple[str, bool]:
    """The user linked to this provider account (profile refreshed), else a new one.

    Returns ``(user_id, created)``. Accounts are never linked by e-mail address alone: that
    would let whoever controls an address at one provider take over the account.
    """
    now = utcnow()
    user_id = await _linked(profile.provider, profile.account_id)
    if user_id is not None:
        await (
            User.update(
                {
                    User.name: profile.name[:255],
                    User.email: profile.email,
                    User.email_verified: profile.email_verified,
                    User.image: profile.image,
                    User.updated_at: now,
                }
            )
            .where(User.id == user_id)
            .run()
        )
        return user_id, False
    user_id = new_id()
    try:
        async with write_transaction(User._meta.db):
            await User.insert(
                User(
                    id=user_id,
                    name=profile.name[:255],
                    email=profile.email,
                    email_verified=profile.email_verified,
                    image=profile.image,
                    created_at=now,
                    updated_at=now,
                )
            ).run()
            await Account.insert(
                Account(
                    id=new_id(),
                    user_id=user_id,
                    provider=profile.provider,
                    provider_account_id=profile.account_id,
                    created_at=now,
                )
            ).run()
    except Exception:
        # A concurrent first sign-in of the same account won the unique index.
        existing = await _linked(profile.provider, profile.account_id)
        if existing is None:
            raise
        return existing, False
    log.info("user_created", user_id=user_id, provider=profile.provider)
    return user_id, True
