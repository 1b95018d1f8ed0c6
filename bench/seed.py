"""Create users and bearer tokens in the benchmark database before the server starts.

Run: ``python -m bench.seed DATABASE_URL N`` → prints ``[[token, user_id], ...]`` as JSON.
The schema is migrated first, exactly as the server would.
"""

from __future__ import annotations

import asyncio
import sys

import orjson


async def seed(url: str, count: int) -> list[tuple[str, str]]:
    from server.storage import db
    from standins.users import make_user_session

    engine = db.engine_for_url(url)
    db.use_engine(engine)
    await db.migrate(engine)
    return [await make_user_session(name=f"bench{i}") for i in range(count)]


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    users = asyncio.run(seed(url, count))
    sys.stdout.write(orjson.dumps(users).decode() + "\n")


if __name__ == "__main__":
    main()
