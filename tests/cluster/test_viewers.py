"""Presence across processes (:mod:`cluster.viewers`) against the real Redis: the owner
reads a conversation's viewer hash only when the sum may have changed -- another process's
notice (through the relay's blocking read), a share expiring -- not every second."""

from __future__ import annotations

import asyncio
import time

from cluster.mirror import ClusterEventLog
from cluster.relay import Relay
from cluster.viewers import ViewerCounts
from tests.cluster.conftest import Node, owner_hub
from tests.conditions import until


def owned_hub(cid: str = "c1") -> ClusterEventLog:
    """An owner's hub (its appends go nowhere: presence is what is looked at)."""
    hub = owner_hub(cid)
    hub.lease = "x:1"
    hub.sink = lambda hub, event: None
    return hub


def presences(hub: ClusterEventLog) -> list[object]:
    return [e.data.get("viewers") for e in hub.held() if e.type == "presence"]


async def test_a_count_changed_elsewhere_reaches_the_owner_by_a_notice(node: Node) -> None:
    """A long ttl: without the notice the owner would not read the hash again for
    minutes. With it, the other process's viewers are summed at the owner's next round."""
    hub = owned_hub()
    owner = ViewerCounts(node.ctx(), 60.0, owned=lambda: [("c1", hub)])
    relay = Relay(node.ctx())
    relay.on_presence = owner.noticed
    node.spawn(relay.run())

    await owner.round(refresh=False)  # the new owner reads once
    assert owner.reads == 1
    for _ in range(3):
        await owner.round(refresh=False)
    assert owner.reads == 1, "nothing changed: the hash is not read again"

    other = node.other()
    viewer = ViewerCounts(other.ctx(), 60.0, owned=list)
    mirror = owner_hub("c1")
    mirror.local_viewers = 2
    viewer.changed(mirror)
    await viewer.round(refresh=False)
    await until(lambda: "c1" in owner._noticed, 5, what="the notice read by the owner's relay")
    await owner.round(refresh=False)
    assert owner.reads == 2
    assert hub.viewers_published == 2
    assert presences(hub)[-1] == 2

    # A refresh of the same count announces nothing: the owner does not read.
    await viewer.round(refresh=True)
    await asyncio.sleep(0.3)
    await owner.round(refresh=False)
    assert owner.reads == 2


async def test_a_dead_processes_viewers_drop_out_when_its_share_expires(node: Node) -> None:
    """The other process writes its share once and dies (no refresh): the owner reads the
    hash again when that share expires (3 ttl), not before, and the sum drops."""
    ttl = 1.0
    hub = owned_hub()
    owner = ViewerCounts(node.ctx(), ttl, owned=lambda: [("c1", hub)])
    other = node.other()
    dead = ViewerCounts(other.ctx(), ttl, owned=list)
    mirror = owner_hub("c1")
    mirror.local_viewers = 3
    dead.changed(mirror)
    await dead.round(refresh=False)
    written = time.monotonic()
    await owner.round(refresh=False)
    assert hub.viewers_published == 3
    reads = owner.reads
    while hub.viewers_published == 3:
        assert time.monotonic() - written < 3 * ttl + 1.5, "the share did not drop out"
        await asyncio.sleep(0.2)
        await owner.round(refresh=False)
    assert time.monotonic() - written >= 3 * ttl - 0.2
    assert owner.reads == reads + 1, "read once, when the share expired"
    assert hub.viewers_published == 0
