"""Memory per held event: the replay buffer keeps whole generations (issue 15, item 13)."""

from __future__ import annotations

import gc
import tracemalloc

from actors.event_log import EventLog

EVENTS = 20_000


def test_a_held_token_event_costs_well_under_a_kilobyte() -> None:
    hub = EventLog("c" * 24)
    hub.append("init", {"messageId": "m" * 24, "generationId": "g" * 24})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(EVENTS):
            hub.append("token", {"messageId": "m" * 24, "text": "hello "})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(list(hub.held())) >= EVENTS
    # orjson's own buffer would make this ~4.5 KiB; the event, its dict and tight JSON ~1.
    assert held / EVENTS < 1536, f"{held / EVENTS:.0f} bytes per held token event"
