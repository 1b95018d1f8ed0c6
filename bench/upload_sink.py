"""The floor of the upload row (``bench/uploads.py``): a bare aiohttp upload sink.

``POST /api/attachments`` reads the ``multipart/form-data`` body part by part, the part
named ``file`` in 256 KiB chunks (the server's ``READ_BYTES``), hashes each chunk
(SHA-256, as the server must to store by content) and writes it to a spool file with
``os.write``, then renames the file to its hash and answers ``201 {"attachment": {"id",
"size"}}``. No authentication, database, type sniffing, UTF-8 check, limits or logging:
what streaming a file to disk costs in aiohttp and nothing more.

Run: ``python -m bench.upload_sink --port 3901 --dir /tmp/sink`` (uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
from pathlib import Path

import uvloop
from aiohttp import BodyPartReader, web

from bench.common import HOST

READ_BYTES = 256 << 10
FOLDER = web.AppKey("folder", Path)


async def upload(request: web.Request) -> web.Response:
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        folder = request.app[FOLDER]
        spool = folder / f".upload-{secrets.token_hex(8)}"
        fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        digest = hashlib.sha256()
        size = 0
        try:
            while chunk := await part.read_chunk(READ_BYTES):
                size += len(chunk)
                digest.update(chunk)
                os.write(fd, chunk)
        finally:
            os.close(fd)
        sha256 = digest.hexdigest()
        os.replace(spool, folder / sha256)
        return web.json_response({"attachment": {"id": sha256, "size": size}}, status=201)
    return web.json_response({"error": "no part named file"}, status=400)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(port: int, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    app = web.Application(client_max_size=1 << 40)
    app[FOLDER] = folder
    app.router.add_post("/api/attachments", upload)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.dir))


if __name__ == "__main__":
    main()
