"""The bridge's one MQTT connection: the publisher, the subscriber and their reconnects.

Everything the bridge publishes goes through ``MqttLink.publish``, which never waits: it
hands the message to the bounded ``Outbox``. The link's own loop connects (MQTT 5, or
3.1.1 when the broker lacks 5 and the protocol is ``auto``), announces
``{base}/bridge/state`` ``online`` (its Last Will says ``offline``), re-subscribes, and
drains the outbox with a window of unconfirmed publishes no wider than the broker's
Receive Maximum. A lost connection puts the unconfirmed messages back in front and
reconnects with jittered backoff, forever.

The MQTT client is gmqtt, an asyncio-native MQTT 5/3.1.1 client: its publish is a plain
function call that writes a packet, about a fifth of the CPU of aiomqtt on paho, which
waits on a future per message. Each connection gets a fresh client with gmqtt's own
reconnects switched off (this loop owns reconnects and resends, from the outbox); a
confirmation (PUBACK) reaches the outbox through the client's storage hook. The outbox's
PUBLISH packets are built here (``publish_packet``, byte for byte what gmqtt builds; a
QoS 0 burst takes a tenth less CPU per message); packet ids, writes and the rest of the
protocol stay gmqtt's. gmqtt is used only in this module, so the choice of library stays
a local decision.

Errors::

    LinkError               a refused, failed or lost connection; handled in the loop
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

import structlog
from gmqtt import Client as GmqttClient
from gmqtt import Message, Subscription
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError
from gmqtt.storage import PersistentStorage

from bridge.backoff import Backoff
from bridge.config import MqttConfig
from bridge.limits import topic_problem
from bridge.normalize import Publication
from bridge.observability import Metrics
from bridge.outbox import Entry, Outbox

if TYPE_CHECKING:
    from bridge.spool import Spool

log = structlog.get_logger("bridge.mqtt")

# CONNACK codes meaning "this broker does not speak MQTT 5": 3.1.1's "unacceptable
# protocol version" (1) and MQTT 5's "unsupported protocol version" (132).
_PROTOCOL_REFUSED = frozenset({1, 132})
PUBLISH_WINDOW = 256
# Readers wait while this many messages are unconfirmed on a connected broker (TCP then
# slows the NVR down): bounded memory under a burst. Outages are bound by the outbox.
HIGH_WATER = 2_000
SUBSCRIBE_BATCH = 100
CONNECT_TIMEOUT = 10.0
PROBE_TIMEOUT = 3.0
SUBSCRIBE_TIMEOUT = 10.0
# QoS 0 publishes are confirmed once written; past this much unsent data, wait for the
# socket, so a slow broker slows the bridge down instead of filling memory.
WRITE_BUFFER_LIMIT = 1024 * 1024
# gmqtt reconnects on its own unless its retry budget is below zero; the loop here does.
_NO_RECONNECTS = -2


class LinkError(Exception):
    """A refused, failed or lost broker connection; ``code`` is a CONNACK code if any."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class InboundMessage(NamedTuple):
    """A message received on one of the link's subscriptions.

    ``packet_id`` is the broker's id of a QoS 1/2 delivery (0 at QoS 0), ``duplicate``
    its DUP flag (a redelivery of a message whose acknowledgement was lost).
    """

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    packet_id: int = 0
    duplicate: bool = False


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``mqtts://``: verified by default, a client cert if given."""
    if not config.is_tls:
        return None
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.cert_file and config.key_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _ConfirmingStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unconfirmed publishes, told which outbox entry each packet is.

    gmqtt calls ``push_message`` with the packet id right after writing a QoS 1/2
    publish, and ``remove_message_by_mid`` when its PUBACK (or PUBCOMP) arrives.
    """

    def __init__(self, on_confirmed: Callable[[Entry], None]) -> None:
        super().__init__()
        self.sending: Entry | None = None
        self._entries: dict[int, Entry] = {}
        self._on_confirmed = on_confirmed

    def push_message(self, mid: int, raw_package: bytes) -> None:
        # Only the id is needed: resends come from the outbox, on a fresh client.
        if self.sending is not None:
            self._entries[mid] = self.sending

    def remove_message_by_mid(self, mid: int) -> None:
        entry = self._entries.pop(mid, None)
        if entry is not None:
            self._on_confirmed(entry)

    @property
    def is_empty(self) -> bool:
        return True

    @property
    def unconfirmed(self) -> int:
        """Publishes written and not yet confirmed."""
        return len(self._entries)


class _WindowWriter:
    """The client's transport, but writes go out together: one send() for many packets.

    gmqtt writes each packet as it is built: a system call per message. While ``held``
    (the pump sending a window), writes are collected and ``flush`` sends them at once.
    Other writes (gmqtt's PUBACKs for a burst of requests, pings) are collected until the
    event loop's next turn, so that every packet written in one turn shares a send().
    Everything else is the real transport's.
    """

    __slots__ = ("_direct", "_loop", "_parts", "_scheduled", "held", "transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.held = False
        self._parts: list[bytes] = []
        self._scheduled = False
        self._direct = False
        self._loop = asyncio.get_running_loop()

    def is_closing(self) -> bool:
        # Asked before every write: answered here, not through __getattr__'s slow path.
        return self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._direct:
            self.transport.write(data)
            return
        self._parts.append(data)
        if not self.held and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def flush(self) -> None:
        """Send what was collected (the end of the pump's window)."""
        self.held = False
        self._send()

    def write_through(self) -> None:
        """Send what waits; from now on, write every packet at once.

        Before a clean DISCONNECT, which gmqtt follows by closing the socket in the same
        turn of the loop.
        """
        self._direct = True
        self.held = False
        self._send()

    def _flush_soon(self) -> None:
        self._scheduled = False
        if not self.held:
            self._send()

    def _send(self) -> None:
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


# The largest Remaining Length MQTT can encode (four bytes of variable byte integer).
_MAX_REMAINING_LENGTH = 268_435_455


def publish_packet(
    topic: bytes, payload: bytes, qos: int, retain: bool, *, packet_id: int = 0, v5: bool
) -> bytes:
    """One PUBLISH packet with no properties (MQTT 5 §3.3, 3.1.1 §3.3): the wire bytes.

    ``packet_id`` is used at QoS 1/2 only. Raises ValueError for a topic longer than a
    two-byte length allows or a packet too large for MQTT.
    """
    if len(topic) > 0xFFFF:
        raise ValueError(f"topic of {len(topic)} bytes: MQTT allows 65,535")
    remaining = 2 + len(topic) + len(payload) + (2 if qos else 0) + (1 if v5 else 0)
    if remaining > _MAX_REMAINING_LENGTH:
        raise ValueError(f"packet of {remaining} bytes: MQTT allows {_MAX_REMAINING_LENGTH}")
    header = bytearray((0x30 | qos << 1 | retain,))
    while remaining > 0x7F:
        header.append(remaining & 0x7F | 0x80)
        remaining >>= 7
    header.append(remaining)
    header += len(topic).to_bytes(2, "big")
    header += topic
    if qos:
        header += packet_id.to_bytes(2, "big")
    if v5:
        header.append(0)  # no properties
    return b"".join((header, payload))


class _Publisher:
    """Writes PUBLISH packets built by ``publish_packet`` through the client's protocol.

    gmqtt's own ``publish`` builds a ``Message``, runs its generic property encoder and
    logs twice per packet: about 4 µs of a burst's 25 µs per message. The packet id
    comes from gmqtt's id generator and the write goes through its protocol (keepalive
    bookkeeping, the closed-socket check), so its PUBACK handling works unchanged.
    Publications with properties (correlation data) still go through ``client.publish``.
    """

    __slots__ = ("_ids", "_protocol", "_v5")

    def __init__(self, protocol: Any, v5: bool) -> None:
        self._protocol = protocol
        self._ids = protocol.id_generator
        self._v5 = v5

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Write one PUBLISH; its packet id (0 at QoS 0)."""
        packet_id = self._ids.next_id() if qos else 0
        try:
            packet = publish_packet(
                topic.encode(), payload, qos, retain, packet_id=packet_id, v5=self._v5
            )
        except (ValueError, UnicodeError):
            if qos:
                self._ids.free_id(packet_id)
            raise
        self._protocol.write_data(packet)
        return packet_id


def _publisher(client: GmqttClient, v5: bool) -> _Publisher | None:
    """The fast publisher for a connected client, or None if gmqtt is not as expected."""
    protocol = _protocol(client)
    generator = getattr(protocol, "id_generator", None)
    if not (
        callable(getattr(protocol, "write_data", None))
        and callable(getattr(generator, "next_id", None))
        and callable(getattr(generator, "free_id", None))
    ):
        return None
    return _Publisher(protocol, v5)


class MqttLink:
    """The publisher/subscriber with its outbox and reconnect loop (see module doc)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        bridge_state_topic: str,
        metrics: Metrics,
        buffer_size: int = 100_000,
        retained_max: int = 100_000,
        backoff: Backoff | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._config = config
        self._state_topic = bridge_state_topic
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._outbox = Outbox(buffer_size, on_drop=self._dropped, retained_bound=retained_max)
        self._spool = spool
        if spool is not None:
            self._outbox.on_discard = spool.discarded
            spool.restore(self._outbox)
        # Read at scrape time: no cost per message.
        metrics.queue_depth.set_function(lambda: self._outbox.depth)
        self._filters: list[str] = []
        self._handler: Callable[[InboundMessage], None] = lambda _: None
        self._wakeup = asyncio.Event()  # something to send, or room in the window
        self._room = asyncio.Event()
        self._room.set()
        self._connected = asyncio.Event()
        self._closing = False
        self._drained = asyncio.Event()
        self._v5 = config.protocol != "3.1.1"
        self._dropped_this_outage = 0
        self._v5_confirmed = False
        self._session_up = False  # a session was established (for the lost-vs-failed line)
        self._tls = tls_context(config)
        self._subscribed: dict[int, asyncio.Future[None]] = {}
        self._window_full = False
        self._progress_at = time.monotonic()
        self._refused_topics = 0

    # --- what the rest of the bridge uses ------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker is connected right now."""
        return self._connected.is_set()

    @property
    def depth(self) -> int:
        """Messages accepted and not yet confirmed by the broker."""
        return self._outbox.depth

    @property
    def protocol(self) -> str:
        """The MQTT protocol version in use (``5`` or ``3.1.1``)."""
        return "5" if self._v5 else "3.1.1"

    @property
    def _probing_v5(self) -> bool:
        """Whether ``auto`` is still trying MQTT 5 on a broker never reached with it."""
        return self._config.protocol == "auto" and self._v5 and not self._v5_confirmed

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe to a filter on every (re)connect; call before running."""
        self._filters.append(topic_filter)

    def on_message(self, handler: Callable[[InboundMessage], None]) -> None:
        """Set the callback of received messages; it must not block."""
        self._handler = handler

    def stalled_for(self, limit: float) -> float | None:
        """Seconds messages waited on a connected broker without any being confirmed.

        None unless that is more than ``limit`` (a link that is up but delivers nothing).
        """
        if not self.connected or not self._outbox.depth:
            return None
        waited = time.monotonic() - self._progress_at
        return waited if waited > limit else None

    def publish(self, publication: Publication) -> None:
        """Queue a publication; never waits (the outbox is bounded, see ``Outbox``).

        A topic no broker would take is refused here, before it is queued: it would
        otherwise end the connection and come first again after each reconnect.
        """
        problem = topic_problem(publication.topic)
        if problem is not None:
            self._refuse(publication, problem)
            return
        entry = self._outbox.put(publication)
        if self._spool is not None:
            self._spool.added(entry)
        if self._outbox.depth >= HIGH_WATER:
            self._room.clear()
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        """Backpressure for readers: wait while a connected broker lags far behind."""
        if not self._room.is_set() and self.connected:
            await self._room.wait()

    async def close(self, timeout: float = 3.0) -> None:
        """Flush what waits and ``offline`` (up to ``timeout``), then disconnect cleanly.

        ``bridge/state`` ``offline`` goes through the outbox like everything else, so it
        is confirmed last; if the broker is away, the Last Will says it instead.
        """
        self._closing = True
        if self.connected:
            self.publish(Publication(self._state_topic, b"offline", True, ""))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self._outbox.depth and self.connected:
                        self._drained.clear()
                        await self._drained.wait()
        self._wakeup.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish and receive until closed; reconnect on failure."""
        while not self._closing:
            try:
                await self._session()
            except (LinkError, OSError) as exc:
                self._lost(exc)
            except Exception as exc:  # a bug here must not end the bridge: reconnect
                log.exception("mqtt link failed unexpectedly, reconnecting")
                self._lost(LinkError(f"unexpected error: {type(exc).__name__}"))
            if self._closing:
                break
            delay = self._backoff.next_delay()
            log.info("mqtt reconnecting", retry_in=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not self._closing:
                        self._wakeup.clear()
                        await self._wakeup.wait()

    def _lost(self, exc: BaseException) -> None:
        was_connected = self._session_up
        self._session_up = False
        self._set_disconnected()
        if self._probing_v5 and not was_connected and _refuses_v5(exc):
            log.info(
                "mqtt broker does not speak MQTT 5, falling back to 3.1.1",
                url=self._config.url,
                error=str(exc),
            )
            self._v5 = False
            self._backoff.reset()
            return
        event = "mqtt connection lost" if was_connected else "mqtt connect failed"
        log.warning(
            event,
            url=self._config.url,
            error=_describe(exc),
            hint=_hint(exc),
            queued=self._outbox.depth,
        )

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self._outbox.coalesce = True
        self._metrics.mqtt_connected.set(0)
        requeued = self._outbox.requeue_inflight()
        if requeued:
            log.debug("outbox requeued unconfirmed", count=requeued)
        self._room.set()
        for waiter in self._subscribed.values():
            if not waiter.done():
                waiter.cancel()
        self._subscribed.clear()

    def _new_client(self, storage: _ConfirmingStorage) -> GmqttClient:
        config = self._config
        will = Message(self._state_topic, b"offline", qos=config.qos, retain=True)
        extra: dict[str, Any] = {}
        if self._v5:
            extra["session_expiry_interval"] = config.session_expiry
        client = GmqttClient(
            config.client_id,
            # Never a clean start: the broker keeps our subscriptions and queued requests.
            clean_session=False,
            will_message=will,
            persistent_storage=storage,
            logger=_QUIET_LOGGER,
            **extra,
        )
        client.set_config({"reconnect_retries": _NO_RECONNECTS})
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.set_auth_credentials(config.username, password)
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribed
        return client

    async def _session(self) -> None:
        storage = _ConfirmingStorage(self._confirmed)
        client = self._new_client(storage)
        lost = asyncio.Event()

        def disconnected(*_: Any) -> None:
            lost.set()
            self._wakeup.set()

        client.on_disconnect = disconnected
        timeout = PROBE_TIMEOUT if self._probing_v5 else CONNECT_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                await client.connect(
                    self._config.host,
                    self._config.port,
                    ssl=self._tls or False,
                    keepalive=self._config.keepalive,
                    version=MQTTv50 if self._v5 else MQTTv311,
                )
        except TimeoutError:
            await _abandon(client)
            raise LinkError(f"no answer to CONNECT within {timeout:g} s") from None
        except MQTTConnectError as exc:
            await _abandon(client)
            raise LinkError(f"broker refused the connection: {exc}", exc._code) from None
        except OSError:
            await _abandon(client)
            raise
        try:
            self._publish_state(client, b"online")
            # Subscribed before "connected": a request sent after readiness is heard.
            await self._subscribe_all(client, lost)
            self._mark_connected()
            await self._pump(client, storage, lost)
        finally:
            graceful = self._closing and self._outbox.depth == 0
            self._set_disconnected()
            await _abandon(client, graceful=graceful)

    def _publish_state(self, client: GmqttClient, state: bytes) -> None:
        client.publish(Message(self._state_topic, state, qos=self._config.qos, retain=True))

    async def _subscribe_all(self, client: GmqttClient, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, len(self._filters), SUBSCRIBE_BATCH):
            batch = [Subscription(f, qos=1) for f in self._filters[start : start + SUBSCRIBE_BATCH]]
            mid = client.subscribe(batch)
            waiter: asyncio.Future[None] = loop.create_future()
            self._subscribed[mid] = waiter
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await waiter
            except (TimeoutError, asyncio.CancelledError) as exc:
                if lost.is_set() or isinstance(exc, TimeoutError):
                    raise LinkError("the broker did not acknowledge the subscriptions") from None
                raise

    def _on_subscribed(self, _client: Any, mid: int, *_: Any) -> None:
        waiter = self._subscribed.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _mark_connected(self) -> None:
        self._session_up = True
        self._progress_at = time.monotonic()
        if self._v5:
            self._v5_confirmed = True
        self._connected.set()
        self._outbox.coalesce = False
        self._metrics.mqtt_connected.set(1)
        self._backoff.reset()
        if self._dropped_this_outage:
            log.warning("mqtt outage dropped messages", dropped=self._dropped_this_outage)
            self._dropped_this_outage = 0
        log.info(
            "mqtt connected",
            url=self._config.url,
            protocol=self.protocol,
            client_id=self._config.client_id,
            queued=self._outbox.depth,
        )

    async def _pump(
        self, client: GmqttClient, storage: _ConfirmingStorage, lost: asyncio.Event
    ) -> None:
        """Send from the outbox, a window at a time, until the connection is lost or closed."""
        outbox = self._outbox
        qos = self._config.qos
        window = _window(client)
        # Publishes per write: QoS 1/2 as many as may be unconfirmed; QoS 0 has no acks to
        # wait for, so a larger batch shares each send().
        batch = window if qos else PUBLISH_WINDOW
        transport = _transport(client)
        writer = _window_writer(client)
        publisher = _publisher(client, self._v5)
        while not lost.is_set():
            if self._closing and outbox.depth == 0:
                return
            sent = 0
            if writer is not None:
                writer.held = True
            try:
                while storage.unconfirmed < window and sent < batch:
                    entry = outbox.take()
                    if entry is None:
                        break
                    self._send(client, publisher, storage, entry, qos)
                    sent += 1
            finally:
                if writer is not None:
                    writer.flush()
            if transport is not None and transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                # QoS 0 to a slow broker: wait for the socket, not for memory to fill.
                await asyncio.sleep(0.001)
                continue
            self._window_full = storage.unconfirmed >= window
            if sent and outbox.queued and not self._window_full:
                # More waits: let acks be read and other tasks run, then the next window.
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            if outbox.queued and not self._window_full:
                continue
            await self._wakeup.wait()
        raise LinkError("connection to the broker lost")

    def _send(
        self,
        client: GmqttClient,
        publisher: _Publisher | None,
        storage: _ConfirmingStorage,
        entry: Entry,
        qos: int,
    ) -> None:
        publication = entry.publication
        with_properties = publication.correlation_data is not None and self._v5
        storage.sending = entry
        try:
            if publisher is not None and not with_properties:
                packet_id = publisher.publish(
                    publication.topic, publication.payload, qos, publication.retain
                )
                if qos:
                    storage.push_message(packet_id, b"")
            else:
                properties = (
                    {"correlation_data": publication.correlation_data} if with_properties else {}
                )
                client.publish(
                    Message(
                        publication.topic,
                        publication.payload,
                        qos=qos,
                        retain=publication.retain,
                        **properties,
                    )
                )
        except (ValueError, UnicodeError) as exc:
            # A topic the broker would refuse (only from a client's Response Topic).
            log.warning("publish refused", topic=publication.topic[:200], error=str(exc))
            self._confirmed(entry, published=False)
            return
        finally:
            storage.sending = None
        if qos == 0:
            self._confirmed(entry)

    def _confirmed(self, entry: Entry, *, published: bool = True) -> None:
        self._outbox.ack(entry)
        self._progress_at = time.monotonic()
        publication = entry.publication
        if published and publication.stream is not None:
            self._metrics.stream(publication.nvr, publication.stream).published.inc()
        depth = self._outbox.depth
        if depth == 0:
            self._drained.set()
        if depth < HIGH_WATER // 2:
            self._room.set()
        if self._window_full or self._closing:
            # Only a pump waiting for room needs waking; otherwise an ack is no news.
            self._window_full = False
            self._wakeup.set()

    def _on_message(
        self,
        _client: Any,
        topic: str | bytes,
        payload: bytes,
        _qos: int,
        properties: dict[str, Any],
    ) -> int:
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")
        response_topic = _first(properties.get("response_topic"))
        correlation = _first(properties.get("correlation_data"))
        inbound = InboundMessage(
            topic=topic,
            payload=payload if isinstance(payload, bytes) else bytes(payload or b""),
            retain=bool(properties.get("retain")),
            response_topic=response_topic
            if isinstance(response_topic, str) and response_topic
            else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            duplicate=bool(properties.get("dup")),
        )
        try:
            self._handler(inbound)
        except Exception:  # one bad request must not end the subscription
            log.exception("inbound message failed", topic=inbound.topic[:200])
        return 0  # PUBACK: success

    def _refuse(self, publication: Publication, problem: str) -> None:
        """Drop a publication that cannot be sent, counted; one log line per 1,000."""
        if publication.stream is not None:
            self._metrics.stream(publication.nvr, publication.stream).dropped.inc()
        if self._refused_topics % 1000 == 0:
            log.warning(
                "publish refused",
                nvr=publication.nvr or None,
                topic=publication.topic[:200],
                reason=problem,
                refused=self._refused_topics + 1,
            )
        self._refused_topics += 1

    def _dropped(self, publication: Publication) -> None:
        self._dropped_this_outage += 1
        if publication.stream is not None:
            self._metrics.stream(publication.nvr, publication.stream).dropped.inc()
        if self._dropped_this_outage == 1:
            log.warning(
                "outbound buffer full, dropping oldest messages",
                bound=self._outbox.bound,
                nvr=publication.nvr,
            )


# gmqtt logs every lost socket and refused connect itself (some at WARNING, from its
# module loggers); the bridge says each in one line of its own.
_QUIET_LOGGER = logging.getLogger("bridge.mqtt.gmqtt")
_QUIET_LOGGER.setLevel(logging.CRITICAL)
logging.getLogger("gmqtt").setLevel(logging.CRITICAL)


_SEQUENCES = (list, tuple)


def _first(values: Any) -> Any:
    if isinstance(values, _SEQUENCES):
        return values[0] if values else None
    return values


def _protocol(client: GmqttClient) -> Any:
    """The client's protocol object (gmqtt internals; None if they are not as expected)."""
    return getattr(getattr(client, "_connection", None), "_protocol", None)


def _window(client: GmqttClient) -> int:
    """Unconfirmed publishes allowed at once: ours, within the broker's Receive Maximum."""
    generator = getattr(_protocol(client), "id_generator", None)
    receive_maximum = getattr(generator, "_max", None)
    if isinstance(receive_maximum, int) and receive_maximum >= 2:
        return max(1, min(PUBLISH_WINDOW, receive_maximum - 1))
    return min(PUBLISH_WINDOW, 19)


def _transport(client: GmqttClient) -> asyncio.WriteTransport | None:
    connection = getattr(client, "_connection", None)
    transport = getattr(connection, "_transport", None)
    return transport if _is_transport(transport) else None


def _is_transport(candidate: Any) -> TypeGuard[asyncio.WriteTransport]:
    """A socket transport: asyncio's, or uvloop's (which does not subclass asyncio's)."""
    return isinstance(candidate, asyncio.WriteTransport) or all(
        callable(getattr(candidate, name, None))
        for name in ("write", "is_closing", "get_write_buffer_size", "abort")
    )


def _window_writer(client: GmqttClient) -> _WindowWriter | None:
    """Put a ``_WindowWriter`` between the client's protocol and its transport."""
    protocol = _protocol(client)
    current = getattr(protocol, "_transport", None)
    if isinstance(current, _WindowWriter):
        return current
    if not _is_transport(current):
        return None  # not the gmqtt this was written for: write packet by packet
    writer = _WindowWriter(current)
    protocol._transport = writer  # the one seam gmqtt offers for batching writes
    return writer


async def _abandon(client: GmqttClient, *, graceful: bool = False) -> None:
    """Close a client for good: a clean DISCONNECT only when ``graceful``.

    Otherwise the socket is cut first, so the broker publishes the Last Will.
    """
    if not graceful:
        transport = _transport(client)
        if transport is not None:
            transport.abort()
    else:
        writer = _window_writer(client)
        if writer is not None:
            writer.write_through()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await client.disconnect()


def _refuses_v5(exc: BaseException) -> bool:
    """Whether a failed connect means "no MQTT 5 here": refused, or never answered.

    3.1.1-only brokers such as amqtt choke on an MQTT 5 CONNECT with properties and
    never send a CONNACK.
    """
    if isinstance(exc, LinkError) and exc.code is not None:
        return exc.code in _PROTOCOL_REFUSED
    return "no answer to connect" in str(exc).lower()


def _describe(exc: BaseException) -> str:
    """A short, stable text for a connection error (``[Errno 111] Connection refused``)."""
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, ssl.SSLError):
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if ("refused" in text and "connection" in text and "code" not in text) or "errno 111" in text:
        return "is the broker running and is BRIDGE_MQTT_URL right?"
    if "password" in text or "not authori" in text or "code 4 " in text or "code 5 " in text:
        return "check BRIDGE_MQTT_USERNAME and BRIDGE_MQTT_PASSWORD"
    if "certificate" in text or isinstance(exc, ssl.SSLError):
        return "check BRIDGE_MQTT_CA_FILE (or BRIDGE_MQTT_VERIFY_TLS) for this broker"
    return "will retry with backoff"
