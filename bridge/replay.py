"""Closing the gap after a stream outage: what the NVR recorded while the bridge was away.

When the eventHook or metaHook stream comes back after being down, the listener asks the
NVR's history (``/record/eventSearch``, guide 4.5; ``/record/metaSearch``, 4.6) for the
outage plus a small overlap, and publishes what it did not see live, flagged
``"replayed": true``. Nothing is published twice: live items are remembered for a while
and matched against the history (the NVR's live messages carry no time, so a history
item matches a live one with the same fields received within ``TOLERANCE`` seconds of
it), and every replayed item's stable id (channel, type, state or data, time) is kept.

The matching is pure (``GapMemory``); the HTTP calls live in the stream listener. The
NVR's answer is peer data like any other: an entry whose channel, type or time is not
what a live item could carry (a channel of 2**63, a time of 1e308) is skipped, and live
items are indexed by key, so a long answer is matched in linear time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bridge.limits import MAX_EPOCH_MS
from bridge.nvr.models import EventHookMessage, MetaHookMessage

OVERLAP = 5.0  # seconds searched before the moment the stream went down
TOLERANCE = 3.0  # seconds between the NVR's clock and our receive time still "the same"
LIVE_MEMORY = 20_000  # live items remembered per stream, at most
# Only live items from just before an outage can match its history (the stream was down
# after it), so older ones are forgotten: the matching stays a short scan.
LIVE_SECONDS = OVERLAP + 2 * TOLERANCE
REPLAYED_MEMORY = 20_000  # replayed ids remembered per stream

ItemKey = tuple[int | None, str, str]


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One item of the NVR's history: the message, its key, and its time (epoch ms)."""

    message: EventHookMessage | MetaHookMessage
    key: ItemKey
    time_ms: int

    @property
    def stable_id(self) -> tuple[int | None, str, str, int]:
        """The item's identity: channel, type, state or data, and time."""
        return (*self.key, self.time_ms)


def _time_ms(value: Any, scale: int) -> int | None:
    """A history time in epoch ms (``value`` in units of 1/``scale`` s); None if not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    millis = value * (1000 // scale)
    if not 0 <= millis <= MAX_EPOCH_MS:
        return None
    return int(millis)


def _channel_field(entry: dict[str, Any]) -> Any:
    return entry.get("ChannelID")


def events_from_search(body: Any) -> list[HistoryItem]:
    """The items of an ``eventSearch`` answer, oldest first; malformed entries skipped."""
    items = []
    for entry in body if isinstance(body, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("Type"), str):
            continue
        time_ms = _time_ms(entry.get("time"), 1000)
        if time_ms is None:
            time_ms = _time_ms(entry.get("ev_start"), 1)
        if time_ms is None:
            continue
        # The guide's results have no state; each one is an event that happened once.
        given = entry.get("State")
        state = given if isinstance(given, str) else "once"
        try:
            message = EventHookMessage(
                ChannelID=_channel_field(entry), Type=entry["Type"], State=state
            )
        except ValidationError:
            continue
        items.append(HistoryItem(message, (message.channel, message.type, message.state), time_ms))
    return sorted(items, key=lambda item: item.time_ms)


def metas_from_search(body: Any) -> list[HistoryItem]:
    """The items of a ``metaSearch`` answer, oldest first; malformed entries skipped."""
    items = []
    for entry in body if isinstance(body, list) else []:
        if not isinstance(entry, dict):
            continue
        kind, data = entry.get("Type"), entry.get("Data")
        time_ms = _time_ms(entry.get("Timestamp"), 1000)
        if not isinstance(kind, str) or not isinstance(data, str) or time_ms is None:
            continue
        try:
            message = MetaHookMessage(ChannelID=_channel_field(entry), Type=kind, Data=data)
        except ValidationError:
            continue
        items.append(HistoryItem(message, (message.channel, message.type, message.data), time_ms))
    return sorted(items, key=lambda item: item.time_ms)


@dataclass(slots=True)
class GapMemory:
    """Remembers live and replayed items of one stream, to replay each missed one once.

    Live items are kept in arrival order (for expiry) and indexed by key (for matching).
    """

    _live: deque[tuple[ItemKey, float]] = field(default_factory=deque)
    _live_by_key: dict[ItemKey, deque[float]] = field(default_factory=dict)
    _replayed: deque[tuple[int | None, str, str, int]] = field(
        default_factory=lambda: deque(maxlen=REPLAYED_MEMORY)
    )
    _replayed_set: set[tuple[int | None, str, str, int]] = field(default_factory=set)

    def saw_live(self, key: ItemKey, received_at: float) -> None:
        """A live item arrived at ``received_at`` (epoch seconds)."""
        live = self._live
        while live and (received_at - live[0][1] > LIVE_SECONDS or len(live) >= LIVE_MEMORY):
            self._forget_oldest_live()
        live.append((key, received_at))
        times = self._live_by_key.get(key)
        if times is None:
            times = self._live_by_key[key] = deque()
        times.append(received_at)

    def _forget_oldest_live(self) -> None:
        key, _ = self._live.popleft()
        times = self._live_by_key[key]
        times.popleft()
        if not times:
            del self._live_by_key[key]

    def missed(self, history: list[HistoryItem], since: float | None = None) -> list[HistoryItem]:
        """The history items neither seen live nor replayed before; records them replayed.

        ``since`` is the start of the searched window (epoch seconds). Windows only move
        forward, so replayed ids older than it (less the clock tolerance) can never come
        back: they are forgotten here, which keeps this memory as small as the last outage
        instead of filling to its bound over weeks. Items older than that, which a search
        should not have returned, are ignored for the same reason.
        """
        cutoff_ms = None if since is None else int((since - TOLERANCE) * 1000)
        if cutoff_ms is not None:
            self._forget_replayed_before(cutoff_ms)
        cursors: dict[ItemKey, tuple[list[float], int]] = {}
        out = []
        for item in history:
            if cutoff_ms is not None and item.time_ms < cutoff_ms:
                continue
            if item.stable_id in self._replayed_set:
                continue
            if self._matches_live(item, cursors):
                continue
            out.append(item)
            self._remember(item.stable_id)
        return out

    def _matches_live(
        self, item: HistoryItem, cursors: dict[ItemKey, tuple[list[float], int]]
    ) -> bool:
        """Whether a live item of the same key came within the tolerance (each used once).

        History items come oldest first and each key's live times are in arrival order,
        so one cursor per key walks both once: linear however long the answer.
        """
        cursor = cursors.get(item.key)
        if cursor is None:
            live = self._live_by_key.get(item.key)
            if not live:
                return False
            cursor = cursors[item.key] = (list(live), 0)
        times, index = cursor
        when = item.time_ms / 1000
        while index < len(times) and times[index] < when - TOLERANCE:
            index += 1
        matched = index < len(times) and times[index] <= when + TOLERANCE
        cursors[item.key] = (times, index + 1 if matched else index)
        return matched

    def _forget_replayed_before(self, cutoff_ms: int) -> None:
        # Ids go in roughly oldest first (each search's answer is sorted), so the old ones
        # are at the left; one out of order only lingers until the deque's own bound.
        replayed = self._replayed
        while replayed and replayed[0][3] < cutoff_ms:
            self._replayed_set.discard(replayed.popleft())

    def _remember(self, stable_id: tuple[int | None, str, str, int]) -> None:
        if len(self._replayed) == self._replayed.maxlen:
            self._replayed_set.discard(self._replayed[0])
        self._replayed.append(stable_id)
        self._replayed_set.add(stable_id)
