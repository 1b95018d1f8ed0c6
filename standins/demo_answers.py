"""The demo's answers: what the Gemini stand-in streams in demo mode (``make demo``,
:mod:`standins.demo`), made from each request so that every tool the user ticks shows.

- ``google_search``: the search queries first (``groundingMetadata.webSearchQueries`` on
  the first chunk, as Gemini sends them before the answer), then the answer, then the
  sources it cites (``groundingChunks`` with ``groundingSupports``) with the last chunk.
- ``code_execution``: a short Python program about the question (``executableCode``), its
  output (``codeExecutionResult``: computed here, so it is what the program prints), then
  the explanation.
- ``url_context``: the URLs in the question, retrieved (``urlContextMetadata``).
- No tool: a Markdown answer (a heading-free paragraph, a list, inline code).

Deterministic: the same question and tools give the same answer (the README's screenshots
are reproducible, ``scripts/screenshots.py``). The answer streams word by word at
:data:`CHUNK_DELAY`, like a real model's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

from standins.gemini import Script

#: Seconds between streamed pieces: slow enough to watch, fast enough not to wait.
CHUNK_DELAY = 0.03
_URL = re.compile(r"https?://[^\s<>\"')\]]+")


def _question(body: Mapping[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if isinstance(content, Mapping) and content.get("role", "user") == "user":
            texts = [
                p["text"]
                for p in content.get("parts") or ()
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            ]
            if texts:
                return " ".join(texts).strip()
    return ""


def _tools(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping):
            names.update(str(key) for key in tool)
    return names


def _words(text: str) -> list[str]:
    """``text`` as streamed pieces: each word with the space before it."""
    pieces = re.findall(r"\s*\S+", text)
    if text and text[-1].isspace() and pieces:
        pieces[-1] += text[len(text.rstrip()) :]
    return pieces


def _topic(question: str) -> str:
    words = re.findall(r"[\w'-]+", question)
    return " ".join(words[:8]) or "this question"


def _sources(topic: str) -> list[dict[str, str]]:
    q = quote_plus(topic)
    return [
        {"uri": f"https://en.wikipedia.org/w/index.php?search={q}", "title": "wikipedia.org"},
        {"uri": f"https://developer.mozilla.org/en-US/search?q={q}", "title": "mozilla.org"},
        {"uri": f"https://docs.python.org/3/search.html?q={q}", "title": "python.org"},
    ]


def _program(question: str) -> tuple[str, str]:
    """A program about the question and what it prints (computed here the same way)."""
    code = (
        f"question = {question!r}\n"
        "words = question.split()\n"
        'print(len(words), "words,", len(question), "characters")\n'
        'print("longest word:", max(words, key=len) if words else "-")\n'
        'print("vowels:", sum(ch in "aeiouAEIOU" for ch in question))\n'
    )
    words = question.split()
    output = (
        f"{len(words)} words, {len(question)} characters\n"
        f"longest word: {max(words, key=len) if words else '-'}\n"
        f"vowels: {sum(ch in 'aeiouAEIOU' for ch in question)}\n"
    )
    return code, output


def demo_script(body: Mapping[str, Any]) -> Script:
    """The stand-in's answer to one request body (see the module docstring)."""
    question = _question(body)
    topic = _topic(question)
    tools = _tools(body)
    chunks: list[str | dict[str, Any]] = []
    script = Script(chunks=chunks, chunk_delay=CHUNK_DELAY)
    if "googleSearch" in tools:
        queries = [topic, f"{topic} explained"]
        sources = _sources(topic)
        script.grounding_first = {"webSearchQueries": queries}
        answer = (
            f"Here is what I found about **{topic}**.\n\n"
            "- The encyclopedia entry gives the background and the history.\n"
            "- The reference documentation has the precise definitions and examples.\n"
            "- The tutorial walks through a small worked example.\n\n"
            "The sources agree on the essentials; see the citations below for details.\n\n"
        )
        chunks.extend(_words(answer))
        script.grounding = {
            "webSearchQueries": queries,
            "groundingChunks": [{"web": s} for s in sources],
            "groundingSupports": [
                {
                    "segment": {"startIndex": 0, "endIndex": len(answer.split("\n")[0])},
                    "groundingChunkIndices": [0, 1],
                    "confidenceScores": [0.92, 0.81],
                }
            ],
        }
    if "codeExecution" in tools:
        code, output = _program(question)
        chunks.extend(_words("Let me check with a short Python program.\n\n"))
        chunks.append({"executableCode": {"language": "PYTHON", "code": code}})
        chunks.append({"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": output}})
        first = output.splitlines()[0]
        chunks.extend(_words(f"The program ran in the sandbox: your question has {first}.\n\n"))
    if "urlContext" in tools:
        urls = _URL.findall(question)
        if urls:
            script.url_context = {
                "urlMetadata": [
                    {"retrievedUrl": url, "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS"}
                    for url in urls
                ]
            }
            chunks.extend(_words(f"I read {len(urls)} page(s) you linked before answering.\n\n"))
    if not chunks:
        chunks.extend(
            _words(
                f"You asked about *{topic}*. A short answer from the demo model:\n\n"
                "1. Start with the simplest case and check it by hand.\n"
                "2. Generalise one step at a time.\n"
                "3. Keep an example such as `print('hello')` at hand to test each step.\n\n"
                "Tick **google search** or **code execution** next to the model to see "
                "tool steps and citations."
            )
        )
    else:
        chunks.extend(_words("(This answer comes from the local Gemini stand-in.)"))
    return script
