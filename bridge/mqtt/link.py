"""The bridge's one MQTT link: the outbox, the reconnect loop, the retained state.

Everything the bridge publishes goes through ``MqttLink.publish``, which never waits: it
checks the topic, remembers retained values, and hands the message to the bounded
``Outbox``. The link's loop connects through the port (``connection.py``; MQTT 5, or
3.1.1 when the broker lacks 5 and the protocol is ``auto``), announces
``{base}/bridge/state`` ``online`` (its Last Will says ``offline``), subscribes (MQTT 5:
Retain As Published, so a retained request shows as retained even when delivered live),
publishes again every retained topic the bridge owns (a broker that lost its retained
messages is whole again), and drains the outbox with at most the broker's Receive
Maximum publishes unconfirmed. A lost connection puts the unconfirmed messages back in
front and reconnects with jittered backoff, forever.

No message can stop the link (CONTRACT section 9): a topic brokers refuse is dropped
before it is queued; a message larger than the broker's Maximum Packet Size (or
``BRIDGE_MQTT_MAX_PACKET``) is dropped and counted, never retried; a message after which
the broker closed a fresh connection three times is dropped as poison; the backoff is
reset only after a connection stayed up ``STABLE_SECONDS``, so a broker that drops the
link at once is retried with the backoff, never in a tight loop. ``stalled_for`` tells
``/healthz`` when a connected link has delivered nothing for too long.

Errors::

    LinkError               a refused, failed or lost connection; handled in the loop
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from bridge.backoff import Backoff
from bridge.config import MqttConfig
from bridge.limits import topic_problem
from bridge.mqtt import codec
from bridge.mqtt.codec import V5, V311, Connect, Oversized, Publish, Subscription, Will
from bridge.mqtt.connection import ConnectionLost, ConnectRefused, MqttConnection, PacketTooLarge
from bridge.observability import DropReason, Metrics
from bridge.outbox import Entry, Outbox
from bridge.publishing import InboundMessage, Publication

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
# A connection that stayed up this long was healthy: the next failure starts the backoff
# from the beginning. Shorter ones keep growing it.
STABLE_SECONDS = 10.0
# A message that was the oldest unconfirmed one when a connection younger than this was
# lost, this many times in a row, is taken for poison and dropped.
POISON_SECONDS = 5.0
POISON_STRIKES = 3
# What one received message may weigh at least (requests are small; discovery lists can be
# long; a snapshot read back at start-up is as large as BRIDGE_SNAPSHOT_MAX_BYTES allows).
MAX_INCOMING = 4 * 1024 * 1024
# Retained payload bytes remembered for republishing after a reconnect, at most.
RETAINED_BYTES = 64 * 1024 * 1024
# Room left in a packet for its topic, packet id and headers (the bridge's own topics are
# far shorter).
PAYLOAD_MARGIN = 1024
# Temporary subscriptions (subscribe_for) at once, at most.
MAX_TEMPORARY = 64
# Log lines about dropped messages: the first, then one per this many.
LOG_EVERY = 1000


class LinkError(Exception):
    """A refused, failed or lost broker connection; ``code`` is a CONNACK code if any."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


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


class RetainedState:
    """The latest value of every retained topic the bridge published, for republishing.

    Bounded in topics and bytes: the least recently updated topic is evicted first and
    counted (``nvr_bridge_retained_evicted_total``). An empty payload (a clear) forgets
    the topic.
    """

    def __init__(self, max_topics: int, max_bytes: int, on_evict: Callable[[], None]) -> None:
        self._values: OrderedDict[str, Publication] = OrderedDict()
        self._bytes = 0
        self._max_topics = max_topics
        self._max_bytes = max_bytes
        self._on_evict = on_evict

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, topic: str) -> bool:
        return topic in self._values

    def remember(self, publication: Publication) -> None:
        """Record a retained publication (its latest value)."""
        topic = publication.topic
        previous = self._values.pop(topic, None)
        if previous is not None:
            self._bytes -= len(previous.payload)
        if not publication.payload:
            return
        self._values[topic] = publication
        self._bytes += len(publication.payload)
        while self._values and (
            len(self._values) > self._max_topics or self._bytes > self._max_bytes
        ):
            _, evicted = self._values.popitem(last=False)
            self._bytes -= len(evicted.payload)
            self._on_evict()

    def values(self) -> list[Publication]:
        """Every remembered value, least recently updated first."""
        return list(self._values.values())


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
        max_incoming: int = MAX_INCOMING,
    ) -> None:
        self._config = config
        self._max_incoming = max(MAX_INCOMING, max_incoming)
        self._state_topic = bridge_state_topic
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._outbox = Outbox(buffer_size, on_drop=self._dropped, retained_bound=retained_max)
        self._retained = RetainedState(retained_max, RETAINED_BYTES, metrics.retained_evicted.inc)
        self._spool = spool
        if spool is not None:
            self._outbox.on_discard = spool.discarded
            spool.restore(self._outbox)
        # Read at scrape time: no cost per message.
        metrics.queue_depth.set_function(lambda: self._outbox.depth)
        self._filters: list[str] = []
        self._handler: Callable[[InboundMessage], None] = lambda _: None
        self._wakeup = asyncio.Event()  # something to send, room in the window, or lost
        self._room = asyncio.Event()
        self._room.set()
        self._connected = asyncio.Event()
        self._closing = False
        self._drained = asyncio.Event()
        self._v5 = config.protocol != "3.1.1"
        self._v5_confirmed = False
        self._dropped_this_outage = 0
        self._refused = 0
        self._too_large = 0
        self._tls = tls_context(config)
        self._connection: MqttConnection | None = None
        self._pending: dict[int, Entry] = {}  # packet id -> entry, unconfirmed
        self._window = PUBLISH_WINDOW
        self._window_full = False
        self._progress_at = time.monotonic()
        self._strikes: dict[int, int] = {}  # outbox seq -> poison strikes
        self._session_up = False  # a session was established (for the lost-vs-failed line)
        self._broker_packet_limit: int | None = None  # the last CONNACK's, if any
        self._on_connected: list[Callable[[], None]] = []
        self._temporary: set[str] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._looks: set[asyncio.Task[None]] = set()
        self._pending_looks: list[tuple[str, float]] = []
        self._connected_at = 0.0
        self._marked_at = 0.0

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
    def connected_since(self) -> float:
        """When (monotonic seconds) the current or last connection was established."""
        return self._connected_at

    @property
    def max_payload(self) -> int:
        """The largest payload the broker takes (Maximum Packet Size less topic room)."""
        limit = self._config.max_packet or codec.MAX_REMAINING_LENGTH
        if self._connection is not None:
            limit = min(limit, self._connection.maximum_packet_size)
        elif self._broker_packet_limit is not None:
            limit = min(limit, self._broker_packet_limit)
        return max(0, limit - PAYLOAD_MARGIN)

    @property
    def retained_topics(self) -> int:
        """Retained topics remembered for republishing."""
        return len(self._retained)

    @property
    def max_incoming(self) -> int:
        """The largest received message read; a larger one is skipped (and acknowledged)."""
        return self._max_incoming

    def retains(self, topic: str) -> bool:
        """Whether ``topic``'s value is remembered for republishing after a reconnect."""
        return topic in self._retained

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

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each connect, once subscribed (before anything queued)."""
        self._on_connected.append(callback)

    def adopt(self, publication: Publication) -> None:
        """Remember a retained value read from the broker, to republish after a reconnect.

        For a topic this process has not published (an earlier process did): the value
        is on the broker already and is not sent now; one this process published since
        is newer and wins.
        """
        topic = publication.topic
        if not publication.payload or topic in self._retained or self._outbox.waiting(topic):
            return
        if topic_problem(topic) is None:
            self._retained.remember(publication)

    def subscribe_for(self, topic_filter: str, seconds: float) -> None:
        """Subscribe to a filter on the current connection for ``seconds``, then unsubscribe.

        For a look at retained messages (those of an NVR that left the configuration);
        not renewed after a reconnect. Does nothing while disconnected.
        """
        if len(self._temporary) >= MAX_TEMPORARY or topic_filter in self._temporary:
            return
        self._temporary.add(topic_filter)
        connection = self._connection
        if connection is None or not self.connected:
            # Asked while the session is being set up (a retained message read at
            # subscription time): look once it is up.
            self._pending_looks.append((topic_filter, seconds))
            return
        self._start_look(connection, topic_filter, seconds)

    def _start_look(self, connection: MqttConnection, topic_filter: str, seconds: float) -> None:

        async def look() -> None:
            try:
                await connection.subscribe([Subscription(topic_filter, qos=1)])
                await asyncio.wait({connection.closed}, timeout=seconds)
                if connection.is_open:
                    await connection.unsubscribe([topic_filter])
            except (ConnectionLost, TimeoutError):
                pass
            finally:
                self._temporary.discard(topic_filter)

        if self._tasks is not None:
            task = self._tasks.create_task(look(), name=f"mqtt-look[{topic_filter[:60]}]")
            self._looks.add(task)
            task.add_done_callback(self._looks.discard)

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
        if publication.retain and publication.topic != self._state_topic:
            self._retained.remember(publication)
        if not self._outbox.depth:
            self._progress_at = time.monotonic()  # the waiting starts now, not at the last ack
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
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                await self._run()
            finally:
                self._tasks = None
                for task in self._looks:
                    task.cancel()

    async def _run(self) -> None:
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

    def _connect_packet(self) -> Connect:
        config = self._config
        version = V5 if self._v5 else V311
        properties: dict[str, Any] = {}
        if self._v5:
            properties["session_expiry_interval"] = config.session_expiry
        password = config.password.get_secret_value().encode() if config.password else None
        return Connect(
            client_id=config.client_id,
            version=version,
            # Never a clean start: the broker keeps our subscriptions and queued requests.
            clean_start=False,
            keepalive=config.keepalive,
            username=config.username,
            password=password if config.username is not None else None,
            will=Will(self._state_topic, b"offline", min(config.qos, 1), True),
            properties=properties,
        )

    async def _open(self) -> MqttConnection:
        timeout = PROBE_TIMEOUT if self._probing_v5 else CONNECT_TIMEOUT
        try:
            return await MqttConnection.open(
                self,
                host=self._config.host,
                port=self._config.port,
                connect=self._connect_packet(),
                tls=self._tls,
                timeout=timeout,
                max_incoming=self._max_incoming,
            )
        except TimeoutError:
            raise LinkError(f"no answer to CONNECT within {timeout:g} s") from None
        except ConnectRefused as exc:
            raise LinkError(exc.reason, exc.reason_code) from None
        except ConnectionLost as exc:
            raise LinkError(_not_mqtt(self._config.url, exc.reason)) from None

    async def _session(self) -> None:
        connection = await self._open()
        self._connection = connection
        self._connected_at = time.monotonic()
        try:
            limit = self._config.max_packet
            if limit is not None:
                connection.maximum_packet_size = min(connection.maximum_packet_size, limit)
            self._window = max(1, min(PUBLISH_WINDOW, connection.receive_maximum))
            self._broker_packet_limit = connection.maximum_packet_size
            connection.publish(
                self._state_topic.encode(), b"online", min(self._config.qos, 1), True
            )
            # Subscribed before "connected": a request sent after readiness is heard.
            await self._subscribe_all(connection)
            self._mark_connected(connection)
            for callback in self._on_connected:
                callback()
            self._republish_retained()
            looks, self._pending_looks = self._pending_looks, []
            for topic_filter, seconds in looks:
                self._start_look(connection, topic_filter, seconds)
            await self._pump(connection)
        finally:
            graceful = self._closing and self._outbox.depth == 0
            self._set_disconnected()
            connection.close(graceful=graceful)
            self._connection = None

    async def _subscribe_all(self, connection: MqttConnection) -> None:
        for start in range(0, len(self._filters), SUBSCRIBE_BATCH):
            batch = [
                Subscription(f, qos=1, retain_as_published=True)
                for f in self._filters[start : start + SUBSCRIBE_BATCH]
            ]
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    codes = await connection.subscribe(batch)
            except TimeoutError:
                raise LinkError("the broker did not acknowledge the subscriptions") from None
            except ConnectionLost as exc:
                raise LinkError(exc.reason) from None
            refused = [
                s.topic_filter for s, code in zip(batch, codes, strict=False) if code >= 0x80
            ]
            if refused:
                log.error(
                    "mqtt subscription refused",
                    filters=refused[:10],
                    hint="does the broker's ACL let the bridge subscribe to its request topics?",
                )

    def _republish_retained(self) -> None:
        """Queue every retained value the bridge owns again (a broker may have lost them)."""
        outbox = self._outbox
        for publication in self._retained.values():
            if not outbox.waiting(publication.topic):
                # No stream label: a republished value is neither counted nor spooled.
                outbox.put(publication._replace(stream=None))

    def _mark_connected(self, connection: MqttConnection) -> None:
        self._session_up = True
        self._marked_at = time.monotonic()
        self._progress_at = time.monotonic()
        if self._v5:
            self._v5_confirmed = True
        self._connected.set()
        self._outbox.coalesce = False
        self._metrics.mqtt_connected.set(1)
        if self._dropped_this_outage:
            log.warning("mqtt outage dropped messages", dropped=self._dropped_this_outage)
            self._dropped_this_outage = 0
        log.info(
            "mqtt connected",
            url=self._config.url,
            protocol=self.protocol,
            client_id=self._config.client_id,
            session_present=connection.session_present,
            receive_maximum=connection.receive_maximum,
            maximum_packet_size=connection.maximum_packet_size,
            queued=self._outbox.depth,
        )

    def _lost(self, exc: BaseException) -> None:
        was_connected = self._session_up
        self._session_up = False
        # Stable: the session was up (subscribed, publishing) long enough. A broker that
        # takes TCP and never answers CONNECT must not reset the backoff by taking long.
        stable = was_connected and time.monotonic() - self._marked_at >= STABLE_SECONDS
        self._set_disconnected()
        if stable:
            self._backoff.reset()
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
        if self._pending:
            self._strike(self._pending)
        self._pending.clear()
        self._connected.clear()
        self._outbox.coalesce = True
        self._metrics.mqtt_connected.set(0)
        requeued = self._outbox.requeue_inflight()
        if requeued:
            log.debug("outbox requeued unconfirmed", count=requeued)
        self._room.set()

    def _strike(self, pending: dict[int, Entry]) -> None:
        """Count a strike against the oldest unconfirmed message of a short connection."""
        young = time.monotonic() - self._connected_at <= POISON_SECONDS
        if not young or self._closing:
            self._strikes.clear()
            return
        oldest = min(pending.values(), key=lambda e: e.seq)
        strikes = self._strikes.get(oldest.seq, 0) + 1
        self._strikes = {oldest.seq: strikes}
        if strikes < POISON_STRIKES:
            return
        self._strikes.clear()
        publication = oldest.publication
        self._outbox.ack(oldest)
        self._count_drop(publication, "poison")
        log.error(
            "publish dropped: the broker closed the connection right after it, each time",
            strikes=POISON_STRIKES,
            topic=publication.topic[:200],
            size=len(publication.payload),
            hint="check the broker's limits and ACL for this topic",
        )

    # --- sending --------------------------------------------------------------------------

    async def _pump(self, connection: MqttConnection) -> None:
        """Send from the outbox, a window at a time, until the connection is lost or closed."""
        outbox = self._outbox
        qos = min(self._config.qos, 1)
        window = self._window if qos else PUBLISH_WINDOW
        lost = connection.closed
        while not lost.done():
            if self._closing and outbox.depth == 0:
                return
            sent = 0
            while (not qos or connection.unconfirmed < window) and sent < PUBLISH_WINDOW:
                entry = outbox.take()
                if entry is None:
                    break
                self._send(connection, entry, qos)
                sent += 1
            connection.flush()
            if not connection.writable.is_set():
                # QoS 0 to a slow broker: wait for the socket, not for memory to fill.
                await _first(connection.writable.wait(), lost)
                continue
            self._window_full = bool(qos) and connection.unconfirmed >= window
            if sent and outbox.queued and not self._window_full:
                # More waits: let acks be read and other tasks run, then the next window.
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            if outbox.queued and not self._window_full:
                continue
            await _first(self._wakeup.wait(), lost)
        raise LinkError(lost.result() if lost.done() else "connection to the broker lost")

    def _send(self, connection: MqttConnection, entry: Entry, qos: int) -> None:
        publication = entry.publication
        properties = None
        if publication.correlation_data is not None and connection.version == V5:
            properties = {"correlation_data": publication.correlation_data}
        try:
            packet_id = connection.publish(
                publication.topic.encode(),
                publication.payload,
                qos,
                publication.retain,
                properties=properties,
            )
        except PacketTooLarge as exc:
            self._too_large += 1
            self._discard(entry, exc.reason, self._too_large, "too_large")
            return
        except ValueError as exc:  # a topic MQTT cannot carry (checked on publish)
            self._refused += 1
            self._discard(entry, str(exc), self._refused, "bad_topic")
            return
        if qos:
            self._pending[packet_id] = entry
        else:
            self._confirmed(entry)

    def _count_drop(self, publication: Publication, reason: DropReason) -> None:
        """Count a publication that will never be published (a stream's too, if one)."""
        self._metrics.publish_dropped.labels(reason).inc()
        if publication.stream is not None:
            self._metrics.stream(publication.nvr, publication.stream).dropped.inc()

    def _discard(self, entry: Entry, reason: str, count: int, kind: DropReason) -> None:
        """Drop a taken entry that can never be sent: counted, never retried."""
        publication = entry.publication
        self._outbox.ack(entry)
        self._count_drop(publication, kind)
        if count % LOG_EVERY == 1:
            log.warning(
                "publish dropped",
                topic=publication.topic[:200],
                size=len(publication.payload),
                reason=reason,
                dropped=count,
                hint="raise the broker's max_packet_size, or lower BRIDGE_SNAPSHOT_MAX_BYTES",
            )

    def _confirmed(self, entry: Entry, *, published: bool = True) -> None:
        self._outbox.ack(entry)
        self._progress_at = time.monotonic()
        self._strikes.pop(entry.seq, None)
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

    def _refuse(self, publication: Publication, problem: str) -> None:
        """Drop a publication whose topic no broker takes: counted; a log line per 1,000."""
        self._count_drop(publication, "bad_topic")
        if self._refused % LOG_EVERY == 0:
            log.warning(
                "publish refused",
                nvr=publication.nvr or None,
                topic=publication.topic[:200],
                reason=problem,
                refused=self._refused + 1,
            )
        self._refused += 1

    def _dropped(self, publication: Publication) -> None:
        self._dropped_this_outage += 1
        self._count_drop(publication, "buffer_full")
        if self._dropped_this_outage == 1:
            log.warning(
                "outbound buffer full, dropping oldest messages",
                bound=self._outbox.bound,
                nvr=publication.nvr,
            )

    # --- the connection's callbacks (ConnectionHandler) -----------------------------------

    def on_ack(self, packet_id: int, reason_code: int) -> None:
        """A publish was confirmed (or refused, reason code >= 0x80) by the broker."""
        entry = self._pending.pop(packet_id, None)
        if entry is None:
            return
        if reason_code >= 0x80:
            self._refused += 1
            reason = f"the broker refused it (reason code {reason_code})"
            self._discard(entry, reason, 1, "refused")
            self._progress_at = time.monotonic()
            return
        self._confirmed(entry)

    def on_publish(self, packet: Publish) -> None:
        """A message arrived on a subscription: hand it to the router."""
        correlation = packet.properties.get("correlation_data")
        response_topic = packet.properties.get("response_topic")
        inbound = InboundMessage(
            topic=packet.topic,
            payload=packet.payload,
            retain=packet.retain,
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=correlation if isinstance(correlation, bytes) else None,
            packet_id=packet.packet_id,
            duplicate=packet.dup,
        )
        try:
            self._handler(inbound)
        except Exception:  # one bad request must not end the subscription
            log.exception("inbound message failed", topic=inbound.topic[:200])

    def on_oversized(self, skipped: Oversized) -> None:
        """A received message larger than the limit was skipped (and acknowledged)."""
        log.warning(
            "inbound message too large, skipped",
            size=skipped.size,
            limit=self._max_incoming,
            packet_id=skipped.packet_id,
        )

    def on_lost(self, reason: str) -> None:
        """The connection ended: wake the pump so the session ends."""
        self._wakeup.set()


async def _first(waiting: Any, lost: asyncio.Future[str]) -> None:
    """Wait for a coroutine, or for the connection to end, whichever comes first."""
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()


def _not_mqtt(url: str, reason: str) -> str:
    if "malformed" in reason:
        return (
            f"the server at {url} answered, but not in MQTT ({reason}); is BRIDGE_MQTT_URL "
            "the broker's MQTT port (1883, or 8883 for mqtts://)?"
        )
    return f"the connection closed before the broker answered CONNECT ({reason})"


def _refuses_v5(exc: BaseException) -> bool:
    """Whether a failed connect means "no MQTT 5 here": refused, or never answered.

    Some 3.1.1-only brokers choke on an MQTT 5 CONNECT and never send a CONNACK, or
    close the connection.
    """
    if isinstance(exc, LinkError) and exc.code is not None:
        return exc.code in _PROTOCOL_REFUSED
    text = str(exc).lower()
    return "no answer to connect" in text or "closed before the broker answered" in text


def _describe(exc: BaseException) -> str:
    """A short, stable text for a connection error (``[Errno 111] Connection refused``)."""
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, ssl.SSLError):
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


def _hint(exc: BaseException) -> str:
    text = str(exc).lower()
    code = exc.code if isinstance(exc, LinkError) else None
    if ("refused" in text and "connection" in text and code is None) or "errno 111" in text:
        return "is the broker running and is BRIDGE_MQTT_URL right?"
    if code in (4, 5, 0x86, 0x87) or "password" in text or "not authori" in text:
        return "check BRIDGE_MQTT_USERNAME and BRIDGE_MQTT_PASSWORD"
    if code in (2, 0x85):
        return "the broker refused BRIDGE_MQTT_CLIENT_ID; choose another"
    if "certificate" in text or isinstance(exc, ssl.SSLError):
        return "check BRIDGE_MQTT_CA_FILE (or BRIDGE_MQTT_VERIFY_TLS) for this broker"
    if "not in mqtt" in text:
        return "point BRIDGE_MQTT_URL at the broker's MQTT listener"
    return "will retry with backoff"
