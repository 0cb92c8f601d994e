"""The MQTT link's write batching: the packets written in one loop turn share a send()."""

from __future__ import annotations

import asyncio

import pytest

from bridge.mqtt import _is_transport, _Publisher, _WindowWriter, publish_packet
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


# --- the PUBLISH packets the link builds itself ------------------------------------------


class _Protocol:
    """What gmqtt's packet builder reads of its protocol: the version and the id source."""

    def __init__(self, version: int, packet_id: int) -> None:
        self.proto_ver = version
        self.id_generator = self
        self._packet_id = packet_id

    def next_id(self) -> int:
        return self._packet_id


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("topic", ["a", "nvr/nvr-01/channel/3/event/Motion", "ü/€/" + "t" * 300])
# Remaining Length crosses its 1-, 2- and 3-byte encodings around these sizes.
@pytest.mark.parametrize("size", [0, 1, 90, 127, 200, 16_383, 16_384, 2_097_200])
def test_publish_packets_are_byte_for_byte_gmqtt_s(
    v5: bool, qos: int, retain: bool, topic: str, size: int
) -> None:
    from gmqtt import Message
    from gmqtt.mqtt.constants import MQTTv50, MQTTv311
    from gmqtt.mqtt.package import PublishPacket

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    protocol = _Protocol(MQTTv50 if v5 else MQTTv311, 4_321)
    _, expected = PublishPacket.build_package(Message(topic, payload, qos, retain), protocol)
    assert publish_packet(topic.encode(), payload, qos, retain, packet_id=4_321, v5=v5) == bytes(
        expected
    )


def test_a_packet_mqtt_cannot_carry_is_refused_and_its_packet_id_given_back() -> None:
    with pytest.raises(ValueError, match="65,535"):
        publish_packet(b"t" * 65_536, b"", 0, False, v5=True)
    with pytest.raises(ValueError, match="MQTT allows"):
        publish_packet(b"t", bytes(268_435_456), 0, False, v5=True)

    class _Ids:
        def __init__(self) -> None:
            self.used: set[int] = set()

        def next_id(self) -> int:
            self.used.add(7)
            return 7

        def free_id(self, packet_id: int) -> None:
            self.used.discard(packet_id)

    class _Writes:
        def __init__(self) -> None:
            self.id_generator = _Ids()
            self.packets: list[bytes] = []

        def write_data(self, data: bytes) -> None:
            self.packets.append(data)

    protocol = _Writes()
    publisher = _Publisher(protocol, True)
    with pytest.raises(ValueError, match="65,535"):
        publisher.publish("t" * 65_536, b"", 1, False)
    with pytest.raises(UnicodeError):
        publisher.publish("\ud800", b"", 1, False)  # a lone surrogate: not UTF-8
    assert protocol.id_generator.used == set() and protocol.packets == []
    assert publisher.publish("ok", b"1", 1, True) == 7
    assert protocol.packets == [b"\x33\x08\x00\x02ok\x00\x07\x001"]
