"""The live-session registry: subscribe() for the web console, matching for locks."""

from __future__ import annotations

import asyncio

from gateway.live import LiveSession, Registry


def make(sid: str, user: str, device: str | None, ended: list[tuple[str, str, str | None]]
         ) -> LiveSession:
    async def end(message: str, reason: str, locked: str | None) -> None:
        ended.append((message, reason, locked))

    return LiveSession(sid, user, device, "127.0.0.1:1", 0.0, False, end)


def test_subscribers_get_the_output_in_order_and_end_with_the_session() -> None:
    async def go() -> list[bytes]:
        reg = Registry()
        s = make("s1", "alice", "dev-1", [])
        reg.add(s)
        got: list[bytes] = []

        async def watch() -> None:
            async for chunk in s.subscribe():
                got.append(chunk)

        task = asyncio.create_task(watch())
        await asyncio.sleep(0)
        for i in range(5):
            s.publish(b"chunk%d" % i)
        await asyncio.sleep(0)
        reg.remove("s1")
        await asyncio.wait_for(task, 2)
        assert reg.get("s1") is None and len(reg) == 0
        return got

    assert asyncio.run(go()) == [b"chunk%d" % i for i in range(5)]


def test_a_slow_subscriber_loses_old_output_never_blocks() -> None:
    async def go() -> list[bytes]:
        s = make("s1", "alice", None, [])
        it = s.subscribe().__aiter__()
        first = asyncio.create_task(it.__anext__())
        await asyncio.sleep(0)
        for i in range(LiveSession.QUEUE * 3):      # nobody reads meanwhile
            s.publish(b"%d" % i)
        got = [await first]
        s.close_subscribers()
        try:
            while True:
                got.append(await it.__anext__())
        except StopAsyncIteration:
            pass
        return got

    got = asyncio.run(go())
    assert LiveSession.GAP in got
    assert got[-1] == b"%d" % (LiveSession.QUEUE * 3 - 1)
    assert len(got) <= LiveSession.QUEUE + 2


def test_matching_and_end_once() -> None:
    ended: list[tuple[str, str, str | None]] = []
    reg = Registry()
    a, b = make("a", "alice", "dev-1", ended), make("b", "bob", "dev-2", ended)
    reg.add(a)
    reg.add(b)
    assert reg.matching("user", "alice") == [a]
    assert reg.matching("device", "dev-2") == [b]
    assert reg.matching("user", "dev-2") == []

    async def go() -> None:
        await a.end("locked: x", "lock:1", "user")
        await a.end("again", "lock:2", "user")

    asyncio.run(go())
    assert ended == [("locked: x", "lock:1", "user")]
    assert [s.id for s in reg.sessions()] == ["a", "b"]
