"""flowplane.api.SendQueue: bounded, the oldest gives way (counted), flush bounded by a deadline."""

from __future__ import annotations

import trio

from flowplane.api import Counters, SendQueue


def test_full_queue_drops_the_oldest_and_counts_it():
    c = Counters("t")
    q = SendQueue(3, c)
    assert q.put([b"a", b"b", b"c", b"d", b"e"]) == 5
    assert list(q.items) == [b"c", b"d", b"e"]
    assert c["dropped"] == 2 and c.drops[("transport", "queue_full")] == 2


def test_put_back_restores_order_and_stays_bounded():
    c = Counters("t")
    q = SendQueue(3, c)
    q.put([b"c", b"d"])
    q.put_back([b"a", b"b"])
    assert list(q.items) == [b"b", b"c", b"d"] and c["dropped"] == 1


async def test_wait_returns_once_something_is_queued_and_flush_waits_for_the_drain():
    q = SendQueue(8, Counters("t"))
    sent: list[bytes] = []

    async def drain():
        while True:
            await q.wait()
            sent.append(q.items.popleft())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await trio.sleep(0)
        q.put([b"x", b"y"])
        assert await q.flush(5.0) is True
        assert sent == [b"x", b"y"]
        nursery.cancel_scope.cancel()


async def test_flush_gives_up_at_the_deadline_or_when_nothing_drains():
    q = SendQueue(8, Counters("t"))
    q.put([b"x"])
    assert await q.flush(0.05) is False
    assert await q.flush(5.0, draining=lambda: False) is False
    q.items.clear()
    assert await q.flush(0.05, in_flight=lambda: 1) is False
