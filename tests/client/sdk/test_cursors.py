"""The cursor gate (no duplicate after a reconnect's replay, ``reset`` moves the cursor)
and the reconnect waits (client/sdk/cursors.py)."""

from __future__ import annotations

from client.sdk.cursors import Backoff, Cursor, Cursors, log_key


def event(seq: int, epoch: str = "e1", kind: str = "token", **extra: object) -> dict[str, object]:
    return {"type": kind, "conversationId": "c", "epoch": epoch, "seq": seq, **extra}


def test_cursor_text() -> None:
    assert Cursor.parse("ab:cd:12") == Cursor("ab:cd", 12)
    assert str(Cursor("e", 3)) == "e:3"
    for bad in ("", "e", ":3", "e:", "e:-1", "e:x", "e:١"):
        assert Cursor.parse(bad) is None, bad


def test_duplicates_are_dropped_and_reset_moves_the_cursor() -> None:
    gate = Cursors({"c": "e1:5"})
    assert not gate.admit(event(4)) and not gate.admit(event(5))
    assert gate.admit(event(6)) and gate.text("c") == "e1:6"
    assert gate.admit(event(9, merged=3)) and not gate.admit(event(8))
    # A reset may name an earlier seq (another epoch, or the log's own): it always passes.
    assert gate.admit(event(2, epoch="e2", kind="reset")) and gate.text("c") == "e2:2"
    assert not gate.admit(event(2, epoch="e2")) and gate.admit(event(3, epoch="e2"))
    # Logs are apart; events without a cursor (a retry's rebuilt events) pass, moving nothing.
    account = {"type": "conversation.created", "channel": "account", "epoch": "a", "seq": 1}
    assert log_key(account) == "account" and gate.admit(account)
    assert gate.admit({"type": "done", "conversationId": "c"}) and gate.text("c") == "e2:3"
    assert gate.snapshot() == {"c": "e2:3", "account": "a:1"}


def test_backoff_doubles_up_to_its_ceiling_and_honours_retry_after() -> None:
    backoff = Backoff(base=1.0, ceiling=5.0)
    waits = [backoff.next() for _ in range(5)]
    for wait, floor in zip(waits, [1, 2, 4, 5, 5], strict=True):
        assert floor <= wait <= floor * 1.25
    assert backoff.next(at_least=30.0) == 30.0
    backoff.succeeded()
    assert backoff.next() <= 1.25
