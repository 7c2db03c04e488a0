"""Concurrent intake posts share a transaction; one bad item fails only its caller."""

from __future__ import annotations

import asyncio

import pytest

from bot.batching import Batcher


async def test_concurrent_items_share_a_batch_and_keep_their_results():
    seen: list[list[int]] = []

    async def run(batch):
        seen.append(list(batch))
        await asyncio.sleep(0)
        return [n * 10 for n in batch]

    batcher = Batcher(run)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(30)))
    assert results == [n * 10 for n in range(30)]
    assert len(seen) < 30 and sorted(sum(seen, [])) == list(range(30))
    await batcher.close()


async def test_a_failing_batch_is_retried_one_by_one():
    async def run(batch):
        if 3 in batch:
            raise ValueError("bad item 3")
        return [n + 1 for n in batch]

    batcher = Batcher(run)
    outcomes = await asyncio.gather(*(batcher.submit(n) for n in range(6)),
                                    return_exceptions=True)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [1, 2, 3, 5, 6]
    assert isinstance(outcomes[3], ValueError)
    with pytest.raises(ValueError):
        await batcher.submit(3)
    await batcher.close()
