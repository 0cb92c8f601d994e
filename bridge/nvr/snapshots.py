"""Snapshots as images on MQTT (CONTRACT section 7.1).

A snapshot is the NVR's ``GET /device/getSnapshot?ChannelID={ch}`` (its answer names the
file) followed by ``GET /device/download/?snapshot={path}``, whose body is the JPEG. The
bridge publishes the image, retained, on ``{base}/{nvr}/channel/{ch}/snapshot`` and then
``.../snapshot/taken`` describing it.

Triggers are an event of ``BRIDGE_SNAPSHOT_EVENTS`` (active or once) and the ``snapshot``
command. An event never waits for its snapshot: ``trigger`` only queues the channel, and
workers of this NVR take the pictures. Per channel, at most one event-triggered snapshot
per ``BRIDGE_SNAPSHOT_MIN_INTERVAL``, one waiting at a time; later triggers are skipped
and counted. An image larger than ``BRIDGE_SNAPSHOT_MAX_BYTES`` is refused unread, one
that does not start with the JPEG marker ``FF D8`` (or that holds a configured password)
is not published; every outcome is counted in ``nvr_bridge_snapshots_total``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import structlog

from bridge.normalize import compact_json, format_timestamp
from bridge.nvr import readings
from bridge.nvr.client import NvrBadAnswer, NvrClient, NvrError
from bridge.observability import Metrics
from bridge.publishing import Publication, Publisher
from bridge.redaction import Redactor
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.nvr")

JPEG_MARKER = b"\xff\xd8"
WORKERS = 2  # snapshots of one NVR taken at once
QUEUE = 64  # channels waiting for an event-triggered snapshot, at most
DOWNLOAD_PATH = "/device/download/"
SNAPSHOT_TIMEOUT = 10.0

Outcome = Literal["ok", "error", "too_large", "skipped"]


class Snapshotter:
    """Takes, checks and publishes one NVR's snapshots (see module doc)."""

    def __init__(
        self,
        *,
        client: NvrClient,
        topics: NvrTopics,
        publisher: Publisher,
        metrics: Metrics,
        redactor: Redactor,
        events: tuple[str, ...],
        min_interval: float,
        max_bytes: int,
    ) -> None:
        self._client = client
        self._topics = topics
        self._publisher = publisher
        self._metrics = metrics
        self._redactor = redactor
        self._events = frozenset(e.casefold() for e in events)
        self._min_interval = min_interval
        self._max_bytes = max_bytes
        self._queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue(maxsize=QUEUE)
        self._waiting: set[int] = set()
        self._last: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        """Whether events trigger snapshots at all."""
        return bool(self._events)

    def _count(self, outcome: Outcome) -> None:
        self._metrics.child(self._metrics.snapshots, self._client.nvr, outcome).inc()

    def on_event(self, channel: int | None, event_type: str, state: str) -> None:
        """An event came in: queue a snapshot of its channel when it is a trigger."""
        if channel is None or state not in ("active", "once"):
            return
        if event_type.casefold() not in self._events:
            return
        now = time.monotonic()
        last = self._last.get(channel)
        if channel in self._waiting or (last is not None and now - last < self._min_interval):
            self._count("skipped")
            return
        try:
            self._queue.put_nowait((channel, event_type))
        except asyncio.QueueFull:
            self._count("skipped")
            return
        if len(self._last) > 4 * QUEUE:
            cutoff = now - self._min_interval
            self._last = {ch: at for ch, at in self._last.items() if at >= cutoff}
        self._last[channel] = now
        self._waiting.add(channel)

    async def run(self) -> None:
        """The workers that take queued snapshots, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(WORKERS):
                group.create_task(self._worker(), name=f"snapshots[{self._client.nvr}]#{index}")

    async def _worker(self) -> None:
        while True:
            channel, trigger = await self._queue.get()
            try:
                await self.take(channel, trigger)
            finally:
                self._waiting.discard(channel)

    async def take(self, channel: int, trigger: str) -> bool:
        """Ask the NVR for a snapshot of ``channel`` and publish it; True when published."""
        try:
            answer = await self._client.call(
                "GET",
                "/device/getSnapshot",
                params={"ChannelID": str(channel)},
                timeout=SNAPSHOT_TIMEOUT,
            )
        except NvrError as exc:
            return self._failed(channel, trigger, "error", exc.reason)
        path = readings.snapshot_path(answer.body)
        if path is None:
            return self._failed(channel, trigger, "error", "getSnapshot named no snapshotPath")
        return await self.download(channel, path, trigger)

    async def download(self, channel: int, path: str, trigger: str) -> bool:
        """Download the snapshot at ``path``, check it and publish it; True when published."""
        try:
            answer = await self._client.call(
                "GET",
                DOWNLOAD_PATH,
                params={"snapshot": path},
                timeout=SNAPSHOT_TIMEOUT,
                max_bytes=self._max_bytes,
                raw=True,
            )
        except NvrBadAnswer as exc:
            outcome: Outcome = "too_large" if exc.reason.startswith("answer too large") else "error"
            return self._failed(channel, trigger, outcome, exc.reason)
        except NvrError as exc:
            return self._failed(channel, trigger, "error", exc.reason)
        image = answer.body
        if not isinstance(image, bytes) or not image.startswith(JPEG_MARKER):
            shown = image[:60] if isinstance(image, bytes) else type(image).__name__
            return self._failed(
                channel, trigger, "error", f"the download is not a JPEG (starts {shown!r})"
            )
        if self._redactor.contains_secret(image):
            return self._failed(
                channel, trigger, "error", "the image holds a configured password; withheld"
            )
        nvr = self._topics.nvr
        self._publisher.publish(Publication(self._topics.snapshot(channel), image, True, nvr))
        taken = {
            "nvr": nvr,
            "channel": channel,
            "path": self._redactor.text(path),
            "bytes": len(image),
            "trigger": self._redactor.text(trigger),
            "timestamp": format_timestamp(time.time()),
        }
        self._publisher.publish(
            Publication(self._topics.snapshot_taken(channel), compact_json(taken), False, nvr)
        )
        self._count("ok")
        return True

    def _failed(self, channel: int, trigger: str, outcome: Outcome, reason: str) -> bool:
        self._count(outcome)
        log.warning(
            "snapshot failed",
            nvr=self._client.nvr,
            channel=channel,
            trigger=trigger[:100],
            outcome=outcome,
            error=reason,
        )
        return False
