"""The narrow MQTT port: one client connection over asyncio, on the project's codec.

``MqttConnection.open`` connects (TCP or TLS), sends CONNECT and waits for the CONNACK;
then the connection offers exactly what the bridge needs:

- ``publish``: write a PUBLISH now; its acknowledgement (PUBACK, or PUBCOMP at QoS 2)
  arrives later through the handler's ``on_ack``; a packet larger than the broker's
  Maximum Packet Size is refused before it is written (``PacketTooLarge``);
- ``subscribe`` / ``unsubscribe``: wait for the SUBACK's (UNSUBACK's) reason codes;
- ``close(graceful=...)``: a DISCONNECT first, or the socket cut at once (so the broker
  publishes the Last Will);
- received PUBLISH packets go to the handler's ``on_publish`` and are acknowledged after
  it returned; one larger than ``max_incoming`` is skipped unread and acknowledged.

Everything rests on public interfaces only: ``asyncio.Protocol`` and the sans-I/O codec
of ``codec.py``. Writes made in one turn of the event loop share one ``send()``. The
connection pings when it has sent nothing for half the keepalive and counts itself
lost when the broker says nothing for one and a half keepalives.

Errors::

    MqttError              base of everything below
     +-- ConnectRefused    the CONNACK refused the connection (``reason_code``)
     +-- ConnectionLost    the connection ended (``reason``); raised by waits on it
     +-- PacketTooLarge    a PUBLISH larger than the broker accepts (never written)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from typing import Any, Protocol, cast

from bridge.mqtt import codec
from bridge.mqtt.codec import (
    V5,
    Ack,
    ConnAck,
    Connect,
    Disconnect,
    Oversized,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    Properties,
    ProtocolError,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)

# CONNACK reason codes, 3.1.1's return codes first (MQTT 5 section 3.2.2.2).
CONNACK_REASONS: dict[int, str] = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x90: "topic name invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}
DISCONNECT_REASONS: dict[int, str] = {
    0: "normal disconnection",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x96: "message rate too high",
    0x98: "administrative action",
    0xA0: "maximum connect time",
} | {k: v for k, v in CONNACK_REASONS.items() if k >= 0x80}
# What the bridge tells the broker it accepts: no topic aliases, this many unacknowledged
# QoS 1 requests at once.
RECEIVE_MAXIMUM = 64
_MAX_PACKET_ID = 0xFFFF


class MqttError(Exception):
    """Base of the MQTT port's errors; ``reason`` is a readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectRefused(MqttError):
    """The broker refused the CONNECT; ``reason_code`` is the CONNACK's."""

    def __init__(self, reason: str, reason_code: int) -> None:
        super().__init__(reason)
        self.reason_code = reason_code


class ConnectionLost(MqttError):
    """The connection ended (the socket closed, the broker disconnected, a bad packet)."""


class PacketTooLarge(MqttError):
    """A PUBLISH larger than the broker's Maximum Packet Size; it was not written."""

    def __init__(self, reason: str, size: int, limit: int) -> None:
        super().__init__(reason)
        self.size = size
        self.limit = limit


class ConnectionHandler(Protocol):
    """What a connection tells its owner (all called from the event loop, never awaited)."""

    def on_publish(self, packet: Publish) -> None:
        """A message arrived on a subscription (acknowledged once this returns)."""

    def on_ack(self, packet_id: int, reason_code: int) -> None:
        """A publish was acknowledged; ``reason_code`` >= 0x80 means the broker refused it."""

    def on_oversized(self, skipped: Oversized) -> None:
        """A received packet was larger than the limit and was skipped."""

    def on_lost(self, reason: str) -> None:
        """The connection ended; nothing more comes from it."""


def describe_connack(reason_code: int) -> str:
    """The CONNACK reason as text, e.g. ``code 5 (not authorized)``."""
    return f"code {reason_code} ({CONNACK_REASONS.get(reason_code, 'unknown reason')})"


class MqttConnection(asyncio.Protocol):
    """One connection to the broker (see module doc); create it with ``open``."""

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        version: int,
        keepalive: int,
        max_incoming: int,
    ) -> None:
        self._handler = handler
        self.version = version
        self._keepalive = keepalive
        self._reader = PacketReader(version, max_incoming)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._parts: list[bytes] = []
        self._flush_scheduled = False
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._unsubacks: dict[int, asyncio.Future[list[int]]] = {}
        self._inflight: dict[int, int] = {}  # packet id -> QoS of an unconfirmed publish
        self._incoming_qos2: set[int] = set()
        self._next_id = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = self._loop.create_future()  # the reason the connection ended
        self._last_sent = time.monotonic()
        self._last_heard = time.monotonic()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._first_bytes = bytearray()  # what came before the CONNACK (to name a non-MQTT peer)
        self.connack = ConnAck()
        self.receive_maximum = _MAX_PACKET_ID
        self.maximum_packet_size = codec.MAX_REMAINING_LENGTH + 5

    # --- opening --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        handler: ConnectionHandler,
        *,
        host: str,
        port: int,
        connect: Connect,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        max_incoming: int = 1024 * 1024,
    ) -> MqttConnection:
        """Connect, send CONNECT, wait for a successful CONNACK (``connack``).

        Raises ConnectRefused, ConnectionLost, OSError (unreachable, TLS) or TimeoutError.
        """
        loop = asyncio.get_running_loop()
        if connect.version == V5:
            # A copy: the caller's CONNECT stays as it was given.
            properties = {
                "receive_maximum": RECEIVE_MAXIMUM,
                "maximum_packet_size": max_incoming,
                **connect.properties,
            }
            connect = dataclasses.replace(connect, properties=properties)
        connection = cls(
            handler, version=connect.version, keepalive=connect.keepalive, max_incoming=max_incoming
        )
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: connection, host, port, ssl=tls, server_hostname=host if tls else None
            )
            try:
                connection._send_now(codec.encode(connect, connect.version))
                connack = await connection._wait(connection._connack)
            except BaseException:
                connection.abort()
                raise
        if connack.reason_code != 0:
            connection.abort()
            text = connack.properties.get("reason_string")
            detail = f": {text}" if isinstance(text, str) else ""
            raise ConnectRefused(
                f"the broker refused the connection, {describe_connack(connack.reason_code)}"
                f"{detail}",
                connack.reason_code,
            )
        connection._accepted(connack)
        return connection

    def _accepted(self, connack: ConnAck) -> None:
        self.connack = connack
        props = connack.properties
        self.receive_maximum = int(props.get("receive_maximum", _MAX_PACKET_ID)) or 1
        if "maximum_packet_size" in props:
            self.maximum_packet_size = int(props["maximum_packet_size"])
        keepalive = props.get("server_keep_alive")
        if isinstance(keepalive, int):
            self._keepalive = keepalive
        self._schedule_ping()

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed an earlier session (its subscriptions, its queue)."""
        return self.connack.session_present

    @property
    def unconfirmed(self) -> int:
        """Publishes written and not yet acknowledged."""
        return len(self._inflight)

    @property
    def is_open(self) -> bool:
        """Whether the connection still runs."""
        return not self.closed.done()

    async def _wait(self, future: asyncio.Future[Any]) -> Any:
        """Wait for ``future``, or raise ConnectionLost when the connection ends first."""
        done, _ = await asyncio.wait({future, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        raise ConnectionLost(self.closed.result())

    # --- sending --------------------------------------------------------------------------

    def _packet_id(self) -> int:
        for _ in range(_MAX_PACKET_ID):
            self._next_id = self._next_id % _MAX_PACKET_ID + 1
            if (
                self._next_id not in self._inflight
                and self._next_id not in self._subacks
                and self._next_id not in self._unsubacks
            ):
                return self._next_id
        raise MqttError("no free packet id: 65,535 packets unacknowledged")

    def publish(
        self,
        topic: bytes,
        payload: bytes,
        qos: int,
        retain: bool,
        *,
        properties: Properties | None = None,
    ) -> int:
        """Write one PUBLISH (in this loop turn's send); its packet id, 0 at QoS 0.

        Raises PacketTooLarge beyond the broker's Maximum Packet Size (nothing written),
        ValueError for a topic MQTT cannot carry, ConnectionLost when closed.
        """
        if self.closed.done():
            raise ConnectionLost(self.closed.result())
        packet_id = self._packet_id() if qos else 0
        data = codec.encode_publish(
            topic, payload, qos, retain, packet_id=packet_id, version=self.version,
            properties=properties,
        )  # fmt: skip
        if len(data) > self.maximum_packet_size:
            raise PacketTooLarge(
                f"a message of {len(data)} bytes is larger than the broker's Maximum Packet "
                f"Size of {self.maximum_packet_size} bytes",
                len(data),
                self.maximum_packet_size,
            )
        if qos:
            self._inflight[packet_id] = qos
        self._write(data)
        return packet_id

    async def subscribe(self, subscriptions: list[Subscription]) -> list[int]:
        """SUBSCRIBE and wait for the SUBACK's reason codes (one per subscription)."""
        if self.version != V5:
            for sub in subscriptions:
                sub.no_local = sub.retain_as_published = False
                sub.retain_handling = 0
        packet_id = self._packet_id()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[packet_id] = waiter
        try:
            self._write(codec.encode(Subscribe(packet_id, subscriptions), self.version))
            codes: list[int] = await self._wait(waiter)
        finally:
            self._subacks.pop(packet_id, None)
        return codes

    async def unsubscribe(self, topic_filters: list[str]) -> list[int]:
        """UNSUBSCRIBE and wait for the UNSUBACK (its reason codes in MQTT 5)."""
        packet_id = self._packet_id()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._unsubacks[packet_id] = waiter
        try:
            self._write(codec.encode(Unsubscribe(packet_id, topic_filters), self.version))
            codes: list[int] = await self._wait(waiter)
        finally:
            self._unsubacks.pop(packet_id, None)
        return codes

    @property
    def writable(self) -> asyncio.Event:
        """Set while the socket's send buffer is below its high-water mark."""
        return self._writable

    def flush(self) -> None:
        """Send what this loop turn wrote so far, now."""
        self._flush_scheduled = False
        parts = self._parts
        if not parts or self._transport is None or self._transport.is_closing():
            parts.clear()
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._transport.write(data)
        self._last_sent = time.monotonic()

    def _write(self, data: bytes) -> None:
        self._parts.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def _send_now(self, data: bytes) -> None:
        self._write(data)
        self.flush()

    # --- closing --------------------------------------------------------------------------

    def close(self, *, graceful: bool) -> None:
        """End the connection: DISCONNECT first when ``graceful``, else cut the socket.

        A cut socket makes the broker publish the Last Will; a DISCONNECT does not.
        """
        if self._transport is None or self.closed.done():
            return
        if graceful:
            self._send_now(codec.encode(Disconnect(), self.version))
            self._transport.close()
        else:
            self._transport.abort()
        self._finish("closed by the bridge")

    def abort(self) -> None:
        """Cut the socket at once (the Last Will fires)."""
        self.close(graceful=False)

    async def wait_closed(self) -> str:
        """Wait until the connection ended; the reason."""
        return await asyncio.shield(self.closed)

    def _finish(self, reason: str) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self.closed.done():
            return
        self.closed.set_result(reason)
        self._writable.set()
        self._handler.on_lost(reason)

    # --- keepalive ------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._keepalive <= 0 or self.closed.done():
            return
        self._ping_timer = self._loop.call_later(self._keepalive / 2, self._keep_alive)

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_heard > self._keepalive * 1.5:
            if self._transport is not None:
                self._transport.abort()
            self._finish(f"no answer from the broker for {self._keepalive * 1.5:g} s")
            return
        # Ping when nothing was sent, and when nothing was heard (a QoS 0 publisher gets
        # no answers, so a busy link may still hear nothing for a keepalive): at most one
        # ping per tick of half the keepalive.
        half = self._keepalive / 2
        if now - self._last_sent >= half or now - self._last_heard >= half:
            self._send_now(codec.encode(PingReq(), self.version))
        self._schedule_ping()

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is open (asyncio calls this)."""
        # A stream transport; uvloop's do not subclass asyncio's, so no isinstance check.
        self._transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed (asyncio calls this)."""
        reason = f"the connection closed: {exc}" if exc else "the broker closed the connection"
        if not self._connack.done() and self._first_bytes:
            # It answered before closing, and not with a CONNACK: not an MQTT server.
            reason = f"a malformed packet: it sent {bytes(self._first_bytes[:40])!r}"
        self._finish(reason)

    def pause_writing(self) -> None:
        """The send buffer is full (asyncio calls this)."""
        self._writable.clear()

    def resume_writing(self) -> None:
        """The send buffer drained (asyncio calls this)."""
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        """Bytes from the broker (asyncio calls this): handle every whole packet."""
        self._last_heard = time.monotonic()
        if not self._connack.done() and len(self._first_bytes) < 64:
            self._first_bytes += data[:64]
        reader = self._reader
        reader.feed(data)
        try:
            for packet in reader.packets():
                self._dispatch(packet)
        except ProtocolError as exc:
            self._protocol_error(exc)

    def _protocol_error(self, exc: ProtocolError) -> None:
        if self._transport is not None and self.version == V5:
            with contextlib.suppress(Exception):
                self._send_now(codec.encode(Disconnect(exc.reason_code), self.version))
        if self._transport is not None:
            self._transport.abort()
        self._finish(f"the broker sent a malformed packet: {exc.reason}")

    def _dispatch(self, packet: Packet | Oversized) -> None:
        if isinstance(packet, Ack):
            self._on_ack(packet)
        elif isinstance(packet, Publish):
            self._on_publish(packet)
        elif isinstance(packet, ConnAck):
            if self._connack.done():
                raise ProtocolError("a second CONNACK", codec.PROTOCOL)
            self._connack.set_result(packet)
        elif isinstance(packet, SubAck | UnsubAck):
            waiters = self._subacks if isinstance(packet, SubAck) else self._unsubacks
            waiter = waiters.pop(packet.packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet.reason_codes)
        elif isinstance(packet, Disconnect):
            self._on_disconnect(packet)
        elif isinstance(packet, Oversized):
            self._on_oversized(packet)
        elif isinstance(packet, PingResp):
            return
        else:
            raise ProtocolError(f"a broker may not send {type(packet).__name__}", codec.PROTOCOL)

    def _on_ack(self, packet: Ack) -> None:
        kind = packet.kind
        if kind == codec.PUBREL:
            self._incoming_qos2.discard(packet.packet_id)
            self._write(codec.encode(Ack(codec.PUBCOMP, packet.packet_id), self.version))
            return
        qos = self._inflight.get(packet.packet_id)
        if qos is None:
            return  # an acknowledgement of nothing we sent: ignore it
        if kind == codec.PUBREC and qos == 2 and packet.reason_code < 0x80:
            self._write(codec.encode(Ack(codec.PUBREL, packet.packet_id), self.version))
            return
        if (kind == codec.PUBACK) != (qos == 1) and packet.reason_code < 0x80:
            raise ProtocolError(f"packet {packet.packet_id} acknowledged the wrong way")
        del self._inflight[packet.packet_id]
        self._handler.on_ack(packet.packet_id, packet.reason_code)

    def _on_publish(self, packet: Publish) -> None:
        if packet.qos == 2 and packet.packet_id in self._incoming_qos2:
            # A QoS 2 redelivery before our PUBCOMP: delivered once already.
            self._write(codec.encode(Ack(codec.PUBREC, packet.packet_id), self.version))
            return
        if "topic_alias" in packet.properties:
            raise ProtocolError("a topic alias the bridge never allowed", 0x94)
        self._handler.on_publish(packet)
        if packet.qos == 1:
            self._write(codec.encode(Ack(codec.PUBACK, packet.packet_id), self.version))
        elif packet.qos == 2:
            self._incoming_qos2.add(packet.packet_id)
            self._write(codec.encode(Ack(codec.PUBREC, packet.packet_id), self.version))

    def _on_oversized(self, skipped: Oversized) -> None:
        if skipped.packet_type != codec.PUBLISH:
            raise ProtocolError(f"a packet of {skipped.size} bytes", 0x95)
        self._handler.on_oversized(skipped)
        if skipped.qos:
            kind = codec.PUBACK if skipped.qos == 1 else codec.PUBREC
            reason = 0x83 if self.version == V5 else 0  # implementation specific error
            self._write(codec.encode(Ack(kind, skipped.packet_id, reason), self.version))

    def _on_disconnect(self, packet: Disconnect) -> None:
        text = packet.properties.get("reason_string")
        reason = DISCONNECT_REASONS.get(packet.reason_code, "unknown reason")
        detail = f": {text}" if isinstance(text, str) else ""
        if self._transport is not None:
            self._transport.close()
        self._finish(
            f"the broker disconnected the bridge, code {packet.reason_code} ({reason}){detail}"
        )
