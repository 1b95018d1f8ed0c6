"""The in-memory counters the ``Memory*`` limits (and the WebSocket frame limits) are built
from, on a fake clock."""

from __future__ import annotations

from state.counting import InFlight, SlidingWindow


def test_sliding_window_counts_per_key() -> None:
    now = [0.0]
    window = SlidingWindow(2, 10.0, clock=lambda: now[0])
    assert window.hit("a") is None
    assert window.hit("a") is None
    assert window.hit("a") == 10
    assert window.hit("b") is None
    now[0] = 10.5
    assert window.hit("a") is None


def test_in_flight_forgets_keys_with_nothing_left() -> None:
    counts = InFlight()
    counts.add("a")
    counts.add("a")
    assert counts["a"] == 2 and counts["b"] == 0
    counts.remove("a")
    counts.remove("a")
    counts.remove("a")  # one too many: still zero, never negative
    assert counts["a"] == 0
    assert counts._counts == {}
