"""A small MQTT 3.1.1 and 5 broker for the demo (and the tests, where mosquitto is absent).

``nvr-bridge demo`` must run with nothing installed, so it brings its own broker, built on
the bridge's codec (``bridge.mqtt.codec``). It does what the demo needs and what a client
of it expects of a real broker, on loopback: sessions (clean or kept, with their QoS 1
queue while the client is away), wildcard subscriptions with MQTT 5's options (No Local,
Retain As Published, Retain Handling), retained messages delivered only to matching
subscriptions, QoS 0, 1 and 2 from clients (delivered at QoS 0 or 1), Last Wills,
keepalive, Receive Maximum, Maximum Packet Size, and MQTT 5's request/response
properties passed through. It has no authentication, no persistence and no bridging:
it is not for production (the README says to use mosquitto there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import structlog

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
    ProtocolError,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

log = structlog.get_logger("bridge.demo.broker")

RECEIVE_MAXIMUM = 100
MAX_PACKET = 16 * 1024 * 1024
MAX_QUEUED = 10_000  # messages kept per session while its client is away
# Properties a broker forwards from a PUBLISH to its subscribers (MQTT 5 section 3.3.2.3).
_FORWARDED = (
    "payload_format_indicator",
    "content_type",
    "response_topic",
    "correlation_data",
    "user_property",
)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 5 section 4.7)."""
    if topic.startswith("$") and topic_filter[:1] in ("#", "+"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def _valid_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


@dataclass(slots=True)
class _Message:
    """A message on its way to subscribers."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, object] = field(default_factory=dict)
    expires_at: float | None = None


@dataclass(slots=True)
class _Session:
    """What the broker keeps of a client, across its connections when not clean."""

    client_id: str
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    queue: deque[_Message] = field(default_factory=deque)
    expiry: float = 0.0  # seconds kept after a disconnect (3.1.1 persistent: forever)
    connection: _ClientConnection | None = None
    gone_at: float | None = None


class _ClientConnection(asyncio.Protocol):
    """One client's connection to the embedded broker."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self._broker = broker
        self._reader = PacketReader(V5, MAX_PACKET)
        self._transport: asyncio.Transport | None = None
        self.version = V5
        self.session: _Session | None = None
        self._will: Will | None = None
        self._keepalive = 0
        self._last_heard = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._receive_maximum = 65535
        self._max_packet = codec.MAX_REMAINING_LENGTH
        self._inflight: dict[int, _Message] = {}
        self._waiting: deque[_Message] = deque()
        self._ids = itertools.cycle(range(1, 65536))
        self._incoming_qos2: set[int] = set()
        self._closed = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected."""
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: handle each whole packet in order."""
        self._last_heard = time.monotonic()
        self._reader.feed(data)
        try:
            for packet in self._reader.packets():
                self._handle(packet)
                if self._closed:
                    return
        except ProtocolError as exc:
            log.info("client sent a malformed packet", error=exc.reason)
            self._drop(exc.reason_code)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed: publish the Will unless the client said goodbye."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._will is not None:
            will, self._will = self._will, None
            self._broker.route(
                _Message(will.topic, will.payload, will.qos, will.retain, dict(will.properties))
            )
        self._broker.detached(self)

    # --- packets --------------------------------------------------------------------------

    def _handle(self, packet: Packet | Oversized) -> None:
        if self.session is None:
            if not isinstance(packet, Connect):
                raise ProtocolError("the first packet must be CONNECT", codec.PROTOCOL)
            self._connect(packet)
            return
        if isinstance(packet, Publish):
            self._publish(packet)
        elif isinstance(packet, Ack):
            self._ack(packet)
        elif isinstance(packet, Subscribe):
            self._subscribe(packet)
        elif isinstance(packet, Unsubscribe):
            self._unsubscribe(packet)
        elif isinstance(packet, PingReq):
            self._send(PingResp())
        elif isinstance(packet, Disconnect):
            if packet.reason_code != 4:  # 4: "disconnect with Will message"
                self._will = None
            self._close()
        elif isinstance(packet, Oversized):
            raise ProtocolError(f"a packet of {packet.size} bytes", 0x95)
        else:
            raise ProtocolError(f"a client may not send {type(packet).__name__}", codec.PROTOCOL)

    def _connect(self, packet: Connect) -> None:
        if packet.version not in self._broker.versions:
            # As a 3.1.1 broker answers an MQTT 5 CONNECT: unacceptable protocol version.
            self.version = codec.V311
            self._send(ConnAck(False, 1))
            self._close()
            return
        self.version = packet.version
        self._reader.version = packet.version
        props = packet.properties
        self._receive_maximum = int(props.get("receive_maximum", 65535)) or 1
        self._max_packet = int(props.get("maximum_packet_size", codec.MAX_REMAINING_LENGTH))
        self._keepalive = packet.keepalive
        self._will = packet.will
        client_id = packet.client_id or f"auto-{id(self):x}"
        if packet.version == V5:
            expiry = float(props.get("session_expiry_interval", 0))
        else:
            expiry = 0.0 if packet.clean_start else float("inf")
        session, present = self._broker.attach(self, client_id, packet.clean_start, expiry)
        self.session = session
        connack_props: dict[str, object] = {}
        if self.version == V5:
            connack_props = {
                "receive_maximum": RECEIVE_MAXIMUM,
                "maximum_packet_size": MAX_PACKET,
                "maximum_qos": 1,
                "topic_alias_maximum": 0,
                "shared_subscription_available": 0,
                "subscription_identifier_available": 0,
            }
            if not packet.client_id:
                connack_props["assigned_client_identifier"] = client_id
        self._send(ConnAck(present, 0, connack_props))
        self._schedule_keepalive()
        # What waited for this session while its client was away.
        for message in list(session.queue):
            self.deliver(message, message.qos)
        session.queue.clear()

    def _publish(self, packet: Publish) -> None:
        if "+" in packet.topic or "#" in packet.topic or not packet.topic:
            raise ProtocolError("a PUBLISH topic with wildcards or empty", 0x90)
        if packet.qos == 2:
            self._send(Ack(codec.PUBREC, packet.packet_id))
            if packet.packet_id in self._incoming_qos2:
                return  # a redelivery before our PUBCOMP: routed already
            self._incoming_qos2.add(packet.packet_id)
        elif packet.qos == 1:
            self._send(Ack(codec.PUBACK, packet.packet_id))
        props = {k: v for k, v in packet.properties.items() if k in _FORWARDED}
        expiry = packet.properties.get("message_expiry_interval")
        expires_at = time.monotonic() + float(expiry) if isinstance(expiry, int) else None
        self._broker.route(
            _Message(packet.topic, packet.payload, packet.qos, packet.retain, props, expires_at),
            sender=self.session,
        )

    def _ack(self, packet: Ack) -> None:
        if packet.kind == codec.PUBREL:
            self._incoming_qos2.discard(packet.packet_id)
            self._send(Ack(codec.PUBCOMP, packet.packet_id))
            return
        if packet.kind == codec.PUBACK:
            self._inflight.pop(packet.packet_id, None)
            while self._waiting and len(self._inflight) < self._receive_maximum:
                self._write_publish(self._waiting.popleft(), 1)

    def _subscribe(self, packet: Subscribe) -> None:
        assert self.session is not None  # noqa: S101 - connected
        codes = []
        retained: list[tuple[Subscription, _Message]] = []
        for sub in packet.subscriptions:
            if not _valid_filter(sub.topic_filter):
                codes.append(0x8F if self.version == V5 else 0x80)
                continue
            sub.qos = min(sub.qos, 1)
            existed = sub.topic_filter in self.session.subscriptions
            self.session.subscriptions[sub.topic_filter] = sub
            codes.append(sub.qos)
            if sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed):
                retained += [
                    (sub, message)
                    for topic, message in self._broker.retained.items()
                    if topic_matches(sub.topic_filter, topic)
                ]
        self._send(SubAck(packet.packet_id, codes))
        for sub, message in retained:
            self.deliver(message, min(message.qos, sub.qos), retain=True)

    def _unsubscribe(self, packet: Unsubscribe) -> None:
        assert self.session is not None  # noqa: S101 - connected
        codes = []
        for topic_filter in packet.topic_filters:
            found = self.session.subscriptions.pop(topic_filter, None)
            codes.append(0 if found is not None else 0x11)
        self._send(UnsubAck(packet.packet_id, codes if self.version == V5 else []))

    # --- delivering -----------------------------------------------------------------------

    def deliver(self, message: _Message, qos: int, *, retain: bool | None = None) -> None:
        """Send a message to this client at ``qos``, within its Receive Maximum."""
        if message.expires_at is not None and message.expires_at <= time.monotonic():
            return
        shown = _Message(
            message.topic,
            message.payload,
            qos,
            message.retain if retain is None else retain,
            message.properties,
            message.expires_at,
        )
        if qos and len(self._inflight) >= self._receive_maximum:
            self._waiting.append(shown)
            return
        self._write_publish(shown, qos)

    def _write_publish(self, message: _Message, qos: int) -> None:
        packet_id = 0
        if qos:
            packet_id = next(self._ids)
            while packet_id in self._inflight:
                packet_id = next(self._ids)
            self._inflight[packet_id] = message
        props = dict(message.properties) if self.version == V5 else {}
        if self.version == V5 and message.expires_at is not None:
            props["message_expiry_interval"] = max(0, int(message.expires_at - time.monotonic()))
        data = codec.encode(
            Publish(message.topic, message.payload, qos, message.retain, False, packet_id, props),
            self.version,
        )
        if len(data) > self._max_packet:
            self._inflight.pop(packet_id, None)
            return  # the client cannot take it: MQTT 5 says discard it
        self._write(data)

    def _send(self, packet: Packet) -> None:
        self._write(codec.encode(packet, self.version))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # --- closing --------------------------------------------------------------------------

    def _schedule_keepalive(self) -> None:
        if self._keepalive and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._keepalive * 0.75, self._check_keepalive)

    def _check_keepalive(self) -> None:
        if time.monotonic() - self._last_heard > self._keepalive * 1.5:
            self._drop(0x8D)  # keep alive timeout
            return
        self._schedule_keepalive()

    def _drop(self, reason_code: int) -> None:
        """Close on a fault: the Will is published (the client did not say goodbye)."""
        if self.version == V5 and self.session is not None:
            with contextlib.suppress(Exception):
                self._send(Disconnect(reason_code))
        self._close()

    def _close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def take_over(self) -> None:
        """Another connection took this client id: close this one (MQTT 5: code 0x8E)."""
        self._drop(0x8E)

    def unacknowledged(self) -> list[_Message]:
        """Messages sent at QoS 1 and never acknowledged (kept for the session)."""
        return list(self._inflight.values()) + list(self._waiting)


class EmbeddedBroker:
    """The demo's broker on ``host:port`` (see module doc)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 1883, *, versions: tuple[int, ...] = (4, V5)
    ) -> None:
        self.host = host
        self.port = port
        self.versions = versions  # protocol levels accepted (tests leave out 5)
        self.retained: dict[str, _Message] = {}
        self._sessions: dict[str, _Session] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (port 0 takes a free one; ``port`` then says which)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), self.host, self.port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions.values()):
            if session.connection is not None:
                session.connection.take_over()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()
        self._server = None

    def attach(
        self, connection: _ClientConnection, client_id: str, clean: bool, expiry: float
    ) -> tuple[_Session, bool]:
        """The session for a CONNECT, and whether it was resumed."""
        self._expire_sessions()
        session = self._sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            session.queue.extend(old.unacknowledged())
            session.connection = None
            old.take_over()
        present = session is not None and not clean
        if session is None or clean:
            session = _Session(client_id)
            self._sessions[client_id] = session
        session.connection = connection
        session.expiry = expiry
        session.gone_at = None
        return session, present

    def detached(self, connection: _ClientConnection) -> None:
        """A connection ended: keep its session for its expiry, or forget it."""
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        session.queue.extend(connection.unacknowledged())
        if session.expiry <= 0:
            self._sessions.pop(session.client_id, None)
        else:
            session.gone_at = time.monotonic()

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for client_id, session in list(self._sessions.items()):
            if session.gone_at is not None and now - session.gone_at > session.expiry:
                del self._sessions[client_id]

    def route(self, message: _Message, sender: _Session | None = None) -> None:
        """Deliver a published message to every matching subscription; keep it if retained."""
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message
            else:
                self.retained.pop(message.topic, None)
        for session in list(self._sessions.values()):
            best: Subscription | None = None
            for sub in session.subscriptions.values():
                if topic_matches(sub.topic_filter, message.topic) and not (
                    sub.no_local and session is sender
                ):
                    best = sub if best is None or sub.qos > best.qos else best
            if best is None:
                continue
            qos = min(message.qos, best.qos)
            # Live delivery clears the retain flag unless Retain As Published.
            shown = message.retain and best.retain_as_published
            if session.connection is not None:
                session.connection.deliver(message, qos, retain=shown)
            elif qos and len(session.queue) < MAX_QUEUED:
                session.queue.append(
                    _Message(
                        message.topic,
                        message.payload,
                        qos,
                        shown,
                        message.properties,
                        message.expires_at,
                    )
                )


async def start_embedded_broker(
    port: int, host: str = "127.0.0.1", *, versions: tuple[int, ...] = (4, V5)
) -> EmbeddedBroker:
    """Start the embedded broker on ``host:port``; returns it (call ``shutdown()``)."""
    broker = EmbeddedBroker(host, port, versions=versions)
    await broker.start()
    return broker
