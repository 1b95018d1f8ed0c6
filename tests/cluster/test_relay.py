"""The relay (:mod:`cluster.relay`) against the real Redis: a mirror on one node follows
what an owner's log writer appends on another, in order, through the blocking read."""

from __future__ import annotations

import structlog

from actors.event_log import Event
from cluster.faults import REDIS_FAULTS
from cluster.mirror import ClusterEventLog
from cluster.relay import Relay
from tests.cluster.conftest import Node, holds, own
from tests.cluster_harness import PrivateRedis
from tests.conditions import until


def mirror_of(node: Node, cid: str = "c1") -> tuple[Relay, ClusterEventLog]:
    """A node's relay (running) and a mirror of ``cid`` as ``ClusterProcess.attach`` makes it."""
    relay = Relay(node.ctx())
    node.spawn(relay.run())
    hub = ClusterEventLog(
        cid,
        epoch=None,
        on_subscribe=relay.watch,
        on_presence=lambda hub: None,
        on_closed=lambda hub: None,
    )
    return relay, hub


class Viewer:
    """A subscriber that checks order as events arrive (``direct``)."""

    def __init__(self, hub: ClusterEventLog) -> None:
        self.events: list[Event] = []
        self.sub = hub.subscribe(None, notify=lambda: None, direct=self.direct)

    def direct(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def seen(self) -> list[Event]:
        self.events += self.sub.take()
        return self.events


def assert_reset_then_the_new_log(events: list[Event]) -> None:
    """One ``reset``, then the new epoch's log: the user message (seq 1) and five tokens
    (queued behind the reset, so merged into one up to seq 6)."""
    assert [e.type for e in events].count("reset") == 1
    after = events[[e.type for e in events].index("reset") + 1 :]
    assert [e.type for e in after[:1]] == ["message"] and after[0].seq == 1
    assert after[-1].seq == 6
    assert "".join(e.text for e in after[1:]) == "".join(f"t{i} " for i in range(5))
    assert all(e.cursor.startswith("E2:") for e in after)


async def test_a_mirror_follows_the_owners_log(node: Node) -> None:
    owner = await own(node)
    owner.hub.append("message", {"messageId": "u1", "role": "user"})
    owner.hub.append("init", {"generationId": "g1", "messageId": "m1"})
    owner.say(10)
    await until(lambda: holds(node, 12), what="the owner's first events written")

    relay, hub = mirror_of(node.other())
    await relay.sync(hub)  # attach: up to the log, with its epoch
    assert (hub.epoch, hub.last_seq) == ("E1", 12)
    assert hub.live_answer() == ("m1", "".join(f"t{i} " for i in range(10)))
    viewer = Viewer(hub)
    assert relay.watched == {"c1": hub}

    owner.say(30, prefix="more")
    await until(lambda: hub.last_seq == 42, what="the mirror at 42")
    events = viewer.seen()
    assert [e.seq for e in events] == list(range(13, 43))
    owned = {e.seq: e.data for e in owner.hub.held()}
    assert all(e.data == owned[e.seq] for e in events)


async def test_a_log_restarted_in_another_epoch_resets_the_mirror(node: Node) -> None:
    """The log expired (or Redis restarted empty) while a mirror had a viewer, and a
    process without the conversation in memory took it over with a fresh hub: its log
    starts again at seq 1 in a new epoch. The viewer must get a ``reset``."""
    first = await own(node)
    first.say(20)
    await until(lambda: holds(node, 20), what="written")
    relay, hub = mirror_of(node.other())
    await relay.sync(hub)
    viewer = Viewer(hub)
    keys = node.keys
    await node.client.delete(keys.log("c1"), keys.epoch("c1"), keys.lease("c1"), keys.last("c1"))

    second = await own(node.other(), epoch="E2")
    second.hub.append("message", {"messageId": "u2", "role": "user"})
    second.say(5)
    await until(lambda: holds(node, 6), what="the new log written")
    await until(
        lambda: hub.epoch == "E2" and hub.last_seq == 6,
        within=3.0,
        what="the mirror in the new epoch",
    )
    assert_reset_then_the_new_log(viewer.seen())


async def test_a_log_restarted_empty_in_another_epoch_resets_the_mirror(
    private_node: tuple[Node, PrivateRedis],
) -> None:
    """Redis restarts empty while a mirror at seq 20 has a viewer: the log and the epoch
    notices are gone, and a process without the conversation in memory takes it over in
    a new epoch. The relay reads the notice stream that Redis began again, resets the
    mirror once, follows the new log, and then waits in its blocking read (no loop)."""
    node, private = private_node
    first = await own(node)
    first.say(20)
    await until(lambda: holds(node, 20), what="written")
    relay, hub = mirror_of(node.other())
    await relay.sync(hub)
    viewer = Viewer(hub)
    await until(lambda: relay.reads >= 1, what="the relay read the notice of E1")

    async def answers() -> bool:
        try:
            return bool(await node.client.ping())
        except REDIS_FAULTS:
            return False

    with structlog.testing.capture_logs() as logs:
        await private.kill()
        await private.start()
        await until(answers, what="the client reconnected")
        second = await own(node.other(), epoch="E2")
        second.hub.append("message", {"messageId": "u2", "role": "user"})
        second.say(5)
        await until(lambda: holds(node, 6), what="the new log written")
        await until(lambda: hub.last_seq == 6 and hub.epoch == "E2", what="the mirror on E2")
    assert [e["epoch"] for e in logs if e["event"] == "relay_epoch_notice"] == ["E2"]
    assert_reset_then_the_new_log(viewer.seen())

    reads = relay.reads
    second.say(1, prefix="later")
    await until(lambda: hub.last_seq == 7, what="the next event relayed")
    assert relay.reads - reads <= 3  # one blocking read per event (or per wake), not a spin
    assert [e.type for e in viewer.seen()].count("reset") == 1
