"""``streamGenerateContent`` read off the wire: the SDK builds the request, we read it.

The request (URL, headers, body, Vertex or API-key differences, credentials) is built by
google-genai's own code, the functions its ``generate_content_stream`` calls
(``_GenerateContentParameters_to_mldev`` / ``_to_vertex`` and
``BaseApiClient._build_request``, google-genai 3.6), so it stays byte for byte the SDK's.
We send it on the provider's aiohttp session and read the Server-Sent Events ourselves,
with the SDK's framing rules (``_api_client.HttpResponse._aiter_response_stream``) and its
error semantics (``APIError.raise_for_async_response`` before the stream,
``raise_error_async`` for ``{"error": ...}`` in it, ``UnknownApiResponseError`` for data
that is not JSON), and decode each event with orjson. The events then go to
:meth:`actors.models.gemini_translate.Translator.feed_wire`.

What the SDK path does that this one does not: automatic continuation (a hop that ends
with ``finishReason: CONTINUATION`` and a ``continuationToken`` is not resumed; its
finish reason is reported as is) and the mTLS client-certificate session of
``google.auth.aio``; ``CERO_GEMINI_DECODER=sdk`` keeps both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from google import genai
from google.genai import _api_client, _common, types
from google.genai import errors as genai_errors
from google.genai import models as genai_models


def _build(
    api: _api_client.BaseApiClient,
    model: str,
    contents: Any,
    config: types.GenerateContentConfig,
) -> _api_client.HttpRequest:
    """The SDK's request for one stream, as ``_generate_content_stream`` builds it."""
    parameters = types._GenerateContentParameters(model=model, contents=contents, config=config)
    convert = (
        genai_models._GenerateContentParameters_to_vertex
        if api.vertexai
        else genai_models._GenerateContentParameters_to_mldev
    )
    request: dict[str, Any] = convert(api, parameters, None, parameters)
    url_parts = request.get("_url")
    path = "{model}:streamGenerateContent?alt=sse"
    if url_parts:
        path = path.format_map(url_parts)
    query = request.get("_query")
    if query:
        path = f"{path}?{urlencode(query)}"
    request.pop("config", None)
    http_options = parameters.config.http_options if parameters.config is not None else None
    request = _common.convert_to_dict(request)
    request = _common.encode_unserializable_types(request)
    return api._build_request("post", path, request, http_options)


class _Framer:
    """Server-Sent Events framed as the SDK frames them
    (``_api_client.HttpResponse._aiter_response_stream``): ``data: `` lines up to a blank
    line, joined by LF, make one event; any other line goes to a brace-balancing buffer
    (how an error body that is not SSE arrives), one event when its braces balance."""

    def __init__(self) -> None:
        self._raw = _api_client._RawJsonLineBuffer()
        self._data: list[bytes] = []

    def line(self, line: bytes) -> bytes | str | None:
        line = line.rstrip()
        if not line:
            data = self._data
            if not data:
                return None
            self._data = []
            return data[0] if len(data) == 1 else b"\n".join(data)
        if line.startswith(b"data: "):
            self._data.append(line[6:])
            return None
        return self._raw.add_line(line.decode("utf-8").rstrip())

    def end(self) -> list[bytes | str]:
        rest: list[bytes | str] = []
        remaining = self._raw.flush()
        if remaining:
            rest.append(remaining)
        if self._data:
            rest.append(b"\n".join(self._data))
        return rest


async def events(content: aiohttp.StreamReader) -> AsyncIterator[bytes | str]:
    """Each event's payload; lines end at LF and may be of any length."""
    framer = _Framer()
    pieces: list[bytes] = []
    async for data in content.iter_any():
        if b"\n" not in data:
            pieces.append(data)
            continue
        if pieces:
            pieces.append(data)
            data = b"".join(pieces)
            pieces = []
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            pieces.append(tail)
        for line in lines:
            payload = framer.line(line)
            if payload is not None:
                yield payload
    if pieces:
        payload = framer.line(b"".join(pieces))
        if payload is not None:
            yield payload
    for payload in framer.end():
        yield payload


def decode(payload: bytes | str) -> Any:
    """One event's JSON; what orjson refuses is decided as the SDK decides it (``json``)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # Invalid UTF-8 raises here, as the SDK's per-line decode does.
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise genai_errors.UnknownApiResponseError(
                f"Failed to parse response as JSON. Raw response: {text}"
            ) from exc


class WireStreams:
    """Opens Gemini streams on ``session`` with requests built by ``client``'s SDK."""

    def __init__(self, client: genai.Client, session: aiohttp.ClientSession) -> None:
        self._api: _api_client.BaseApiClient = client._api_client
        self._session = session

    @property
    def vertex(self) -> bool:
        return bool(self._api.vertexai)

    async def chunks(
        self, model: str, contents: Any, config: types.GenerateContentConfig
    ) -> AsyncIterator[Any]:
        """The decoded chunks of one stream; raises the SDK path's exceptions.

        Nothing is sent before the first ``__anext__``. Leaving mid-body (an error, a
        timeout, ``aclose``) closes the connection; a body read to the end releases it.
        """
        api = self._api
        request = _build(api, model, contents, config)
        if api.vertexai and (api.project or api.location) and not api.api_key:
            request.headers["Authorization"] = f"Bearer {await api._async_access_token()}"
            credentials = api._credentials
            if credentials is not None and credentials.quota_project_id:
                request.headers["x-goog-user-project"] = credentials.quota_project_id
        body = json.dumps(request.data).encode("utf-8") if request.data else None
        url = request.url
        if api._aiohttp_use_mtls_endpoint:
            url = _api_client.to_mtls_url(url)
        response = await self._session.request(
            method=request.method,
            url=url,
            headers=request.headers,
            data=body,
            timeout=aiohttp.ClientTimeout(total=request.timeout),
            **api._async_client_session_request_args,
        )
        finished = False
        try:
            await genai_errors.APIError.raise_for_async_response(response)
            async for payload in events(response.content):
                chunk = decode(payload)
                if type(chunk) is dict and next(iter(chunk), None) == "error":
                    # The SDK's test is `json.dumps(chunk).startswith('{"error":')`.
                    error = chunk.get("error", {})
                    await genai_errors.APIError.raise_error_async(error.get("code"), chunk, None)
                yield chunk
            finished = True
        finally:
            if finished or response.content.at_eof():
                response.release()  # read to the end (an error body too): reusable
            else:
                response.close()
