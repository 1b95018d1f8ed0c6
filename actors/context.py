"""What the model sees: the system prompt, the user's instructions, older turns as TOON,
the recent tail verbatim.

The seed's rule (docs/api.md, "Chat"): when a conversation has more than
:data:`VERBATIM_TAIL` messages, the older ones become one TOON block inside the system
instruction and the last six (the new user message included) go verbatim as
``contents``. The user's and the conversation's instructions (docs/api.md,
"Instructions") sit between the system prompt and the block, each in its own headed,
tagged section (:func:`with_instructions`). Everything must fit the model's token budget,
the instructions included; when it does not, the oldest turns are dropped first, and the
new user message and the instructions are never dropped or altered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import structlog

from actors.compression import render_history
from actors.models.base import Attachment, ChatTurn, ModelError, ModelProvider, ModelRequest
from actors.models.catalog import ModelInfo
from actors.store import Instructions

log = structlog.get_logger(__name__)

SYSTEM_PROMPT = (
    "You are Cero, a helpful, precise and friendly AI assistant in a chat application. "
    "Answer in the language of the user's latest message. Prefer clear, well-structured "
    "answers and use Markdown (lists, tables, fenced code blocks with a language tag) when "
    "it helps; keep short questions short. Say so plainly when you are unsure or do not "
    "know, and never invent facts, sources or URLs. When tools such as web search, URL "
    "reading or code execution are available, use them when they make the answer more "
    "accurate, and cite what you found."
)

#: How many of the newest messages are sent verbatim as ``contents``.
VERBATIM_TAIL = 6

#: Estimated tokens a message costs beyond its text (role, turn markers).
PER_MESSAGE_OVERHEAD = 4

#: Skip the ``count_tokens`` round trip while the estimate is under this share of the
#: budget: the estimate overestimates real tokenizers, never by a factor of two the
#: other way, and every round trip delays the first token.
COUNT_THRESHOLD = 0.5

#: Upper bound on ``count_tokens`` calls for one request (normally exactly one).
MAX_COUNTS = 3

_WORDISH = re.compile(r"[A-Za-z0-9 ]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def estimate_tokens(text: str) -> int:
    """A conservative (over-)estimate of the tokens ``text`` costs.

    Calibration, in quarter tokens per character, against the published behaviour of
    modern BPE / SentencePiece vocabularies (o200k, Gemini):

    - ASCII letters, digits and spaces: 1 (4 chars/token; English prose runs at
      4.2–4.6 chars/token, so prose is overestimated by roughly 5–15%);
    - other ASCII (punctuation, newlines, tabs): 2, because in code, JSON and TOON
      brackets, quotes and operators often are tokens of their own;
    - 2-byte UTF-8 (accented Latin, Greek, Cyrillic, Hebrew, Arabic): 2
      (2 chars/token; these scripts run at about 2.5–3.5);
    - 3-byte UTF-8 (CJK, Indic, ...): 4, one token a character (CJK runs at 1–1.5);
    - 4-byte UTF-8 (emoji, rare CJK): 8, two tokens a code point.

    The result is rounded up, and non-empty text costs at least one token.
    """
    if not text:
        return 0
    wordish = sum(len(m) for m in _WORDISH.findall(text))
    non_ascii = _NON_ASCII.findall(text)
    quarters = wordish + 2 * (len(text) - wordish - len(non_ascii))
    for ch in non_ascii:
        cp = ord(ch)
        quarters += 2 if cp < 0x800 else 4 if cp < 0x10000 else 8
    return max(1, math.ceil(quarters / 4))


#: Gemini's cost of one image (up to 384 px a side; larger ones are tiled, 258 a tile) and
#: of one PDF page; audio costs 32 tokens a second.
IMAGE_TOKENS = 258
#: The estimate assumes larger images are cut into this many tiles, a page per this many
#: bytes of PDF, and 16 kB a second of audio (128 kbit/s MP3).
IMAGE_TILES = 4
PDF_BYTES_PER_PAGE = 50_000
AUDIO_BYTES_PER_SECOND = 16_000


def estimate_attachment_tokens(attachment: Attachment) -> int:
    """A conservative estimate of what one attachment costs when sent as a part."""
    mime, size = attachment.mime_type, attachment.size
    if mime.startswith("image/"):
        return IMAGE_TOKENS * IMAGE_TILES
    if mime == "application/pdf":
        return IMAGE_TOKENS * max(1, math.ceil(size / PDF_BYTES_PER_PAGE))
    if mime.startswith("audio/"):
        return 32 * max(1, math.ceil(size / AUDIO_BYTES_PER_SECOND))
    # Text: as for any text, at the cost of punctuation-heavy code (2 bytes a token).
    return max(1, math.ceil(size / 2))


def estimate_request_tokens(request: ModelRequest) -> int:
    """The estimated prompt size of ``request`` (system instruction plus contents, and the
    attachments sent as parts)."""
    total = estimate_tokens(request.system) + PER_MESSAGE_OVERHEAD
    for turn in request.contents:
        total += estimate_tokens(turn.content) + PER_MESSAGE_OVERHEAD
        total += sum(estimate_attachment_tokens(a) for a in turn.attachments)
    return total


#: The sections :func:`with_instructions` adds: (heading, what it is, tag).
USER_SECTION = (
    "## User instructions",
    "The user wrote these for every conversation (about themselves and how to answer). "
    "Follow them unless they conflict with the rules above:",
    "user_instructions",
)
CONVERSATION_SECTION = (
    "## Conversation instructions",
    "The user wrote these for this conversation only. Follow them unless they conflict "
    "with the rules above; where they differ from the user instructions, these win:",
    "conversation_instructions",
)


def _section(section: tuple[str, str, str], text: str) -> str:
    heading, lead, tag = section
    return f"{heading}\n{lead}\n<{tag}>\n{text}\n</{tag}>"


def with_instructions(system_prompt: str, instructions: Instructions | None) -> str:
    """The system prompt, then the user's instructions, then the conversation's (each a
    headed section, its text between tags, as written); unchanged without any."""
    if instructions is None:
        return system_prompt
    parts = [system_prompt]
    if instructions.user:
        parts.append(_section(USER_SECTION, instructions.user))
    if instructions.conversation:
        parts.append(_section(CONVERSATION_SECTION, instructions.conversation))
    return "\n\n".join(parts)


def _system(system_prompt: str, older: Sequence[ChatTurn]) -> str:
    if not older:
        return system_prompt
    return f"{system_prompt}\n\n{render_history(older)}"


def _split(turns: Sequence[ChatTurn]) -> tuple[list[ChatTurn], list[ChatTurn]]:
    """Older turns (for the block) and the verbatim tail, which starts with a user turn."""
    cut = max(0, len(turns) - VERBATIM_TAIL)
    older, tail = list(turns[:cut]), list(turns[cut:])
    while tail[0].role != "user":  # Gemini wants contents to open with a user turn
        older.append(tail.pop(0))
    return older, tail


def _fit(
    older: list[ChatTurn],
    tail: list[ChatTurn],
    limit: float,
    make: Callable[[Sequence[ChatTurn], Sequence[ChatTurn]], ModelRequest],
    model_id: str,
) -> ModelRequest:
    """The largest request (dropping oldest turns first) whose estimate is ≤ ``limit``."""

    def fits(req: ModelRequest) -> bool:
        return estimate_request_tokens(req) <= limit

    if fits(make((), tail)):
        whole = make(older, tail)
        if fits(whole):  # the common case: everything fits, one encode
            return whole
        # Drop the fewest oldest block rows: the size shrinks monotonically with k.
        best = make((), tail)
        lo, hi = 1, len(older)
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = make(older[mid:], tail)
            if fits(candidate):
                best, hi = candidate, mid
            else:
                lo = mid + 1
        return best
    # The block is gone; drop the oldest tail turns, keeping the new user message and
    # a user turn first.
    kept = list(tail)
    # The new user message stays; for a continue, the answer being continued after it too.
    keep = 2 if kept[-1].role == "assistant" else 1
    while len(kept) > keep:
        kept.pop(0)
        while len(kept) > keep and kept[0].role != "user":
            kept.pop(0)
        candidate = make((), kept)
        if fits(candidate):
            return candidate
    raise ModelError(
        "bad_request",
        f"message too long for model {model_id}: it does not fit the model's input budget",
    )


async def build_request(
    *,
    history: Sequence[ChatTurn],
    model: ModelInfo,
    tools: tuple[str, ...] = (),
    system_prompt: str = SYSTEM_PROMPT,
    instructions: Instructions | None = None,
    provider: ModelProvider | None = None,
    budget_fraction: float = 0.8,
    budget_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> ModelRequest:
    """The request for the next answer.

    ``history`` is every stored turn of the active path, the new user message last (or,
    to continue an answer, that user message and then the answer so far: the model goes
    on from its text); turns with empty content (failed generations) are skipped.
    ``instructions`` follow the system prompt (:func:`with_instructions`) and count in the
    budget like the rest of the system instruction. The budget is
    ``budget_tokens`` or ``model.input_token_limit * budget_fraction``. Sizes are
    estimated with :func:`estimate_tokens`; when ``provider`` can count tokens, the
    final candidate is measured once (only when its estimate reaches
    :data:`COUNT_THRESHOLD` of the budget) and, if the measurement exceeds the budget,
    the request is shrunk again with the estimate scaled by the measured ratio and
    re-measured (at most :data:`MAX_COUNTS` counts). Raises
    ``ModelError("bad_request")`` when the new user message alone does not fit.
    """
    turns = [t for t in history if t.content]
    continuing = len(turns) >= 2 and turns[-1].role == "assistant" and turns[-2].role == "user"
    if not turns or (turns[-1].role != "user" and not continuing):
        raise ValueError("history must end with the new (non-empty) user message")
    budget = (
        budget_tokens
        if budget_tokens is not None
        else int(model.input_token_limit * budget_fraction)
    )
    older, tail = _split(turns)
    prompt = with_instructions(system_prompt, instructions)

    def make(block: Sequence[ChatTurn], contents: Sequence[ChatTurn]) -> ModelRequest:
        return ModelRequest(
            model=model.id,
            system=_system(prompt, block),
            contents=tuple(contents),
            tools=tools,
            max_output_tokens=max_output_tokens,
        )

    request = _fit(older, tail, budget, make, model.id)
    if provider is None:
        return request

    if estimate_request_tokens(request) < budget * COUNT_THRESHOLD:
        return request
    scale = 1.0
    for attempt in range(MAX_COUNTS):
        measured = await provider.count_tokens(request)
        if measured is None or measured <= budget:
            return request
        if attempt == MAX_COUNTS - 1:
            break
        estimate = estimate_request_tokens(request)
        scale = max(scale, measured / estimate) * 1.02  # a little headroom per round
        log.info(
            "context.shrink_measured",
            model=model.id,
            budget=budget,
            measured=measured,
            estimate=estimate,
            scale=round(scale, 3),
        )
        request = _fit(older, tail, budget / scale, make, model.id)
    raise ModelError(
        "bad_request",
        f"message too long for model {model.id}: {measured} tokens after trimming, budget {budget}",
    )
