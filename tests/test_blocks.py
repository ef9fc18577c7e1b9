"""Block manager property tests: random allocate/append/free keep the pool consistent."""
import pytest
from hypothesis import given, settings, strategies as st

from engines.blocks import BlockPool, OutOfBlocks

ops = st.lists(st.tuples(st.sampled_from(["alloc", "grow", "free", "share"]),
                         st.integers(0, 40), st.integers(0, 1000)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(num_blocks=st.integers(1, 64), block_size=st.integers(1, 16), ops=ops)
def test_random_operations_keep_invariants(num_blocks, block_size, ops):
    pool = BlockPool(num_blocks, block_size)
    tables: list[list[int]] = []
    for op, n, pick in ops:
        if op == "alloc":
            if pool.can_allocate(n):
                tables.append(pool.allocate(n))
            else:
                free_before = pool.num_free_blocks
                with pytest.raises(OutOfBlocks):
                    pool.allocate(n)
                assert pool.num_free_blocks == free_before  # nothing taken on failure
        elif op == "grow" and tables:
            table = tables[pick % len(tables)]
            before = list(table)
            ok = pool.ensure_capacity(table, n * block_size)
            assert table[:len(before)] == before
            if ok:
                assert len(table) * block_size >= n * block_size
            else:
                assert table == before
        elif op == "free" and tables:
            pool.free(tables.pop(pick % len(tables)))
        elif op == "share" and tables:
            table = tables[pick % len(tables)]
            pool.incref(table)
            tables.append(list(table))
        pool.check_integrity(tables)
        assert pool.num_free_blocks + pool.num_used_blocks == num_blocks
        assert pool.peak_used_blocks >= pool.num_used_blocks
    for t in tables:
        pool.free(t)
    assert pool.num_free_blocks == num_blocks


def test_double_free_is_an_error():
    pool = BlockPool(4, 16)
    ids = pool.allocate(2)
    pool.free(ids)
    with pytest.raises(ValueError, match="double free"):
        pool.free(ids)


def test_shared_block_returns_only_after_last_reference():
    pool = BlockPool(4, 16)
    ids = pool.allocate(1)
    pool.incref(ids)
    pool.free(ids)
    assert pool.num_free_blocks == 3
    pool.free(ids)
    assert pool.num_free_blocks == 4


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="num_blocks > 0"):
        BlockPool(0, 16)
