"""Candidate ``mqtt5``: the ``mqtt5`` package (a Rust sans-I/O MQTT 5 codec) under a minimal
``asyncio.Protocol`` written here.

The protocol copies the design of ``bridge/mqtt/connection.py`` (writes of one loop turn
joined into one ``send()``, a window of unconfirmed publishes, ``pause_writing`` as the
QoS 0 backpressure), so that the difference to ``own`` is mostly the codec. Minimal on
purpose: no keepalive pings (every run is far shorter than half the 60 s keepalive), no
QoS 2, no reconnects. MQTT 5 only: ``mqtt5`` has no 3.1.1 packets, so 3.1.1 would need a
codec path of its own.

``mqtt5.read(memoryview)`` returns ``(packet, bytes used)``; it raises ``IndexError``
while a packet is incomplete and ``ValueError`` for a malformed one. Its reason codes and
QoS are typed ``enum.IntEnum`` in ``mqtt5.pyi`` but are plain (unhashable) Rust enums at
run time: ``code >= 0x80`` raises TypeError, ``int(code)`` works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import mqtt5

NAME = "mqtt5"
PROTOCOLS = ("5",)
CAPABILITIES = {
    "puback_observable": "yes: you read every PubAckPacket yourself (sans-I/O)",
    "puback_reason_code": "yes: PubAckPacket.reason_code",
    "receive_maximum_from_connack": "yes: ConnAckPacket.receive_max (you keep the window)",
    "max_packet_size_from_connack": "yes: ConnAckPacket.max_packet_size (you enforce it)",
    "abort_without_disconnect": "yes: you own the socket (transport.abort()); "
    "DisconnectPacket(reason_code=DISCONNECT_WITH_WILL_MESSAGE) too",
    "protocols": "5 only: 3.1.1 would need its own codec path",
}
QOS = (mqtt5.QoS.AT_MOST_ONCE, mqtt5.QoS.AT_LEAST_ONCE)
RECEIVE_MAXIMUM = 64  # what we accept at once (as the bridge announces)
_MAX_PACKET_ID = 0xFFFF


class _Protocol(asyncio.Protocol):
    """Bytes in and out; whole packets go to ``Port.dispatch``."""

    def __init__(self, port: Port) -> None:
        self._port = port
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._rest = b""
        self._parts: list[bytes] = []
        self._flush_scheduled = False
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._port.lost_with(f"the connection closed: {exc}" if exc else "closed by the broker")

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        view = memoryview(data)
        end = len(data)
        pos = 0
        dispatch = self._port.dispatch
        read = mqtt5.read
        for _ in range(end):  # every packet takes at least 2 bytes
            if pos >= end:
                break
            try:
                packet, size = read(view[pos:])
            except IndexError:  # incomplete: wait for more bytes
                break
            except ValueError as exc:
                if self.transport is not None:
                    self.transport.abort()
                self._port.lost_with(f"a malformed packet: {exc}")
                return
            pos += size
            dispatch(packet)
        if pos < end:
            self._rest = bytes(view[pos:])

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        parts = self._parts
        if not parts or self.transport is None or self.transport.is_closing():
            parts.clear()
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self.transport.write(data)


class Port:
    """One MQTT 5 connection on the ``mqtt5`` codec."""

    acks_observable = True

    def __init__(self, protocol: str, window: int) -> None:
        if protocol != "5":
            raise ValueError("mqtt5 speaks MQTT 5 only")
        self.protocol = protocol
        self.window_limit = window
        self.window = window
        self.receive_maximum: int | None = None
        self.max_packet_size: int | None = None
        self.acked = 0
        self.refused = 0
        self.last_ack_ns: int | None = None
        self.lost: str | None = None
        self.closed = False
        self._conn: _Protocol | None = None
        self._inflight: set[int] = set()
        self._next_id = 0
        self._connack: asyncio.Future[Any] | None = None
        self._subacks: dict[int, asyncio.Future[Any]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._on_message: Callable[[bytes], None] = lambda _payload: None
        self.info: dict[str, Any] = {}

    async def connect(
        self, host: str, port: int, client_id: str, will: tuple[str, bytes] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        _, conn = await loop.create_connection(lambda: _Protocol(self), host, port)
        self._conn = conn
        packet = mqtt5.ConnectPacket(
            client_id,
            clean_start=True,
            keep_alive=60,
            receive_max=RECEIVE_MAXIMUM,
            will=None if will is None else mqtt5.Will(will[0], payload=will[1], qos=QOS[1]),
        )
        conn.write(packet.write())
        connack = await self._connack
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            raise ConnectionError(f"CONNACK refused: {connack.reason_code!r}")
        self.receive_maximum = connack.receive_max
        self.max_packet_size = connack.max_packet_size
        self.window = max(1, min(self.window_limit, self.receive_maximum))
        self.info = {
            "receive_maximum": self.receive_maximum,
            "maximum_packet_size": self.max_packet_size,
            "window": self.window,
        }

    def _packet_id(self) -> int:
        for _ in range(_MAX_PACKET_ID):
            self._next_id = self._next_id % _MAX_PACKET_ID + 1
            if self._next_id not in self._inflight and self._next_id not in self._subacks:
                return self._next_id
        raise RuntimeError("no free packet id")

    # --- sending ----------------------------------------------------------------------

    async def send(self, topic: str, topic_b: bytes, payload: bytes, qos: int) -> None:
        conn = self._conn
        assert conn is not None
        if self.lost is not None:
            raise ConnectionError(self.lost)
        if qos:
            packet_id = self._packet_id()
            data = mqtt5.PublishPacket(topic, payload, qos=QOS[1], packet_id=packet_id).write()
        else:
            packet_id = 0
            data = mqtt5.PublishPacket(topic, payload).write()
        if self.max_packet_size is not None and len(data) > self.max_packet_size:
            raise ValueError(f"{len(data)} bytes: larger than the broker's Maximum Packet Size")
        conn.write(data)
        if qos:
            self._inflight.add(packet_id)
            self._drained.clear()
            if len(self._inflight) >= self.window:
                self._room.clear()
                await self._room.wait()
                if self.lost is not None:
                    raise ConnectionError(self.lost)
        elif not conn.writable.is_set():
            await conn.writable.wait()

    async def drain(self) -> int | None:
        assert self._conn is not None
        self._conn.flush()
        if self._inflight:
            await self._drained.wait()
        if not self._conn.writable.is_set():
            await self._conn.writable.wait()
        return self.last_ack_ns

    # --- receiving --------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int, on_message: Callable[[bytes], None]):
        assert self._conn is not None
        self._on_message = on_message
        packet_id = self._packet_id()
        waiter = asyncio.get_running_loop().create_future()
        self._subacks[packet_id] = waiter
        packet = mqtt5.SubscribePacket(
            packet_id, [mqtt5.TopicFilter(topic_filter, max_qos=QOS[qos])]
        )
        self._conn.write(packet.write())
        try:
            suback = await waiter
        finally:
            self._subacks.pop(packet_id, None)
        if int(suback.reason_codes[0]) >= 0x80:
            raise RuntimeError(f"subscription refused: {suback.reason_codes}")

    def dispatch(self, packet: Any) -> None:
        kind = type(packet)
        if kind is mqtt5.PubAckPacket:
            self._inflight.discard(packet.packet_id)
            self.acked += 1
            self.last_ack_ns = time.time_ns()
            if int(packet.reason_code) >= 0x80:  # not an IntEnum at run time (see above)
                self.refused += 1
            if len(self._inflight) < self.window:
                self._room.set()
            if not self._inflight:
                self._drained.set()
        elif kind is mqtt5.PublishPacket:
            self._on_message(packet.payload)
            if int(packet.qos) == 1:
                assert self._conn is not None
                self._conn.write(mqtt5.PubAckPacket(packet.packet_id).write())
        elif kind is mqtt5.ConnAckPacket:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        elif kind is mqtt5.SubAckPacket:
            waiter = self._subacks.get(packet.packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
        elif kind is mqtt5.DisconnectPacket:
            if self._conn is not None and self._conn.transport is not None:
                self._conn.transport.close()
            self.lost_with(f"the broker disconnected: {packet.reason_code!r}")
        # PINGRESP and the rest: nothing to do in the bench.

    def lost_with(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(reason))
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(reason))
        self._room.set()
        self._drained.set()

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return
        conn.write(mqtt5.DisconnectPacket().write())
        conn.flush()
        conn.transport.close()

    async def abort(self) -> str | None:
        self.closed = True
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.abort()
        return "transport.abort(): the socket is cut, no DISCONNECT"
