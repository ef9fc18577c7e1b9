"""Paged KV block manager: a pool of fixed-size blocks with reference counts.

One pool can be shared by several schedulers (semi-PD's prefill and decode workers
address ONE pool). Every public method leaves the pool consistent, so
"query free space -> take blocks -> update usage" is one call (`allocate`) and two
callers cannot race on it (the write-after-read hazard that semi-PD's unified memory
manager avoids, arXiv 2504.19867).
"""
from __future__ import annotations


class OutOfBlocks(Exception):
    """Raised by `allocate` when the pool cannot satisfy a request; nothing is taken."""


class BlockPool:
    def __init__(self, num_blocks: int, block_size_tokens: int, name: str = "kv") -> None:
        if num_blocks <= 0 or block_size_tokens <= 0:
            raise ValueError(f"BlockPool '{name}' needs num_blocks > 0 and block_size_tokens > 0, "
                             f"got {num_blocks} and {block_size_tokens}")
        self.name = name
        self.num_blocks = num_blocks
        self.block_size_tokens = block_size_tokens
        # LIFO free list: recently freed blocks are reused first (as in vLLM), and the
        # order is deterministic, so the same run gives the same block ids.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._ref_counts: list[int] = [0] * num_blocks
        self.peak_used_blocks = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size_tokens)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take `num_blocks` free blocks (ref count 1) atomically, or raise OutOfBlocks."""
        if num_blocks > len(self._free):
            raise OutOfBlocks(f"pool '{self.name}': need {num_blocks}, free {len(self._free)}")
        if num_blocks == 0:
            return []
        taken = self._free[-num_blocks:]
        del self._free[-num_blocks:]
        for b in taken:
            self._ref_counts[b] = 1
        used = self.num_blocks - len(self._free)
        if used > self.peak_used_blocks:
            self.peak_used_blocks = used
        return taken

    def incref(self, block_ids: list[int]) -> None:
        """Share blocks with another holder (e.g. a forked sequence or a prefix cache)."""
        for b in block_ids:
            if self._ref_counts[b] <= 0:
                raise ValueError(f"pool '{self.name}': incref of free block {b}")
            self._ref_counts[b] += 1

    def free(self, block_ids: list[int]) -> None:
        """Drop one reference to each block; blocks reaching zero return to the free list."""
        refs = self._ref_counts
        for b in reversed(block_ids):
            if refs[b] <= 0:
                raise ValueError(f"pool '{self.name}': double free of block {b}")
            refs[b] -= 1
            if refs[b] == 0:
                self._free.append(b)

    def ensure_capacity(self, block_ids: list[int], num_tokens: int) -> bool:
        """Grow `block_ids` in place so it holds `num_tokens` tokens; False (and no change) if out of blocks."""
        need = -(-num_tokens // self.block_size_tokens) - len(block_ids)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        block_ids.extend(self.allocate(need))
        return True

    def check_integrity(self, holders: list[list[int]] | None = None) -> None:
        """Assert the pool's invariants; with `holders` (every live block table), also that
        ref counts equal the number of tables holding each block."""
        free = set(self._free)
        assert len(free) == len(self._free), "duplicate block on the free list"
        used = [b for b in range(self.num_blocks) if self._ref_counts[b] > 0]
        assert len(used) + len(free) == self.num_blocks, "free + used != total"
        assert not free.intersection(used), "a block is both free and referenced"
        if holders is not None:
            counts = [0] * self.num_blocks
            for table in holders:
                for b in table:
                    counts[b] += 1
            assert counts == self._ref_counts, "ref counts disagree with live block tables"
