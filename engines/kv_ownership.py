"""KV block ownership check for the soak's invariant checker (engines/invariants.py)."""
from __future__ import annotations

from engines.blocks import BlockPool


class InvariantViolation(AssertionError):
    """A simulated run broke an invariant; the message says which and where."""


def fail(message: str) -> None:
    raise InvariantViolation(message)


def check_pool_ownership(pool: BlockPool, holders: list[tuple[str, list[int]]], *,
                         scan_ref_counts: bool = True) -> None:
    """No block owned twice; every used block owned, every owned block used; ref counts equal
    owners; free + used = total. (Nothing in the engines shares blocks between requests.)
    Set and map operations keep this O(blocks) at C speed: it runs after every event;
    `scan_ref_counts=False` skips the ref-count scan when no pool call ran since the last one."""
    owned: set[int] = set().union(*(blocks for _, blocks in holders))
    if len(owned) != sum(len(blocks) for _, blocks in holders):
        fail(_double_owner(pool, holders))
    if owned and (min(owned) < 0 or max(owned) >= pool.num_blocks):
        fail(f"pool '{pool.name}': owned block ids {sorted(owned)[:3]}..{sorted(owned)[-3:]} "
              f"outside [0, {pool.num_blocks})")
    free, refs = pool._free, pool._ref_counts
    free_set = set(free)
    if len(free_set) != len(free):
        fail(f"pool '{pool.name}': duplicate block on the free list")
    if len(owned) + len(free) != pool.num_blocks or not free_set.isdisjoint(owned):
        leaked = set(range(pool.num_blocks)) - free_set - owned
        fail(f"pool '{pool.name}': {len(owned)} owned + {len(free)} free != {pool.num_blocks} blocks "
              f"(owned and free: {sorted(free_set & owned)[:5]}, leaked: {sorted(leaked)[:5]})")
    # Free blocks at ref count 0, owned ones >= 1 and all counts summing to the owners:
    # every owned block has ref count exactly 1 (the number of its owners).
    if scan_ref_counts and (any(map(refs.__getitem__, free)) or sum(refs) != len(owned)
                            or (owned and min(map(refs.__getitem__, owned)) < 1)):
        bad = [b for b in range(pool.num_blocks) if refs[b] != (1 if b in owned else 0)]
        fail(f"pool '{pool.name}': ref counts disagree with owners at blocks {bad[:5]} "
              f"(counts {[refs[b] for b in bad[:5]]})")


def _double_owner(pool: BlockPool, holders: list[tuple[str, list[int]]]) -> str:
    owner: dict[int, str] = {}
    for label, blocks in holders:
        for b in blocks:
            if b in owner:
                return f"pool '{pool.name}': block {b} owned by {owner[b]} and by {label}"
            owner[b] = label
    raise AssertionError("unreachable: the sizes said a block is owned twice")
