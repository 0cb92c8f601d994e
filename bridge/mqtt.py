"""The bridge's one MQTT connection: the publisher, the subscriber and their reconnects.

Everything the bridge publishes goes through ``MqttLink.publish``, which never waits: it
hands the message to the bounded ``Outbox``. The link's own loop connects (MQTT 5, or
3.1.1 when the broker refuses 5 and the protocol is ``auto``), announces
``{base}/bridge/state`` ``online`` (its Last Will says ``offline``), re-subscribes, and
drains the outbox with a bounded window of unconfirmed publishes. A lost connection puts
the unconfirmed messages back in front and reconnects with jittered backoff, forever.

The MQTT library (aiomqtt on paho) is used only in this module, so that replacing it is
a local change.

Errors::

    MqttError (aiomqtt)    a refused or lost connection; handled inside the loop
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.backoff import Backoff
from bridge.config import MqttConfig
from bridge.normalize import Publication
from bridge.observability import Metrics
from bridge.outbox import Entry, Outbox
from bridge.spool import Spool

log = structlog.get_logger("bridge.mqtt")

# CONNACK codes meaning "this broker does not speak MQTT 5": 3.1.1's "unacceptable
# protocol version" (1) and MQTT 5's "unsupported protocol version" (132).
_PROTOCOL_REFUSED = frozenset({1, 132})
PUBLISH_WINDOW = 64
HIGH_WATER = 20_000
SUBSCRIBE_BATCH = 100
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message received on one of the link's subscriptions."""

    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class ResponseRoute:
    """Where an MQTT 5 requester asked for its reply (Response Topic, Correlation Data)."""

    topic: str
    correlation_data: bytes | None


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


class MqttLink:
    """The publisher/subscriber with its outbox and reconnect loop (see module doc)."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        bridge_state_topic: str,
        metrics: Metrics,
        buffer_size: int = 100_000,
        backoff: Backoff | None = None,
        spool: Spool | None = None,
    ) -> None:
        self._config = config
        self._state_topic = bridge_state_topic
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._outbox = Outbox(buffer_size, on_drop=self._dropped)
        self._spool = spool
        if spool is not None:
            self._outbox.on_discard = spool.discarded
            spool.restore(self._outbox)
        metrics.queue_depth.set(self._outbox.depth)
        self._filters: list[str] = []
        self._handler: Callable[[InboundMessage], None] = lambda _: None
        self._wakeup = asyncio.Event()
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._connected = asyncio.Event()
        self._closing = False
        self._drained = asyncio.Event()
        self._closed_and_drained = asyncio.Event()
        self._protocol = (
            aiomqtt.ProtocolVersion.V311
            if config.protocol == "3.1.1"
            else aiomqtt.ProtocolVersion.V5
        )
        self._dropped_this_outage = 0
        self._v5_confirmed = False
        self._session_up = False  # a session was established (for the lost-vs-failed line)
        self._client: aiomqtt.Client | None = None
        self._tls = tls_context(config)

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
    def _probing_v5(self) -> bool:
        """Whether ``auto`` is still trying MQTT 5 on a broker never reached with it."""
        return (
            self._config.protocol == "auto"
            and self._protocol == aiomqtt.ProtocolVersion.V5
            and not self._v5_confirmed
        )

    @property
    def protocol(self) -> str:
        """The MQTT protocol version in use (``5`` or ``3.1.1``)."""
        return "5" if self._protocol == aiomqtt.ProtocolVersion.V5 else "3.1.1"

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe to a filter on every (re)connect; call before or while running."""
        self._filters.append(topic_filter)

    def on_message(self, handler: Callable[[InboundMessage], None]) -> None:
        """Set the callback of received messages; it must not block."""
        self._handler = handler

    def publish(self, publication: Publication) -> None:
        """Queue a publication; never waits (the outbox is bounded, see ``Outbox``)."""
        entry = self._outbox.put(publication)
        if self._spool is not None:
            self._spool.added(entry)
        self._metrics.queue_depth.set(self._outbox.depth)
        if self._outbox.depth >= HIGH_WATER:
            self._room.clear()
        self._wake_one()

    def _wake_one(self) -> None:
        # One publication needs one worker: waking all of them would cost a task switch each.
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._idle_workers:
            waiter = self._idle_workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._wakeup.set()

    async def wait_for_room(self) -> None:
        """Backpressure for readers: wait while a connected broker lags far behind."""
        if not self._room.is_set() and self.connected:
            await self._room.wait()

    async def wait_connected(self) -> None:
        """Wait until the broker is connected."""
        await self._connected.wait()

    async def close(self, timeout: float = 3.0) -> None:
        """Flush what waits (up to ``timeout``), publish ``offline``, and disconnect."""
        self._closing = True
        self._wake_all()
        if self.connected:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self._outbox.depth and self.connected:
                        self._drained.clear()
                        self._wake_all()
                        await self._drained.wait()
        client = self._client
        if client is not None and self.connected:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(
                    self._state_topic, b"offline", qos=self._config.qos, retain=True, timeout=2
                )
        self._closed_and_drained.set()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish and receive until cancelled or closed; reconnect on failure."""
        while not self._closing:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self._lost(exc)
            except ssl.SSLError as exc:
                self._lost(exc)
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
            self._protocol = aiomqtt.ProtocolVersion.V311
            self._backoff.reset()
            return
        event = "mqtt connection lost" if was_connected else "mqtt connect failed"
        log.warning(
            event,
            url=self._config.url,
            error=str(exc) or type(exc).__name__,
            hint=_hint(exc),
            queued=self._outbox.depth,
        )

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self._outbox.coalesce = True
        self._metrics.mqtt_connected.set(0)
        requeued = self._outbox.requeue_inflight()
        if requeued:
            log.debug("mqtt requeued unconfirmed", count=requeued)
        self._client = None
        self._room.set()

    def _new_client(self) -> aiomqtt.Client:
        config = self._config
        v5 = self._protocol == aiomqtt.ProtocolVersion.V5
        properties = None
        will_properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = config.session_expiry
            will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        password = config.password.get_secret_value() if config.password else None
        # Never a clean start: the broker keeps our subscriptions and queued requests.
        session: dict[str, Any] = {"clean_start": False} if v5 else {"clean_session": False}
        client = aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=password,
            identifier=config.client_id,
            protocol=self._protocol,
            will=aiomqtt.Will(
                self._state_topic,
                b"offline",
                qos=config.qos,
                retain=True,
                properties=will_properties,
            ),
            **session,
            keepalive=config.keepalive,
            # A broker that cannot parse MQTT 5 may never answer: probe it briefly.
            timeout=PROBE_TIMEOUT if self._probing_v5 else 10,
            properties=properties,
            tls_context=self._tls,
            tls_insecure=(not config.verify_tls) if self._tls else None,
            max_inflight_messages=PUBLISH_WINDOW,
        )
        client.pending_calls_threshold = PUBLISH_WINDOW * 2
        return client

    async def _session(self) -> None:
        client = self._new_client()
        async with client:
            self._client = client
            try:
                await client.publish(
                    self._state_topic, b"online", qos=self._config.qos, retain=True
                )
                # Subscribed before "connected": a request sent after readiness is heard.
                for start in range(0, len(self._filters), SUBSCRIBE_BATCH):
                    batch = self._filters[start : start + SUBSCRIBE_BATCH]
                    await client.subscribe([(f, 1) for f in batch])
                self._mark_connected()
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._receive(client), name="mqtt-receive")
                    for index in range(PUBLISH_WINDOW):
                        group.create_task(self._publish_loop(client), name=f"mqtt-publish#{index}")
                    group.create_task(self._watch_closing(), name="mqtt-close-watch")
            except* _SessionClosedError:
                pass
            except* aiomqtt.MqttError as group_error:
                raise group_error.exceptions[0] from None
            finally:
                self._set_disconnected()

    def _mark_connected(self) -> None:
        self._session_up = True
        if self._protocol == aiomqtt.ProtocolVersion.V5:
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
        self._wake_all()

    async def _watch_closing(self) -> None:
        """End the session once close() is called and the outbox is flushed."""
        await self._closed_and_drained.wait()
        raise _SessionClosedError

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        outbox = self._outbox
        qos = self._config.qos
        while True:
            entry = outbox.take()
            if entry is None:
                if self._closing:
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._idle_workers.append(waiter)
                await waiter
                continue
            await self._publish_entry(client, entry, qos)

    async def _publish_entry(self, client: aiomqtt.Client, entry: Entry, qos: int) -> None:
        publication = entry.publication
        properties = None
        if publication.correlation_data is not None and self.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = publication.correlation_data
        await client.publish(
            publication.topic,
            publication.payload,
            qos=qos,
            retain=publication.retain,
            properties=properties,
            timeout=math.inf,
        )
        self._outbox.ack(entry)
        if publication.stream is not None:
            self._metrics.stream(publication.nvr, publication.stream).published.inc()
        depth = self._outbox.depth
        self._metrics.queue_depth.set(depth)
        if depth == 0:
            self._drained.set()
        if depth < HIGH_WATER // 2:
            self._room.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                body = payload.encode()
            elif isinstance(payload, bytes | bytearray):
                body = bytes(payload)
            else:
                body = b"" if payload is None else str(payload).encode()
            response_topic, correlation = _response_properties(message.properties)
            inbound = InboundMessage(
                topic=message.topic.value,
                payload=body,
                retain=bool(message.retain),
                response_topic=response_topic,
                correlation_data=correlation,
            )
            try:
                self._handler(inbound)
            except Exception:  # one bad request must not end the subscription
                log.exception("inbound message failed", topic=inbound.topic[:200])

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


def _refuses_v5(exc: BaseException) -> bool:
    """Whether a failed connect means "no MQTT 5 here": refused, or never answered.

    3.1.1-only brokers such as amqtt choke on an MQTT 5 CONNECT with properties and
    never send a CONNACK.
    """
    if isinstance(exc, MqttConnectError):
        return getattr(exc, "rc", None) in _PROTOCOL_REFUSED
    return "timed out" in str(exc).lower()


def _response_properties(properties: Any) -> tuple[str | None, bytes | None]:
    if properties is None:
        return None, None
    topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    return (topic if isinstance(topic, str) and topic else None), (
        bytes(correlation) if correlation is not None else None
    )


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text or "errno 111" in text:
        return "is the broker running and is BRIDGE_MQTT_URL right?"
    if "not authorized" in text or "bad user name or password" in text or "code:135" in text:
        return "check BRIDGE_MQTT_USERNAME and BRIDGE_MQTT_PASSWORD"
    if "certificate" in text or isinstance(exc, ssl.SSLError):
        return "check BRIDGE_MQTT_CA_FILE (or BRIDGE_MQTT_VERIFY_TLS) for this broker"
    return "will retry with backoff"


class _SessionClosedError(Exception):
    """Raised inside the session's task group to end it after close()."""
