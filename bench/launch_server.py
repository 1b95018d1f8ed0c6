"""Start the Cero server the way ``cero-api serve`` does, with a raised open-files limit and
an event-loop switch: ``BENCH_LOOP=asyncio`` runs it on plain asyncio, ``uvloop`` (default)
on uvloop, so both can be measured in one benchmark run.

Run: ``BENCH_LOOP=asyncio python -m bench.launch_server`` (settings from the environment).
"""

from __future__ import annotations

import asyncio
import os
import sys

from bench.common import raise_nofile


def main() -> int:
    raise_nofile()
    from server import cli

    if os.environ.get("BENCH_LOOP", "uvloop") == "asyncio":
        cli._run = asyncio.run  # type: ignore[assignment]
    return cli.main(["serve"])


if __name__ == "__main__":
    sys.exit(main())
