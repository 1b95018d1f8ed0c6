"""Minted ids never start with ``-`` (argparse reads a leading ``-`` as an option: ``cero
messages -tv0M…`` failed with a usage error in a CI run). 20,000 ids each: were the rule
broken, one in 64 would start with ``-`` and the chance of none doing so is (63/64)^20000,
about 1e-136."""

from __future__ import annotations

from actors.ids import opaque_id
from server.core.ids import new_id


def test_actor_ids_never_start_with_a_dash() -> None:
    ids = [opaque_id() for _ in range(20_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {24} and len(set(ids)) == len(ids)


def test_server_ids_never_start_with_a_dash() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {24} and len(set(ids)) == len(ids)
