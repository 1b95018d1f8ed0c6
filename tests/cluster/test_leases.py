"""Leases and fencing tokens (:mod:`cluster.leases`, the scripts of :mod:`cluster.scripts`)
against the real Redis: taken with a larger token each time, refused while held,
renewed, lost to a process that took over (and then never renewed again), taken back
when Redis lost the key but nobody else held the conversation since; and Redis gone and
back empty on a private ``redis-server``."""

from __future__ import annotations

from cluster.leases import Leases
from cluster.wire import text
from tests.cluster.conftest import Node, take
from tests.cluster_harness import PrivateRedis
from tests.conditions import until


class Lost:
    """The ``lost`` callback, doing what the node does (the lease leaves ``held``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.leases: Leases | None = None

    def __call__(self, conversation_id: str, reason: str) -> None:
        self.calls.append((conversation_id, reason))
        if self.leases is not None:
            self.leases.held.pop(conversation_id, None)


def leases_of(node: Node, lease_ttl: float = 5.0) -> tuple[Leases, Lost]:
    lost = Lost()
    leases = Leases(node.ctx(), lease_ttl=lease_ttl, log_ttl_ms=60_000, lost=lost)
    lost.leases = leases
    return leases, lost


async def test_take_gives_a_larger_token_each_time_and_refuses_a_held_lease(node: Node) -> None:
    a, _ = leases_of(node)
    b, _ = leases_of(node.other())
    await a.load_scripts()
    redis, keys = node.client, node.keys

    first = await take(a, "c1", epoch="Ea")
    assert first is not None
    assert first.value == f"{a.node_id}:{first.fence}"
    assert text(await redis.get(keys.lease("c1"))) == first.value
    assert text(await redis.get(keys.last("c1"))) == str(first.fence)
    assert text(await redis.get(keys.epoch("c1"))) == "Ea"  # the log had none: the taker's
    assert await a.owner_of("c1") == a.node_id
    assert a.fence_of("c1") == first.fence and b.fence_of("c1") == 0

    assert await take(b, "c1", epoch="Eb") is None  # held: refused, nothing changed
    assert text(await redis.get(keys.lease("c1"))) == first.value
    assert await b.owner_of("c1") == a.node_id

    other = await take(b, "c2")
    assert other is not None and other.fence > first.fence  # one counter for every lease

    await redis.delete(keys.lease("c1"))  # expired
    second = await take(b, "c1", epoch="Eb")
    assert second is not None and second.fence > other.fence > first.fence
    assert await a.owner_of("c1") == b.node_id
    assert text(await redis.get(keys.epoch("c1"))) == "Ea"  # the log's epoch stays
    assert (a.taken, b.taken) == (1, 2)


async def test_renewal_extends_every_held_lease(node: Node) -> None:
    a, lost = leases_of(node, lease_ttl=2.0)
    await a.load_scripts()
    for cid in ("c1", "c2"):
        assert await take(a, cid) is not None
        await node.client.pexpire(node.keys.lease(cid), 100)  # nearly run out
    await a.renew()
    for cid in ("c1", "c2"):
        assert 1000 < await node.client.pttl(node.keys.lease(cid)) <= 2000
        assert text(await node.client.get(node.keys.lease(cid))) == a.held[cid].value
    assert lost.calls == [] and a.lost == 0


async def test_an_expired_lease_taken_over_is_lost_and_never_renewed(node: Node) -> None:
    a, lost_a = leases_of(node, lease_ttl=0.2)
    b, lost_b = leases_of(node.other(), lease_ttl=5.0)
    await a.load_scripts()
    old = await take(a, "c1")
    assert old is not None

    async def expired() -> bool:
        return not await a.exists("c1")

    await until(expired, what="a's lease expired")
    new = await take(b, "c1")
    assert new is not None and new.fence > old.fence

    await a.renew()  # the stale holder: refused, reported, not extended
    assert [cid for cid, _ in lost_a.calls] == ["c1"]
    assert "renew refused" in lost_a.calls[0][1]
    assert a.lost == 1 and "c1" not in a.held and a.fence_of("c1") == 0
    assert text(await node.client.get(node.keys.lease("c1"))) == new.value
    assert text(await node.client.get(node.keys.last("c1"))) == str(new.fence)

    await b.renew()
    assert lost_b.calls == []
    assert await b.owner_of("c1") == b.node_id


async def test_a_vanished_key_is_taken_back_only_while_nobody_else_held_it(node: Node) -> None:
    a, lost = leases_of(node)
    await a.load_scripts()
    mine = await take(a, "c1")
    assert mine is not None
    redis, keys = node.client, node.keys

    await redis.delete(keys.lease("c1"))  # lost by Redis; ``last`` is still this lease's
    await a.renew()
    assert text(await redis.get(keys.lease("c1"))) == mine.value  # same token
    assert lost.calls == []

    await redis.delete(keys.lease("c1"), keys.last("c1"))  # both gone (Redis restarted)
    await a.renew()
    assert text(await redis.get(keys.lease("c1"))) == mine.value
    assert text(await redis.get(keys.last("c1"))) == str(mine.fence)
    assert lost.calls == []

    # Someone else held it meanwhile (``last`` is theirs) and let it go: not taken back.
    await redis.delete(keys.lease("c1"))
    await redis.set(keys.last("c1"), str(mine.fence + 1))
    await a.renew()
    assert await redis.get(keys.lease("c1")) is None
    assert [cid for cid, _ in lost.calls] == ["c1"] and "c1" not in a.held


async def test_redis_gone_then_back_empty(private_node: tuple[Node, PrivateRedis]) -> None:
    """Renewals while Redis is down fail quietly (no ``lost``: that is no refusal); once
    it is back empty (scripts and keys gone), the next renewal loads the script again and
    takes the lease back with the same token."""
    node, private = private_node
    a, lost = leases_of(node)
    await a.load_scripts()
    mine = await take(a, "c1")
    assert mine is not None

    await private.kill()
    await a.renew()
    assert lost.calls == [] and "c1" in a.held

    await private.start()
    assert await node.client.get(node.keys.lease("c1")) is None  # empty
    await a.renew()
    assert text(await node.client.get(node.keys.lease("c1"))) == mine.value
    assert lost.calls == [] and a.held["c1"] is mine


async def test_tokens_still_grow_after_redis_came_back_empty(
    private_node: tuple[Node, PrivateRedis],
) -> None:
    """The fence counter is lost with the rest when Redis restarts empty; owners take
    their leases back with their tokens. A later owner of such a conversation must still
    get a larger token than the one taken back (the rows are fenced by token)."""
    node, private = private_node
    a, lost = leases_of(node)
    b, _ = leases_of(node.other())
    await a.load_scripts()
    for cid in ("c1", "c2", "c3"):
        assert await take(a, cid) is not None
    old = a.held["c3"]
    assert old.fence == 3

    await private.kill()
    await private.start()

    async def taken_back() -> bool:
        await a.renew()  # the first one may meet the connection Redis dropped
        return await node.client.get(node.keys.lease("c3")) is not None

    await until(taken_back, what="the lease taken back")  # token 3; the counter is gone
    assert text(await node.client.get(node.keys.lease("c3"))) == old.value

    await node.client.delete(node.keys.lease("c3"))  # a's lease expired
    await b.load_scripts()
    new = await take(b, "c3")
    assert new is not None and new.fence > old.fence
    assert lost.calls == []
