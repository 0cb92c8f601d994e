"""MQTT peers of the tests' own, on the bridge's codec: a recording proxy, a scripted broker.

``MqttProxy`` sits between the bridge and a real broker on 127.0.0.1, port 0. It forwards
whole packets both ways, decodes each with ``bridge.mqtt.codec`` and records them, so a
test measures from outside what the bridge sent (CONNECT attempts, unconfirmed QoS 1
publishes) and breaks the link the way a network or a broker does: it delays what the
broker says, goes silent while keeping both sockets open, or swallows the bridge's PUBACK
of a request and cuts both connections.

``ScriptedBroker`` is a broker that does one thing: it accepts CONNECT, answers CONNACK,
SUBACK and PINGRESP, and treats every PUBLISH by its ``mode``: ``ack`` it, ``close`` the
connection, or hold it ``silent`` (never acknowledged until the mode becomes ``ack``);
``mute`` takes connections and never answers a CONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from bridge.mqtt import codec
from bridge.mqtt.codec import (
    PUBACK,
    V5,
    Ack,
    ConnAck,
    Connect,
    Disconnect,
    PacketReader,
    PingReq,
    PingResp,
    ProtocolError,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

HOST = "127.0.0.1"
READ_SIZE = 64 * 1024


class Framer:
    """Cuts a byte stream into whole raw packets (first byte, length, body), unparsed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, int]]:
        """Each whole packet fed so far, with the offset of its body."""
        self._buffer += data
        while True:
            buffer = self._buffer
            if len(buffer) < 2:
                return
            remaining, index = 0, 1
            while True:
                if index >= len(buffer):
                    return
                byte = buffer[index]
                remaining |= (byte & 0x7F) << (7 * (index - 1))
                index += 1
                if not byte & 0x80:
                    break
                if index > 4:
                    raise ProtocolError("a remaining length longer than four bytes")
            end = index + remaining
            if len(buffer) < end:
                return
            raw = bytes(buffer[:end])
            del buffer[:end]
            yield raw, index


@dataclass
class Seen:
    """One packet that went through the proxy: which way, what, when."""

    upward: bool  # from the client (the bridge) to the broker
    packet: Any  # a codec packet, or the raw bytes of one the codec refused
    at: float


@dataclass
class ProxiedConnection:
    """One client connection through the proxy and what went through it."""

    index: int
    version: int = V5
    seen: list[Seen] = field(default_factory=list)
    unconfirmed: set[int] = field(default_factory=set)  # QoS 1 publishes, not yet PUBACKed
    max_unconfirmed: int = 0
    silent: bool = False  # broker -> client bytes are dropped, both sockets stay open
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    broker_closed: asyncio.Event = field(default_factory=asyncio.Event)
    cut: bool = False
    _client: asyncio.StreamWriter | None = None
    _broker: asyncio.StreamWriter | None = None

    def up(self) -> list[Any]:
        """The packets the client sent."""
        return [s.packet for s in self.seen if s.upward]

    def down(self) -> list[Any]:
        """The packets the broker sent."""
        return [s.packet for s in self.seen if not s.upward]

    def abort(self) -> None:
        """Cut both sockets at once (a reset, no DISCONNECT either way)."""
        self.cut = True
        for writer in (self._client, self._broker):
            if writer is not None:
                writer.transport.abort()


class MqttProxy:
    """A recording TCP proxy in front of a broker (see module doc)."""

    def __init__(self, upstream_port: int, *, upstream_host: str = HOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.connections: list[ProxiedConnection] = []
        # Seconds each packet from the broker is held before it goes on (late PUBACKs).
        self.down_delay = 0.0
        self._cut_request_prefix: str | None = None
        self._awaiting_ack: tuple[int, int] | None = None  # connection index, packet id
        self.cut_done = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port``."""
        return f"mqtt://{HOST}:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self.connections:
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- what a test reads and does ------------------------------------------------------

    def connects(self) -> list[Connect]:
        """Every CONNECT the clients sent, in order."""
        return [p for c in self.connections for p in c.up() if isinstance(p, Connect)]

    @property
    def max_unconfirmed(self) -> int:
        """The most QoS 1 publishes from a client not yet PUBACKed, on any connection."""
        return max((c.max_unconfirmed for c in self.connections), default=0)

    def silence(self) -> list[ProxiedConnection]:
        """Stop forwarding what the broker says on every open connection; sockets stay open."""
        live = [c for c in self.connections if not c.client_closed.is_set()]
        for connection in live:
            connection.silent = True
        return live

    def cut_after_request(self, topic_prefix: str) -> None:
        """Once: pass on a request, swallow the client's PUBACK of it, cut both sockets.

        The request is the next QoS 1 PUBLISH from the broker under ``topic_prefix``.
        """
        self._cut_request_prefix = topic_prefix

    # -- forwarding ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ProxiedConnection(len(self.connections))
        connection._client = writer
        self.connections.append(connection)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            connection.client_closed.set()
            return
        connection._broker = up_writer
        for coroutine in (
            self._pump(connection, reader, up_writer, upward=True),
            self._pump(connection, up_reader, writer, upward=False),
        ):
            task = asyncio.create_task(coroutine, name=f"proxy#{connection.index}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        connection: ProxiedConnection,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        upward: bool,
    ) -> None:
        framer = Framer()
        try:
            while not connection.cut:
                data = await source.read(READ_SIZE)
                if not data:
                    break
                for raw, body_at in framer.feed(data):
                    if not self._observe(connection, raw, body_at, upward=upward):
                        return
                    if connection.cut:
                        return
                    if not upward and connection.silent:
                        continue
                    if not upward and self.down_delay:
                        await asyncio.sleep(self.down_delay)  # the fault itself: late answers
                    sink.write(raw)
                await sink.drain()
        except (ConnectionError, ProtocolError):
            pass
        finally:
            (connection.client_closed if upward else connection.broker_closed).set()
            # Whichever side ended, the other one is closed too (a FIN, no DISCONNECT).
            if not connection.cut:
                sink.close()

    def _observe(
        self, connection: ProxiedConnection, raw: bytes, body_at: int, *, upward: bool
    ) -> bool:
        """Record one packet; False when it must not be forwarded (the cut)."""
        try:
            packet: Any = codec.decode(raw[0], raw[body_at:], connection.version)
        except ProtocolError:
            packet = raw
        connection.seen.append(Seen(upward, packet, time.monotonic()))
        if isinstance(packet, Connect):
            connection.version = packet.version
        if isinstance(packet, Publish) and packet.qos == 1:
            if upward:
                connection.unconfirmed.add(packet.packet_id)
                connection.max_unconfirmed = max(
                    connection.max_unconfirmed, len(connection.unconfirmed)
                )
            elif (
                self._cut_request_prefix is not None
                and self._awaiting_ack is None
                and packet.topic.startswith(self._cut_request_prefix)
            ):
                self._awaiting_ack = (connection.index, packet.packet_id)
        if isinstance(packet, Ack) and packet.kind == PUBACK:
            if not upward:
                connection.unconfirmed.discard(packet.packet_id)
            elif self._awaiting_ack == (connection.index, packet.packet_id):
                self._awaiting_ack = None
                self._cut_request_prefix = None
                connection.abort()
                self.cut_done.set()
                return False
        return True


# --- the scripted broker ------------------------------------------------------------------

Mode = Literal["ack", "close", "silent", "mute"]


@dataclass
class BrokerSession:
    """One client connection to the scripted broker."""

    index: int
    writer: asyncio.StreamWriter
    version: int = V5
    connect: Connect | None = None
    held: list[Publish] = field(default_factory=list)  # QoS 1 publishes not acknowledged
    closed: bool = False

    def send(self, packet: Any) -> None:
        if not self.closed:
            self.writer.write(codec.encode(packet, self.version))


class ScriptedBroker:
    """A broker that treats every PUBLISH by ``mode`` (see module doc)."""

    def __init__(self, mode: Mode = "ack", *, connack_properties: dict[str, Any] | None = None):
        self._mode: Mode = mode
        self.connack_properties = connack_properties or {}
        self.sessions: list[BrokerSession] = []
        self.publishes: list[Publish] = []  # every PUBLISH received
        self.acknowledged: list[Publish] = []  # those it acknowledged (or took at QoS 0)
        self.connect_times: list[float] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port``."""
        return f"mqtt://{HOST}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Change what the next PUBLISH gets; ``ack`` also acknowledges every held one."""
        self._mode = mode
        if mode == "ack":
            for session in self.sessions:
                for packet in session.held:
                    if not session.closed:
                        session.send(Ack(PUBACK, packet.packet_id))
                        self.acknowledged.append(packet)
                session.held.clear()

    def topics(self) -> list[str]:
        """The topics of every PUBLISH received, in order."""
        return [p.topic for p in self.publishes]

    def delivered(self) -> list[str]:
        """The topics of the publishes it accepted (acknowledged, or at QoS 0), in order."""
        return [p.topic for p in self.acknowledged]

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            session.closed = True
            session.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session = BrokerSession(len(self.sessions), writer)
        self.sessions.append(session)
        packets = PacketReader(V5)
        try:
            while not session.closed:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                packets.feed(data)
                for packet in packets.packets():
                    self._handle(session, packets, packet)
                    if session.closed:
                        break
                await writer.drain()
        except (ConnectionError, ProtocolError):
            pass
        finally:
            session.closed = True
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _handle(self, session: BrokerSession, reader: PacketReader, packet: Any) -> None:
        if isinstance(packet, Connect):
            session.connect = packet
            session.version = reader.version = packet.version
            self.connect_times.append(time.monotonic())
            if self._mode == "mute":
                return
            props = self.connack_properties if packet.version == V5 else {}
            session.send(ConnAck(False, 0, dict(props)))
        elif isinstance(packet, Subscribe):
            session.send(SubAck(packet.packet_id, [min(s.qos, 1) for s in packet.subscriptions]))
        elif isinstance(packet, Unsubscribe):
            session.send(UnsubAck(packet.packet_id, [0] * len(packet.topic_filters)))
        elif isinstance(packet, PingReq):
            session.send(PingResp())
        elif isinstance(packet, Disconnect):
            session.closed = True
        elif isinstance(packet, Publish):
            self.publishes.append(packet)
            if self._mode == "close":
                session.closed = True  # the connection ends right after it, unacknowledged
            elif packet.qos == 1 and self._mode == "silent":
                session.held.append(packet)
            else:
                if packet.qos == 1:
                    session.send(Ack(PUBACK, packet.packet_id))
                self.acknowledged.append(packet)
