"""The long-lived websocket listener of one NVR stream.

Each listener connects (with the NVR client's session cookie), reads frames, hands each
to the pure ``process_frame`` and queues the publications; when the socket closes or
fails, it reconnects with jittered exponential backoff, forever. The websocket library
pings every 20 s and closes a connection whose pong is 20 s late, so a silent NVR is
detected. A bad frame is counted, logged and skipped; it never ends the stream. A frame
holding thousands of items is handled a slice at a time, yielding to the event loop
between slices, so one NVR's flood never stalls the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.backoff import Backoff
from bridge.normalize import (
    FrameOutcome,
    FrameRejected,
    Normalizer,
    compact_json,
    format_timestamp,
    parse_frame,
    process_items,
    truncate_for_log,
)
from bridge.nvr.client import CredentialsRequired, LoginError, NvrClient, NvrError
from bridge.nvr.models import (
    STREAM_LABELS,
    STREAM_PATHS,
    EventHookMessage,
    MetaHookMessage,
    NvrMessage,
    StreamName,
)
from bridge.observability import Metrics
from bridge.publishing import Publication, Publisher
from bridge.redaction import redact_json_text
from bridge.replay import OVERLAP, GapMemory, events_from_search, metas_from_search
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.stream")

# A connection that stayed up this long was healthy: the next failure starts the
# backoff from the beginning. Shorter ones (an NVR that accepts and closes at once)
# keep growing it.
STABLE_SECONDS = 10.0
REPLAY_TIMEOUT = 5.0
# The NVR's history searches (guide 4.5, 4.6) of the streams that have one.
HISTORY_SEARCH: dict[str, str] = {"event": "/record/eventSearch", "meta": "/record/metaSearch"}
# Items of one frame handled per loop turn (a 1 MiB frame may hold 300,000 small ones).
ITEM_SLICE = 500


class StreamListener:
    """Listens to one stream of one NVR and publishes what it reads (see module doc)."""

    def __init__(
        self,
        stream: StreamName,
        *,
        client: NvrClient,
        normalizer: Normalizer,
        link: Publisher,
        metrics: Metrics,
        backoff: Backoff,
        on_state: Callable[[StreamName, bool], None],
        channels: Callable[[], list[int]] = list,
        on_messages: Callable[[StreamName, list[NvrMessage]], None] | None = None,
        stale_after: float = 0,
        topics: NvrTopics | None = None,
    ) -> None:
        self.stream = stream
        self.nvr = client.nvr
        self._client = client
        self._normalizer = normalizer
        self._link = link
        self._counters = metrics.stream(client.nvr, stream)
        self._backoff = backoff
        self._on_state = on_state
        self._connections = 0
        self._failures = 0
        self._channels = channels
        self._replayed = metrics.replayed.labels(client.nvr, stream)
        self._gap = GapMemory() if stream in HISTORY_SEARCH else None
        self._down_since: float | None = None
        self._on_messages = on_messages
        # Only the status stream talks every second: silence there means a hung NVR.
        self._stale_after = stale_after if stream == "status" else 0
        self._gap_topic = topics.gap if topics is not None else f"{client.nvr}/gap"

    @property
    def task_name(self) -> str:
        """The supervised task's name, e.g. ``eventHook[lobby]``."""
        return f"{STREAM_LABELS[self.stream]}[{self.nvr}]"

    async def run(self) -> None:
        """Connect, read and reconnect until cancelled."""
        with structlog.contextvars.bound_contextvars(nvr=self.nvr, stream=self.stream):
            while True:
                connected_at = await self._connect_and_read()
                if connected_at is not None and time.monotonic() - connected_at >= STABLE_SECONDS:
                    self._backoff.reset()
                await asyncio.sleep(self._backoff.next_delay())

    async def _connect_and_read(self) -> float | None:
        """One connection's life; returns when it started, or None if it never opened."""
        connected_at: float | None = None
        try:
            websocket = await self._client.open_websocket(STREAM_PATHS[self.stream])
            async with websocket:
                connected_at = time.monotonic()
                self._opened()
                if self._gap is not None and self._down_since is not None:
                    # Before the first live frame, so replayed items come out in order.
                    await self._replay(self._down_since, time.time())
                while True:
                    # Raw bytes: orjson parses UTF-8 itself, so text is never decoded twice.
                    frame = await self._receive(websocket)
                    await self._handle(frame)
                    await self._link.wait_for_room()
        except ConnectionClosed as exc:
            close = exc.rcvd or exc.sent
            reason = _close_reason(close.code if close else None, close.reason if close else "")
        except CredentialsRequired as exc:
            reason = exc.reason
            log.error("stream needs credentials", reason=reason)
        except LoginError:
            reason = "login failed"  # the client logged the one clear line about it
        except NvrError as exc:  # StreamSilent included
            reason = exc.reason
        except (OSError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            if connected_at is not None:
                self._closed()
        self._report(connected_at, reason)
        return connected_at

    def _report(self, connected_at: float | None, reason: str) -> None:
        """One clear line when a stream starts failing; the retries after it are debug."""
        if connected_at is not None:
            self._failures = 0
            log.warning("stream disconnected", reason=reason)
            return
        self._failures += 1
        if reason != "login failed":  # the client logged the one clear line about it
            report = log.warning if self._failures == 1 else log.debug
            report("stream connect failed", reason=reason, failures=self._failures)

    async def _receive(self, websocket: ClientConnection) -> bytes | str:
        """The next frame; StreamSilent when the status stream says nothing for too long."""
        if not self._stale_after:
            return await websocket.recv(decode=False)
        try:
            async with asyncio.timeout(self._stale_after):
                return await websocket.recv(decode=False)
        except TimeoutError:
            raise StreamSilent(
                f"no status frame for {self._stale_after:g} s although the NVR sends one "
                "every second (BRIDGE_STATUS_STALE_AFTER); reconnecting"
            ) from None

    def _opened(self) -> None:
        self._connections += 1
        if self._connections > 1:
            self._counters.reconnects.inc()
        if self.stream == "status":
            # Every channel's next report is published as a first sight.
            self._normalizer.forget_status()
        self._counters.connected.set(1)
        log.info(
            "stream connected", reconnects=self._connections - 1, failed_attempts=self._failures
        )
        self._on_state(self.stream, True)

    def _closed(self) -> None:
        if self._down_since is None:
            self._down_since = time.time()
        self._counters.connected.set(0)
        self._on_state(self.stream, False)

    async def _handle(self, frame: str | bytes) -> None:
        """Publish what one frame holds; count and log what it holds that is invalid."""
        timestamp = format_timestamp(time.time())
        counters = self._counters
        outcome = FrameOutcome()
        try:
            items = parse_frame(frame)
        except FrameRejected as exc:
            items = []
            outcome.received = 1
            outcome.reject(exc.reason)
        else:
            outcome.received = len(items)
        counters.received.inc(outcome.received)
        for start in range(0, len(items), ITEM_SLICE):
            if start:
                # A long frame: let the other NVRs and the broker link run in between.
                await asyncio.sleep(0)
                await self._link.wait_for_room()
            outcome.publications.clear()
            outcome.messages.clear()
            process_items(
                self._normalizer,
                self.stream,
                items[start : start + ITEM_SLICE],
                timestamp,
                outcome,
                first_index=start,
                total=len(items),
            )
            self._publish(outcome)
            if self._on_messages is not None and outcome.messages:
                self._on_messages(self.stream, list(outcome.messages))
        if outcome.rejected:
            counters.invalid.inc(outcome.rejected)
            log.warning(
                "frame rejected",
                reasons=outcome.rejections,
                rejected=outcome.rejected,
                items=outcome.received,
                frame=redact_json_text(truncate_for_log(frame)),
            )

    def _publish(self, outcome: FrameOutcome) -> None:
        """Queue a slice's publications and remember its live items for the replay."""
        publish = self._link.publish
        for publication in outcome.publications:
            publish(publication)
        if self._gap is not None and outcome.messages:
            now = time.time()
            for message in outcome.messages:
                if isinstance(message, EventHookMessage):
                    self._gap.saw_live((message.channel, message.type, message.state), now)
                elif isinstance(message, MetaHookMessage):
                    self._gap.saw_live((message.channel, message.type, message.data), now)

    async def _replay(self, down_since: float, until: float) -> None:
        """Publish what the NVR recorded while this stream was down (see bridge.replay).

        Then the outage report: ``{base}/{nvr}/gap`` (CONTRACT section 7.7).
        """
        assert self._gap is not None  # noqa: S101 - only streams with a history replay
        self._down_since = None
        body: dict[str, object] = {
            "StartTime": int(down_since - OVERLAP),
            "EndTime": int(until) + 1,
        }
        channels = self._channels()
        if channels:
            body["ChannelID"] = channels
        if self.stream == "event":
            body["Stream"] = "Main"
        path = HISTORY_SEARCH[self.stream]
        try:
            answer = await self._client.call("POST", path, body=body, timeout=REPLAY_TIMEOUT)
        except NvrError as exc:
            log.warning(
                "replay failed",
                endpoint=path,
                error=exc.reason,
                hint="items of the outage may be missing",
                outage_seconds=round(until - down_since, 1),
            )
            self._report_gap(down_since, until, 0, complete=False)
            return
        parse = events_from_search if self.stream == "event" else metas_from_search
        missed = self._gap.missed(parse(answer.body), since=down_since - OVERLAP)
        timestamp = format_timestamp(time.time())
        for index, item in enumerate(missed):
            if index and not index % ITEM_SLICE:
                await asyncio.sleep(0)  # a long history: let the other NVRs run
            for publication in self._normalizer.normalize(
                self.stream, item.message, timestamp, history_ms=item.time_ms
            ):
                self._link.publish(publication)
        if missed:
            self._replayed.inc(len(missed))
        log.info(
            "outage replayed",
            replayed=len(missed),
            outage_seconds=round(until - down_since, 1),
        )
        self._report_gap(down_since, until, len(missed), complete=True)

    def _report_gap(
        self, down_since: float, until: float, replayed: int, *, complete: bool
    ) -> None:
        payload = {
            "nvr": self.nvr,
            "stream": self.stream,
            "from": format_timestamp(down_since),
            "to": format_timestamp(until),
            "replayed": replayed,
            "complete": complete,
            "timestamp": format_timestamp(time.time()),
        }
        self._link.publish(Publication(self._gap_topic, compact_json(payload), False, self.nvr))


class StreamSilent(NvrError):
    """The status stream stayed open but carried no frame for too long."""


def _close_reason(code: int | None, reason: str | None) -> str:
    if code is None:
        return "connection lost without a close frame"
    if code == 1011 and reason and "ping" in reason:
        return "no pong from the NVR within the ping timeout"
    return f"closed by the NVR (code {code}{': ' + reason if reason else ''})"
