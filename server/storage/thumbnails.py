"""Thumbnails of image attachments (``GET /api/attachments/{id}/thumbnail``), decoded
within bounds: Pillow's ``MAX_IMAGE_PIXELS`` set to :data:`MAX_PIXELS` and the size read
from the header checked before any pixel is decoded (:data:`MAX_PIXELS` for a JPEG, which
is decoded at a reduced scale, :data:`MAX_FULL_PIXELS` for any other format, decoded
whole), so a small file declaring a huge image (a decompression bomb) is refused, never
expanded. The thumbnail is a new image
(no metadata: no EXIF, no location, no comments), at most :data:`EDGE` pixels a side,
PNG when the image has transparency, else JPEG. Decodes run in threads, at most
:data:`PARALLEL` at once.
"""

from __future__ import annotations

import asyncio
import io
import threading

from PIL import Image, ImageOps

#: The largest JPEG decoded (decoded at a reduced scale, at most 1/8: ~1.6 megapixels in
#: memory at this bound; a 108-megapixel phone photo is past it).
MAX_PIXELS = 100_000_000
#: The largest image of any other format, decoded whole (~100 MB as RGBA at this bound).
MAX_FULL_PIXELS = 25_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
#: A thumbnail's longest side.
EDGE = 256
PARALLEL = 2

#: Held by a decoding thread (a thread waits for its turn: never more than PARALLEL images
#: expanded in memory at once).
_decoding = threading.BoundedSemaphore(PARALLEL)


class NotAThumbnail(Exception):
    """The image cannot be (or must not be) decoded: too many pixels, or not an image."""


def _render(data: bytes) -> tuple[bytes, str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            bound = MAX_PIXELS if image.format == "JPEG" else MAX_FULL_PIXELS
            if width * height > bound or width <= 0 or height <= 0:
                raise NotAThumbnail(f"{width}×{height} pixels is past the {bound} decoded")
            image.draft("RGB", (EDGE * 2, EDGE * 2))  # JPEG: decode at a reduced scale
            image.thumbnail((EDGE, EDGE))
            turned = ImageOps.exif_transpose(image)
            transparent = turned.mode in ("RGBA", "LA", "PA") or (
                turned.mode == "P" and "transparency" in turned.info
            )
            mode = "RGBA" if transparent else "RGB"
            pixels = turned.convert(mode)
            # A new image: nothing of the original's metadata comes along.
            clean = Image.frombytes(mode, pixels.size, pixels.tobytes())
    except NotAThumbnail:
        raise
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise NotAThumbnail(str(exc)[:200]) from None
    out = io.BytesIO()
    if transparent:
        clean.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png"
    clean.save(out, format="JPEG", quality=80)
    return out.getvalue(), "image/jpeg"


async def thumbnail(data: bytes) -> tuple[bytes, str]:
    """``(bytes, type)`` of the thumbnail of the image ``data``; :class:`NotAThumbnail`."""
    return await asyncio.to_thread(_bounded, data)


def _bounded(data: bytes) -> tuple[bytes, str]:
    with _decoding:
        return _render(data)
