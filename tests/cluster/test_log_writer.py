"""The log writer (:mod:`cluster.log_writer`) against the real Redis: an owner's events
reach the stream in order, one pipeline per event-loop turn, trimmed to the hub's replay
floor; a round Redis did not take is sent again (in order, once, even when the timed-out
round was applied after all; refilled from the hub when Redis came back empty); an
append under a lease that is not the writer's any more (or onto another epoch's log) is
refused and changes nothing; a release goes after what was appended under the lease."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog

from cluster.mirror import ClusterEventLog
from cluster.wire import text
from tests.cluster.conftest import LOG_TTL_MS, Node, holds, own, stream
from tests.cluster_harness import PrivateRedis
from tests.conditions import until


def assert_is_the_log(entries: list[tuple[int, dict[str, object]]], hub: ClusterEventLog) -> None:
    """Every seq once, in order, each entry the event the hub appended."""
    seqs = [seq for seq, _ in entries]
    assert seqs == list(range(seqs[0], hub.last_seq + 1)), seqs
    held = {event.seq: event.data for event in hub.held()}
    for seq, data in entries:
        if seq in held:
            assert data == held[seq]


async def test_appends_reach_the_stream_in_order_one_round_per_turn(node: Node) -> None:
    owner = await own(node)
    owner.hub.append("message", {"messageId": "u1", "role": "user"})
    owner.hub.append("init", {"generationId": "g1", "messageId": "m1"})
    owner.say(48)
    await until(lambda: holds(node, 50), what="50 events in the stream")
    assert owner.writer.pipelines == 1 and owner.writer.appended == 50

    for burst in range(5):
        owner.say(3, prefix=f"b{burst}-")
        await until(lambda: holds(node, owner.hub.last_seq), what="the burst written")
    entries = await stream(node)
    assert [seq for seq, _ in entries] == list(range(1, 66))
    assert_is_the_log(entries, owner.hub)
    assert owner.writer.pipelines == 6 and owner.writer.appended == 65
    raw: Any = await node.client.xrange(node.keys.log("c1"), count=1)
    assert orjson.loads(raw[0][1][b"d"]) == entries[0][1] and int(raw[0][1][b"t"]) > 0
    assert 0 < await node.client.pttl(node.keys.log("c1")) <= LOG_TTL_MS
    assert 0 < await node.client.pttl(node.keys.epoch("c1")) <= LOG_TTL_MS
    assert owner.refused == []


async def test_the_stream_is_trimmed_to_the_hubs_replay_floor(node: Node) -> None:
    """Replay keeps the previous generation's lead-in onwards; so does the stream, give or
    take one ``MINID ~`` node (approximate trimming drops whole nodes only)."""
    owner = await own(node)
    hub = owner.hub
    for generation in ("g1", "g2", "g3"):
        hub.append("message", {"messageId": f"u-{generation}", "role": "user"})
        hub.append("init", {"generationId": generation, "messageId": f"m-{generation}"})
        owner.say(300, message=f"m-{generation}")
        hub.append("done", {"generationId": generation, "messageId": f"m-{generation}"})
        await until(lambda: holds(node, hub.last_seq), what=f"{generation} written")
    floor = hub.floor
    assert floor == 304  # g2's lead-in: right after g1's ``done`` (303)
    entries = await stream(node)
    seqs = [seq for seq, _ in entries]
    assert seqs == list(range(seqs[0], hub.last_seq + 1))  # a contiguous tail ...
    assert seqs[0] <= floor  # ... holding all the hub can replay ...
    assert seqs[0] > 1  # ... and not much more: g1 is (mostly) gone
    assert len(entries) < hub.last_seq
    assert_is_the_log(entries, hub)


async def test_a_round_that_timed_out_is_sent_again_once_in_order(
    private_node: tuple[Node, PrivateRedis],
) -> None:
    """Redis stalls (SIGSTOP) with a round in flight: it times out, is sent again with
    what came meanwhile until Redis answers; the stream holds every event exactly once
    (the timed-out round may be applied too when Redis wakes up: the script skips it)."""
    node, private = private_node
    owner = await own(node)
    owner.say(5)
    await until(lambda: holds(node, 5), what="the first round written")
    with structlog.testing.capture_logs() as logs:
        private.pause()
        owner.say(5, prefix="stalled")
        await until(
            lambda: any(e["event"] == "log_append_failed" for e in logs),
            what="a round failed",
        )
        owner.say(5, prefix="meanwhile")
        private.resume()
        await until(lambda: holds(node, 15), what="every event written")
    entries = await stream(node)
    assert [seq for seq, _ in entries] == list(range(1, 16))
    assert_is_the_log(entries, owner.hub)
    assert owner.refused == []


async def test_redis_back_empty_gets_the_hubs_events_again(
    private_node: tuple[Node, PrivateRedis],
) -> None:
    """Redis dies and restarts empty (scripts, lease and log gone): the writer loads the
    scripts, takes its lease back (same token) and writes the log again from the hub's
    replay buffer, so the stream has no hole where the lost events were."""
    node, private = private_node
    owner = await own(node)
    owner.hub.append("message", {"messageId": "u1", "role": "user"})
    owner.hub.append("init", {"generationId": "g1", "messageId": "m1"})
    owner.say(8)
    await until(lambda: holds(node, 10), what="the first events written")
    with structlog.testing.capture_logs() as logs:
        await private.kill()
        owner.say(5, prefix="down")
        await until(
            lambda: any(e["event"] == "log_append_failed" for e in logs),
            what="a round failed",
        )
        await private.start()
        await until(lambda: holds(node, 15), what="every event written")
    assert any(e["event"] == "log_refilled" for e in logs)
    entries = await stream(node)
    assert [seq for seq, _ in entries] == list(range(1, 16))
    assert_is_the_log(entries, owner.hub)
    assert text(await node.client.get(node.keys.lease("c1"))) == owner.held.value
    assert owner.refused == []


async def test_a_stale_holder_cannot_append(node: Node) -> None:
    """A's lease expired and B took the conversation over: A's next append is refused
    and reported, and the stream holds B's events only from there on."""
    a = await own(node, lease_ttl=0.3)
    a.say(3, prefix="a")
    await until(lambda: holds(node, 3), what="A's events written")

    async def expired() -> bool:
        return not await a.leases.exists("c1")

    await until(expired, what="A's lease expired")
    b = await own(node.other(), after=3)
    assert b.held.fence > a.held.fence

    a.say(2, prefix="stale")
    await until(lambda: bool(a.refused), what="A's append refused")
    assert a.refused[0][:2] == ("c1", a.held.value)
    assert "append refused: 0" in a.refused[0][2]
    a.writer.drop("c1")  # what the node does on the refusal
    assert await holds(node, 3)

    b.say(2, prefix="b")
    await until(lambda: holds(node, 5), what="B's events written")
    entries = await stream(node)
    assert [seq for seq, _ in entries] == [1, 2, 3, 4, 5]
    assert [data["text"] for _, data in entries[3:]] == ["b0 ", "b1 "]
    assert text(await node.client.get(node.keys.lease("c1"))) == b.held.value
    assert b.refused == []


async def test_an_append_onto_another_epochs_log_is_refused(node: Node) -> None:
    a = await own(node)
    a.say(2)
    await until(lambda: holds(node, 2), what="written")
    await node.client.set(node.keys.epoch("c1"), "E-rival")  # the log is another's now
    a.say(1)
    await until(lambda: bool(a.refused), what="the append refused")
    assert "append refused: -1" in a.refused[0][2]
    assert await holds(node, 2)


async def test_a_release_goes_after_the_appends_under_the_lease(node: Node) -> None:
    """Events and the release handed over in one turn: the events are written and then
    the lease is gone (a release sent first would let the append take the lease back);
    :meth:`LogWriter.close` writes what is pending and ends the writer."""
    owner = await own(node)
    owner.say(20)
    owner.writer.release("c1", "somebody-else:1")  # not ours: nothing happens
    owner.writer.release("c1", owner.held.value)
    owner.writer.close()
    (task,) = node.tasks
    await asyncio.wait_for(task, 5)
    assert await holds(node, 20)
    assert await node.client.get(node.keys.lease("c1")) is None
    assert owner.refused == []
