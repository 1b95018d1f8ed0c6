"""RFC 8628 device authorization: issue, poll (redeem), look up / claim, approve / deny.

Codes live in the ``device_code`` table: the device code only as its SHA-256, the user code
as its 8 canonical letters. Decisions that read then write run in one transaction (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``), and the redemption itself is a
conditional ``UPDATE ... WHERE status = 'approved' RETURNING``: two concurrent polls of an
approved code give exactly one token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from piccolo.engine.postgres import PostgresEngine

from actors.clock import utcnow
from server.auth.sessions import Resolved, SessionStore
from server.core.errors import ApiError
from server.core.ids import new_id, new_token, same, token_hash
from server.storage.db import write_transaction
from server.storage.tables import DeviceCode

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LEN = 8
MAX_USER_CODE_INPUT = 64
SLOW_DOWN_STEP_S = 5
MAX_CLIENT_ID = 128
MAX_SCOPE = 256
# An expired code stays this long, so a late poll still hears ``expired_token``.
PURGE_GRACE = timedelta(minutes=5)
_LIVE_STATUSES = ("pending", "approved", "denied")


@dataclass(frozen=True, slots=True)
class IssuedCode:
    device_code: str
    user_code: str  # canonical, 8 letters
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class Redeemed:
    token: str
    resolved: Resolved
    scope: str


@dataclass(frozen=True, slots=True)
class CodeView:
    """A live code as the verifying user sees it."""

    id: str
    user_code: str
    status: str
    client_id: str
    scope: str
    claimed_by: str | None
    requested_at: datetime
    requested_from: str | None  # ``None``: a code issued before addresses were kept


def new_user_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LEN))


def display(user_code: str) -> str:
    """``XXXX-XXXX``."""
    return f"{user_code[:4]}-{user_code[4:]}"


def normalize(raw: str) -> str | None:
    """Upper-case, keep only alphabet letters; ``None`` unless exactly 8 remain."""
    if len(raw) > MAX_USER_CODE_INPUT:
        return None
    code = "".join(ch for ch in raw.upper() if ch in ALPHABET)
    return code if len(code) == USER_CODE_LEN else None


def _locked(query: Any) -> Any:
    return query.lock_rows() if isinstance(DeviceCode._meta.db, PostgresEngine) else query


# -- issue --------------------------------------------------------------------------------


async def issue(
    client_id: str, scope: str, *, ttl: int, interval: int, requested_from: str
) -> IssuedCode:
    now = utcnow()
    for _ in range(8):
        user_code = new_user_code()
        clash = (
            await DeviceCode.exists()
            .where((DeviceCode.user_code == user_code) & (DeviceCode.expires_at > now))
            .run()
        )
        if not clash:
            break
    else:  # pragma: no cover - 20^8 codes
        raise ApiError(503, "temporarily_unavailable", "Could not allocate a user code")
    device_code = new_token(32)  # 256 random bits
    await DeviceCode.insert(
        DeviceCode(
            id=new_id(),
            device_code_hash=token_hash(device_code),
            user_code=user_code,
            status="pending",
            client_id=client_id,
            scope=scope,
            interval=interval,
            last_polled_at=None,
            expires_at=now + timedelta(seconds=ttl),
            created_at=now,
            requested_from=requested_from[: DeviceCode.requested_from.length],
        )
    ).run()
    return IssuedCode(
        device_code=device_code, user_code=user_code, expires_in=ttl, interval=interval
    )


async def purge_expired() -> int:
    """Delete the codes that expired more than :data:`PURGE_GRACE` ago; return how many."""
    gone = (
        await DeviceCode.delete()
        .where(DeviceCode.expires_at < utcnow() - PURGE_GRACE)
        .returning(DeviceCode.id)
        .run()
    )
    return len(gone)


# -- poll ---------------------------------------------------------------------------------


def _grant_error(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


async def poll(
    device_code: str,
    client_id: str,
    sessions: SessionStore,
    *,
    ip_address: str | None,
    user_agent: str | None,
) -> Redeemed:
    """One token request: a token, or the RFC 8628 error (raised as :class:`ApiError`).

    The outcome is decided inside the transaction and raised after it commits, so that a
    ``slow_down`` (interval + 5 s) and the poll clock survive the error answer.
    """
    digest = token_hash(device_code)
    outcome: ApiError | Redeemed
    async with write_transaction(DeviceCode._meta.db):
        rows = await _locked(DeviceCode.select().where(DeviceCode.device_code_hash == digest)).run()
        outcome = await _decide_poll(
            rows, digest, client_id, sessions, ip_address=ip_address, user_agent=user_agent
        )
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome


async def _decide_poll(
    rows: list[dict[str, Any]],
    digest: str,
    client_id: str,
    sessions: SessionStore,
    *,
    ip_address: str | None,
    user_agent: str | None,
) -> ApiError | Redeemed:
    if not rows or not same(rows[0]["device_code_hash"], digest):
        return _grant_error("invalid_grant", "Invalid device code")
    row = rows[0]
    if not same(row["client_id"], client_id):
        return _grant_error("invalid_grant", "Client ID mismatch")
    if row["status"] == "redeemed":
        return _grant_error("invalid_grant", "Device code already used")
    now = utcnow()
    if row["expires_at"] <= now:
        return _grant_error("expired_token", "Device code has expired")
    last: datetime | None = row["last_polled_at"]
    interval = int(row["interval"])
    if last is not None and (now - last).total_seconds() < interval:
        # A rejected poll does not move the poll clock; it grows the interval for good.
        await (
            DeviceCode.update({DeviceCode.interval: DeviceCode.interval + SLOW_DOWN_STEP_S})
            .where(DeviceCode.id == row["id"])
            .run()
        )
        return ApiError(
            400,
            "slow_down",
            "Polling too frequently",
            extra={"interval": interval + SLOW_DOWN_STEP_S},
        )
    await (
        DeviceCode.update({DeviceCode.last_polled_at: now}).where(DeviceCode.id == row["id"]).run()
    )
    if row["status"] == "pending":
        return _grant_error("authorization_pending", "Authorization pending")
    if row["status"] == "denied":
        return _grant_error("access_denied", "Access denied")
    won = (
        await DeviceCode.update({DeviceCode.status: "redeemed"})
        .where((DeviceCode.id == row["id"]) & (DeviceCode.status == "approved"))
        .returning(DeviceCode.user_id)
        .run()
    )
    if not won or not won[0]["user_id"]:
        return _grant_error("invalid_grant", "Device code already used")
    token, resolved = await sessions.start(
        str(won[0]["user_id"]), ip_address=ip_address, user_agent=user_agent
    )
    return Redeemed(token=token, resolved=resolved, scope=str(row["scope"] or ""))


# -- verification (the signed-in user's side) ---------------------------------------------


class UnknownCode(ApiError):
    """A user code that matches nothing: counts against the caller's IP."""

    def __init__(self) -> None:
        super().__init__(400, "invalid_request", "Invalid user code")


async def _latest(user_code: str) -> dict[str, Any] | None:
    rows: list[dict[str, Any]] = (
        await DeviceCode.select()
        .where(DeviceCode.user_code == user_code)
        .order_by(DeviceCode.created_at, ascending=False)
        .limit(1)
        .run()
    )
    return rows[0] if rows else None


def _view(row: dict[str, Any], claimed_by: str | None) -> CodeView:
    return CodeView(
        id=str(row["id"]),
        user_code=str(row["user_code"]),
        status=str(row["status"]),
        client_id=str(row["client_id"]),
        scope=str(row["scope"] or ""),
        claimed_by=claimed_by,
        requested_at=row["created_at"],
        requested_from=row.get("requested_from"),
    )


async def lookup(user_code: str, user_id: str | None) -> CodeView:
    """A live code's status; a signed-in caller claims an unclaimed pending code."""
    row = await _latest(user_code)
    if row is None:
        raise UnknownCode()
    if row["expires_at"] <= utcnow():
        raise ApiError(400, "expired_token", "User code has expired")
    if row["status"] not in _LIVE_STATUSES:
        raise ApiError(400, "invalid_request", "Device code already used")
    claimed_by: str | None = row["user_id"]
    if user_id is not None and claimed_by is None and row["status"] == "pending":
        won = (
            await DeviceCode.update({DeviceCode.user_id: user_id})
            .where(
                (DeviceCode.id == row["id"])
                & DeviceCode.user_id.is_null()
                & (DeviceCode.status == "pending")
            )
            .returning(DeviceCode.id)
            .run()
        )
        if won:
            claimed_by = user_id
        else:
            again = await _latest(user_code)
            claimed_by = again["user_id"] if again else None
    return _view(row, claimed_by)


async def decide(user_code: str, user_id: str, *, approve: bool) -> None:
    """Approve or deny as ``user_id``; an unclaimed code is claimed by the decision."""
    row = await _latest(user_code)
    if row is None:
        raise UnknownCode()
    new_status = "approved" if approve else "denied"
    won = (
        await DeviceCode.update({DeviceCode.status: new_status, DeviceCode.user_id: user_id})
        .where(
            (DeviceCode.id == row["id"])
            & (DeviceCode.status == "pending")
            & (DeviceCode.expires_at > utcnow())
            & (DeviceCode.user_id.is_null() | (DeviceCode.user_id == user_id))
        )
        .returning(DeviceCode.id)
        .run()
    )
    if won:
        return
    current = await _latest(user_code) or row
    if current["expires_at"] <= utcnow():
        raise ApiError(400, "expired_token", "User code has expired")
    if current["status"] != "pending":
        raise ApiError(400, "invalid_request", "Device code already processed")
    raise ApiError(
        403, "access_denied", "You are not authorized to approve this device authorization"
    )
