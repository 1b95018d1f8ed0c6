"""``cero export`` and ``cero import`` (docs/api.md, "Export and import").

``export`` streams one conversation (or, without an id, the whole account) to a file or
stdout as it arrives; a file is written beside its final name and renamed only once the
export is complete, so a cut connection never leaves a file that looks whole. ``import``
posts an export file and prints the conversations it made.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import orjson

from client.api import STREAM_TIMEOUT, Api
from client.context import AddCommand, Context
from client.errors import CliError, Exit

#: An import may hold up to 20 MiB and tens of thousands of messages: minutes, not 30 s.
IMPORT_TIMEOUT = aiohttp.ClientTimeout(total=600, connect=10)


def _export_path(conversation: str | None) -> str:
    return "/api/export" if conversation is None else f"/api/conversations/{conversation}/export"


async def _download(api: Api, path: str, fmt: str, sink: Any) -> None:
    """Write the export's bytes to ``sink(bytes)`` as they arrive."""
    try:
        async with api.session.get(
            api.server + path,
            params={"format": fmt},
            headers=api.headers(),
            timeout=STREAM_TIMEOUT,
        ) as resp:
            if resp.status != 200:
                raise api.refused(resp.status, await resp.read())
            async for chunk in resp.content.iter_any():
                sink(chunk)
    except aiohttp.ClientPayloadError:
        raise CliError("the export was cut short (the server or the network failed)") from None
    except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
        raise api.unreachable(exc) from None


async def cmd_export(ctx: Context) -> int:
    args = ctx.args
    path = _export_path(args.conversation_id)
    async with ctx.signed_in() as api:
        if args.output in (None, "-"):
            await _download(api, path, args.format, _stdout_sink(ctx))
            ctx.out.end_line()
            return Exit.OK
        target = Path(args.output)
        folder = target.parent if str(target.parent) else Path(".")
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as file:
                await _download(api, path, args.format, _file_sink(file))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    ctx.out.tty_note(f"exported to {target}")
    return Exit.OK


def _file_sink(file: BinaryIO) -> Any:
    return file.write


def _stdout_sink(ctx: Context) -> Any:
    """Bytes as sent to a pipe or file; filtered text to a terminal (an export holds what
    the model wrote, which must not drive the terminal)."""
    if not sys.stdout.isatty():
        out = ctx.out.out

        def write(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        return write
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    return lambda chunk: ctx.out.text(decoder.decode(chunk))


def _read(name: str) -> bytes:
    """The file (``-``: stdin) whole: an import is one request."""
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


async def cmd_import(ctx: Context) -> int:
    name = ctx.args.file
    try:
        data = _read(name)
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}", Exit.USAGE) from None
    async with ctx.signed_in() as api:
        try:
            async with api.session.post(
                api.server + "/api/import",
                data=data,
                headers=api.headers({"Content-Type": "application/json"}),
                timeout=IMPORT_TIMEOUT,
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise api.unreachable(exc) from None
        if resp.status != 200:
            raise api.refused(resp.status, body)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CliError(f"the server at {api.server} answered something not JSON") from None
    if ctx.args.json:
        ctx.out.json(answer)
        return Exit.OK
    imported = [c for c in answer.get("conversations") or [] if isinstance(c, dict)]
    for c in imported:
        ctx.out.text(f"{c.get('id')}  {c.get('shortTitle')}  (was {c.get('importedFrom')})\n")
    plural = "conversation" if len(imported) == 1 else "conversations"
    ctx.out.tty_note(f"imported {len(imported)} {plural}")
    return Exit.OK


def add_commands(add: AddCommand) -> None:
    """Register ``export`` and ``import``."""
    p = add(
        "export",
        cmd_export,
        "Export a conversation (or, without an id, all of them) as JSON or Markdown.",
    )
    p.add_argument(
        "conversation_id",
        metavar="CONVERSATION_ID",
        nargs="?",
        help="the conversation (default: every conversation of the account)",
    )
    p.add_argument(
        "--format",
        choices=("json", "markdown"),
        default="json",
        help="json (every branch; `cero import` reads it) or markdown (the active branch)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    p = add("import", cmd_import, "Import an export file as new conversations.")
    p.add_argument("file", metavar="FILE", help="a JSON export file; - reads stdin")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
