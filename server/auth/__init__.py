"""Sign-in: device flow (RFC 8628), GitHub OAuth, sessions and bearer tokens.

Wire-compatible with Better Auth. :func:`setup` adds the routes; the middleware in
:mod:`server.auth.middleware` resolves the current user for every request.
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register sign-in routes and start-up hooks (filled in by the sign-in work)."""
