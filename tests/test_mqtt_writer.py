"""The MQTT link's write batching: the packets written in one loop turn share a send()."""

from __future__ import annotations

import asyncio

import pytest

from bridge.mqtt import _is_transport, _WindowWriter
from tests.conftest import eventually


class _Recording(asyncio.Transport):
    """A transport that records each write (the unit under test only batches them)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closing = True


async def _after_callbacks_scheduled_so_far() -> None:
    """Return once every callback already scheduled on the loop has run (they run in
    order): no time-based wait, the loop's own ordering is the condition."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await asyncio.wait_for(done, 5)


async def test_writes_of_one_turn_go_out_in_one_send():
    transport = _Recording()
    writer = _WindowWriter(transport)
    writer.write(b"a")
    writer.write(b"b")
    assert transport.writes == []  # not before the loop's next turn
    await eventually(lambda: transport.writes, what="the collected write")
    assert transport.writes == [b"ab"]


async def test_a_held_window_is_sent_by_flush_and_write_through_is_immediate():
    transport = _Recording()
    writer = _WindowWriter(transport)
    writer.held = True
    writer.write(b"1")
    writer.write(b"2")
    await _after_callbacks_scheduled_so_far()
    assert transport.writes == []  # held: the pump decides when
    writer.flush()
    assert transport.writes == [b"12"]
    writer.write(b"3")
    writer.write_through()  # before a clean DISCONNECT: nothing may wait
    writer.write(b"4")
    assert transport.writes == [b"12", b"3", b"4"]


async def test_nothing_is_written_to_a_closing_transport():
    transport = _Recording()
    writer = _WindowWriter(transport)
    writer.write(b"x")
    transport.closing = True
    await _after_callbacks_scheduled_so_far()
    assert transport.writes == []


def test_uvloop_transports_are_recognised():
    """uvloop's transports do not subclass asyncio's: batching must not depend on it."""
    uvloop = pytest.importorskip("uvloop")

    async def check() -> bool:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", port
        )
        try:
            return _is_transport(transport) and not isinstance(transport, asyncio.Transport)
        finally:
            transport.close()
            server.close()

    assert uvloop.run(check())
