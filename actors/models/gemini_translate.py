"""Gemini's streamed chunks as :data:`~actors.models.base.ModelEvent` values, two ways.

:meth:`Translator.feed` reads the google-genai SDK's ``GenerateContentResponse``: the
reference. :meth:`Translator.feed_wire` reads the same chunk as the JSON object it was on
the wire (decoded by orjson) and yields the same events without building the SDK's
pydantic models, which cost ~4/5 of the server's CPU per streamed token (issue 21).

Why a wire chunk can fall back to the SDK: pydantic coerces and checks what it reads
(``"12"`` as an int, ``"stop"`` as ``STOP``, a string where a list belongs is an error).
The wire path reads a chunk only when every field the translator uses has the type and
spelling the API documents; anything else (:class:`_Irregular`) goes through the SDK's
own conversion and :meth:`feed`, so the events (or the error) are the SDK path's. Fields
the translator does not read are not checked: the SDK path would end the whole stream
as ``internal`` on a mistyped one, the wire path ignores it.

Why one state for both: an answer's chunks may take either way, and the ``google_search``
and ``url_context`` steps, citations and usage accumulate across chunks.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NoReturn
from typing import Final as FinalType

from google.genai import models as genai_models
from google.genai import types

from actors.models.base import (
    Citation,
    Final,
    ModelError,
    ModelEvent,
    TextDelta,
    ToolStep,
    Usage,
)


def _word(value: object) -> str:
    """An SDK enum (or plain value) as the API's own word."""
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _values(enum: type[Enum]) -> frozenset[str]:
    return frozenset(str(member.value) for member in enum)


_FINISH: FinalType = _values(types.FinishReason)
_BLOCK: FinalType = _values(types.BlockedReason)
_LANGUAGE: FinalType = _values(types.Language)
_OUTCOME: FinalType = _values(types.Outcome)
_URL_STATUS: FinalType = _values(types.UrlRetrievalStatus)
_NO_CONFIG: FinalType[dict[str, object]] = {
    "config": {"response_schema": None, "response_json_schema": None, "include_all_fields": None}
}


class _Irregular(Exception):
    """A wire chunk the SDK's models would coerce or refuse: the SDK decides."""


_IRREGULAR: FinalType = _Irregular()


def _irregular() -> NoReturn:
    raise _IRREGULAR


def _dict(value: object) -> dict[str, Any] | None:
    if value is None or type(value) is dict:
        return value
    _irregular()


def _list(value: object) -> list[Any] | None:
    if value is None or type(value) is list:
        return value
    _irregular()


def _str(value: object) -> str | None:
    if value is None or type(value) is str:
        return value
    _irregular()


def _count(value: object) -> int:
    if value is None:
        return 0
    if type(value) is int:
        return value
    _irregular()


def _enum(value: object, words: frozenset[str]) -> str | None:
    if value is None or (type(value) is str and value in words):
        return value
    _irregular()


def sdk_response(chunk: Any, *, vertex: bool = False) -> types.GenerateContentResponse:
    """The SDK's own model of one decoded chunk, built the way its stream builds it
    (``models.AsyncModels._generate_content_stream``, google-genai 3.6)."""
    convert = (
        genai_models._GenerateContentResponse_from_vertex
        if vertex
        else genai_models._GenerateContentResponse_from_mldev
    )
    return types.GenerateContentResponse._from_response(
        response=convert(chunk, None, None), kwargs=_NO_CONFIG
    )


class Translator:
    """Turns chunks into events; remembers what was already announced."""

    def __init__(self, *, vertex: bool = False) -> None:
        self.chunks = 0
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.citations: dict[str, Citation] = {}
        self.search_announced = False
        self.urls_announced = False
        #: Wire chunks that went through the SDK's models (see the module docstring).
        self.irregular = 0
        self._vertex = vertex

    def feed(self, chunk: types.GenerateContentResponse) -> list[ModelEvent]:
        """The events of one chunk as the SDK models it."""
        self.chunks += 1
        events: list[ModelEvent] = []
        feedback = chunk.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _word(feedback.block_reason)
            raise ModelError("blocked", f"the prompt was blocked ({reason})")
        if chunk.usage_metadata is not None:  # cumulative: the last one wins
            meta = chunk.usage_metadata
            self.usage = Usage(
                prompt_tokens=meta.prompt_token_count or 0,
                output_tokens=meta.candidates_token_count or 0,
                thoughts_tokens=meta.thoughts_token_count or 0,
                total_tokens=meta.total_token_count or 0,
            )
        if not chunk.candidates:
            return events
        candidate = chunk.candidates[0]
        grounding = candidate.grounding_metadata
        if grounding is not None:
            if grounding.web_search_queries and not self.search_announced:
                self.search_announced = True
                events.append(
                    ToolStep("google_search", {"queries": list(grounding.web_search_queries)})
                )
            for gchunk in grounding.grounding_chunks or ():
                web = gchunk.web
                if web is not None and web.uri and web.uri not in self.citations:
                    self.citations[web.uri] = Citation(
                        uri=web.uri, title=web.title or web.domain or web.uri
                    )
        url_meta = candidate.url_context_metadata
        if url_meta is not None and url_meta.url_metadata and not self.urls_announced:
            self.urls_announced = True
            urls: list[dict[str, object]] = [
                {
                    "url": m.retrieved_url or "",
                    "status": _word(m.url_retrieval_status)
                    if m.url_retrieval_status is not None
                    else "URL_RETRIEVAL_STATUS_UNSPECIFIED",
                }
                for m in url_meta.url_metadata
            ]
            events.append(ToolStep("url_context", {"urls": urls}))
        parts = candidate.content.parts if candidate.content is not None else None
        for part in parts or ():
            if part.thought:
                continue
            if part.executable_code is not None:
                code = part.executable_code
                language = _word(code.language) if code.language is not None else "PYTHON"
                events.append(
                    ToolStep("code_execution", {"language": language, "code": code.code or ""})
                )
            elif part.code_execution_result is not None:
                result = part.code_execution_result
                outcome = _word(result.outcome) if result.outcome is not None else "OUTCOME_OK"
                events.append(
                    ToolStep(
                        "code_execution_result",
                        {"outcome": outcome, "output": result.output or ""},
                    )
                )
            elif part.text:
                events.append(TextDelta(part.text))
        if candidate.finish_reason is not None:
            self.finish_reason = _word(candidate.finish_reason)
        return events

    def feed_wire(self, chunk: Any) -> list[ModelEvent]:
        """The events of one chunk as decoded from the wire: :meth:`feed`'s, for less."""
        try:
            return self._wire(chunk)
        except _Irregular:
            self.irregular += 1
            return self.feed(sdk_response(chunk, vertex=self._vertex))

    def _wire(self, chunk: Any) -> list[ModelEvent]:
        """:meth:`feed` on the JSON object; raises :class:`_Irregular` before changing
        any state, so the SDK can take the chunk over from the start."""
        if type(chunk) is not dict:
            _irregular()
        events: list[ModelEvent] = []
        blocked: str | None = None
        feedback = _dict(chunk.get("promptFeedback"))
        if feedback is not None:
            blocked = _enum(feedback.get("blockReason"), _BLOCK)
        usage: Usage | None = None
        meta = _dict(chunk.get("usageMetadata"))
        if meta is not None:
            for key, value in meta.items():
                # The counts read nowhere here (toolUsePromptTokenCount, cached...) are
                # still integers to the SDK: one it would refuse goes its way.
                if value is not None and type(value) is not int and key.endswith("TokenCount"):
                    _irregular()
            usage = Usage(
                prompt_tokens=_count(meta.get("promptTokenCount")),
                output_tokens=_count(meta.get("candidatesTokenCount")),
                thoughts_tokens=_count(meta.get("thoughtsTokenCount")),
                total_tokens=_count(meta.get("totalTokenCount")),
            )
        candidates = _list(chunk.get("candidates"))
        finish: str | None = None
        search = urls_seen = False
        cited: dict[str, Citation] = {}
        if candidates:
            for other in candidates:
                if type(other) is not dict:
                    _irregular()
            candidate: dict[str, Any] = candidates[0]
            grounding = _dict(candidate.get("groundingMetadata"))
            if grounding is not None:
                queries = _list(grounding.get("webSearchQueries"))
                for query in queries or ():
                    _str(query)
                if queries and not self.search_announced:
                    search = True
                    events.append(ToolStep("google_search", {"queries": list(queries)}))
                for gchunk in _list(grounding.get("groundingChunks")) or ():
                    if type(gchunk) is not dict:
                        _irregular()
                    web = _dict(gchunk.get("web"))
                    if web is None:
                        continue
                    uri = _str(web.get("uri"))
                    title = _str(web.get("title"))
                    domain = _str(web.get("domain"))
                    if uri and uri not in self.citations and uri not in cited:
                        cited[uri] = Citation(uri=uri, title=title or domain or uri)
            url_meta = _dict(candidate.get("urlContextMetadata"))
            if url_meta is not None:
                listed: list[dict[str, object]] = []
                for item in _list(url_meta.get("urlMetadata")) or ():
                    if _dict(item) is None:
                        _irregular()  # the SDK refuses a null in a list of models
                    status = _enum(item.get("urlRetrievalStatus"), _URL_STATUS)
                    listed.append(
                        {
                            "url": _str(item.get("retrievedUrl")) or "",
                            "status": status or "URL_RETRIEVAL_STATUS_UNSPECIFIED",
                        }
                    )
                if listed and not self.urls_announced:
                    urls_seen = True
                    events.append(ToolStep("url_context", {"urls": listed}))
            content = _dict(candidate.get("content"))
            parts = _list(content.get("parts")) if content is not None else None
            for part in parts or ():
                if type(part) is not dict:
                    _irregular()
                thought = part.get("thought")
                if thought is not None and type(thought) is not bool:
                    _irregular()
                code = _dict(part.get("executableCode"))
                result = _dict(part.get("codeExecutionResult"))
                text = _str(part.get("text"))
                if code is not None:
                    language = _enum(code.get("language"), _LANGUAGE) or "PYTHON"
                    source = _str(code.get("code")) or ""
                    if not thought:
                        events.append(
                            ToolStep("code_execution", {"language": language, "code": source})
                        )
                elif result is not None:
                    outcome = _enum(result.get("outcome"), _OUTCOME) or "OUTCOME_OK"
                    output = _str(result.get("output")) or ""
                    if not thought:
                        events.append(
                            ToolStep(
                                "code_execution_result", {"outcome": outcome, "output": output}
                            )
                        )
                elif text and not thought:
                    events.append(TextDelta(text))
            finish = _enum(candidate.get("finishReason"), _FINISH)
        # Regular: the same outcome as feed(), state changed only now.
        self.chunks += 1
        if blocked is not None:
            raise ModelError("blocked", f"the prompt was blocked ({blocked})")
        if usage is not None:
            self.usage = usage
        self.search_announced |= search
        self.urls_announced |= urls_seen
        self.citations.update(cited)
        if finish is not None:
            self.finish_reason = finish
        return events

    def final(self) -> Final:
        return Final(
            finish_reason=self.finish_reason or "FINISH_REASON_UNSPECIFIED",
            usage=self.usage,
            citations=tuple(self.citations.values()),
        )
