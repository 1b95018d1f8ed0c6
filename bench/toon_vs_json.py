"""TOON vs compact JSON for the history block: characters and estimated tokens.

Run: ``python -m bench.toon_vs_json``. Histories are generated deterministically
(seeded) in two styles: short chat turns, and code-heavy answers (Markdown with fenced
Python, quotes, braces and newlines). Tokens are :func:`actors.context.estimate_tokens`,
the same conservative estimate the context builder budgets with (not a real tokenizer:
it charges punctuation double, so it slightly favours the format with less of it).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

from actors.compression import encode_turns
from actors.context import estimate_tokens
from actors.models.base import ChatTurn

SEED = 20261125

_TOPICS = [
    "asyncio",
    "PostgreSQL indexes",
    "a sourdough starter",
    "TLS certificates",
    "Rust lifetimes",
    "the French Revolution",
    "CSS grid",
    "a trip to Lisbon",
    "unit testing",
    "Kubernetes probes",
]
_ASKS = [
    "How do I get started with {t}?",
    "Can you explain {t} in simple terms?",
    "What's the most common mistake with {t}?",
    "Thanks! And how does that compare to last time?",
    "Could you give me a short example about {t}?",
    "Is there anything I should avoid with {t}, e.g. performance issues?",
]
_SAYS = [
    "Sure! {T} is easier than it looks: start small, check each step, and keep notes.",
    "Good question. With {t}, the usual pitfall is skipping the basics; read the docs first.",
    "In short: {t} works best when you keep things simple, explicit and well tested.",
    "Yes, that's right. One more tip about {t}: measure before you optimise anything.",
]
_CODE = '''Here is a minimal example for {t}:

```python
import asyncio


async def fetch(session, url: str) -> dict[str, object]:
    """Fetch one URL and return its JSON body."""
    async with session.get(url, timeout=10) as response:
        response.raise_for_status()
        return await response.json()


async def main(urls: list[str]) -> None:
    results = await asyncio.gather(*(fetch(s, u) for u in urls), return_exceptions=True)
    for url, result in zip(urls, results):
        print(f"{{url}}: {{'error' if isinstance(result, Exception) else 'ok'}}")
```

Key points:
- `asyncio.gather` runs the requests concurrently; `return_exceptions=True` keeps one
  failure from cancelling the others.
- Always set a timeout, e.g. `timeout=10`, so a stalled server cannot hang the loop.
- For {t}, wrap this in a class once it grows beyond ~50 lines.
'''


def short_chat(n: int, rng: random.Random) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    for i in range(n):
        topic = rng.choice(_TOPICS)
        if i % 2 == 0:
            turns.append(ChatTurn("user", rng.choice(_ASKS).format(t=topic)))
        else:
            text = rng.choice(_SAYS).format(t=topic, T=topic[0].upper() + topic[1:])
            turns.append(ChatTurn("assistant", text))
    return turns


def code_heavy(n: int, rng: random.Random) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    for i in range(n):
        topic = rng.choice(_TOPICS)
        if i % 2 == 0:
            turns.append(ChatTurn("user", rng.choice(_ASKS).format(t=topic)))
        else:
            turns.append(ChatTurn("assistant", _CODE.format(t=topic)))
    return turns


def compact_json(turns: list[ChatTurn]) -> str:
    rows = [{"role": t.role, "content": t.content} for t in turns]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def indented_json(turns: list[ChatTurn]) -> str:
    rows = [{"role": t.role, "content": t.content} for t in turns]
    return json.dumps(rows, ensure_ascii=False, indent=2)


@dataclass(frozen=True)
class Row:
    style: str
    messages: int
    json_chars: int
    toon_chars: int
    json_tokens: int
    toon_tokens: int
    indented_tokens: int

    @property
    def char_saving(self) -> float:
        return 1 - self.toon_chars / self.json_chars

    @property
    def token_saving(self) -> float:
        return 1 - self.toon_tokens / self.json_tokens

    @property
    def vs_indented(self) -> float:
        return 1 - self.toon_tokens / self.indented_tokens


def measure() -> list[Row]:
    styles: dict[str, Callable[[int, random.Random], list[ChatTurn]]] = {
        "short chat": short_chat,
        "code-heavy": code_heavy,
    }
    rows: list[Row] = []
    for style, make in styles.items():
        for n in (10, 40, 200):
            turns = make(n, random.Random(SEED + n))
            as_json, as_toon = compact_json(turns), encode_turns(turns)
            rows.append(
                Row(
                    style=style,
                    messages=n,
                    json_chars=len(as_json),
                    toon_chars=len(as_toon),
                    json_tokens=estimate_tokens(as_json),
                    toon_tokens=estimate_tokens(as_toon),
                    indented_tokens=estimate_tokens(indented_json(turns)),
                )
            )
    return rows


def render(rows: list[Row]) -> str:
    header = (
        "style",
        "msgs",
        "JSON chars",
        "TOON chars",
        "chars saved",
        "JSON tok",
        "TOON tok",
        "tok saved",
        "vs indented JSON",
    )
    body = [
        (
            r.style,
            str(r.messages),
            f"{r.json_chars:,}",
            f"{r.toon_chars:,}",
            f"{r.char_saving:.1%}",
            f"{r.json_tokens:,}",
            f"{r.toon_tokens:,}",
            f"{r.token_saving:.1%}",
            f"{r.vs_indented:.1%}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [fmt(header), "-+-".join("-" * w for w in widths), *(fmt(b) for b in body)]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write("TOON vs compact JSON for the history block (estimated tokens)\n\n")
    sys.stdout.write(render(measure()))


if __name__ == "__main__":
    main()
