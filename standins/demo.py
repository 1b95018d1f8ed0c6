"""``make demo``: the server wired to the Gemini stand-in in demo mode, for a first look.

One command for a newcomer: the stand-in (:class:`~standins.gemini.FakeGemini` answering
with :func:`~standins.demo_answers.demo_script`: tool steps, code execution and citations)
on a free loopback port, then ``cero-api serve`` with a Gemini key (any: the stand-in
takes it), ``CERO_GEMINI_BASE_URL`` pointing at the stand-in, its own SQLite file
(``cero-demo.db``, so the demo's chats stay out of ``cero.db``) and local sign-in. The
server's output passes through, its ``Sign in:`` link included. Ctrl-C (or SIGTERM)
stops both.

    python -m standins.demo [--port 3001] [--database sqlite:///cero-demo.db]

A stand-in, never for production: it is not Gemini, and everything it says is made up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

import structlog

from standins.demo_answers import demo_script
from standins.gemini import FakeGemini

log = structlog.get_logger(__name__)

#: The API key the server is given: the stand-in accepts any.
DEMO_KEY = "demo-key-for-the-local-stand-in"
#: Settings of the caller's that would wire the server elsewhere; the demo sets its own.
_UNSET = ("CERO_GEMINI_BASE_URL", "GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY")


def server_env(base_url: str, port: int, database_url: str) -> dict[str, str]:
    """The server's environment: the caller's, wired to the stand-in (local mode)."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(
        GOOGLE_GENERATIVE_AI_API_KEY=DEMO_KEY,
        CERO_GEMINI_BASE_URL=base_url,
        CERO_PORT=str(port),
        CERO_HOST="127.0.0.1",
        DATABASE_URL=database_url,
    )
    return env


async def run(port: int, database_url: str, gemini_port: int) -> int:
    fake = FakeGemini(responder=demo_script)
    base_url = await fake.start(port=gemini_port)
    sys.stderr.write(
        f"Gemini stand-in (demo answers) on {base_url}; the server on "
        f"http://127.0.0.1:{port} uses it. Ctrl-C stops both.\n"
        "Tick google search or code execution next to the model to see tool steps and "
        "citations. A new sign-in link (each works once): "
        f"DATABASE_URL={database_url} .venv/bin/cero-api sign-in-link --port {port}\n"
    )
    sys.stderr.flush()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        env=server_env(base_url, port, database_url),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    code = await proc.wait()
    await fake.stop()
    log.info("demo_stopped", server_exit=code)
    return 0 if stop.is_set() else code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m standins.demo",
        description="The server wired to a local Gemini stand-in that shows tool steps, "
        "code execution and citations (make demo).",
    )
    parser.add_argument("--port", type=int, default=3001, help="the server's port")
    parser.add_argument(
        "--database",
        default="sqlite:///cero-demo.db",
        help="the demo's DATABASE_URL (default: its own SQLite file)",
    )
    parser.add_argument(
        "--gemini-port", type=int, default=0, help="the stand-in's port (default: any free)"
    )
    args = parser.parse_args(argv)
    return asyncio.run(run(args.port, args.database, args.gemini_port))


if __name__ == "__main__":
    raise SystemExit(main())
