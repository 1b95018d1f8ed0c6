"""The offline ``demo`` model: a deterministic answer streamed at a steady pace.

It makes the server usable out of the box (no API key) and gives tests and benchmarks a
model whose output is known in advance. Cancelling the consumer stops it at once. Its
conversation titles come from the first message alone (:func:`demo_title`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace

from actors.models.base import Final, ModelError, ModelEvent, ModelRequest, TextDelta, Usage
from actors.models.titles import demo_title

_WORDS = re.compile(r"\S+\s*|\s+")
_MARKDOWN = re.compile(r"\bmarkdown\b", re.IGNORECASE)

#: What the demo answers to a message that mentions Markdown: something of everything the
#: web page renders (docs/web-app.md), so the page can be seen working offline.
MARKDOWN_SHOWCASE = """\
## Markdown, rendered

The page renders **bold**, *italic*, `inline code` and [links](https://example.com/docs).

1. Numbered lists
2. with a nested list:
   - bullets
   - and more bullets

| Tool | Purpose | Speed |
| :--- | :------ | ----: |
| grep | search text | 1 ms |
| sort | order lines | 2 ms |

```python
def greet(name: str) -> str:
    \"\"\"Say hello.\"\"\"
    return f"Hello, {name}!"
```

> A quote, and a ``` in the middle of a line, which starts no code block.

Copy the code with the button on its block, or the whole answer with Copy.
"""


def demo_answer(request: ModelRequest) -> str:
    """The answer is a pure function of the last user message (one that mentions Markdown
    gets :data:`MARKDOWN_SHOWCASE`). Asked to continue (the
    contents end with the answer so far), it gives the rest of the answer it would have
    given to that user message: the text it would have started with, minus what is there
    (all of it again when the text so far is not its own)."""
    contents = request.contents
    if contents and contents[-1].role == "assistant":
        so_far = contents[-1].content
        whole = demo_answer(replace(request, contents=contents[:-1]))
        return whole[len(so_far) :] if whole.startswith(so_far) else whole
    last = contents[-1].content if contents else ""
    if _MARKDOWN.search(last):
        return MARKDOWN_SHOWCASE
    words = len(last.split())
    snippet = " ".join(last.split()[:12])
    if len(last.split()) > 12:
        snippet += " …"
    turns = len(request.contents)
    return (
        f"This is Cero's offline demo model. You said: \u201c{snippet}\u201d "
        f"({words} word{'s' if words != 1 else ''}). "
        f"{_attached(request)}"
        f"I can see {turns} message{'s' if turns != 1 else ''} of this conversation. "
        "Configure GOOGLE_GENERATIVE_AI_API_KEY to talk to Gemini."
    )


def _attached(request: ModelRequest) -> str:
    """The last user message's attachments acknowledged: name, type, size (and whether
    their bytes arrived)."""
    attachments = request.contents[-1].attachments if request.contents else ()
    if not attachments:
        return ""
    named = "; ".join(
        f"{a.name} ({a.mime_type}, {a.size} bytes"
        + ("" if len(request.attachment_data.get(a.id, b"")) == a.size else ", not received")
        + ")"
        for a in attachments
    )
    count = len(attachments)
    return f"You attached {count} file{'s' if count != 1 else ''}: {named}. "


def split_tokens(text: str) -> list[str]:
    """Word-sized pieces, whitespace attached, so that ``"".join(...) == text``."""
    return _WORDS.findall(text)


class DemoProvider:
    """``ModelProvider`` for the ``demo`` catalog entry."""

    def __init__(self, token_delay: float = 0.02) -> None:
        self.token_delay = token_delay

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        answer = demo_answer(request)
        pieces = split_tokens(answer)
        for piece in pieces:
            await asyncio.sleep(self.token_delay)
            yield TextDelta(piece)
        prompt = sum(len(turn.content) for turn in request.contents) // 4 + len(request.system) // 4
        yield Final(
            finish_reason="STOP",
            usage=Usage(
                prompt_tokens=prompt,
                output_tokens=len(pieces),
                total_tokens=prompt + len(pieces),
            ),
        )

    async def count_tokens(self, request: ModelRequest) -> int | None:
        return None

    async def title(self, model: str, message: str, answer: str) -> str:
        """``TitleWriter``: the first words of ``message`` that say something, offline
        and deterministic (:func:`actors.models.titles.demo_title`)."""
        title = demo_title(message)
        if title is None:
            raise ModelError("bad_request", "the message has no words to make a title of")
        return title
